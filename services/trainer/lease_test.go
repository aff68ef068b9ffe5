package trainer_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/trainer"
)

// replica is one trainer replica of a test, stoppable on its own.
type replica struct {
	id   string
	svc  *trainer.Service
	stop func()
}

// startReplica runs a trainer replica named id on env until stop or the
// end of the test, and waits until it is ready.
func startReplica(t *testing.T, env *looptest.Env, id string) *replica {
	t.Helper()
	cfg := trainer.DefaultConfig()
	cfg.NATSURL = env.Server.URL
	cfg.Worker, cfg.ReplicaID = id, id
	svc, err := trainer.New(cfg, env.Deps)
	if err != nil {
		t.Fatalf("trainer.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	r := &replica{id: id, svc: svc, stop: func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: Run: %v", id, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s: Run did not return after cancel", id)
			}
		})
	}}
	t.Cleanup(r.stop)
	looptest.WaitFor(t, id+" ready", looptest.Timeout, func() bool { return svc.Readiness().Ready })
	return r
}

// schedulerDetail is what a replica's /readyz says of the scheduler.
func schedulerDetail(t *testing.T, r *replica) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("%s: /readyz %d: %s", r.id, rec.Code, rec.Body)
	}
	for _, c := range r.svc.Readiness().Checks {
		if c.Name == "scheduler" {
			if !strings.Contains(rec.Body.String(), `"name":"scheduler"`) {
				t.Errorf("%s: /readyz has no scheduler check: %s", r.id, rec.Body)
			}
			return c.Detail
		}
	}
	t.Fatalf("%s: no scheduler check in %+v", r.id, r.svc.Readiness())
	return ""
}

// TestSchedulerLeaseElectsOneReplica: of two trainer replicas, exactly one
// runs the scheduler and the other stands by (both ready, /readyz says
// which); a storm of triggers while both run makes one request; when the
// leader stops, the standby takes over within the lease's TTL, with a
// larger fencing token, and schedules the next request.
func TestSchedulerLeaseElectsOneReplica(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	a := startReplica(t, env, "replica-a")
	b := startReplica(t, env, "replica-b")

	// Sample who leads for the whole test: never both.
	var (
		mu      sync.Mutex
		overlap []string
	)
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampleCtx.Err() == nil {
			ta, la := a.svc.Leading()
			tb, lb := b.svc.Leading()
			if la && lb {
				mu.Lock()
				overlap = append(overlap, fmt.Sprintf("a (token %d) and b (token %d)", ta, tb))
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		stopSampling()
		<-sampled
		mu.Lock()
		defer mu.Unlock()
		if len(overlap) > 0 {
			t.Errorf("both replicas ran the scheduler at once, %d times, first %s", len(overlap), overlap[0])
		}
	})

	var leader, standby *replica
	looptest.WaitFor(t, "a leader", looptest.Timeout, func() bool {
		_, la := a.svc.Leading()
		_, lb := b.svc.Leading()
		switch {
		case la && !lb:
			leader, standby = a, b
		case lb && !la:
			leader, standby = b, a
		}
		return leader != nil
	})
	first, _ := leader.svc.Leading()
	if got, want := schedulerDetail(t, leader), fmt.Sprintf("leading (token %d)", first); got != want {
		t.Errorf("%s (leader) says %q, want %q", leader.id, got, want)
	}
	looptest.WaitFor(t, "the standby to see the holder", looptest.Timeout, func() bool {
		return schedulerDetail(t, standby) == "standby: held by "+leader.id
	})

	const p = "elect"
	env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, pool: nowhere-elect, window: {batches: 2}, cooldownBatches: 0}", ""))
	if _, err := store.PutJSON(env.Ctx(), env.Buckets.Registry, p, models.Registry{
		Pipeline: p, Versions: []models.Version{{Version: 1, Verdict: models.VerdictBlessed}},
		Aliases: map[string]int64{models.AliasChampion: 1},
	}); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"b1", "b2", "b3"} {
		env.AddBatch(p, id, looptest.CSV(uint64(i), 20, 0))
	}
	for range 5 {
		env.Emit("/gyre/monitor", p, driftDetected(p))
		env.Emit("/gyre/monitor", p, performanceDegraded(p))
	}
	env.WaitConsumed(driftConsumer)
	env.WaitConsumed(perfConsumer)
	env.WaitConsumed(manualConsumer)
	reqs := requests(env, p)
	if len(reqs) != 1 {
		t.Fatalf("%d training.requested for one window under a storm, want 1", len(reqs))
	}
	st, err := leader.svc.Scheduler().State(env.Ctx(), p)
	if err != nil || st.LeaseToken != first {
		t.Fatalf("state %+v (%v): want it written under token %d", st, err, first)
	}

	// The leader stops: it drains and gives the lease back; the standby
	// takes over well within the TTL a dead leader would cost.
	stopped := time.Now()
	leader.stop()
	var second uint64
	looptest.WaitFor(t, standby.id+" to lead", events.LeaseTTL+2*time.Second, func() bool {
		var ok bool
		second, ok = standby.svc.Leading()
		return ok
	})
	t.Logf("handover in %s", time.Since(stopped).Round(time.Millisecond))
	if second <= first {
		t.Errorf("new tenure's token %d, want more than %d", second, first)
	}
	if got, want := schedulerDetail(t, standby), fmt.Sprintf("leading (token %d)", second); got != want {
		t.Errorf("%s (new leader) says %q, want %q", standby.id, got, want)
	}

	// The new leader settles the request in flight and makes the next one.
	inFlight := looptest.Decode(t, reqs[0], &gyrev1.TrainingRequested{}).GetRequestId()
	env.Emit("/gyre/test", p, completed(p, inFlight))
	env.WaitConsumed(completedConsumer)
	env.AddBatch(p, "b4", looptest.CSV(4, 20, 0))
	env.Emit("/gyre/monitor", p, driftDetected(p))
	env.WaitConsumed(driftConsumer)
	env.WaitConsumed(manualConsumer)
	if reqs := requests(env, p); len(reqs) != 2 {
		t.Fatalf("%d training.requested after the handover, want 2", len(reqs))
	}
	st, err = standby.svc.Scheduler().State(env.Ctx(), p)
	if err != nil || st.LeaseToken != second || st.InFlight == nil {
		t.Fatalf("state %+v (%v): want a request in flight written under token %d", st, err, second)
	}
}

