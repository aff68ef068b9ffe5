package monitoring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// memState is a StateStore in memory; each value is kept as JSON, as the
// KV store keeps it, so that an update that fails leaves nothing behind.
type memState struct {
	mu   sync.Mutex
	data map[string][]byte
	// failUpdates makes the next Update calls fail, as a store that is
	// unreachable does.
	failUpdates int
}

func (m *memState) Load(_ context.Context, pipeline string) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var st State
	if b, ok := m.data[pipeline]; ok {
		if err := json.Unmarshal(b, &st); err != nil {
			return State{}, err
		}
	}
	return st, nil
}

func (m *memState) Update(ctx context.Context, pipeline string, fn func(*State) error) error {
	m.mu.Lock()
	if m.failUpdates > 0 {
		m.failUpdates--
		m.mu.Unlock()
		return errors.New("state store unavailable")
	}
	m.mu.Unlock()
	st, err := m.Load(ctx, pipeline)
	if err != nil {
		return err
	}
	if err := fn(&st); err != nil {
		if errors.Is(err, ErrNoChange) {
			return nil
		}
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[pipeline] = b // one writer per test: no compare-and-set needed
	return nil
}

type staticSpec struct{ p *pipeline.Pipeline }

func (s staticSpec) Pipeline(context.Context, string) (*pipeline.Pipeline, error) { return s.p, nil }

type noBatches struct{}

func (noBatches) Log(context.Context, string) ([]Batch, error) { return nil, nil }
func (noBatches) Read(context.Context, string, string) (*table.Table, error) {
	return nil, errors.New("no batches")
}

// newCountingMonitor returns a monitor whose pipeline "p" follows v1 with
// the baseline accuracy 0.9, judged on the newest minRows labels.
func newCountingMonitor(t *testing.T, minRows int) (*Monitor, *memState) {
	t.Helper()
	baseline, cooldown := 0.9, 0
	st := &memState{data: map[string][]byte{}}
	b, err := json.Marshal(State{Reference: &Reference{ModelVersion: 1, Generation: 1, BaselineAccuracy: &baseline}})
	if err != nil {
		t.Fatal(err)
	}
	st.data["p"] = b
	spec := &pipeline.Pipeline{Spec: pipeline.Spec{Drift: pipeline.Drift{MinRows: minRows, AccuracyDrop: 0.05, CooldownBatches: &cooldown}}}
	return New(st, noBatches{}, staticSpec{spec}, nil, nil, NewMemoryJoins(), Options{}), st
}

func preds(event string, outputs ...string) PredictionLog {
	rows := make([]Prediction, len(outputs))
	for i, o := range outputs {
		rows[i] = Prediction{ID: fmt.Sprintf("p%d", i+1), Output: o}
	}
	return PredictionLog{EventID: event, Pipeline: "p", ModelVersion: 1, Rows: rows}
}

func lbls(event string, ids []int, values ...string) Labels {
	ls := make([]Label, len(ids))
	for i, id := range ids {
		ls[i] = Label{PredictionID: fmt.Sprintf("p%d", id), Value: values[i]}
	}
	return Labels{EventID: event, Pipeline: "p", Labels: ls}
}

// TestCountsEveryPairOnce: whatever the order, duplicates and
// redeliveries, each labelled prediction is counted once, in the order of
// the event that completed it, and each prediction is logged once.
func TestCountsEveryPairOnce(t *testing.T) {
	t.Parallel()
	type step struct {
		preds  *PredictionLog
		labels *Labels
		// failCount makes the step's counting fail once (the join is done,
		// the state write is not), and the step is delivered again.
		failCount bool
	}
	p := func(l PredictionLog) step { return step{preds: &l} }
	l := func(l Labels) step { return step{labels: &l} }
	for _, tc := range []struct {
		name       string
		steps      []step
		wantWindow string // version 1's outcomes, oldest first
		wantLogged int64
	}{
		{name: "predictions first", steps: []step{
			p(preds("P1", "1", "0", "1")), l(lbls("L1", []int{1, 2, 3}, "1", "1", "1")),
		}, wantWindow: "101", wantLogged: 3},
		{name: "labels first", steps: []step{
			l(lbls("L1", []int{1, 2, 3}, "1", "1", "1")), p(preds("P1", "1", "0", "1")),
		}, wantWindow: "101", wantLogged: 3},
		{name: "pairs follow the completing event's order", steps: []step{
			p(preds("P1", "1", "1", "1", "1")), l(lbls("L1", []int{4, 2, 3, 1}, "1", "0", "0", "1")),
		}, wantWindow: "1001", wantLogged: 4},
		{name: "some of each side first", steps: []step{
			p(preds("P0", "1", "1")), l(lbls("L1", []int{1, 3}, "0", "1")), p(preds("P1", "1", "1", "1")),
		}, wantWindow: "01", wantLogged: 3},
		{name: "duplicate predictions and labels", steps: []step{
			p(preds("P1", "1", "1")), p(preds("P2", "0", "0")), // another event of the same ids
			l(lbls("L1", []int{1, 2}, "1", "0")), l(lbls("L2", []int{1, 2}, "0", "1")),
		}, wantWindow: "10", wantLogged: 2},
		{name: "an id twice in one event", steps: []step{
			p(preds("P1", "1", "1")), l(lbls("L1", []int{1, 1, 2}, "1", "0", "1")),
		}, wantWindow: "11", wantLogged: 2},
		{name: "redelivered after its counting failed", steps: []step{
			p(preds("P1", "1", "1")), {labels: &Labels{EventID: "L1", Pipeline: "p", Labels: []Label{{"p1", "1"}, {"p2", "0"}}}, failCount: true},
			l(lbls("L1", []int{1, 2}, "1", "0")), // and once more after it counted
		}, wantWindow: "10", wantLogged: 2},
		{name: "predictions redelivered after their counting failed", steps: []step{
			l(lbls("L1", []int{1}, "1")), {preds: &PredictionLog{EventID: "P1", Pipeline: "p", ModelVersion: 1,
				Rows: []Prediction{{"p1", "1"}, {"p2", "1"}}}, failCount: true},
		}, wantWindow: "1", wantLogged: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, st := newCountingMonitor(t, 1000)
			ctx := context.Background()
			deliver := func(s step) error {
				var err error
				if s.preds != nil {
					_, err = m.LogPredictions(ctx, *s.preds)
				} else {
					_, err = m.ReceiveLabels(ctx, *s.labels)
				}
				return err
			}
			for i, s := range tc.steps {
				if s.failCount {
					st.failUpdates = 1
					if err := deliver(s); err == nil {
						t.Fatalf("step %d: counting did not fail", i)
					}
				}
				if err := deliver(s); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if s.failCount {
					// A third delivery (the acknowledgement was lost too).
					if err := deliver(s); err != nil {
						t.Fatalf("step %d again: %v", i, err)
					}
				}
			}
			s, err := st.Load(ctx, "p")
			if err != nil {
				t.Fatal(err)
			}
			live := s.Live["1"]
			if live == nil {
				live = &Live{}
			}
			correct := 0
			for _, c := range tc.wantWindow {
				if c == '1' {
					correct++
				}
			}
			if live.Window != tc.wantWindow || live.Labelled != int64(len(tc.wantWindow)) || live.Correct != int64(correct) {
				t.Errorf("live counters %+v, want window %q (%d labelled, %d correct)", live, tc.wantWindow, len(tc.wantWindow), correct)
			}
			if got := s.loggedOf(1); got != tc.wantLogged {
				t.Errorf("logged %d predictions of v1, want %d", got, tc.wantLogged)
			}
		})
	}
}

