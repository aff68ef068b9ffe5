package monitor_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/natstest"
)

// TestJoinSurvivesRestart: labels that arrive after a monitor restart pair
// with predictions logged before it, and predictions logged after it pair
// with labels that came before it; what was counted before the restart is
// not counted again.
func TestJoinSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, stop := runMonitor(t, srv)
	h := &harness{t: t, env: looptest.Connect(t, srv)}
	const name = "restart"
	h.env.ApplyPipeline(spec(name, 50, 2))
	promote(h, name, rand.New(rand.NewPCG(6, 6)), 0.9)

	predictions(h, name, 1, 100)
	labels(h, name, 1, 20, "1")   // p1..p20 right, counted now
	labels(h, name, 201, 10, "0") // waiting for p201..p210
	h.waitLabelled(name, 20)
	// Everything handled and acknowledged before the restart.
	looptest.WaitFor(t, "monitor consumers caught up", 20*time.Second, func() bool {
		for _, durable := range []string{"monitor_prediction-logged", "monitor_label-received"} {
			for _, c := range events.AllConsumers() {
				if c.Durable() != durable {
					continue
				}
				cons, err := h.env.JS.Consumer(h.env.Ctx(), c.Stream, durable)
				if err != nil {
					return false
				}
				info, err := cons.Info(h.env.Ctx())
				if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
					return false
				}
			}
		}
		return true
	})
	stop()

	runMonitor(t, srv)
	labels(h, name, 21, 80, "0")  // p21..p100 wrong, logged before the restart
	predictions(h, name, 201, 10) // labelled before the restart
	h.waitLabelled(name, 110)
	if l := h.state(name).Live["1"]; l.Correct != 20 {
		t.Errorf("live counters %+v, want 20 correct of 110", l)
	}
	h.waitEmitted(name, events.PerformanceDegraded, 1)
}
