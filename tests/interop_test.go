package tests

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/natstest"
)

// Interop with the CloudEvents Go SDK's JetStream binding
// (github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2): what libs/bus
// publishes arrives intact through it, and what it sends is consumed by a
// libs/bus handler. Both directions run against the server of natstest: the
// embedded one, or the real server process when NATS_URL is set.

func provisioned(t *testing.T) (*natstest.Server, *nats.Conn) {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.Provision(ctx, js, bus.Topology{Streams: events.Streams()}); err != nil {
		t.Fatal(err)
	}
	return srv, nc
}

// arrivedEvent is a full DataBatchArrived event with every kind of attribute
// and extension Gyre uses.
func arrivedEvent(t *testing.T) event.Event {
	t.Helper()
	ev, err := events.New("/producer/interop", "elec2", &gyrev1.DataBatchArrived{
		Pipeline: "elec2", BatchId: "batch-0001", Format: "csv",
		Content: []byte("period,nswprice,class\n0.0,0.056,1\n"),
		Labels:  map[string]string{"source": "interop"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ev.SetExtension(bus.ExtCorrelationID, "corr-interop")
	ev.SetExtension(bus.ExtCausationID, "cause-interop")
	ev.SetExtension(bus.ExtTraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ev.SetExtension(bus.ExtTraceState, "gyre=1")
	ev.SetExtension(bus.ExtModelVersion, "3")
	ev.SetExtension(bus.ExtDatasetVersion, "ds-9")
	return ev
}

func assertSameEvent(t *testing.T, got, want event.Event) {
	t.Helper()
	for _, c := range []struct{ name, got, want string }{
		{"specversion", got.SpecVersion(), want.SpecVersion()},
		{"id", got.ID(), want.ID()},
		{"source", got.Source(), want.Source()},
		{"type", got.Type(), want.Type()},
		{"subject", got.Subject(), want.Subject()},
		{"dataschema", got.DataSchema(), want.DataSchema()},
		{"datacontenttype", got.DataContentType(), want.DataContentType()},
		{"data", string(got.Data()), string(want.Data())},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if !got.Time().Equal(want.Time()) {
		t.Errorf("time = %s, want %s", got.Time(), want.Time())
	}
	for name, v := range want.Extensions() {
		if g, ok := got.Extensions()[name]; !ok || g != v {
			t.Errorf("extension %s = %v, want %v", name, g, v)
		}
	}
	if len(got.Extensions()) != len(want.Extensions()) {
		t.Errorf("extensions = %v, want %v", got.Extensions(), want.Extensions())
	}
	// The payload still decodes as the typed message.
	var msg gyrev1.DataBatchArrived
	if err := events.Decode(got, &msg); err != nil {
		t.Errorf("payload does not decode: %v", err)
	} else if msg.GetBatchId() != "batch-0001" || string(msg.GetContent()) != "period,nswprice,class\n0.0,0.056,1\n" {
		t.Errorf("payload = %v", &msg)
	}
}

func TestInteropBusToCloudEventsSDK(t *testing.T) {
	srv, nc := provisioned(t)
	subject, _ := events.Subject("elec2", events.DataBatchArrived)

	// The SDK's consumer subscribes first (it reads new messages).
	consumer, err := cejs.NewConsumerFromConn(nc, events.StreamEvents, subject, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := cloudevents.NewClient(consumer)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan event.Event, 1)
	go func() {
		_ = client.StartReceiver(ctx, func(ev event.Event) { got <- ev })
	}()
	time.Sleep(300 * time.Millisecond) // StartReceiver subscribes asynchronously

	_, js := srv.Connect(t)
	want := arrivedEvent(t)
	if err := bus.NewPublisher(js, "interop").Publish(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		assertSameEvent(t, ev, want)
	case <-time.After(10 * time.Second):
		t.Fatal("the SDK's consumer received nothing")
	}
	cancel()
	_ = consumer.Close(context.Background())
}

// receiveWithBus runs a libs/bus router with one handler on the
// data.batch.arrived events until the test ends, and returns what it handles.
func receiveWithBus(t *testing.T, js jetstream.JetStream, handler string) <-chan event.Event {
	t.Helper()
	decl := events.EventConsumer("interop", handler, events.DataBatchArrived)
	router, err := bus.NewRouter(js, bus.RouterConfig{Service: "interop", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan event.Event, 1)
	if err := router.Handle(decl, func(_ context.Context, ev event.Event) error {
		got <- ev
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-router.Running()
	return got
}

func TestInteropCloudEventsSDKToBus(t *testing.T) {
	srv, nc := provisioned(t)
	subject, _ := events.Subject("elec2", events.DataBatchArrived)
	sender, err := cejs.NewSenderFromConn(nc, events.StreamEvents, subject, nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := cloudevents.NewClient(sender)
	if err != nil {
		t.Fatal(err)
	}

	_, js := srv.Connect(t)
	got := receiveWithBus(t, js, "sdk")

	want := arrivedEvent(t)
	if res := client.Send(context.Background(), want); cloudevents.IsUndelivered(res) {
		t.Fatalf("SDK send: %v", res)
	}
	select {
	case ev := <-got:
		assertSameEvent(t, ev, want)
	case <-time.After(10 * time.Second):
		t.Fatal("the bus handler received nothing")
	}
}

func TestInteropStructuredModeFromPlainNATS(t *testing.T) {
	srv, nc := provisioned(t)
	_, js := srv.Connect(t)
	got := receiveWithBus(t, js, "structured")

	want := arrivedEvent(t)
	body, err := want.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := events.Subject("elec2", events.DataBatchArrived)
	msg := &nats.Msg{Subject: subject, Header: nats.Header{"content-type": {"application/cloudevents+json"}}, Data: body}
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		assertSameEvent(t, ev, want)
	case <-time.After(10 * time.Second):
		t.Fatal("structured event not consumed")
	}
}

// TestInteropOnASecuredServer: with authentication on, as under `gyre up`,
// a producer outside Gyre sends with the CloudEvents SDK and in structured
// mode with its own identity (confined to one pipeline's data and labels),
// and ingest's consumer — read with ingest's identity — gets both events.
func TestInteropOnASecuredServer(t *testing.T) {
	srv := natstest.StartSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := jetstream.New(srv.ConnectAs(t, events.IdentityAdmin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Provision(ctx, admin, bus.FullTopology()); err != nil {
		t.Fatal(err)
	}
	ingest, err := jetstream.New(srv.ConnectAs(t, events.ServiceIngest))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan event.Event, 2)
	router, err := bus.NewRouter(ingest, bus.RouterConfig{Service: events.ServiceIngest, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := router.Handle(events.EventConsumer(events.ServiceIngest, "batch-arrived", events.DataBatchArrived), func(_ context.Context, ev event.Event) error {
		got <- ev
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(rctx) }()
	defer func() {
		rcancel()
		<-done
	}()
	<-router.Running()

	producer := srv.ConnectAs(t, natsauth.ProducerIdentity("elec2"))
	subject, _ := events.Subject("elec2", events.DataBatchArrived)
	sender, err := cejs.NewSenderFromConn(producer, events.StreamEvents, subject, nil)
	if err != nil {
		t.Fatalf("the SDK's sender as a producer: %v", err)
	}
	client, err := cloudevents.NewClient(sender)
	if err != nil {
		t.Fatal(err)
	}
	want := arrivedEvent(t)
	if res := client.Send(ctx, want); cloudevents.IsUndelivered(res) {
		t.Fatalf("SDK send as a producer: %v", res)
	}
	select {
	case ev := <-got:
		assertSameEvent(t, ev, want)
	case <-time.After(10 * time.Second):
		t.Fatal("ingest's consumer received nothing from the SDK")
	}

	structured := arrivedEvent(t)
	structured.SetID("structured-1")
	body, err := structured.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.PublishMsg(&nats.Msg{Subject: subject, Header: nats.Header{"content-type": {"application/cloudevents+json"}}, Data: body}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		assertSameEvent(t, ev, structured)
	case <-time.After(10 * time.Second):
		t.Fatal("ingest's consumer received nothing in structured mode")
	}
}
