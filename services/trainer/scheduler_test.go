package trainer_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/trainer"
)

// startTrainer runs a trainer serving pool on env.
func startTrainer(t *testing.T, env *looptest.Env, pool, worker string) *trainer.Service {
	t.Helper()
	cfg := trainer.DefaultConfig()
	cfg.NATSURL = env.Server.URL
	cfg.Pool = pool
	cfg.Worker = worker
	svc, err := trainer.New(cfg, env.Deps)
	if err != nil {
		t.Fatalf("trainer.New: %v", err)
	}
	env.Run(svc)
	return svc
}

// requests returns the scheduler's training.requested events of a pipeline.
func requests(env *looptest.Env, pipeline string) []event.Event {
	var out []event.Event
	for _, ev := range env.Events(pipeline, events.TrainingRequested) {
		if ev.Source() == "/gyre/"+trainer.Name {
			out = append(out, ev)
		}
	}
	return out
}

func consumer(handler, name string) events.Consumer {
	return events.EventConsumer(trainer.Name, handler, name)
}

var (
	validatedConsumer = consumer("batch-validated", events.DataBatchValidated)
	driftConsumer     = consumer("drift-detected", events.DriftDetected)
	perfConsumer      = consumer("performance-degraded", events.PerformanceDegraded)
	manualConsumer    = consumer("training-requested", events.TrainingRequested)
	completedConsumer = consumer("training-completed", events.TrainingCompleted)
	failedConsumer    = consumer("training-failed", events.TrainingFailed)
)

// step is one thing that happens to a pipeline, and the requests the
// scheduler has made once it is handled.
type step struct {
	do   string // batch, validated, drift, performance, manual, completed, retryable, failed, champion
	arg  string
	want int      // requests made so far
	last []string // window of the last request, when checked
	why  string   // reason of the last request, when checked
}

