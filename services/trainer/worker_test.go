package trainer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/trainer"
)

// bootstrap seeds n batches and emits data.batch.validated for the last
// one, which (bootstrapBatches: n) requests training on the others.
func bootstrap(t *testing.T, env *looptest.Env, p string, n, rows int) (validatedID string) {
	t.Helper()
	var last store.ValidatedBatch
	for i := 1; i <= n; i++ {
		last = env.AddBatch(p, fmt.Sprintf("b%d", i), looptest.CSV(uint64(i), rows, 0))
	}
	return env.Emit("/gyre/validation", p, &gyrev1.DataBatchValidated{
		Pipeline: p, BatchId: last.BatchID, Object: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: last.ObjectKey},
		Format: last.Format, Rows: last.Rows, ChecksPassed: true, Labelled: true,
	}).ID()
}

// driftDetected and performanceDegraded are triggers as the monitor sends
// them: the payload contract (events/contracts.go) refuses a trigger
// without the measurement that justifies it.
func driftDetected(p string) *gyrev1.DriftDetected {
	return &gyrev1.DriftDetected{Pipeline: p, BatchId: "b-drift", ReferenceModelVersion: 1, Method: "psi", Threshold: 0.2,
		Features:        []*gyrev1.FeatureDrift{{Feature: "x1", Score: 0.5, Threshold: 0.2, Drifted: true, Rows: 20}},
		DriftedFeatures: []string{"x1"}, ShareDrifted: 1, ShareThreshold: 0.5, Rows: 20, ReferenceRows: 40}
}

func performanceDegraded(p string) *gyrev1.PerformanceDegraded {
	return &gyrev1.PerformanceDegraded{Pipeline: p, ModelVersion: 1, Metric: "accuracy", BaselineAccuracy: 0.9,
		LiveAccuracy: 0.6, Drop: 0.9 - 0.6, MaxDrop: 0.1, LabelledRows: 100, Predictions: 100}
}

// completed is a training.completed of a request, as a worker sends it.
func completed(p, requestID string) *gyrev1.TrainingCompleted {
	return &gyrev1.TrainingCompleted{Pipeline: p, RequestId: requestID,
		Artifact: &gyrev1.ObjectRef{Bucket: events.ObjectModels, Key: p + "/" + requestID + ".bundle"}}
}

