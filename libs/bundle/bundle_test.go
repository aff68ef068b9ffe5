package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

const spec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: toy}
spec:
  dataset: {label: class}
  features:
    - {name: x1, transform: standardize}
    - {name: x2, transform: identity}
    - {name: color, transform: onehot}
    - {name: shape, transform: identity}
  model: {algorithm: gbdt, params: {trees: 20, maxDepth: 3}}
`

// batch returns a CSV batch whose class is 1 when x1 + x2 > 1 or the
// colour is red.
func batch(seed uint64, rows int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	colors := []string{"red", "green", "blue"}
	shapes := []string{"round", "square"}
	var b strings.Builder
	b.WriteString("x1,x2,color,shape,class\n")
	for range rows {
		x1, x2 := r.Float64(), r.Float64()
		c := colors[r.IntN(len(colors))]
		class := 0
		if x1+x2 > 1 || c == "red" {
			class = 1
		}
		fmt.Fprintf(&b, "%.4f,%.4f,%s,%s,%d\n", x1, x2, c, shapes[r.IntN(2)], class)
	}
	return []byte(b.String())
}

func readTable(t *testing.T, data []byte) *table.Table {
	t.Helper()
	tab, err := table.Read(table.FormatCSV, data)
	if err != nil {
		t.Fatalf("table.Read: %v", err)
	}
	return tab
}

// train fits a bundle on one batch.
func train(t *testing.T) *bundle.Bundle {
	t.Helper()
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tab := readTable(t, batch(1, 400))
	set, err := features.Fit(p, tab)
	if err != nil {
		t.Fatalf("Fit: %v", err)
	}
	ds, err := set.Dataset(tab, true)
	if err != nil {
		t.Fatalf("Dataset: %v", err)
	}
	m, err := ml.Train(context.Background(), p.Spec.Model.Algorithm, p.Spec.Model.Params, ds, ml.TrainOptions{Seed: 1})
	if err != nil {
		t.Fatalf("Train: %v", err)
	}
	return &bundle.Bundle{Pipeline: "toy", RequestID: "req-1", Features: set, Model: m}
}

func TestRoundTripPredictsTheSame(t *testing.T) {
	t.Parallel()
	b := train(t)
	var buf bytes.Buffer
	if err := bundle.Save(&buf, b); err != nil {
		t.Fatalf("Save: %v", err)
	}
	again, err := bundle.Marshal(b)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !bytes.Equal(buf.Bytes(), again) {
		t.Fatal("two encodings of one bundle differ; content addressing needs the same bytes")
	}
	got, err := bundle.Load(&buf)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Pipeline != "toy" || got.RequestID != "req-1" || got.Features.Version != b.Features.Version {
		t.Fatalf("loaded header %q %q %q", got.Pipeline, got.RequestID, got.Features.Version)
	}

	test := readTable(t, batch(2, 200))
	want, err := b.PredictTable(test)
	if err != nil {
		t.Fatalf("PredictTable: %v", err)
	}
	have, err := got.PredictTable(test)
	if err != nil {
		t.Fatalf("PredictTable after Load: %v", err)
	}
	// The row-wise path (Features.Row, as serving uses) agrees with the
	// batch path.
	records := make([]map[string]string, test.Len())
	for i, row := range test.Rows {
		records[i] = map[string]string{}
		for j, c := range test.Columns {
			records[i][c] = row[j]
		}
	}
	rows, err := got.PredictRecords(records)
	if err != nil {
		t.Fatalf("PredictRecords: %v", err)
	}
	correct := 0
	for i := range test.Len() {
		w, h, r := want.Row(i), have.Row(i), rows.Row(i)
		if w.Label != h.Label || w.Label != r.Label || math.Abs(w.Proba[1]-r.Proba[1]) > 1e-12 || math.Abs(w.Proba[1]-h.Proba[1]) > 1e-12 {
			t.Fatalf("row %d: before %+v, after load %+v, row-wise %+v", i, w, h, r)
		}
		if w.Label == test.Rows[i][4] {
			correct++
		}
	}
	if acc := float64(correct) / float64(test.Len()); acc < 0.8 {
		t.Fatalf("accuracy %.2f on a learnable problem, want >= 0.8", acc)
	}
	metrics, err := got.Evaluate(test)
	if err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
	if metrics["accuracy"] < 0.8 || metrics["auc"] == 0 {
		t.Fatalf("metrics %v", metrics)
	}
	one, err := got.PredictRow(map[string]string{"x1": "0.9", "x2": "0.9", "color": "blue", "shape": "round"})
	if err != nil || one.Label != "1" || len(one.Proba) != 2 {
		t.Fatalf("PredictRow = %+v, %v; want class 1 with two probabilities", one, err)
	}
	if got.Classes()[0] != "0" || got.Classes()[1] != "1" {
		t.Fatalf("Classes = %v", got.Classes())
	}
}

func TestLoadRefusesWhatIsNotABundle(t *testing.T) {
	t.Parallel()
	good, err := bundle.Marshal(train(t))
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty", "", "not a JSON bundle document"},
		{"garbage", "\x00\x01garbage", "not a JSON bundle document"},
		{"array", "[1,2]", "not a JSON bundle document"},
		{"other format", `{"format":"gyre.model/v1"}`, `format "gyre.model/v1"`},
		{"no features", `{"format":"gyre.bundle/v1","model":{}}`, "no feature set"},
		{"no model", `{"format":"gyre.bundle/v1","features":{"columns":[]}}`, "no model"},
		{"bad model", `{"format":"gyre.bundle/v1","features":{"columns":[]},"model":{"format":"x"}}`, "model"},
		{"tampered model", strings.Replace(string(good), `"trees":20`, `"trees":21`, 1), "checksum"},
		{"feature set of another model", strings.Replace(string(good), `"name":"x2"`, `"name":"x3"`, 1), `"x2"`},
		{"unknown transform", strings.Replace(string(good), `"transform":"identity"`, `"transform":"magic"`, 1), "unknown transform"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := bundle.Load(strings.NewReader(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tt.want)
			}
			var be *bundle.Error
			if !errors.As(err, &be) || !be.Permanent() {
				t.Fatalf("error %T is not a permanent *bundle.Error", err)
			}
		})
	}
}

func TestPredictNamesTheBadCell(t *testing.T) {
	t.Parallel()
	b := train(t)
	_, err := b.PredictRecords([]map[string]string{{"x1": "0.5", "x2": "zero", "color": "red", "shape": "round"}})
	if err == nil || !strings.Contains(err.Error(), `record 1`) || !strings.Contains(err.Error(), `"x2"`) {
		t.Fatalf("PredictRecords = %v, want an error naming record 1 and column x2", err)
	}
	if _, err := b.PredictTable(readTable(t, []byte("x1,color\n1,red\n"))); err == nil || !strings.Contains(err.Error(), "x2") {
		t.Fatalf("PredictTable without column x2 = %v, want an error naming it", err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"format":"gyre.bundle/v1","features":{"label":"y","task":"classification","columns":[{"name":"a","transform":"onehot"}]},"model":{}}`))
	f.Add([]byte(`{"format":"gyre.bundle/v1","features":null,"model":null}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := bundle.Unmarshal(data)
		if err == nil && b.Model == nil {
			t.Fatal("Unmarshal returned a bundle without a model")
		}
	})
}

func TestReferenceSummarisesRawColumns(t *testing.T) {
	t.Parallel()
	b := train(t)
	w1, w2 := readTable(t, batch(3, 100)), readTable(t, []byte("x1,x2,color,shape,class\n,0.5,,round,1\n"))
	ref, err := bundle.NewReference("toy", "req-1", []string{"b1", "b2"}, b.Features, w1, w2)
	if err != nil {
		t.Fatalf("NewReference: %v", err)
	}
	data, err := bundle.MarshalReference(ref)
	if err != nil {
		t.Fatalf("MarshalReference: %v", err)
	}
	got, err := bundle.UnmarshalReference(data)
	if err != nil {
		t.Fatalf("UnmarshalReference: %v", err)
	}
	x1, color := got.Features["x1"], got.Features["color"]
	if got.Rows != 101 || x1.Kind != "numeric" || x1.Rows != 100 || x1.Missing != 1 || x1.Min < 0 || x1.Max > 1 {
		t.Fatalf("x1 reference %+v (rows %d)", x1, got.Rows)
	}
	if color.Kind != "categorical" || len(color.Categories) != 3 || color.Missing != 1 {
		t.Fatalf("color reference %+v", color)
	}
	if got.LabelReference == nil || got.LabelReference.Kind != "categorical" || got.FeatureSetVersion != b.Features.Version {
		t.Fatalf("label reference %+v, version %q", got.LabelReference, got.FeatureSetVersion)
	}
	if _, err := bundle.UnmarshalReference([]byte(`{"format":"gyre.reference/v1","features":{"a":{"kind":"numeric","rows":0}}}`)); err == nil {
		t.Fatal("UnmarshalReference accepted an invalid column reference")
	}
	if k := bundle.ReferenceKey("toy", "r"); k != "toy/r.reference.json" || bundle.Key("toy", "r") != "toy/r.bundle" {
		t.Fatalf("keys %q %q", k, bundle.Key("toy", "r"))
	}
}
