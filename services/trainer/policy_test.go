package trainer_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/trainer"
)

func log(n int) []store.ValidatedBatch {
	out := make([]store.ValidatedBatch, n)
	for i := range out {
		out[i] = store.ValidatedBatch{Seq: int64(i + 1), BatchID: fmt.Sprintf("b%d", i+1), Sha256: fmt.Sprintf("%064d", i+1)}
	}
	return out
}

func ids(bs []store.ValidatedBatch) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.BatchID
	}
	return out
}

func TestWindowKeepsTheNewestBatchForEvaluation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		batches, size int
		want          []string
	}{
		{0, 5, []string{}},
		{1, 5, []string{"b1"}},
		{2, 5, []string{"b1"}},
		{3, 1, []string{"b2"}},
		{7, 5, []string{"b2", "b3", "b4", "b5", "b6"}},
		{7, 0, []string{"b6"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d batches, window %d", tt.batches, tt.size), func(t *testing.T) {
			t.Parallel()
			if got := ids(trainer.Window(log(tt.batches), tt.size)); !slices.Equal(got, tt.want) {
				t.Fatalf("Window = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	window := func(batches, size int) string { return trainer.DatasetVersion(trainer.Window(log(batches), size)) }
	base := trainer.Policy{WindowBatches: 2, BootstrapBatches: 2, Cooldown: 2, Now: now, InFlightExpiry: time.Hour}
	with := func(batches int, mutate func(*trainer.Policy)) trainer.Policy {
		p := base
		p.Batches = log(batches)
		if mutate != nil {
			mutate(&p)
		}
		return p
	}
	champion := func(p *trainer.Policy) { p.HasChampion = true }
	// late is log(4) after "a", which arrived between b1 and b2, was
	// validated last: inserted in its place, the entries renumbered.
	late := func(p *trainer.Policy) {
		p.Batches = slices.Insert(log(4), 1, store.ValidatedBatch{BatchID: "a", Sha256: fmt.Sprintf("%064d", 99)})
		for i := range p.Batches {
			p.Batches[i].Seq = int64(i + 1)
		}
	}
	window3 := func(p *trainer.Policy) { late(p); p.WindowBatches = 3 }
	drift := trainer.Trigger{Pipeline: "p", Reason: trainer.ReasonDrift, EventID: "ev-drift"}
	tests := []struct {
		name    string
		state   trainer.SchedulerState
		trigger trainer.Trigger
		policy  trainer.Policy
		want    []string // the window requested; nil: none
		why     string
		replay  bool
	}{
		{"bootstrap waits", trainer.SchedulerState{}, trainer.Trigger{Reason: trainer.ReasonBootstrap}, with(1, nil), nil, "waits for 2", false},
		{"bootstrap", trainer.SchedulerState{}, trainer.Trigger{Reason: trainer.ReasonBootstrap}, with(2, nil), []string{"b1"}, "", false},
		{"no bootstrap with a champion", trainer.SchedulerState{}, trainer.Trigger{Reason: trainer.ReasonBootstrap}, with(5, champion), nil, "has a champion", false},
		{"drift", trainer.SchedulerState{}, drift, with(4, champion), []string{"b2", "b3"}, "", false},
		{"in flight", trainer.SchedulerState{InFlight: &trainer.InFlight{RequestID: "r1", RequestedAt: now.Add(-time.Minute)}}, drift, with(4, nil), nil, "r1", false},
		{"in flight expired", trainer.SchedulerState{InFlight: &trainer.InFlight{RequestID: "r1", RequestedAt: now.Add(-2 * time.Hour)}}, drift, with(4, nil), []string{"b2", "b3"}, "presumed lost", false},
		{"redelivered cause", trainer.SchedulerState{InFlight: &trainer.InFlight{RequestID: "r1", CauseEventID: "ev-drift", RequestedAt: now}}, drift, with(4, nil), nil, "redelivery", true},
		{"cooldown", trainer.SchedulerState{LastRequestSeq: 3}, drift, with(4, nil), nil, "cooldown: 1", false},
		{"cooldown over", trainer.SchedulerState{LastRequestSeq: 3}, drift, with(5, nil), []string{"b3", "b4"}, "", false},
		{"manual ignores cooldown", trainer.SchedulerState{LastRequestSeq: 3}, trainer.Trigger{Reason: trainer.ReasonManual}, with(4, nil), []string{"b2", "b3"}, "", false},
		{"same window", trainer.SchedulerState{Windows: []string{window(4, 2)}}, drift, with(4, nil), nil, "already requested", false},
		{"same window, manual", trainer.SchedulerState{Windows: []string{window(4, 2)}}, trainer.Trigger{Reason: trainer.ReasonManual}, with(4, nil), nil, "already requested", false},
		{"no batches", trainer.SchedulerState{}, drift, with(0, nil), nil, "no validated batch", false},
		// Requested when the log was b1…b4 (newest seq 4, window b1 b2 b3).
		{"a late batch counts towards the cooldown", trainer.SchedulerState{LastRequestSeq: 4}, drift, with(0, late), nil, "cooldown: 1", false},
		{"a late batch makes a new window", trainer.SchedulerState{LastRequestSeq: 4, Windows: []string{window(4, 3)}}, trainer.Trigger{Reason: trainer.ReasonManual}, with(0, window3), []string{"a", "b2", "b3"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := trainer.Decide(&tt.state, tt.trigger, tt.policy)
			if d.Republish != tt.replay {
				t.Fatalf("Republish = %v, want %v (%s)", d.Republish, tt.replay, d.Why)
			}
			if tt.want == nil {
				if d.Request {
					t.Fatalf("requested %v, want no request", ids(d.Window))
				}
			} else if !d.Request || !slices.Equal(ids(d.Window), tt.want) {
				t.Fatalf("Request = %v on %v (%s), want a request on %v", d.Request, ids(d.Window), d.Why, tt.want)
			}
			if !strings.Contains(d.Why, tt.why) {
				t.Fatalf("Why = %q, want it to contain %q", d.Why, tt.why)
			}
		})
	}
}

func TestStateRecordsAndSettles(t *testing.T) {
	t.Parallel()
	var st trainer.SchedulerState
	st.Record(trainer.InFlight{RequestID: "r1", DatasetVersion: "w1", BatchSeq: 4})
	if st.InFlight == nil || st.LastRequestSeq != 4 || !slices.Equal(st.Windows, []string{"w1"}) {
		t.Fatalf("after Record: %+v", st)
	}
	if !st.Settle(trainer.Outcome{RequestID: "other", Status: trainer.StatusCompleted}) || st.InFlight == nil {
		t.Fatalf("an outcome of another request cleared the one in flight: %+v", st)
	}
	if !st.Settle(trainer.Outcome{RequestID: "r1", Status: trainer.StatusCompleted}) || st.InFlight != nil {
		t.Fatalf("the request's own outcome did not clear it: %+v", st)
	}
	if st.Settle(trainer.Outcome{RequestID: "r1", Status: trainer.StatusCompleted}) {
		t.Fatal("a redelivered outcome changed the state again")
	}
}
