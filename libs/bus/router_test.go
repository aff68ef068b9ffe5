package bus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// TestHandleDeclared: every consumer declared for the router's service gets
// the handler its name maps to; one without a handler is an error naming it.
func TestHandleDeclared(t *testing.T) {
	t.Parallel()
	noop := func(context.Context, event.Event) error { return nil }
	newRouter := func() *bus.Router {
		// Registering subscribes nothing yet: no server is needed.
		r, err := bus.NewRouter(nil, bus.RouterConfig{Service: events.ServiceMonitor, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	all := map[string]bus.Handler{}
	for _, c := range events.ServiceConsumers()[events.ServiceMonitor] {
		all[c.Handler] = noop
	}
	if len(all) < 2 {
		t.Fatalf("the monitor declares %d consumers; the test wants at least 2", len(all))
	}
	if err := newRouter().HandleDeclared(all); err != nil {
		t.Fatalf("HandleDeclared with every handler: %v", err)
	}
	missing := events.ServiceConsumers()[events.ServiceMonitor][1]
	some := map[string]bus.Handler{}
	for h := range all {
		if h != missing.Handler {
			some[h] = noop
		}
	}
	err := newRouter().HandleDeclared(some)
	if err == nil || !strings.Contains(err.Error(), "consumer "+missing.Durable()+" has no handler") {
		t.Fatalf("HandleDeclared without %s: %v, want consumer %s has no handler", missing.Handler, err, missing.Durable())
	}
}

// TestDecodePayload: a payload that keeps its contract is read into the
// message; one that breaks it is a permanent *events.ContractError (kind
// "contract" in the dead letter) with the *events.ValidationError inside; a
// destination of another type is a permanent *events.DecodeError.
func TestDecodePayload(t *testing.T) {
	t.Parallel()
	newEvent := func(msg *gyrev1.LabelReceived) event.Event {
		t.Helper()
		ev, err := events.New("/gyre/test", msg.GetPipeline(), msg)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var got gyrev1.LabelReceived
	ok := newEvent(&gyrev1.LabelReceived{Pipeline: "p1", Labels: []*gyrev1.Label{{PredictionId: "r1", Value: "1"}}})
	if err := bus.DecodePayload(ok, &got); err != nil || got.GetLabels()[0].GetPredictionId() != "r1" {
		t.Fatalf("DecodePayload = %v, %v; want the label of r1", err, &got)
	}

	var wrongType gyrev1.ModelPromoted
	err := bus.DecodePayload(ok, &wrongType)
	var de *events.DecodeError
	if !errors.As(err, &de) || !bus.IsPermanent(err) {
		t.Errorf("DecodePayload into another type = %v, want a permanent *events.DecodeError", err)
	}

	invalid := newEvent(&gyrev1.LabelReceived{Pipeline: "p1"})
	err = bus.DecodePayload(invalid, &gyrev1.LabelReceived{})
	var ve *events.ValidationError
	var ce *events.ContractError
	if !errors.As(err, &ce) || !errors.As(err, &ve) || ve.Field != "labels" || ve.Rule != "required" || !bus.IsPermanent(err) {
		t.Errorf("DecodePayload of no labels = %v, want a permanent *events.ContractError of labels", err)
	}
	if want := "contract dev.gyre.label.received.v1: labels: rule required: empty; at least one item is required"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}

	other := newEvent(&gyrev1.LabelReceived{Pipeline: "p2", Labels: []*gyrev1.Label{{PredictionId: "r1"}}})
	other.SetSubject("p1")
	other.SetExtension(bus.ExtPipeline, "p1")
	if err := bus.DecodePayload(other, &gyrev1.LabelReceived{}); !errors.As(err, &ce) || ce.Field != "pipeline" || ce.Rule != "subject" {
		t.Errorf("DecodePayload of a payload of another pipeline than the event's = %v, want a contract error of pipeline", err)
	}
}
