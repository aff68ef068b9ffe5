package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/feature"
	"github.com/gyrehq/gyre/services/ingest"
	"github.com/gyrehq/gyre/services/trainer"
	"github.com/gyrehq/gyre/services/validation"
)

// dataLoop runs the loop from ingest to training — ingest, validation,
// feature, trainer — on a test server of its own.
func dataLoop(t *testing.T) *servicetest.Running {
	t.Helper()
	return servicetest.Start(t,
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := ingest.DefaultConfig()
			cfg.NATSURL = url
			return ingest.New(cfg, deps)
		},
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := validation.DefaultConfig()
			cfg.NATSURL = url
			return validation.New(cfg, deps)
		},
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := feature.DefaultConfig()
			cfg.NATSURL = url
			return feature.New(cfg, deps)
		},
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := trainer.DefaultConfig()
			cfg.NATSURL, cfg.Worker = url, "data"
			return trainer.New(cfg, deps)
		})
}

// ingestBatch writes csv to a file and runs `gyre ingest`.
func ingestBatch(t *testing.T, r *servicetest.Running, p, batchID string, csv []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), batchID+".csv")
	if err := os.WriteFile(path, csv, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := execute(t, "ingest", p, path, "--batch-id", batchID, "--nats", r.URL); err != nil {
		t.Fatalf("gyre ingest %s: %v", batchID, err)
	}
}

// replaceRows replaces rows of a CSV batch (1-based data rows).
func replaceRows(csv []byte, rows map[int]string) []byte {
	lines := strings.Split(string(csv), "\n")
	for i, row := range rows {
		lines[i] = row
	}
	return []byte(strings.Join(lines, "\n"))
}

