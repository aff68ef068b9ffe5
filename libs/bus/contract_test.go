package bus_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

func degraded(pipeline string) *gyrev1.PerformanceDegraded {
	return &gyrev1.PerformanceDegraded{Pipeline: pipeline, ModelVersion: 3, Metric: "accuracy", BaselineAccuracy: 0.8,
		LiveAccuracy: 0.6, Drop: 0.8 - 0.6, MaxDrop: 0.1, LabelledRows: 200, Predictions: 250}
}

// TestContractViolationsAreDeadLettered: payloads that break their
// contract — a performance.degraded carrying only a pipeline, one whose
// pipeline is not its subject's, an event on another event's subject — are
// dead-lettered as "contract" with a reason naming the field and the rule,
// and the handler never sees them; a payload that keeps its contract is
// handled, and the handler's DecodePayload reads it.
func TestContractViolationsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var mu sync.Mutex
	var seen []string
	var got []*gyrev1.PerformanceDegraded
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("contract", events.PerformanceDegraded): func(_ context.Context, ev event.Event) error {
			mu.Lock()
			seen = append(seen, ev.ID())
			mu.Unlock()
			var m gyrev1.PerformanceDegraded
			if err := bus.DecodePayload(ev, &m); err != nil {
				return err
			}
			mu.Lock()
			got = append(got, &m)
			mu.Unlock()
			return nil
		},
	})
	const subject = "gyre.ev.p1.performance.degraded"
	build := func(id, pipeline string, msg proto.Message) event.Event {
		t.Helper()
		ev, err := events.New("/outsider", pipeline, msg)
		if err != nil {
			t.Fatal(err)
		}
		ev.SetID(id)
		return ev
	}
	otherPipeline := build("other-pipeline", "p2", degraded("p2"))
	otherPipeline.SetSubject("p1") // the attributes follow the subject; the payload does not
	otherPipeline.SetExtension(bus.ExtPipeline, "p1")
	type deadCase struct {
		ev     event.Event
		reason string // the whole reason; for a decode error, its start (protobuf words the rest)
	}
	cases := []deadCase{
		{build("only-pipeline", "p1", &gyrev1.PerformanceDegraded{Pipeline: "p1"}),
			"contract dev.gyre.performance.degraded.v1: modelVersion: rule min: 0, want >= 1"},
		{otherPipeline,
			`contract dev.gyre.performance.degraded.v1: pipeline: rule subject: "p2", but the subject gyre.ev.p1.performance.degraded is pipeline "p1"'s`},
		{build("other-subject", "p2", degraded("p2")),
			`contract dev.gyre.performance.degraded.v1: ce.subject: rule subject: "p2", but the subject gyre.ev.p1.performance.degraded is pipeline "p1"'s`},
		{build("other-type", "p1", &gyrev1.DriftDetected{Pipeline: "p1"}),
			"contract dev.gyre.drift.detected.v1: ce.type: rule subject: subject gyre.ev.p1.performance.degraded carries dev.gyre.performance.degraded.v1, not dev.gyre.drift.detected.v1"},
		{build("wrong-json-type", "p1", degraded("p1")), "contract dev.gyre.performance.degraded.v1: rule decode: invalid JSON data for gyre.v1.PerformanceDegraded: "},
	}
	cases[4].ev.DataEncoded = []byte(strings.Replace(string(cases[4].ev.Data()), `"modelVersion":"3"`, `"modelVersion":"three"`, 1))
	good := build("good", "p1", degraded("p1"))
	for _, c := range append(cases, deadCase{ev: good}) {
		msg, err := bus.EncodeBinary(subject, &c.ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	var dead []jetstream.Msg
	waitFor(t, "the good event handled and the others dead-lettered", 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		dead = e.dlqMessages()
		return len(got) == 1 && len(dead) == len(cases)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "good" {
		t.Errorf("the handler saw %v; only the event that keeps its contract may reach it", seen)
	}
	if !proto.Equal(got[0], degraded("p1")) {
		t.Errorf("DecodePayload in the handler = %v, want %v", got[0], degraded("p1"))
	}
	for i, c := range cases {
		h := dead[i].Headers()
		reason := h.Get(bus.HeaderDLQReason)
		if strings.HasSuffix(c.reason, ": ") && strings.HasPrefix(reason, c.reason) && strings.Contains(reason, "modelVersion") {
			reason = c.reason // the field is named; protobuf's wording of the rest may change
		}
		if h.Get(bus.HeaderID) != c.ev.ID() || h.Get(bus.HeaderDLQKind) != "contract" || reason != c.reason {
			t.Errorf("dead letter %d: id %q kind %q reason %q; want %s, contract, %q", i, h.Get(bus.HeaderID),
				h.Get(bus.HeaderDLQKind), h.Get(bus.HeaderDLQReason), c.ev.ID(), c.reason)
		}
		if string(dead[i].Data()) != string(c.ev.Data()) {
			t.Errorf("dead letter %d: payload not kept intact", i)
		}
	}
	waitFor(t, "dead-letter metric", 5*time.Second, func() bool {
		return testutil.ToFloat64(mustCounter(t, e.reg, "gyre_bus_dead_letters_total", "kind", "contract")) == float64(len(cases))
	})
}
