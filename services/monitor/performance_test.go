package monitor_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
)

// predictions logs n predictions p<from>..p<from+n-1> of version 1, all
// predicting class "1".
func predictions(h *harness, name string, from, n int) {
	rows := make([]*gyrev1.Prediction, n)
	for i := range rows {
		rows[i] = &gyrev1.Prediction{PredictionId: fmt.Sprintf("p%d", from+i), Output: "1"}
	}
	h.env.Emit("/gyre/test", name, &gyrev1.PredictionLogged{Pipeline: name, ModelVersion: 1, Variant: "champion", Rows: rows, SampleRate: 1})
}

// labels labels p<from>..p<from+n-1> with value.
func labels(h *harness, name string, from, n int, value string) {
	ls := make([]*gyrev1.Label, n)
	for i := range ls {
		ls[i] = &gyrev1.Label{PredictionId: fmt.Sprintf("p%d", from+i), Value: value}
	}
	h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: ls})
}

func (h *harness) waitLabelled(name string, n int64) {
	h.t.Helper()
	looptest.WaitFor(h.t, fmt.Sprintf("%d labelled predictions", n), 20*time.Second, func() bool {
		l := h.state(name).Live["1"]
		return l != nil && l.Labelled == n
	})
}

// TestPerformanceDegraded: planted wrong labels degrade live accuracy under
// the baseline; duplicated labels count once; the cooldown holds the next
// degradation back until two more batches are validated.
func TestPerformanceDegraded(t *testing.T) {
	t.Parallel()
	h := start(t)
	const name = "perf"
	h.env.ApplyPipeline(spec(name, 50, 2))
	r := rand.New(rand.NewPCG(4, 4))
	promote(h, name, r, 0.9)

	// Labels first, predictions second: the join takes either order.
	labels(h, name, 1, 60, "1")
	predictions(h, name, 1, 100)
	h.waitLabelled(name, 60)

	// The same predictions labelled again, the other way: ignored.
	labels(h, name, 1, 60, "0")
	predictions(h, name, 1, 100) // and the predictions logged twice
	// p61..p100 wrong: the newest 50 outcomes hold 10 right, 40 wrong.
	labels(h, name, 61, 40, "0")
	h.waitLabelled(name, 100)
	ev := h.waitEmitted(name, events.PerformanceDegraded, 1)[0]
	d := looptest.Decode(t, ev, &gyrev1.PerformanceDegraded{})
	if d.ModelVersion != 1 || d.BaselineAccuracy != 0.9 || d.LabelledRows != 50 || d.LiveAccuracy != 0.2 ||
		d.MaxDrop != 0.05 || d.Metric != "accuracy" || d.Drop < 0.69 || d.Drop > 0.71 || d.Predictions != 100 {
		t.Errorf("performance.degraded = %v; want v1, baseline 0.9, live 0.2 over 50 labelled, 100 predictions logged (each once)", d)
	}
	// The same figures on /metrics, set before the event was emitted.
	for series, want := range map[string]float64{
		"gyre_monitor_live_accuracy": 0.2, "gyre_monitor_live_accuracy_rows": 50, "gyre_monitor_baseline_accuracy": 0.9,
	} {
		if got, ok := h.gauge(series, map[string]string{"pipeline": name}); !ok || got != want {
			t.Errorf("%s{pipeline=%q} = %v (found %v), want %v", series, name, got, ok, want)
		}
	}
	if l := h.state(name).Live["1"]; l.Correct != 60 {
		t.Errorf("live counters %+v, want 60 correct of 100", l)
	}

	// More wrong labels, no new batch: within the cooldown.
	predictions(h, name, 101, 60)
	labels(h, name, 101, 60, "0")
	h.waitLabelled(name, 160)
	if n := len(h.env.Events(name, events.PerformanceDegraded)); n != 1 {
		t.Fatalf("%d performance.degraded within the cooldown, want 1", n)
	}
	// Two validated batches later the cooldown allows the next one.
	h.env.AddBatch(name, "later-1", batchCSV(r, 10, 0, cats))
	h.env.AddBatch(name, "later-2", batchCSV(r, 10, 0, cats))
	predictions(h, name, 161, 60)
	labels(h, name, 161, 60, "0")
	h.waitEmitted(name, events.PerformanceDegraded, 2)
}

// TestNewChampionResetsLiveAccuracy: the counters of a newly promoted
// version start from nothing.
func TestNewChampionResetsLiveAccuracy(t *testing.T) {
	t.Parallel()
	h := start(t)
	const name = "reset"
	h.env.ApplyPipeline(spec(name, 10, 0))
	r := rand.New(rand.NewPCG(5, 5))
	promote(h, name, r, 0.9)
	predictions(h, name, 1, 20)
	labels(h, name, 1, 20, "1")
	h.waitLabelled(name, 20)
	if got, ok := h.gauge("gyre_monitor_live_accuracy", map[string]string{"pipeline": name}); !ok || got != 1 {
		t.Errorf("live accuracy of v1 = %v (found %v), want 1", got, ok)
	}
	ids := []string{"ref-1", "ref-2"}
	h.env.Promote(looptest.Promotion{
		Pipeline: name, Version: 2, Metrics: map[string]float64{"accuracy": 0.7}, Lineage: &gyrev1.Lineage{BatchIds: ids},
	})
	looptest.WaitFor(t, "reference of v2", 20*time.Second, func() bool {
		st := h.state(name)
		return st.Reference != nil && st.Reference.ModelVersion == 2
	})
	// The gauges were v1's: gone once v2 is the reference.
	looptest.WaitFor(t, "v1's live accuracy dropped from /metrics", 10*time.Second, func() bool {
		_, ok := h.gauge("gyre_monitor_live_accuracy", map[string]string{"pipeline": name})
		return !ok
	})
	st := h.state(name)
	if l := st.Live["2"]; l == nil || l.Labelled != 0 {
		t.Errorf("live counters of v2 = %+v, want fresh", l)
	}
	if *st.Reference.BaselineAccuracy != 0.7 {
		t.Errorf("baseline = %v, want 0.7", *st.Reference.BaselineAccuracy)
	}
}