// TestWorkerTrainsAGBDT: a bootstrap request is trained on the batches in
// the object store; the completion names an artifact that loads and
// predicts, and the reference statistics the monitor will read.
func TestWorkerTrainsAGBDT(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	startTrainer(t, env, "cpu", "w-test")
	const p = "toy"
	env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, params: {trees: 30, maxDepth: 4}, window: {batches: 2}, bootstrapBatches: 3}", ""))
	validatedID := bootstrap(t, env, p, 3, 300)

	completedEv := env.WaitEvents(p, events.TrainingCompleted, 1)[0]
	completed := looptest.Decode(t, completedEv, &gyrev1.TrainingCompleted{})
	reqEv := requests(env, p)[0]
	req := looptest.Decode(t, reqEv, &gyrev1.TrainingRequested{})
	started := looptest.Decode(t, env.WaitEvents(p, events.TrainingStarted, 1)[0], &gyrev1.TrainingStarted{})

	if started.GetAttempt() != 1 || started.GetRows() != 600 || started.GetWorker() != "w-test" || started.GetJobId() != reqEv.ID() {
		t.Fatalf("training.started %+v", started)
	}
	if completed.GetRequestId() != req.GetRequestId() || completed.GetAttempt() != 1 || completed.GetPool() != "cpu" ||
		completed.GetTrainRows() != 600 || completed.GetTestRows() != 0 || completed.GetDurationMs() < 0 {
		t.Fatalf("training.completed %+v", completed)
	}
	if acc := completed.GetMetrics()["trainAccuracy"]; acc < 0.8 {
		t.Fatalf("metrics %v, want trainAccuracy >= 0.8", completed.GetMetrics())
	}
	if got := completed.GetParams().AsMap()["trees"]; got != float64(30) {
		t.Fatalf("params %v, want trees 30 with defaults filled in", completed.GetParams().AsMap())
	}
	schema := completed.GetSchema()
	if !slices.Equal(schema.GetFeatures(), []string{"x1", "x2", "color"}) || schema.GetLabel() != "class" ||
		!slices.Equal(schema.GetClasses(), []string{"0", "1"}) || schema.GetTask() != "classification" {
		t.Fatalf("schema %+v", schema)
	}
	lin := completed.GetLineage()
	if !slices.Equal(lin.GetBatchIds(), []string{"b1", "b2"}) || lin.GetTrainingRequestId() != req.GetRequestId() ||
		lin.GetTrainingJobId() != reqEv.ID() || lin.GetFeatureSetVersion() == "" || lin.GetReason() != trainer.ReasonBootstrap ||
		lin.GetDatasetVersion() != req.GetDatasetVersion() ||
		!slices.Equal(lin.GetEventIds(), []string{validatedID, reqEv.ID(), completedEv.ID()}) {
		t.Fatalf("lineage %+v (validated %s, request %s, completed %s)", lin, validatedID, reqEv.ID(), completedEv.ID())
	}
	if bus.Ext(completedEv, bus.ExtCorrelationID) != validatedID || bus.Ext(completedEv, bus.ExtCausationID) != reqEv.ID() {
		t.Fatalf("completed correlationid %q causationid %q, want %q and %q", bus.Ext(completedEv, bus.ExtCorrelationID),
			bus.Ext(completedEv, bus.ExtCausationID), validatedID, reqEv.ID())
	}

	art := completed.GetArtifact()
	if art.GetBucket() != events.ObjectModels || art.GetKey() != bundle.Key(p, req.GetRequestId()) || art.GetSha256() == "" {
		t.Fatalf("artifact %+v", art)
	}
	b, metrics, err := storedBundle(t, env, art.GetKey())
	if err != nil || metrics["accuracy"] < 0.8 {
		t.Fatalf("the stored bundle scores %v, %v on the next batch", metrics, err)
	}
	if pred, err := b.PredictRow(map[string]string{"x1": "0.1", "x2": "0.1", "color": "red"}); err != nil || pred.Label != "1" {
		t.Fatalf("PredictRow = %+v, %v; want class 1 for red", pred, err)
	}

	refData, err := store.GetObject(env.Ctx(), env.Buckets.Models, completed.GetReference().GetKey())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := bundle.UnmarshalReference(refData)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	if completed.GetReference().GetKey() != bundle.ReferenceKey(p, req.GetRequestId()) || ref.Rows != 600 ||
		ref.Features["x1"].Kind != "numeric" || ref.Features["color"].Kind != "categorical" || ref.FeatureSetVersion != lin.GetFeatureSetVersion() {
		t.Fatalf("reference %s: rows %d, features %v", completed.GetReference().GetKey(), ref.Rows, ref.Features)
	}

	// The request is settled and the job is done.
	env.WaitConsumed(completedConsumer)
	st, _, _, err := store.GetJSON[trainer.SchedulerState](env.Ctx(), env.Buckets.State, trainer.StateKey(p))
	if err != nil || st.InFlight != nil || st.LastOutcome == nil || st.LastOutcome.Status != trainer.StatusCompleted {
		t.Fatalf("scheduler state %+v, %v", st, err)
	}
	rec, _, _, err := store.GetJSON[trainer.JobRecord](env.Ctx(), env.Buckets.State, trainer.JobKey(p, req.GetRequestId()))
	if err != nil || !rec.Done || rec.Attempts != 1 || rec.Status != trainer.StatusCompleted {
		t.Fatalf("job record %+v, %v", rec, err)
	}
	// The worker heartbeats while it runs.
	e, err := env.Buckets.Workers.Get(env.Ctx(), trainer.HeartbeatKey("cpu", "w-test"))
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	var hb trainer.Heartbeat
	if err := json.Unmarshal(e.Value(), &hb); err != nil || hb.Worker != "w-test" || hb.Pool != "cpu" {
		t.Fatalf("heartbeat %s: %v", e.Value(), err)
	}
}

