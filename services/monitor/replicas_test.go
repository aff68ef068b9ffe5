package monitor_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/services/monitor"
)

// The replicas test's input: joinChunks chunks of joinChunk prediction
// ids, each chunk logged and labelled by one event of each side.
const (
	joinChunk  = 20
	joinChunks = 60
	joinN      = joinChunk * joinChunks
)

// joinRun is what the monitors counted from the input.
type joinRun struct {
	labelled, correct, logged int64
	// handled is, per replica, how many prediction and label events it
	// handled.
	handled []float64
}

// runJoinInput runs n monitor replicas on one server (each its own
// process: connection, registry, service, sharing the durable consumers)
// and feeds them the input: prediction events of joinChunk consecutive ids
// each, and as many label events of joinChunk ids drawn at random (a fixed
// seed) from all of them, the two kinds alternating. So the labels of an
// event meet predictions logged long before, just before, and not yet, by
// events that any replica may take. The label of every fourth id says its
// prediction was wrong.
func runJoinInput(t *testing.T, n int) joinRun {
	t.Helper()
	srv := natstest.Start(t)
	reps := make([]*replica, n)
	for i := range reps {
		reps[i] = runMonitor(t, srv)
	}
	h := &harness{t: t, env: looptest.Attach(t, srv, reps[0].proc.JS), mon: reps[0]}
	const name = "replicas"
	h.env.ApplyPipeline(spec(name, 50, 2))
	promote(h, name, rand.New(rand.NewPCG(7, 7)), 0.5)
	shuffled := rand.New(rand.NewPCG(8, 8)).Perm(joinN)
	for c := range joinChunks {
		predictions(h, name, c*joinChunk+1, joinChunk)
		ls := make([]*gyrev1.Label, joinChunk)
		for i := range ls {
			id := shuffled[c*joinChunk+i] + 1
			value := "1"
			if id%4 == 0 {
				value = "0"
			}
			ls[i] = &gyrev1.Label{PredictionId: fmt.Sprintf("p%d", id), Value: value}
		}
		h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: ls})
	}
	// Every event handled (and acknowledged), whoever handled it.
	for _, c := range events.ServiceConsumers()[monitor.Name] {
		if c.Handler == "prediction-logged" || c.Handler == "label-received" {
			h.env.WaitConsumed(c)
		}
	}
	st := h.state(name)
	run := joinRun{logged: st.Logged["1"]}
	if l := st.Live["1"]; l != nil {
		run.labelled, run.correct = l.Labelled, l.Correct
	}
	for _, r := range reps {
		handled := 0.0
		for _, handler := range []string{"monitor_prediction-logged", "monitor_label-received"} {
			handled += r.scrape(t, fmt.Sprintf(`gyre_bus_messages_handled_total{handler=%q,outcome="ack",service="monitor"}`, handler))
		}
		run.handled = append(run.handled, handled)
	}
	return run
}

// TestReplicasJoinAsOne: two monitors sharing the consumers, each handling
// some of the predictions and some of the labels, join every label, as
// one monitor does: the join is in gyre-joins, not in a replica's memory.
func TestReplicasJoinAsOne(t *testing.T) {
	t.Parallel()
	want := joinRun{labelled: joinN, correct: joinN * 3 / 4, logged: joinN}
	runs := map[int]joinRun{}
	for _, n := range []int{1, 2} {
		// A subtest each: its server (with NATS_URL, its hold of the
		// shared server) ends with it.
		t.Run(fmt.Sprintf("%d replicas", n), func(t *testing.T) {
			runs[n] = runJoinInput(t, n)
		})
		run := runs[n]
		t.Logf("%d replica(s): %d of %d labels joined (join rate %.1f%%), %d correct, %d predictions logged; events handled per replica %v",
			n, run.labelled, joinN, 100*float64(run.labelled)/joinN, run.correct, run.logged, run.handled)
		if run.labelled != want.labelled || run.correct != want.correct || run.logged != want.logged {
			t.Errorf("%d replica(s): %d labelled, %d correct, %d logged; want %d, %d, %d",
				n, run.labelled, run.correct, run.logged, want.labelled, want.correct, want.logged)
		}
		for i, h := range run.handled {
			// Otherwise the test would not show what it claims.
			if h == 0 {
				t.Errorf("%d replicas: replica %d handled no prediction or label event", n, i)
			}
		}
	}
	if one, two := runs[1], runs[2]; one.labelled != two.labelled || one.correct != two.correct || one.logged != two.logged {
		t.Errorf("two replicas counted %+v, one replica %+v", two, one)
	}
}

// TestJoinSurvivesRestart: labels that arrive after the monitor restarts
// pair with predictions logged before it, and predictions logged after it
// with labels that came before it; what was counted before the restart is
// not counted again.
func TestJoinSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	first := runMonitor(t, srv)
	// The test's own connection: the first monitor's ends with it.
	h := &harness{t: t, env: looptest.Connect(t, srv), mon: first}
	const name = "restart"
	h.env.ApplyPipeline(spec(name, 50, 2))
	promote(h, name, rand.New(rand.NewPCG(6, 6)), 0.9)

	predictions(h, name, 1, 100)
	labels(h, name, 1, 20, "1")   // p1..p20 right, counted now
	labels(h, name, 201, 10, "0") // waiting for p201..p210
	h.waitLabelled(name, 20)
	for _, c := range events.ServiceConsumers()[monitor.Name] {
		h.env.WaitConsumed(c)
	}
	first.stop()

	h.mon = runMonitor(t, srv)
	labels(h, name, 21, 80, "0")  // p21..p100 wrong, logged before the restart
	predictions(h, name, 201, 10) // labelled before the restart
	h.waitLabelled(name, 110)
	if l := h.state(name).Live["1"]; l.Correct != 20 {
		t.Errorf("live counters %+v, want 20 correct of 110", l)
	}
	h.waitEmitted(name, events.PerformanceDegraded, 1)
}
