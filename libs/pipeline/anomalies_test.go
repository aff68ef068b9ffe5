package pipeline_test

import (
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/pipeline"
)

// TestAnomalySettings: spec.dataset.inferSchema, maxShareShift and the
// columns' minPresence and maxShareShift parse, default when left out
// (without changing the canonical form of a spec that does not set them),
// and are checked.
func TestAnomalySettings(t *testing.T) {
	t.Parallel()
	m, err := pipeline.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	ds := m.Spec.Dataset
	if ds.InferBatches() != 1 || ds.MaxCategories() != 100 || ds.ShareShiftLimit(pipeline.Column{}) != 0.2 {
		t.Errorf("defaults: batches %d, maxCategories %d, maxShareShift %g", ds.InferBatches(), ds.MaxCategories(), ds.ShareShiftLimit(pipeline.Column{}))
	}
	if c := string(m.Canonical()); strings.Contains(c, "inferSchema") || strings.Contains(c, "maxShareShift") || strings.Contains(c, "minPresence") {
		t.Errorf("the canonical form of a spec without them names them: %s", c)
	}

	spec := func(dataset string) string {
		return "apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: p1}\nspec:\n  dataset: " + dataset + "\n"
	}
	p, err := pipeline.Parse([]byte(spec(`{label: y, inferSchema: {batches: 3, maxCategories: 20}, maxShareShift: 0.1,
    schema: [{name: y, type: category, minPresence: 0.9, maxShareShift: 0.05}, {name: a, type: float, minPresence: 1}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	ds = p.Spec.Dataset
	y, a := ds.Schema[0], ds.Schema[1]
	if ds.InferBatches() != 3 || ds.MaxCategories() != 20 || ds.ShareShiftLimit(y) != 0.05 || ds.ShareShiftLimit(a) != 0.1 ||
		*y.MinPresence != 0.9 || *a.MinPresence != 1 {
		t.Errorf("parsed %+v", ds)
	}
	if again, err := pipeline.Parse(p.Canonical()); err != nil || again.Digest() != p.Digest() {
		t.Errorf("canonical round trip: %v", err)
	}
	for _, c := range []struct {
		name, dataset string
		want          []string
	}{
		{"zero batches", "{label: y, inferSchema: {batches: 0}}", []string{"spec.dataset.inferSchema.batches"}},
		{"unknown inferSchema field", "{label: y, inferSchema: {rows: 10}}", []string{"spec.dataset.inferSchema", "rows"}},
		{"maxShareShift 0", "{label: y, maxShareShift: 0}", []string{"spec.dataset.maxShareShift"}},
		{"maxShareShift above 1", "{label: y, maxShareShift: 1.5}", []string{"spec.dataset.maxShareShift"}},
		{"minPresence above 1", "{label: y, schema: [{name: y, type: int, minPresence: 2}]}", []string{"spec.dataset.schema[0].minPresence"}},
		{"share shift of a float", "{label: y, schema: [{name: y, type: int}, {name: a, type: float, maxShareShift: 0.1}]}",
			[]string{"spec.dataset.schema[1].maxShareShift", "category or bool"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := pipeline.Parse([]byte(spec(c.dataset)))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestYAML: columns come out as a spec writes them, keys in their order,
// and read back as the same columns.
func TestYAML(t *testing.T) {
	t.Parallel()
	lo, hi, pr := 0.0, 1.5, 0.75
	v := struct {
		Pipeline string            `json:"pipeline"`
		Batches  []string          `json:"batches"`
		Schema   []pipeline.Column `json:"schema"`
	}{"p1", []string{"b1", "b2"}, []pipeline.Column{
		{Name: "x", Type: pipeline.TypeFloat, Min: &lo, Max: &hi, MinPresence: &pr},
		{Name: "class", Type: pipeline.TypeCategory, Categories: []string{"0", "1", "true"}},
	}}
	got, err := pipeline.YAML(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `pipeline: p1
batches:
  - b1
  - b2
schema:
  - {name: x, type: float, min: 0, max: 1.5, minPresence: 0.75}
  - {name: class, type: category, categories: ["0", "1", "true"]}
`
	if string(got) != want {
		t.Errorf("YAML:\n%s\nwant:\n%s", got, want)
	}
	p, err := pipeline.Parse([]byte("apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: p1}\nspec:\n  dataset:\n    label: class\n    " +
		strings.ReplaceAll(string(got[strings.Index(string(got), "schema:"):]), "\n", "\n    ")))
	if err != nil {
		t.Fatal(err)
	}
	if s := p.Spec.Dataset.Schema; len(s) != 2 || *s[0].Max != 1.5 || *s[0].MinPresence != 0.75 || strings.Join(s[1].Categories, ",") != "0,1,true" {
		t.Errorf("read back %+v", s)
	}
}