// TestWorkerTrainsAnMLP: the built-in mlp trains through the worker; its
// normalised params (a list among them) travel in training.completed, and
// the stored bundle serves.
func TestWorkerTrainsAnMLP(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	startTrainer(t, env, "cpu", "w-mlp")
	const p = "toy-mlp"
	env.ApplyPipeline(looptest.Spec(p, "{algorithm: mlp, params: {hidden: [16, 8], learningRate: 0.01, epochs: 60}, window: {batches: 2}, bootstrapBatches: 3}", ""))
	bootstrap(t, env, p, 3, 300)
	completed := looptest.Decode(t, env.WaitEvents(p, events.TrainingCompleted, 1)[0], &gyrev1.TrainingCompleted{})
	params := completed.GetParams().AsMap()
	if !slices.Equal(params["hidden"].([]any), []any{16.0, 8.0}) || params["activation"] != "relu" || params["epochs"] != 60.0 {
		t.Fatalf("params %v", params)
	}
	if acc := completed.GetMetrics()["trainAccuracy"]; acc < 0.8 {
		t.Fatalf("metrics %v, want trainAccuracy >= 0.8", completed.GetMetrics())
	}
	if _, metrics, err := storedBundle(t, env, completed.GetArtifact().GetKey()); err != nil || metrics["accuracy"] < 0.8 {
		t.Fatalf("the stored mlp scores %v, %v on the next batch", metrics, err)
	}
}

// TestTrainingFailures: what the spec or the data makes impossible fails
// for good with training.failed (and settles the request); nothing is
// faked and nothing is retried.
func TestTrainingFailures(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	startTrainer(t, env, "cpu", "w-fail")
	tests := []struct {
		name  string
		model string
		data  func(p string)
		want  string
	}{
		{"mlp params", `{algorithm: mlp, params: {hidden: "64,x"}, bootstrapBatches: 2}`, nil, `mlp param "hidden"`},
		{"command", "{algorithm: command, command: [train.sh], bootstrapBatches: 2}", nil, "give it the onehot transform"},
		{"bad params", "{algorithm: gbdt, params: {trees: 0}, bootstrapBatches: 2}", nil, "trees"},
		{"constant label", "{algorithm: gbdt, bootstrapBatches: 2}", func(p string) {
			env.AddBatch(p, "b1", []byte("x1,x2,color,class\n0.1,0.2,red,1\n0.3,0.4,blue,1\n"))
		}, "label is constant"},
		{"missing object", "{algorithm: gbdt, bootstrapBatches: 2}", func(p string) {
			env.AddBatch(p, "b1", looptest.CSV(1, 10, 0))
			if err := env.Buckets.Batches.Delete(env.Ctx(), p+"/b1.csv"); err != nil {
				t.Fatal(err)
			}
		}, "not found"},
	}
	// One after the other, not in parallel: against a shared server
	// (NATS_URL) this test holds natstest's lock until its subtests end,
	// and parallel subtests would wait for parallel slots that other tests,
	// waiting for that lock, can hold: a deadlock on a two-core machine.
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fmt.Sprintf("fail-%d", i)
			env.ApplyPipeline(looptest.Spec(p, tt.model, ""))
			if tt.data != nil {
				tt.data(p)
			} else {
				env.AddBatch(p, "b1", looptest.CSV(1, 50, 0))
			}
			last := env.AddBatch(p, "b2", looptest.CSV(2, 50, 0))
			env.Emit("/gyre/validation", p, &gyrev1.DataBatchValidated{Pipeline: p, BatchId: last.BatchID, Format: "csv",
				Object: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: last.ObjectKey}})
			failed := looptest.Decode(t, env.WaitEvents(p, events.TrainingFailed, 1)[0], &gyrev1.TrainingFailed{})
			if failed.GetRetryable() || !strings.Contains(failed.GetError(), tt.want) || failed.GetAttempt() != 1 {
				t.Fatalf("training.failed %+v, want a final failure saying %q", failed, tt.want)
			}
			env.WaitConsumed(failedConsumer)
			if n := len(env.Events(p, events.TrainingCompleted)); n != 0 {
				t.Fatalf("%d completions", n)
			}
			st, _, _, err := store.GetJSON[trainer.SchedulerState](env.Ctx(), env.Buckets.State, trainer.StateKey(p))
			if err != nil || st.InFlight != nil || st.LastOutcome == nil || st.LastOutcome.Status != trainer.StatusFailed {
				t.Fatalf("scheduler state %+v, %v", st, err)
			}
		})
	}
}