// TestSchedulerPolicy runs the retrain policy through events: bootstrap,
// cooldown, one job in flight, storms on one window, manual requests.
// The pipelines' pool has no worker, so requests stay in flight until the
// test settles them.
func TestSchedulerPolicy(t *testing.T) {
	env := looptest.New(t)
	startTrainer(t, env, "cpu", "w1")
	tests := []struct {
		name     string
		cooldown int
		steps    []step
	}{
		{"bootstrap", 0, []step{
			{do: "batch", arg: "b1"}, {do: "validated", arg: "b1", want: 0},
			{do: "batch", arg: "b2"}, {do: "validated", arg: "b2", want: 1, last: []string{"b1"}, why: trainer.ReasonBootstrap},
			{do: "batch", arg: "b3"}, {do: "validated", arg: "b3", want: 1},
			{do: "completed"},
			{do: "batch", arg: "b4"}, {do: "validated", arg: "b4", want: 2, last: []string{"b2", "b3"}, why: trainer.ReasonBootstrap},
		}},
		{"no bootstrap with a champion", 0, []step{
			{do: "champion"},
			{do: "batch", arg: "b1"}, {do: "batch", arg: "b2"}, {do: "batch", arg: "b3"},
			{do: "validated", arg: "b2", want: 0}, {do: "validated", arg: "b3", want: 0},
		}},
		{"cooldown", 2, []step{
			{do: "champion"}, {do: "batch", arg: "b1"}, {do: "batch", arg: "b2"}, {do: "batch", arg: "b3"},
			{do: "drift", want: 1, last: []string{"b1", "b2"}, why: trainer.ReasonDrift},
			{do: "completed"},
			{do: "batch", arg: "b4"}, {do: "drift", want: 1},
			{do: "batch", arg: "b5"}, {do: "performance", want: 2, last: []string{"b3", "b4"}, why: trainer.ReasonPerformance},
		}},
		{"one job in flight", 0, []step{
			{do: "champion"}, {do: "batch", arg: "b1"}, {do: "batch", arg: "b2"},
			{do: "drift", want: 1, last: []string{"b1"}},
			{do: "batch", arg: "b3"}, {do: "performance", want: 1},
			{do: "retryable"}, {do: "batch", arg: "b4"}, {do: "drift", want: 1},
			{do: "failed"}, {do: "drift", want: 2, last: []string{"b2", "b3"}, why: trainer.ReasonDrift},
		}},
		{"storm on one window", 0, []step{
			{do: "champion"}, {do: "batch", arg: "b1"}, {do: "batch", arg: "b2"}, {do: "batch", arg: "b3"},
			{do: "storm", want: 1, last: []string{"b1", "b2"}},
			{do: "completed"},
			{do: "drift", want: 1}, {do: "performance", want: 1}, {do: "validated", arg: "b3", want: 1},
		}},
		{"manual", 5, []step{
			{do: "champion"}, {do: "batch", arg: "b1"}, {do: "batch", arg: "b2"}, {do: "batch", arg: "b3"},
			{do: "drift", want: 1}, {do: "completed"},
			{do: "manual", want: 1}, // same window
			{do: "batch", arg: "b4"},
			{do: "drift", want: 1}, // cooldown
			{do: "manual", want: 2, last: []string{"b2", "b3"}, why: trainer.ReasonManual},
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := fmt.Sprintf("sched-%d", i)
			pool := "nowhere-" + p
			env.ApplyPipeline(looptest.Spec(p, fmt.Sprintf(
				"{algorithm: gbdt, pool: %s, window: {batches: 2}, bootstrapBatches: 2, cooldownBatches: %d}", pool, tt.cooldown), ""))
			batches := map[string]store.ValidatedBatch{}
			lastCause := ""
			for k, s := range tt.steps {
				reqs := requests(env, p)
				inFlight := ""
				if n := len(reqs); n > 0 {
					inFlight = looptest.Decode(t, reqs[n-1], &gyrev1.TrainingRequested{}).GetRequestId()
				}
				switch s.do {
				case "batch":
					batches[s.arg] = env.AddBatch(p, s.arg, looptest.CSV(uint64(k), 20, 0))
					continue
				case "champion":
					if _, err := store.PutJSON(env.Ctx(), env.Buckets.Registry, p, models.Registry{
						Pipeline: p, Versions: []models.Version{{Version: 1, Verdict: models.VerdictBlessed}},
						Aliases: map[string]int64{models.AliasChampion: 1},
					}); err != nil {
						t.Fatal(err)
					}
					continue
				case "validated":
					b := batches[s.arg]
					lastCause = env.Emit("/gyre/validation", p, &gyrev1.DataBatchValidated{
						Pipeline: p, BatchId: b.BatchID, Object: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: b.ObjectKey},
						Format: b.Format, Rows: b.Rows, ChecksPassed: true, Labelled: true,
					}).ID()
					env.WaitConsumed(validatedConsumer)
				case "drift":
					lastCause = env.Emit("/gyre/monitor", p, driftDetected(p)).ID()
					env.WaitConsumed(driftConsumer)
				case "storm":
					for range 5 {
						env.Emit("/gyre/monitor", p, driftDetected(p))
						env.Emit("/gyre/monitor", p, performanceDegraded(p))
					}
					env.WaitConsumed(driftConsumer)
					env.WaitConsumed(perfConsumer)
				case "performance":
					lastCause = env.Emit("/gyre/monitor", p, performanceDegraded(p)).ID()
					env.WaitConsumed(perfConsumer)
				case "manual":
					lastCause = env.Emit("/gyre/cli", p, &gyrev1.TrainingRequested{Pipeline: p, Reason: "manual", RequestedBy: "cli"}).ID()
					env.WaitConsumed(manualConsumer)
				case "completed":
					env.Emit("/gyre/test", p, completed(p, inFlight))
					env.WaitConsumed(completedConsumer)
					continue
				case "retryable", "failed":
					env.Emit("/gyre/test", p, &gyrev1.TrainingFailed{Pipeline: p, RequestId: inFlight, Retryable: s.do == "retryable", Error: "boom"})
					env.WaitConsumed(failedConsumer)
					continue
				default:
					t.Fatalf("unknown step %q", s.do)
				}
				// The scheduler's own training.requested events reach it
				// too; they must not count as triggers.
				env.WaitConsumed(manualConsumer)
				reqs = requests(env, p)
				if len(reqs) != s.want {
					t.Fatalf("step %d (%s %s): %d requests, want %d", k+1, s.do, s.arg, len(reqs), s.want)
				}
				if s.last == nil && s.why == "" {
					continue
				}
				last := reqs[len(reqs)-1]
				req := looptest.Decode(t, last, &gyrev1.TrainingRequested{})
				if s.last != nil && !slices.Equal(req.GetWindowBatchIds(), s.last) {
					t.Fatalf("step %d: window %v, want %v", k+1, req.GetWindowBatchIds(), s.last)
				}
				if s.why != "" && req.GetReason() != s.why {
					t.Fatalf("step %d: reason %q, want %q", k+1, req.GetReason(), s.why)
				}
				if s.do != "storm" && req.GetCauseEventId() != lastCause {
					t.Fatalf("step %d: cause %q, want the trigger %q", k+1, req.GetCauseEventId(), lastCause)
				}
				checkRequest(t, env, p, pool, last, req, len(reqs))
			}
		})
	}
}