// objectOf reads an object of a bucket.
func objectOf(t *testing.T, objects store.Objects, ref *gyrev1.ObjectRef) []byte {
	t.Helper()
	data, err := store.GetObject(context.Background(), objects, ref.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const quarantineLoopSpec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: quar}
spec:
  dataset:
    label: class
    maxRowErrors: 5
    schema:
      - {name: x1, type: float, min: 0, max: 1}
      - {name: x2, type: float, min: 0, max: 1}
      - {name: color, type: category}
      - {name: class, type: category, categories: ["0", "1"]}
  features:
    - {name: x1, transform: standardize}
    - {name: x2, transform: standardize}
    - {name: color, transform: onehot}
  model: {algorithm: logreg, bootstrapBatches: 1, cooldownBatches: 0}
`

// TestQuarantinedRowsNeverReachTraining is issue #15's case through the
// loop: with maxRowErrors 5, a batch of 400 rows with two rows of an
// impossible class and one far above its max is validated with those
// three quarantined. The features (snapshot and online rows), the training
// that follows (its row counts, its model's classes and fitted
// standardisation) and the drift reference hold the 397 others only; `gyre
// data rejected` lists the three with their reasons.
func TestQuarantinedRowsNeverReachTraining(t *testing.T) {
	t.Parallel()
	r := dataLoop(t)
	r.Apply(t, quarantineLoopSpec)
	ingestBatch(t, r, "quar", "b1", replaceRows(looptest.CSV(1, 400, 0), map[int]string{
		10: "0.5000,0.5000,red,7", 50: "0.2500,0.5000,blue,9", 120: "1000000,0.5000,green,1",
	}))

	var v gyrev1.DataBatchValidated
	looptest.Decode(t, r.WaitEvents(t, "quar", events.DataBatchValidated, 1)[0], &v)
	if v.GetRowsIn() != 400 || v.GetRowsQuarantined() != 3 || v.GetRows() != 397 {
		t.Fatalf("data.batch.validated: rowsIn %d, rowsQuarantined %d, rows %d", v.GetRowsIn(), v.GetRowsQuarantined(), v.GetRows())
	}

	var m gyrev1.FeaturesMaterialized
	looptest.Decode(t, r.WaitEvents(t, "quar", events.FeaturesMaterialized, 1)[0], &m)
	if m.GetRows() != 397 || m.GetOnlineRowsWritten() != 397 || m.GetSource().GetKey() != v.GetObject().GetKey() {
		t.Errorf("features.materialized: rows %d, online rows %d, source %s", m.GetRows(), m.GetOnlineRowsWritten(), m.GetSource().GetKey())
	}
	snap, err := table.Read(table.FormatParquet, objectOf(t, r.Buckets.Features, m.GetSnapshot()))
	if err != nil {
		t.Fatal(err)
	}
	if labels := distinct(snap, "class"); snap.Len() != 397 || !slices.Equal(labels, []string{"0", "1"}) {
		t.Errorf("snapshot: %d rows, classes %v", snap.Len(), labels)
	}

	var c gyrev1.TrainingCompleted
	looptest.Decode(t, r.WaitEvents(t, "quar", events.TrainingCompleted, 1)[0], &c)
	if n := c.GetTrainRows() + c.GetTestRows(); n != 397 {
		t.Errorf("training.completed: %d train + %d test rows, want 397", c.GetTrainRows(), c.GetTestRows())
	}
	if got := c.GetSchema().GetClasses(); !slices.Equal(got, []string{"0", "1"}) {
		t.Errorf("the model's classes are %v, want [0 1]", got)
	}
	b, err := bundle.Unmarshal(objectOf(t, r.Buckets.Models, c.GetArtifact()))
	if err != nil {
		t.Fatal(err)
	}
	if x1 := b.Features.Columns[0]; x1.Name != "x1" || x1.Max > 1 || x1.Std > 1 || !slices.Equal(b.Features.Classes, []string{"0", "1"}) {
		t.Errorf("fitted x1 %+v, classes %v: the quarantined rows reached training", x1, b.Features.Classes)
	}
	ref, err := bundle.UnmarshalReference(objectOf(t, r.Buckets.Models, c.GetReference()))
	if err != nil {
		t.Fatal(err)
	}
	if ref.Rows != 397 {
		t.Errorf("the drift reference is of %d rows, want 397", ref.Rows)
	}
	if n := len(r.Events(t, "quar", events.TrainingFailed)); n != 0 {
		t.Errorf("%d training.failed", n)
	}
	t.Logf("rows in %d, quarantined %d, trained on %d+%d, classes %v, x1 max %.4f std %.4f",
		v.GetRowsIn(), v.GetRowsQuarantined(), c.GetTrainRows(), c.GetTestRows(), c.GetSchema().GetClasses(), b.Features.Columns[0].Max, b.Features.Columns[0].Std)

	// gyre data rejected: the batch, then its rows with their reasons.
	nats := "--nats=" + r.URL
	out, _, err := execute(t, "data", "rejected", "quar", nats)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "BATCH") || strings.Join(strings.Fields(lines[1])[:6], " ") != "b1 validated 400 3 - 3" {
		t.Fatalf("gyre data rejected quar:\n%s", out)
	}
	out, _, err = execute(t, "data", "rejected", "quar", "b1", nats)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"batch b1 of quar: validated, 3 of 400 rows quarantined",
		"passed on as:  nats-object://gyre-batches/" + v.GetObject().GetKey(),
		"as received:   nats-object://gyre-batches/" + v.GetReceived().GetKey(),
		`10   class   7        category  value "7" is not one of the categories 0, 1`,
		`50   class   9        category  value "9" is not one of the categories 0, 1`,
		"120  x1      1000000  range     value 1000000 is above max 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("gyre data rejected quar b1 lacks %q:\n%s", want, out)
		}
	}
	out, _, err = execute(t, "data", "rejected", "quar", "b1", "-o", "json", nats)
	var q validation.Quarantine
	if err != nil || json.Unmarshal([]byte(out), &q) != nil || len(q.Reasons) != 3 || q.Reasons[2] != (validation.Reason{
		Row: 120, Column: "x1", Value: "1000000", Check: "range", Reason: "value 1000000 is above max 1"}) {
		t.Errorf("gyre data rejected -o json: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"data", "rejected", "quar", "nope"}, `quarantine of batch "nope" of quar`},
		{[]string{"data", "rejected", "Bad.Name"}, "invalid name"},
		{[]string{"data", "rejected", "quar", "-o", "yaml"}, "want table or json"},
	} {
		if _, _, err := execute(t, append(tt.args, nats)...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("gyre %v = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	if _, errOut, err := execute(t, "data", "rejected", "other", nats); err != nil || !strings.Contains(errOut, "Nothing kept out of other's batches") {
		t.Errorf("gyre data rejected of a pipeline with nothing kept out: %q, %v", errOut, err)
	}
}

// distinct returns the sorted distinct values of a column.
func distinct(tb *table.Table, column string) []string {
	j := tb.Index(column)
	var out []string
	for _, row := range tb.Rows {
		if !slices.Contains(out, row[j]) {
			out = append(out, row[j])
		}
	}
	slices.Sort(out)
	return out
}

// TestUndeclaredColumnIsNotUsed: batch 2 of a pipeline has a column its
// schema — declared, or inferred from batch 1 — does not declare. It is
// validated with a new_column anomaly and passed on without that column,
// so the feature set of every window that starts at it is the schema's:
// every batch is materialized, the training windows that include it
// ([b1 b2], then [b2 b3], where b2 is the oldest) complete, nothing fails
// and nothing is dead-lettered. (Before, the feature set followed b2's
// columns and b3 lacked one: "not a column of the training data".)
func TestUndeclaredColumnIsNotUsed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		dataset string
	}{
		{"declared schema", `    label: class
    schema:
      - {name: x1, type: float}
      - {name: x2, type: float}
      - {name: color, type: category}
      - {name: class, type: category}`},
		{"inferred schema", "    label: class"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := dataLoop(t)
			const p = "newcol"
			// Training is asked for by hand, once the batches it is
			// about are in: bootstrap would race the batches.
			r.Apply(t, fmt.Sprintf("apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: %s}\nspec:\n  dataset:\n%s\n"+
				"  model: {algorithm: logreg, window: {batches: 2}, bootstrapBatches: 100, cooldownBatches: 0}\n", p, tt.dataset))
			withSensor := func(csv []byte) []byte {
				lines := strings.Split(strings.TrimSuffix(string(csv), "\n"), "\n")
				for i := range lines {
					if i == 0 {
						lines[i] = "sensor," + lines[i]
					} else {
						lines[i] = fmt.Sprintf("s%d,%s", i%4, lines[i])
					}
				}
				return []byte(strings.Join(lines, "\n") + "\n")
			}
			trained := 0
			train := func(window string) {
				t.Helper()
				looptest.WaitFor(t, "the scheduler to settle", servicetest.WaitTimeout, func() bool {
					st, _, _, err := store.GetJSON[trainer.SchedulerState](context.Background(), r.Buckets.State, trainer.StateKey(p))
					return err == nil && st.InFlight == nil
				})
				r.Publish(t, p, &gyrev1.TrainingRequested{Pipeline: p, Reason: "manual", RequestedBy: "test"})
				trained++
				var c gyrev1.TrainingCompleted
				looptest.Decode(t, r.WaitEvents(t, p, events.TrainingCompleted, trained)[trained-1], &c)
				if got := strings.Join(c.GetLineage().GetBatchIds(), " "); got != window {
					t.Errorf("training %d on %s, want %s", trained, got, window)
				}
				if slices.ContainsFunc(c.GetSchema().GetFeatures(), func(f string) bool { return strings.HasPrefix(f, "sensor") }) {
					t.Errorf("training on %s used the undeclared column: %v", window, c.GetSchema().GetFeatures())
				}
			}
			for i, id := range []string{"b1", "b2", "b3", "b4"} {
				csv := looptest.CSV(uint64(i+1), 200, 0)
				if id == "b2" {
					csv = withSensor(csv)
				}
				ingestBatch(t, r, p, id, csv)
				r.WaitEvents(t, p, events.FeaturesMaterialized, i+1)
				switch id {
				case "b3":
					train("b1 b2")
				case "b4":
					train("b2 b3")
				}
			}
			var b2 gyrev1.DataBatchValidated
			looptest.Decode(t, r.Events(t, p, events.DataBatchValidated)[1], &b2)
			if a := b2.GetAnomalies(); b2.GetBatchId() != "b2" || len(a) != 1 || a[0].GetColumn() != "sensor" || a[0].GetKind() != validation.AnomalyNewColumn {
				t.Errorf("b2: anomalies %v", a)
			}
			if n := len(r.Events(t, p, events.TrainingFailed)); n != 0 {
				t.Errorf("%d training.failed", n)
			}
			for _, svc := range []string{feature.Name, trainer.Name, validation.Name} {
				if dead := r.DeadLetters(t, svc); len(dead) != 0 {
					t.Errorf("%d dead letters of %s, first: %s", len(dead), svc, dead[0].Header.Get(bus.HeaderDLQReason))
				}
			}
			out, _, err := execute(t, "data", "rejected", p, "b2", "--nats="+r.URL)
			if err != nil || !strings.Contains(out, "validated, 0 of 200 rows quarantined, columns dropped: sensor") ||
				!strings.Contains(out, `anomaly:       new_column sensor: column "sensor" is not declared`) {
				t.Errorf("gyre data rejected %s b2: %v\n%s", p, err, out)
			}
		})
	}
}
