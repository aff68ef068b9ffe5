package validation_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/validation"
)

// learnSpec learns the schema from the first %d batches, at most 4
// categories per column.
const learnSpec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: class
    maxRowErrors: 5
    maxMissingShare: 0.9
    inferSchema: {batches: %d, maxCategories: 4}
  model: {algorithm: logreg}
`

func storedSchema(t *testing.T, r *servicetest.Running, p string) validation.Schema {
	t.Helper()
	s, _, found, err := store.GetJSON[validation.Schema](context.Background(), r.Buckets.State, store.SchemaKey(p))
	if err != nil || !found {
		t.Fatalf("schema of %s: found %v, %v", p, found, err)
	}
	return s
}

func column(t *testing.T, s validation.Schema, name string) pipeline.Column {
	t.Helper()
	for _, c := range s.Columns {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no column %s in %+v", name, s.Columns)
	return pipeline.Column{}
}

func anomaliesOf(as []*gyrev1.Anomaly) []anomaly {
	var out []anomaly
	for _, a := range as {
		out = append(out, anomaly{a.GetKind(), a.GetColumn(), a.GetReason()})
	}
	return out
}

func num(c pipeline.Column) string {
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("%s [%s, %s] presence %s", c.Type, f(c.Min), f(c.Max), f(c.MinPresence))
}

// TestSchemaLearnedOverBatches: with inferSchema {batches: 3}, the schema
// is learned from the first three validated batches — an int column
// widens to float, min/max and categories grow, presence is the lowest
// seen, a column with more distinct values than maxCategories gets no
// categories — then holds still: a fourth batch is checked against it
// (values outside the learned categories, presence below the learned one
// and a shift of the category shares are warnings; a value far beyond the
// learned max is not checked) and does not widen it; a type change
// rejects. Frozen, its domains quarantine rows, and it is not widened
// even when inferSchema.batches is raised.
func TestSchemaLearnedOverBatches(t *testing.T) {
	t.Parallel()
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	})
	ctx := context.Background()
	r.Apply(t, fmt.Sprintf(learnSpec, "learn", 3))
	const header = "n,x,color,tag,class\n"
	batches := []string{
		"1,0.5,red,t1,0\n2,,green,t2,1\n3,0.25,red,t3,0\n4,0.75,green,t4,1\n",
		"2.5,0.5,blue,t5,1\n6,1.5,red,t1,0\n",
		"0,,red,t2,0\n5,,green,t3,1\n3,0.5,red,t4,0\n3,0.5,red,t4,1\n",
	}
	for i, rows := range batches {
		receive(t, r, "learn", fmt.Sprintf("b%d", i+1), header+rows)
		v := validated(t, r, "learn", i+1)[i]
		if !v.GetChecksPassed() || len(v.GetAnomalies()) != 0 || v.GetRowsQuarantined() != 0 {
			t.Fatalf("b%d, in the learning window: checks passed %v, anomalies %v, quarantined %d", i+1, v.GetChecksPassed(), v.GetAnomalies(), v.GetRowsQuarantined())
		}
		s := storedSchema(t, r, "learn")
		if s.Learned != i+1 || s.Frozen != nil {
			t.Fatalf("after b%d: learned from %d, frozen %v", i+1, s.Learned, s.Frozen)
		}
		if i == 0 {
			if c := column(t, s, "n"); num(c) != "int [1, 4] presence 1" {
				t.Errorf("after b1: n %s", num(c))
			}
			if c := column(t, s, "tag"); !slices.Equal(c.Categories, []string{"t1", "t2", "t3", "t4"}) {
				t.Errorf("after b1: tag categories %v", c.Categories)
			}
		}
	}
	s := storedSchema(t, r, "learn")
	if !slices.Equal(s.LearnedFrom, []string{"b1", "b2", "b3"}) || s.Source != validation.SourceInferred {
		t.Errorf("learned from %v, source %s", s.LearnedFrom, s.Source)
	}
	for name, want := range map[string]string{"n": "float [0, 6] presence 1", "x": "float [0.25, 1.5] presence 0.5"} {
		if got := num(column(t, s, name)); got != want {
			t.Errorf("learned %s: %s, want %s", name, got, want)
		}
	}
	if c := column(t, s, "color"); c.Type != "category" || !slices.Equal(c.Categories, []string{"blue", "green", "red"}) {
		t.Errorf("learned color %+v", c)
	}
	if c := column(t, s, "class"); c.Type != "category" || !slices.Equal(c.Categories, []string{"0", "1"}) {
		t.Errorf("learned class %+v", c)
	}
	if c := column(t, s, "tag"); c.Type != "category" || c.Categories != nil || !s.Reference["tag"].Overflow {
		t.Errorf("tag, with more than maxCategories values: %+v, reference %+v", c, s.Reference["tag"])
	}
	if ref := s.Reference["color"]; ref.Total != 10 || ref.Counts["red"] != 6 || ref.Counts["green"] != 3 || ref.Counts["blue"] != 1 {
		t.Errorf("reference of color %+v", ref)
	}

	// Learned: checked against, not widened.
	receive(t, r, "learn", "b4", header+"100,0.5,purple,t9,0\n1,,red,t1,1\n2,,red,t1,0\n3,,red,t2,1\n")
	v := validated(t, r, "learn", 4)[3]
	want := []anomaly{
		{"low_presence", "x", `column "x" has a value in 25% of the rows (1 of 4), below its learned minPresence 50%; a warning, the batch goes on`},
		{"out_of_domain", "color", `1 value of "color" is not among the learned categories blue, green, red: "purple" (1); ` +
			`a warning: learned categories hold rows back only once the schema is frozen (gyre schema freeze)`},
		{"category_shift", "color", `the shares of the values of "color" moved by 0.3 from the reference learned from 3 batches ` +
			`(L-infinity distance, above maxShareShift 0.2): "green" is 0% of this batch, 30% of the reference; a warning, the batch goes on`},
	}
	if got := anomaliesOf(v.GetAnomalies()); !slices.Equal(got, want) || v.GetRows() != 4 || v.GetRowsQuarantined() != 0 {
		t.Errorf("b4: %d rows passed on, %d quarantined, anomalies\n got %q\nwant %q", v.GetRows(), v.GetRowsQuarantined(), got, want)
	}
	if again := storedSchema(t, r, "learn"); again.Learned != 3 || num(column(t, again, "n")) != "float [0, 6] presence 1" ||
		len(column(t, again, "color").Categories) != 3 {
		t.Errorf("b4 widened the learned schema: %+v", again)
	}
	receive(t, r, "learn", "b5", header+"low,0.5,red,t1,0\nhigh,0.5,red,t1,1\n")
	rj := rejected(t, r, "learn", 1)[0]
	if got := anomaliesOf(rj.GetAnomalies()); len(got) != 1 || got[0] != (anomaly{"type_change", "n",
		`column "n" is float in the schema but category in this batch (2 of 2 values are not float); the batch is rejected`}) {
		t.Errorf("b5: anomalies %q", got)
	}

	// Frozen: enforced as a declared schema, never widened.
	view, already, err := validation.FreezeSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "learn", validation.Freeze{By: "ana@host", Identity: "admin"})
	if err != nil || already || view.State != validation.StateFrozen || view.Frozen.By != "ana@host" || view.Frozen.Learned != 3 || view.Frozen.PipelineRevision == 0 {
		t.Fatalf("freeze: %+v, already %v, %v", view, already, err)
	}
	if _, already, err := validation.FreezeSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "learn", validation.Freeze{By: "bob@host"}); err != nil || !already {
		t.Errorf("freezing again: already %v, %v", already, err)
	}
	if s := storedSchema(t, r, "learn"); s.Frozen == nil || s.Frozen.By != "ana@host" || s.Frozen.Identity != "admin" || s.Frozen.At.IsZero() {
		t.Errorf("stored freeze %+v", s.Frozen)
	}
	r.Apply(t, fmt.Sprintf(learnSpec, "learn", 10))
	receive(t, r, "learn", "b6", header+"100,0.5,purple,t1,0\n1,0.5,red,t1,1\n2,0.5,red,t2,0\n3,0.5,green,t2,1\n")
	v = validated(t, r, "learn", 5)[4]
	want = []anomaly{
		{"out_of_domain", "n", `1 value of "n" is outside the frozen range [0, 6] (highest 100); the row holding it is quarantined`},
		{"out_of_domain", "color", `1 value of "color" is not among the frozen categories blue, green, red: "purple" (1); the row holding it is quarantined`},
	}
	if got := anomaliesOf(v.GetAnomalies()); !slices.Equal(got, want) || v.GetRows() != 3 || v.GetRowsQuarantined() != 1 {
		t.Errorf("b6: %d rows passed on, %d quarantined, anomalies\n got %q\nwant %q", v.GetRows(), v.GetRowsQuarantined(), got, want)
	}
	var reasons []string
	for _, q := range v.GetQuarantineReasons() {
		reasons = append(reasons, q.GetMessage())
	}
	if !slices.Equal(reasons, []string{"value 100 is above max 6", `value "purple" is not one of the categories blue, green, red`}) {
		t.Errorf("b6: quarantine reasons %q", reasons)
	}
	if s := storedSchema(t, r, "learn"); s.Learned != 3 || s.Frozen == nil {
		t.Errorf("the frozen schema was widened after inferSchema.batches was raised: learned from %d", s.Learned)
	}
	view, err = validation.ShowSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "learn")
	if err != nil || view.State != validation.StateFrozen || view.LearnBatches != 10 || len(view.Schema) != 5 || view.Frozen == nil {
		t.Errorf("show: %+v, %v", view, err)
	}

	// A spec that declares its schema drops the frozen one.
	r.Apply(t, strings.Replace(fmt.Sprintf(learnSpec, "learn", 3), "    label: class\n", "    label: class\n    schema: [{name: class, type: category}]\n", 1))
	looptest.WaitFor(t, "the frozen schema to be dropped", servicetest.WaitTimeout, func() bool {
		_, _, found, err := store.GetJSON[validation.Schema](ctx, r.Buckets.State, store.SchemaKey("learn"))
		return err == nil && !found
	})
	_, _, err = validation.FreezeSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "learn", validation.Freeze{By: "ana@host"})
	var fe *validation.FreezeError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "declares its schema") {
		t.Errorf("freezing a declared schema: %v", err)
	}
}

// TestRaisingBatchesReopensLearning: a learned schema that is not frozen
// learns again when inferSchema.batches is raised; nothing is learned
// before a batch is valid, and freezing it then is refused.
func TestRaisingBatchesReopensLearning(t *testing.T) {
	t.Parallel()
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	})
	ctx := context.Background()
	r.Apply(t, fmt.Sprintf(learnSpec, "reopen", 1))
	_, _, err := validation.FreezeSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "reopen", validation.Freeze{By: "ana@host"})
	if !strings.Contains(fmt.Sprint(err), "nothing to freeze: no schema of reopen has been learned yet (it is learned from its first 1 validated batches") {
		t.Errorf("freezing nothing: %v", err)
	}
	if view, err := validation.ShowSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "reopen"); err != nil || view.State != validation.StateNone || len(view.Schema) != 0 {
		t.Errorf("show before any batch: %+v, %v", view, err)
	}
	receive(t, r, "reopen", "b1", "color,class\nred,0\ngreen,1\n")
	validated(t, r, "reopen", 1)
	receive(t, r, "reopen", "b2", "color,class\nblue,0\ngreen,1\n")
	if v := validated(t, r, "reopen", 2)[1]; len(v.GetAnomalies()) != 2 || v.GetAnomalies()[0].GetKind() != validation.AnomalyOutOfDomain ||
		v.GetAnomalies()[1].GetKind() != validation.AnomalyCategoryShift {
		t.Errorf("b2 against the schema learned from b1: %v", v.GetAnomalies())
	}
	r.Apply(t, fmt.Sprintf(learnSpec, "reopen", 3))
	receive(t, r, "reopen", "b3", "color,class\nblue,0\ngreen,1\n")
	if v := validated(t, r, "reopen", 3)[2]; len(v.GetAnomalies()) != 0 {
		t.Errorf("b3, learning again: %v", v.GetAnomalies())
	}
	if s := storedSchema(t, r, "reopen"); s.Learned != 2 || !slices.Equal(column(t, s, "color").Categories, []string{"blue", "green", "red"}) {
		t.Errorf("after b3: learned from %v, color %v", s.LearnedFrom, column(t, s, "color").Categories)
	}
	view, err := validation.ShowSchema(ctx, r.Buckets.Pipelines, r.Buckets.State, "reopen")
	if err != nil || view.State != validation.StateLearning || view.Learned != 2 || view.LearnBatches != 3 {
		t.Errorf("show: %+v, %v", view, err)
	}
}

// TestReplicasLearnOnce: two replicas validating batches at once learn
// the schema from exactly inferSchema.batches of them, each once.
func TestReplicasLearnOnce(t *testing.T) {
	t.Parallel()
	build := func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	}
	r := servicetest.Start(t, build, build)
	r.Apply(t, fmt.Sprintf(learnSpec, "twice", 4))
	for i := range 8 {
		receive(t, r, "twice", fmt.Sprintf("b%d", i), fmt.Sprintf("n,color,class\n%d,red,0\n%d,green,1\n", i, i+1))
	}
	validated(t, r, "twice", 8)
	s := storedSchema(t, r, "twice")
	learned := slices.Clone(s.LearnedFrom)
	slices.Sort(learned)
	if s.Learned != 4 || len(slices.Compact(learned)) != 4 || s.Reference["color"].Total != 8 {
		t.Errorf("learned from %d batches %v, color counted %d times; want 4 distinct batches, 8 values", s.Learned, s.LearnedFrom, s.Reference["color"].Total)
	}
}

// TestLegacySchemaRecord: a schema stored as a bare list of columns, as
// validators before learning did, reads as one learned from one batch.
func TestLegacySchemaRecord(t *testing.T) {
	t.Parallel()
	var s validation.Schema
	if err := s.UnmarshalJSON([]byte(`[{"name":"n","type":"int"},{"name":"class","type":"category"}]`)); err != nil {
		t.Fatal(err)
	}
	if s.Source != validation.SourceInferred || s.Learned != 1 || len(s.Columns) != 2 || s.Columns[0].Type != "int" {
		t.Errorf("legacy record read as %+v", s)
	}
}