// TestDeposedSchedulerIsRefused: once a later tenure has written a
// pipeline's state, a scheduler of an earlier one (or none) can neither
// request nor settle: its writes are refused with a transient
// *DeposedError, the state is left as the holder wrote it and nothing is
// published.
func TestDeposedSchedulerIsRefused(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	const p = "fenced"
	env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, pool: nowhere-fenced, window: {batches: 2}, cooldownBatches: 0}", ""))
	for i, id := range []string{"b1", "b2", "b3"} {
		env.AddBatch(p, id, looptest.CSV(uint64(i), 20, 0))
	}
	base := trainer.NewScheduler(store.NewLazy(env.JS), env.Pub, nil, time.Hour)
	old, current := base.Fenced(5), base.Fenced(9)
	ctx := env.Ctx()
	drift := func(id string) trainer.Trigger {
		return trainer.Trigger{Pipeline: p, Reason: trainer.ReasonDrift, EventID: id, EventType: events.Type(events.DriftDetected)}
	}

	// The old holder acts first; then the new one takes over.
	made, err := old.Schedule(ctx, drift("d1"))
	if err != nil || made.Request == nil {
		t.Fatalf("old holder's Schedule = %+v, %v", made, err)
	}
	if err := current.Settle(ctx, p, trainer.Outcome{RequestID: made.Request.GetRequestId(), Status: trainer.StatusCompleted}); err != nil {
		t.Fatalf("new holder's Settle: %v", err)
	}
	before, err := base.State(ctx, p)
	if err != nil || before.LeaseToken != 9 || before.InFlight != nil {
		t.Fatalf("state after the new holder's write: %+v, %v", before, err)
	}
	env.AddBatch(p, "b4", looptest.CSV(4, 20, 0)) // a new window to request

	tests := []struct {
		name string
		do   func() error
	}{
		{"schedule, token 5", func() error { _, err := old.Schedule(ctx, drift("d2")); return err }},
		{"settle, token 5", func() error {
			return old.Settle(ctx, p, trainer.Outcome{RequestID: "r", Status: trainer.StatusFailed})
		}},
		{"schedule, unfenced", func() error { _, err := base.Schedule(ctx, drift("d3")); return err }},
	}
	for _, tt := range tests {
		err := tt.do()
		var dep *trainer.DeposedError
		if !errors.As(err, &dep) || dep.Token >= dep.Current || dep.Current != 9 || bus.IsPermanent(err) {
			t.Errorf("%s: %v, want a transient *DeposedError naming token 9", tt.name, err)
		}
	}
	after, err := base.State(ctx, p)
	if err != nil || after.LeaseToken != 9 || after.InFlight != nil || after.LastRequestID != before.LastRequestID ||
		after.LastOutcome.RequestID != before.LastOutcome.RequestID {
		t.Errorf("state changed by refused writes: %+v, was %+v (%v)", after, before, err)
	}
	if n := len(requests(env, p)); n != 1 {
		t.Errorf("%d training.requested, want only the old holder's one from before the new holder wrote", n)
	}

	// The holder itself goes on.
	if made, err := current.Schedule(ctx, drift("d4")); err != nil || made.Request == nil {
		t.Errorf("holder's Schedule = %+v, %v", made, err)
	}
}

// TestReplicaIDDefaultsAreUnique: two configurations of one process name
// their replicas apart.
func TestReplicaIDDefaultsAreUnique(t *testing.T) {
	t.Parallel()
	a, b := trainer.DefaultConfig().ReplicaID, trainer.DefaultConfig().ReplicaID
	if a == b || service.ValidateReplicaID(a) != nil {
		t.Fatalf("default replica ids %q and %q: want two valid, different ids", a, b)
	}
}
