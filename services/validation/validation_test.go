package validation_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/validation"
)

// TestSkeletonRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestSkeletonRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	}, events.ServiceConsumers()[validation.Name])
}

const elecSpec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p1}
spec:
  dataset:
    label: class
    schema:
      - {name: x, type: float, min: 0, max: 1, required: true}
      - {name: d, type: float, required: true}
      - {name: class, type: category, categories: ["0", "1"], required: true}
    rules: ["row.d >= 0.0"]
  model: {algorithm: logreg}
`

const inferredSpec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p2}
spec:
  dataset: {label: class}
  model: {algorithm: logreg}
`

func startValidation(t *testing.T) *servicetest.Running {
	t.Helper()
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	})
	r.Apply(t, elecSpec)
	r.Apply(t, inferredSpec)
	return r
}

// receive stores a batch as ingest does and publishes its data.batch.received.
func receive(t *testing.T, r *servicetest.Running, pipeline, batchID, csv string) *gyrev1.ObjectRef {
	t.Helper()
	sum := sha256.Sum256([]byte(csv))
	digest := hex.EncodeToString(sum[:])
	ref, _, err := store.PutObject(context.Background(), r.Buckets.Batches, pipeline+"/"+digest+".csv", "text/csv", []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	r.Publish(t, pipeline, &gyrev1.DataBatchReceived{
		Pipeline: pipeline, BatchId: batchID, Object: ref, Sha256: digest, Format: "csv", Bytes: int64(len(csv)),
	})
	return ref
}

func validated(t *testing.T, r *servicetest.Running, pipeline string, n int) []*gyrev1.DataBatchValidated {
	t.Helper()
	var out []*gyrev1.DataBatchValidated
	for _, ev := range r.WaitEvents(t, pipeline, events.DataBatchValidated, n) {
		var m gyrev1.DataBatchValidated
		if err := events.Decode(ev, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, &m)
	}
	return out
}

func rejected(t *testing.T, r *servicetest.Running, pipeline string, n int) []*gyrev1.DataBatchRejected {
	t.Helper()
	var out []*gyrev1.DataBatchRejected
	for _, ev := range r.WaitEvents(t, pipeline, events.DataBatchRejected, n) {
		var m gyrev1.DataBatchRejected
		if err := events.Decode(ev, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, &m)
	}
	return out
}

// TestValidatedHappyPath: a good batch is validated with stats and checks,
// appended to the validated-batch log, and announced with its lineage.
func TestValidatedHappyPath(t *testing.T) {
	t.Parallel()
	r := startValidation(t)
	ref := receive(t, r, "p1", "b1", "x,d,class\n0.1,5,1\n0.2,6,0\n0.3,7,1\n")
	evs := r.WaitEvents(t, "p1", events.DataBatchValidated, 1)
	got := validated(t, r, "p1", 1)[0]
	if got.BatchId != "b1" || got.Rows != 3 || !got.ChecksPassed || !got.Labelled || got.LabelColumn != "class" ||
		got.SchemaInferred || got.Object.GetKey() != ref.Key || len(got.Columns) != 3 || got.PipelineRevision == 0 {
		t.Errorf("data.batch.validated = %v", got)
	}
	if c := got.Columns[0]; c.Name != "x" || c.Count != 3 || c.Max != 0.3 || c.Histogram == nil {
		t.Errorf("x stats = %v", c)
	}
	names := map[string]bool{}
	for _, c := range got.Checks {
		names[c.Name] = c.Passed
	}
	for _, n := range []string{"label:class", "required:x", "type:x", "range:x", "category:class", "missing:d", "rule:row.d >= 0.0"} {
		if passed, ok := names[n]; !ok || !passed {
			t.Errorf("check %s: present %v, passed %v (checks %v)", n, ok, passed, names)
		}
	}
	received := r.Events(t, "p1", events.DataBatchReceived)[0]
	if c := bus.Ext(evs[0], bus.ExtCausationID); c != received.ID() {
		t.Errorf("causationid = %q, want %q", c, received.ID())
	}
	log, err := store.ValidatedBatches(context.Background(), r.Buckets.State, "p1")
	if err != nil || len(log) != 1 || log[0].BatchID != "b1" || log[0].Seq != 1 || log[0].EventID != evs[0].ID() || log[0].Sha256 != ref.Sha256 {
		t.Errorf("validated-batch log = %+v, %v", log, err)
	}
}

// TestRejections: each bad batch is rejected with a reason naming column and
// row, recorded, and kept out of the validated-batch log; a good batch after
// them still flows.
func TestRejections(t *testing.T) {
	t.Parallel()
	r := startValidation(t)
	receive(t, r, "p1", "good-1", "x,d,class\n0.1,5,1\n")
	validated(t, r, "p1", 1)

	tests := []struct {
		batch string
		csv   string
		want  reason
	}{
		{"wrong-type", "x,d,class\n0.1,5,1\nabc,5,0\n", reason{Column: "x", Row: 2, Rule: "type", Value: "abc", Message: `value "abc" is not a float`}},
		{"nan", "x,d,class\nNaN,5,1\n", reason{Column: "x", Row: 1, Rule: "type", Value: "NaN", Message: "not a finite number"}},
		{"inf", "x,d,class\n0.5,Inf,1\n", reason{Column: "d", Row: 1, Rule: "type", Value: "Inf", Message: "not a finite number"}},
		{"rule", "x,d,class\n0.1,5,1\n0.1,5,0\n0.1,-2,1\n", reason{Row: 3, Rule: "rule:row.d >= 0.0", Message: "does not hold"}},
		{"range", "x,d,class\n1.1,5,1\n", reason{Column: "x", Row: 1, Rule: "range", Value: "1.1", Message: "above max 1"}},
		{"category", "x,d,class\n0.1,5,7\n", reason{Column: "class", Row: 1, Rule: "category", Value: "7", Message: "not one of the categories"}},
		{"no-label", "x,d\n0.1,5\n", reason{Column: "class", Rule: "label", Message: `the label column "class" is not in the batch`}},
		{"malformed", "x,d,class\n0.1,5,1\n0.1\n", reason{Row: 2, Rule: "format", Message: "wrong number of fields"}},
	}
	for _, tt := range tests {
		receive(t, r, "p1", tt.batch, tt.csv)
	}
	got := rejected(t, r, "p1", len(tests))
	for i, tt := range tests {
		rj := got[i]
		if rj.BatchId != tt.batch || len(rj.Reasons) == 0 || rj.ReasonsTotal < 1 || rj.Quarantine.GetKey() == "" {
			t.Errorf("%s: rejected = %v", tt.batch, rj)
			continue
		}
		if !tt.want.matches(rj.Reasons[0]) {
			t.Errorf("%s: first reason %v, want %+v", tt.batch, rj.Reasons[0], tt.want)
		}
		rec, _, found, err := store.GetJSON[validation.Rejection](context.Background(), r.Buckets.State, store.RejectedKey("p1", tt.batch))
		if err != nil || !found || rec.ReasonsTotal != int(rj.ReasonsTotal) || rec.ObjectKey != rj.Object.GetKey() {
			t.Errorf("%s: rejected record = %+v, %v, %v", tt.batch, rec, found, err)
		}
	}
	receive(t, r, "p1", "good-2", "x,d,class\n0.9,1,0\n")
	if v := validated(t, r, "p1", 2); v[1].BatchId != "good-2" {
		t.Errorf("second validated batch = %s", v[1].BatchId)
	}
	log, err := store.ValidatedBatches(context.Background(), r.Buckets.State, "p1")
	if err != nil || len(log) != 2 || log[0].BatchID != "good-1" || log[1].BatchID != "good-2" || log[1].Seq != 2 {
		t.Errorf("validated-batch log = %+v, %v; want only the good batches", log, err)
	}
}

// TestUnprocessableGoesToDLQ: what cannot be validated at all (an unknown
// pipeline, a missing object) is dead-lettered with the reason, and the
// service goes on.
func TestUnprocessableGoesToDLQ(t *testing.T) {
	t.Parallel()
	r := startValidation(t)
	r.Publish(t, "nope", &gyrev1.DataBatchReceived{Pipeline: "nope", BatchId: "b", Format: "csv",
		Object: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: "nope/x.csv"}})
	r.Publish(t, "p1", &gyrev1.DataBatchReceived{Pipeline: "p1", BatchId: "b", Format: "csv",
		Object: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: "p1/missing.csv"}})
	dead := r.WaitDeadLetters(t, validation.Name, 2)
	for i, want := range []string{`pipeline "nope"`, "object gyre-batches/p1/missing.csv not found"} {
		if reason := dead[i].Header.Get(bus.HeaderDLQReason); !strings.Contains(reason, want) {
			t.Errorf("dead letter %d: reason %q lacks %q", i, reason, want)
		}
	}
	receive(t, r, "p1", "good", "x,d,class\n0.1,5,1\n")
	validated(t, r, "p1", 1)
}

