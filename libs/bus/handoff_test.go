package bus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
)

// TestDecodePayloadTakesOverTheRoutersPayload: in a handler, the first
// DecodePayload of the event takes over the payload the router decoded and
// checked, without decoding the data again; later calls, and calls with
// another message type, decode.
func TestDecodePayloadTakesOverTheRoutersPayload(t *testing.T) {
	t.Parallel()
	ev := event.New()
	ev.SetID("e1")
	ev.SetSource("/test")
	ev.SetType(events.Type(events.LabelReceived))
	ev.SetDataContentType(ContentTypeJSON)
	// Data that does not decode: only a handed-over payload satisfies
	// DecodePayload, which shows the data is not read again.
	ev.DataEncoded = []byte("not JSON")
	key := &ev.DataEncoded[0]
	t.Cleanup(func() { handoffs.Delete(key) })
	checked := &gyrev1.LabelReceived{Pipeline: "p1", Labels: []*gyrev1.Label{{PredictionId: "r1", Value: "1"}}}
	want := proto.Clone(checked)
	handoffs.Store(key, checked)

	got := &gyrev1.LabelReceived{Pipeline: "stale", Labels: []*gyrev1.Label{{PredictionId: "old"}, {PredictionId: "older"}}}
	if err := DecodePayload(ev, got); err != nil || !proto.Equal(got, want) {
		t.Fatalf("DecodePayload = %v, %v; want the router's payload %v", err, got, want)
	}
	var ce *events.ContractError
	if err := DecodePayload(ev, &gyrev1.LabelReceived{}); !errors.As(err, &ce) || ce.Rule != "decode" {
		t.Errorf("second DecodePayload = %v, want the data decoded (and refused)", err)
	}

	handoffs.Store(key, &gyrev1.ModelPromoted{Pipeline: "p1"})
	if err := DecodePayload(ev, &gyrev1.LabelReceived{}); !errors.As(err, &ce) || ce.Rule != "decode" {
		t.Errorf("DecodePayload with a payload of another type handed over = %v, want the data decoded (and refused)", err)
	}
}

func predictionLog(rows int) event.Event {
	m := &gyrev1.PredictionLogged{Pipeline: "elec2", ModelVersion: 3, Variant: "champion", SampleRate: 1,
		Features: []string{"a", "b", "c", "d", "e", "f", "g", "h"}}
	for i := range rows {
		m.Rows = append(m.Rows, &gyrev1.Prediction{PredictionId: fmt.Sprintf("p-%d", i),
			Values: []float64{1.5, 2.25, 3, 4, 5, 6, 7, 8}, Output: "UP", Probabilities: map[string]float64{"UP": 0.7, "DOWN": 0.3}})
	}
	ev, err := events.New("/gyre/deployer", "elec2", m)
	if err != nil {
		panic(err)
	}
	return ev
}

// BenchmarkConsumePredictionLog is what the bus and a handler spend on the
// payload of a 500-row prediction.logged (the deployer's largest): the
// lenient decode alone (before contracts), the router's check followed by a
// second decode in the handler, and the check with the hand-over.
func BenchmarkConsumePredictionLog(b *testing.B) {
	ev := predictionLog(500)
	const subject = "gyre.pred.elec2.prediction.logged"
	b.Run("decode-only", func(b *testing.B) {
		for b.Loop() {
			var m gyrev1.PredictionLogged
			if err := events.Decode(ev, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check-then-decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := events.DecodeDelivered(subject, ev); err != nil {
				b.Fatal(err)
			}
			var m gyrev1.PredictionLogged
			if err := events.DecodeChecked(ev, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check-then-handoff", func(b *testing.B) {
		key := &ev.Data()[0]
		for b.Loop() {
			p, err := events.DecodeDelivered(subject, ev)
			if err != nil {
				b.Fatal(err)
			}
			handoffs.Store(key, p)
			var m gyrev1.PredictionLogged
			if err := DecodePayload(ev, &m); err != nil {
				b.Fatal(err)
			}
			handoffs.Delete(key)
		}
	})
}