// envHelperNATS makes the test binary run TestHelperWorker as a trainer
// process against that server, for TestKilledWorkerJobIsRedelivered.
const envHelperNATS = "GYRE_TEST_TRAINER_NATS"

// TestHelperWorker is not a test: it is the trainer process that
// TestKilledWorkerJobIsRedelivered kills.
func TestHelperWorker(t *testing.T) {
	url := os.Getenv(envHelperNATS)
	if url == "" {
		t.Skip("run by TestKilledWorkerJobIsRedelivered")
	}
	cfg := trainer.DefaultConfig()
	cfg.NATSURL = url
	cfg.Worker = "doomed"
	proc, err := service.Connect(context.Background(), cfg.Config, "doomed", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := trainer.New(cfg, proc.Deps)
	if err != nil {
		t.Fatal(err)
	}
	_ = svc.Run(context.Background()) // until killed
}

// TestKilledWorkerJobIsRedelivered: a worker process killed (SIGKILL) in
// the middle of training leaves its job unacknowledged; the server
// redelivers it after the ack wait to another worker, which trains it
// again: one completion, one artifact.
func TestKilledWorkerJobIsRedelivered(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the job consumer's ack wait (30s)")
	}
	t.Parallel()
	srv := natstest.Start(t)
	env := looptest.Connect(t, srv)
	const p = "crash"
	// Enough trees that training is still running when the worker dies.
	env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, params: {trees: 1500, maxDepth: 8, maxLeaves: 128}, window: {batches: 2}, bootstrapBatches: 3}", ""))

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$")
	cmd.Env = append(os.Environ(), envHelperNATS+"="+srv.URL)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The helper provisions its consumers when it starts.
	waitFor(t, func() bool {
		_, err := env.JS.Consumer(env.Ctx(), events.StreamJobs, events.JobConsumer("cpu").Durable())
		return err == nil
	})
	bootstrap(t, env, p, 3, 3000)
	started := looptest.Decode(t, env.WaitEvents(p, events.TrainingStarted, 1)[0], &gyrev1.TrainingStarted{})
	if started.GetWorker() != "doomed" {
		t.Fatalf("started by %q", started.GetWorker())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if n := len(env.Events(p, events.TrainingCompleted)); n != 0 {
		t.Fatalf("training completed before the kill (%d); make it longer", n)
	}

	startTrainer(t, env, "cpu", "survivor")
	completed := looptest.Decode(t, env.WaitEvents(p, events.TrainingCompleted, 1)[0], &gyrev1.TrainingCompleted{})
	if completed.GetWorker() != "survivor" || completed.GetAttempt() != 2 {
		t.Fatalf("completed by %q at attempt %d, want survivor at attempt 2", completed.GetWorker(), completed.GetAttempt())
	}
	t.Logf("training took %d ms", completed.GetDurationMs())
	env.WaitConsumed(completedConsumer)
	if evs := env.Events(p, events.TrainingStarted); len(evs) != 2 {
		t.Fatalf("%d training.started, want 2 (one per attempt)", len(evs))
	}
	if evs := env.Events(p, events.TrainingCompleted); len(evs) != 1 {
		t.Fatalf("%d training.completed, want 1", len(evs))
	}
	if n := queued(t, env, "gyre.jobs.train.cpu"); n != 0 {
		t.Fatalf("%d jobs left on the queue", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(looptest.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// storedBundle loads the bundle stored under key and scores it on the
// batch after the toy bootstrap (looptest.CSV seed 3): the bundle, its
// metrics and Evaluate's error.
func storedBundle(t *testing.T, env *looptest.Env, key string) (*bundle.Bundle, map[string]float64, error) {
	t.Helper()
	data, err := store.GetObject(env.Ctx(), env.Buckets.Models, key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Load(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("bundle.Load: %v", err)
	}
	holdout, err := table.Read(table.FormatCSV, looptest.CSV(3, 300, 0))
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := b.Evaluate(holdout)
	return b, metrics, err
}