// TestInferredSchema: without a declared schema, the first valid batch's
// schema is inferred and stored, later batches are held to it, and a spec
// that declares a schema drops it.
func TestInferredSchema(t *testing.T) {
	t.Parallel()
	r := startValidation(t)
	ctx := context.Background()
	receive(t, r, "p2", "first", "n,f,class\n1,0.5,0\n2,1.5,1\n")
	first := validated(t, r, "p2", 1)[0]
	if !first.SchemaInferred || first.Columns[0].Type != "int" || first.Columns[2].Type != "category" {
		t.Errorf("first batch: inferred %v, columns %v", first.SchemaInferred, first.Columns)
	}
	rec, _, found, err := store.GetJSON[validation.Schema](ctx, r.Buckets.State, store.SchemaKey("p2"))
	if s := rec.Columns; err != nil || !found || len(s) != 3 || s[0].Type != "int" || s[1].Type != "float" || s[2].Type != "category" {
		t.Fatalf("stored schema = %+v, %v, %v", rec, found, err)
	}
	// The schema was learned from one batch (the default): an int column
	// whose only value is a fraction changed type.
	receive(t, r, "p2", "second", "n,f,class\n1.5,0.5,0\n")
	rj := rejected(t, r, "p2", 1)[0]
	if len(rj.Reasons) != 2 || !(reason{Column: "n", Rule: "type_change", Message: "is int in the schema but float"}).matches(rj.Reasons[0]) ||
		!(reason{Column: "n", Row: 1, Rule: "type", Value: "1.5", Message: "not an int"}).matches(rj.Reasons[1]) {
		t.Errorf("second batch: %v", rj.Reasons)
	}
	receive(t, r, "p2", "third", "n,f,class\n3,2.5,1\n")
	if v := validated(t, r, "p2", 2)[1]; v.SchemaInferred || v.BatchId != "third" {
		t.Errorf("third batch: %v", v)
	}
	r.Apply(t, strings.Replace(inferredSpec, "dataset: {label: class}", "dataset: {label: class, schema: [{name: n, type: float}, {name: class, type: category}]}", 1))
	deadline := time.Now().Add(servicetest.WaitTimeout)
	for {
		_, _, found, err := store.GetJSON[validation.Schema](ctx, r.Buckets.State, store.SchemaKey("p2"))
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the inferred schema was not dropped after a spec declaring one")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicasKeepArrivalOrder: two validation replicas share the
// batches of a pipeline; the validated-batch log holds every valid one in
// the order they arrived, each with the stream sequence of its
// data.batch.received as its arrival position, and the rejected one
// nowhere.
func TestReplicasKeepArrivalOrder(t *testing.T) {
	t.Parallel()
	build := func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	}
	r := servicetest.Start(t, build, build)
	r.Apply(t, elecSpec)
	ctx := context.Background()
	stream, err := r.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	arrival := map[string]uint64{}
	for i := range 8 {
		id, csv := fmt.Sprintf("b%d", i), fmt.Sprintf("x,d,class\n0.%d,5,1\n0.5,%d,0\n", i+1, i)
		if i == 3 {
			csv = "x,d,class\n7,5,1\n" // x over its max: rejected
		} else {
			want = append(want, id)
		}
		receive(t, r, "p1", id, csv)
		last, err := stream.GetLastMsgForSubject(ctx, "gyre.ev.p1.data.batch.received")
		if err != nil {
			t.Fatal(err)
		}
		arrival[id] = last.Sequence
	}
	validated(t, r, "p1", len(want))
	rejected(t, r, "p1", 1)
	log, err := store.ValidatedBatches(ctx, r.Buckets.State, "p1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, e := range log {
		got = append(got, e.BatchID)
		if e.Seq != int64(i+1) || e.ArrivalSeq != arrival[e.BatchID] {
			t.Errorf("%s: seq %d, arrival %d; want seq %d, arrival %d", e.BatchID, e.Seq, e.ArrivalSeq, i+1, arrival[e.BatchID])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("log %v, want %v", got, want)
	}
}