// checkRequest checks what every request carries, and that the same event
// is queued as the pool's job, once per request.
func checkRequest(t *testing.T, env *looptest.Env, p, pool string, ev event.Event, req *gyrev1.TrainingRequested, want int) {
	t.Helper()
	if req.GetRequestId() != trainer.RequestID(p, req.GetDatasetVersion()) || req.GetPool() != pool ||
		req.GetAlgorithm() != "gbdt" || req.GetLabelColumn() != "class" || req.GetPipelineRevision() == 0 ||
		len(req.GetWindow()) != len(req.GetWindowBatchIds()) || req.GetWindow()[0].GetObject().GetKey() == "" {
		t.Fatalf("request %+v", req)
	}
	if got := bus.Ext(ev, bus.ExtCausationID); got != req.GetCauseEventId() {
		t.Fatalf("causationid %q, want the cause %q", got, req.GetCauseEventId())
	}
	if req.GetReason() == trainer.ReasonManual && req.GetRequestedBy() != "cli" {
		t.Fatalf("manual request by %q, want cli", req.GetRequestedBy())
	}
	subject := "gyre.jobs.train." + pool
	if n := queued(t, env, subject); n != uint64(want) {
		t.Fatalf("%d jobs on %s, want %d", n, subject, want)
	}
	st, err := env.JS.Stream(env.Ctx(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(env.Ctx(), subject)
	if err != nil {
		t.Fatalf("no job queued: %v", err)
	}
	if id := msg.Header.Get("Nats-Msg-Id"); id != ev.ID() {
		t.Fatalf("job id %q, want the request event's %q", id, ev.ID())
	}
	// No worker serves the pool, yet its consumer exists and shows the jobs
	// as its lag: that is what an autoscaler reads to start workers of a
	// pool scaled to zero (infra/k8s/components/keda).
	durable := events.JobConsumer(pool).Durable()
	cons, err := env.JS.Consumer(env.Ctx(), events.StreamJobs, durable)
	if err != nil {
		t.Fatalf("pool %s: job consumer %s: %v", pool, durable, err)
	}
	info, err := cons.Info(env.Ctx())
	if err != nil {
		t.Fatal(err)
	}
	if lag := info.NumPending + uint64(info.NumAckPending); lag != uint64(want) {
		t.Fatalf("consumer %s lags %d jobs, want %d", durable, lag, want)
	}
}

// queued counts the jobs waiting on a subject.
func queued(t *testing.T, env *looptest.Env, subject string) uint64 {
	t.Helper()
	st, err := env.JS.Stream(env.Ctx(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(env.Ctx(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestRedeliveredTriggerPublishesTheSameRequest: a trigger handled twice
// (a crash between the state write and the acknowledgement) publishes the
// request in flight again with the same ids, which the streams store once.
func TestRedeliveredTriggerPublishesTheSameRequest(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	svc := startTrainer(t, env, "cpu", "w1")
	env.ApplyPipeline(looptest.Spec("again", "{algorithm: gbdt, pool: nowhere, window: {batches: 2}}", ""))
	for _, id := range []string{"b1", "b2", "b3"} {
		env.AddBatch("again", id, looptest.CSV(1, 10, 0))
	}
	trig := trainer.Trigger{Pipeline: "again", Reason: trainer.ReasonDrift, EventID: "drift-1", EventType: events.Type(events.DriftDetected)}
	first, err := svc.Scheduler().Schedule(env.Ctx(), trig)
	if err != nil || first.Request == nil {
		t.Fatalf("Schedule = %+v, %v", first, err)
	}
	second, err := svc.Scheduler().Schedule(env.Ctx(), trig)
	if err != nil || second.Request == nil {
		t.Fatalf("second Schedule = %+v, %v", second, err)
	}
	if first.EventID != second.EventID || first.Request.GetRequestId() != second.Request.GetRequestId() {
		t.Fatalf("redelivery published %s/%s, first %s/%s", second.EventID, second.Request.GetRequestId(), first.EventID, first.Request.GetRequestId())
	}
	env.WaitConsumed(manualConsumer)
	if n := len(requests(env, "again")); n != 1 {
		t.Fatalf("%d training.requested events stored, want 1", n)
	}
	if n := queued(t, env, "gyre.jobs.train.nowhere"); n != 1 {
		t.Fatalf("%d jobs queued, want 1", n)
	}
	// Another trigger of the same window while the first is in flight does nothing.
	third, err := svc.Scheduler().Schedule(env.Ctx(), trainer.Trigger{Pipeline: "again", Reason: trainer.ReasonDrift, EventID: "drift-2"})
	if err != nil || third.Request != nil {
		t.Fatalf("third Schedule = %+v, %v; want no request", third, err)
	}
}