// TestDegradedReportsLoggedPredictions: performance.degraded carries the
// champion's predictions logged (from the state, so any replica reports
// the same), and a redelivery of the event that caused it emits it again.
func TestDegradedReportsLoggedPredictions(t *testing.T) {
	t.Parallel()
	m, _ := newCountingMonitor(t, 4)
	ctx := context.Background()
	if _, err := m.LogPredictions(ctx, preds("P1", "1", "1", "1", "1", "1", "1")); err != nil {
		t.Fatal(err)
	}
	labels := lbls("L1", []int{1, 2, 3, 4}, "0", "0", "0", "1")
	d, err := m.ReceiveLabels(ctx, labels)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil || d.GetPredictions() != 6 || d.GetLabelledRows() != 4 || d.GetLiveAccuracy() != 0.25 {
		t.Fatalf("performance.degraded = %v, want 6 predictions, 4 labelled, live 0.25", d)
	}
	again, err := m.ReceiveLabels(ctx, labels)
	if err != nil {
		t.Fatal(err)
	}
	if again == nil || again.String() != d.String() {
		t.Errorf("redelivery emitted %v, want the same %v", again, d)
	}
}

func TestPruneVersionsKeepsTheChampion(t *testing.T) {
	t.Parallel()
	s := State{Reference: &Reference{ModelVersion: 1}}
	for v := int64(1); v <= 7; v++ {
		s.live(v).Labelled = v
		s.addLogged(v, v)
	}
	s.Logged["junk"] = 1
	s.pruneVersions()
	for name, got := range map[string]int{"live": len(s.Live), "logged": len(s.Logged)} {
		if got != maxVersions {
			t.Errorf("%s: %d versions kept, want %d", name, got, maxVersions)
		}
	}
	for _, v := range []int64{1, 5, 6, 7} {
		if s.Live[versionKey(v)] == nil || s.loggedOf(v) != v {
			t.Errorf("version %d not kept (live %v, logged %d)", v, s.Live[versionKey(v)], s.loggedOf(v))
		}
	}
}
