package bus_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
)

const testService = "bustest"

// env is one test's server, clients and topology.
type env struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *bus.Publisher
	reg *prometheus.Registry
	met *bus.Metrics
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.Provision(ctx, js, bus.Topology{Streams: events.Streams()}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	reg := prometheus.NewRegistry()
	met, err := bus.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js, pub: bus.NewPublisher(js, testService, bus.WithPublisherMetrics(met)), reg: reg, met: met}
}

// consumer declares a test consumer of one event name with a small MaxDeliver
// so that exhaustion is quick to reach.
func consumer(handler, name string) events.Consumer {
	c := events.EventConsumer(testService, handler, name)
	c.MaxDeliver = 3
	c.AckWait = 2 * time.Second
	return c
}

// run starts a router with the given handlers and returns a stop function
// that cancels it and waits for Run to return.
func (e *env) run(cfg bus.RouterConfig, handlers map[events.Consumer]bus.Handler, opts ...bus.HandlerOption) (stop func() error) {
	e.t.Helper()
	cfg.Service = testService
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	cfg.Metrics = e.met
	if cfg.RetryInitial == 0 {
		cfg.RetryInitial = 5 * time.Millisecond
	}
	r, err := bus.NewRouter(e.js, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	for decl, h := range handlers {
		if err := r.Handle(decl, h, opts...); err != nil {
			e.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Running():
	case err := <-done:
		e.t.Fatalf("router stopped at start: %v", err)
	case <-time.After(20 * time.Second):
		e.t.Fatal("router not running after 20s")
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(40 * time.Second):
				runErr = errors.New("router did not stop in 40s")
			}
		})
		return runErr
	}
	e.t.Cleanup(func() { _ = stop() })
	return stop
}

// valid returns an event of a catalog name (data.batch.arrived,
// data.batch.received or label.received) for pipeline whose payload keeps
// its contract; n tells events apart: it is the batch (or prediction) id.
func valid(t testing.TB, name, pipeline string, n any) event.Event {
	t.Helper()
	id := fmt.Sprint(n)
	var msg proto.Message
	switch name {
	case events.DataBatchArrived:
		msg = &gyrev1.DataBatchArrived{Pipeline: pipeline, BatchId: id, Format: "csv", Uri: events.ObjectURI("landing", pipeline+"/"+id+".csv")}
	case events.DataBatchReceived:
		sum := sha256.Sum256([]byte(id))
		msg = &gyrev1.DataBatchReceived{Pipeline: pipeline, BatchId: id, Format: "csv", Sha256: hex.EncodeToString(sum[:]),
			Object: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: pipeline + "/" + id + ".csv"}}
	case events.LabelReceived:
		msg = &gyrev1.LabelReceived{Pipeline: pipeline, Labels: []*gyrev1.Label{{PredictionId: id, Value: "1"}}}
	default:
		t.Fatalf("valid: no payload for %s", name)
	}
	ev, err := events.New("/gyre/"+testService, pipeline, msg)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// batchOf decodes the batch id of a valid event, as a handler does.
func batchOf(ev event.Event) (string, error) {
	var m gyrev1.DataBatchArrived
	if err := bus.DecodePayload(ev, &m); err != nil {
		return "", err
	}
	return m.GetBatchId(), nil
}

// newEvent returns a catalog event for pipeline p with a JSON body (which
// need not keep the contract: for what is published, not consumed).
func newEvent(name, pipeline string, body any) event.Event {
	ev := event.New()
	ev.SetType(events.Type(name))
	ev.SetSubject(pipeline)
	ev.SetExtension(bus.ExtPipeline, pipeline)
	if err := ev.SetData(bus.ContentTypeJSON, body); err != nil {
		panic(err)
	}
	return ev
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

// dlqMessages reads every message of the service's dead-letter subject.
func (e *env) dlqMessages() []jetstream.Msg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject, _ := events.DLQSubject(testService)
	c, err := e.js.OrderedConsumer(ctx, events.StreamDLQ, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	n := int(info.NumPending)
	if n == 0 {
		return nil
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublishConsumeRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan event.Event, 1)
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("roundtrip", events.DataBatchArrived): func(_ context.Context, ev event.Event) error {
			got <- ev
			return nil
		},
	})
	ev := valid(t, events.DataBatchArrived, "elec2", "b1")
	ev.SetID("id-roundtrip")
	ev.SetDataSchema("urn:gyre:proto:gyre.v1.DataBatchArrived")
	ev.SetExtension(bus.ExtModelVersion, "7")
	ev.SetExtension(bus.ExtDatasetVersion, "ds-3")
	ev.SetExtension("custom", "x y z")
	if err := e.pub.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-got:
		for _, c := range []struct{ name, got, want string }{
			{"id", in.ID(), "id-roundtrip"},
			{"type", in.Type(), events.Type(events.DataBatchArrived)},
			{"source", in.Source(), "/gyre/" + testService},
			{"subject", in.Subject(), "elec2"},
			{"dataschema", in.DataSchema(), "urn:gyre:proto:gyre.v1.DataBatchArrived"},
			{"datacontenttype", in.DataContentType(), bus.ContentTypeJSON},
			{"pipeline", bus.Ext(in, bus.ExtPipeline), "elec2"},
			{"modelversion", bus.Ext(in, bus.ExtModelVersion), "7"},
			{"datasetversion", bus.Ext(in, bus.ExtDatasetVersion), "ds-3"},
			{"custom", bus.Ext(in, "custom"), "x y z"},
			{"correlationid", bus.Ext(in, bus.ExtCorrelationID), "id-roundtrip"},
			{"data", string(in.Data()), `{"pipeline":"elec2","batchId":"b1","format":"csv","uri":"nats-object://landing/elec2/b1.csv"}`},
		} {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
			}
		}
		if in.Time().IsZero() {
			t.Error("time not set")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event not handled")
	}
}

func TestTransientFailureIsRetriedThenSucceeds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls atomic.Int32
	done := make(chan struct{})
	e.run(bus.RouterConfig{Retries: 5}, map[events.Consumer]bus.Handler{
		consumer("transient", events.DataBatchArrived): func(context.Context, event.Event) error {
			if calls.Add(1) < 3 {
				return errors.New("redis: connection refused")
			}
			close(done)
			return nil
		},
	})
	if err := e.pub.Publish(context.Background(), valid(t, events.DataBatchArrived, "p1", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("handler never succeeded (%d calls)", calls.Load())
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3 (two failures, one success)", n)
	}
	waitFor(t, "ack metric", 5*time.Second, func() bool {
		return testutil.ToFloat64(mustCounter(t, e.reg, "gyre_bus_messages_handled_total", "outcome", "ack")) == 1
	})
	if got := testutil.ToFloat64(mustCounter(t, e.reg, "gyre_bus_handler_retries_total")); got != 2 {
		t.Errorf("retries metric = %v, want 2", got)
	}
	if msgs := e.dlqMessages(); len(msgs) != 0 {
		t.Errorf("%d dead letters, want none", len(msgs))
	}
}

func TestTransientFailureExhaustedGoesToDLQ(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls atomic.Int32
	decl := consumer("exhaust", events.DataBatchArrived)
	e.run(bus.RouterConfig{Retries: 1}, map[events.Consumer]bus.Handler{
		decl: func(context.Context, event.Event) error {
			calls.Add(1)
			return errors.New("upstream timeout")
		},
	})
	if err := e.pub.Publish(context.Background(), valid(t, events.DataBatchArrived, "p1", 1)); err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	waitFor(t, "dead letter after the last delivery", 30*time.Second, func() bool {
		msgs = e.dlqMessages()
		return len(msgs) == 1
	})
	h := msgs[0].Headers()
	if got := h.Get(bus.HeaderDLQKind); got != "retries-exhausted" {
		t.Errorf("kind = %q, want retries-exhausted", got)
	}
	if got := h.Get(bus.HeaderDLQDeliveries); got != "3" {
		t.Errorf("deliveries = %q, want 3 (MaxDeliver)", got)
	}
	if !strings.Contains(h.Get(bus.HeaderDLQReason), "upstream timeout") {
		t.Errorf("reason %q does not carry the handler error", h.Get(bus.HeaderDLQReason))
	}
	// Each of the 3 deliveries ran the handler once plus one in-process retry.
	if n := calls.Load(); n != 6 {
		t.Errorf("handler called %d times, want 6", n)
	}
}

func TestPermanentFailureGoesToDLQAndLaterMessagesFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled sync.Map
	var calls atomic.Int32
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("permanent", events.DataBatchArrived): func(_ context.Context, ev event.Event) error {
			calls.Add(1)
			id, err := batchOf(ev)
			if err != nil {
				return err
			}
			if id == "2" {
				return bus.Permanentf("row 7, column nswprice: %q is not a number", "abc")
			}
			handled.Store(id, true)
			return nil
		},
	})
	var poisoned event.Event
	for n := 1; n <= 5; n++ {
		ev := valid(t, events.DataBatchArrived, "p1", n)
		ev.SetExtension(bus.ExtCorrelationID, fmt.Sprintf("corr-%d", n))
		if n == 2 {
			ev.SetID("poison-2")
			poisoned = ev
		}
		if err := e.pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "messages 1,3,4,5 handled", 10*time.Second, func() bool {
		for _, n := range []string{"1", "3", "4", "5"} {
			if _, ok := handled.Load(n); !ok {
				return false
			}
		}
		return true
	})
	msgs := e.dlqMessages()
	if len(msgs) != 1 {
		t.Fatalf("%d dead letters, want 1", len(msgs))
	}
	dl := msgs[0]
	h := dl.Headers()
	if calls.Load() != 5 {
		t.Errorf("handler called %d times; a permanent error must not be retried", calls.Load())
	}
	for _, c := range []struct{ name, got, want string }{
		{"kind", h.Get(bus.HeaderDLQKind), "permanent"},
		{"service", h.Get(bus.HeaderDLQService), testService},
		{"handler", h.Get(bus.HeaderDLQHandler), testService + "_permanent"},
		{"deliveries", h.Get(bus.HeaderDLQDeliveries), "1"},
		{"subject", h.Get(bus.HeaderDLQSubject), "gyre.ev.p1.data.batch.arrived"},
		{"stream", h.Get(bus.HeaderDLQStream), events.StreamEvents},
		{"reason", h.Get(bus.HeaderDLQReason), `row 7, column nswprice: "abc" is not a number`},
		{"original ce-id", h.Get(bus.HeaderID), "poison-2"},
		{"original ce-type", h.Get(bus.HeaderType), poisoned.Type()},
		{"original correlationid", h.Get("ce-correlationid"), "corr-2"},
		{"original content-type", h.Get(bus.HeaderContentType), bus.ContentTypeJSON},
		{"original payload", string(dl.Data()), string(poisoned.Data())},
	} {
		if c.got != c.want {
			t.Errorf("dead letter %s = %q, want %q", c.name, c.got, c.want)
		}
	}
	// The dead letter decodes back into the original event.
	orig, err := bus.Decode(h, dl.Data())
	if err != nil {
		t.Fatalf("dead letter does not decode: %v", err)
	}
	if orig.ID() != "poison-2" || orig.Source() != "/gyre/"+testService {
		t.Errorf("decoded dead letter = %s from %s", orig.ID(), orig.Source())
	}
	waitFor(t, "dead-letter metric", 5*time.Second, func() bool {
		return testutil.ToFloat64(mustCounter(t, e.reg, "gyre_bus_dead_letters_total", "kind", "permanent")) == 1
	})
}

func TestDuplicatePublishIsStoredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ev := newEvent(events.DataBatchArrived, "p1", map[string]string{"batchId": "b1"})
	ev.SetID("dup-1")
	subject, err := bus.SubjectOf(ev)
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.pub.PublishTo(ctx, subject, ev)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.pub.PublishTo(ctx, subject, ev)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate {
		t.Errorf("duplicate flags = %v, %v; want false, true", first.Duplicate, second.Duplicate)
	}
	if first.Sequence != second.Sequence {
		t.Errorf("sequences %d and %d differ", first.Sequence, second.Sequence)
	}
	// The batch path dedups too.
	if err := e.pub.PublishBatch(ctx, []event.Event{ev, ev}); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, e.js, events.StreamEvents); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}

func TestHandlerPanicDoesNotStopTheService(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled atomic.Int32
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("panicky", events.DataBatchArrived): func(_ context.Context, ev event.Event) error {
			if ev.ID() == "boom" {
				panic("handler bug: cannot handle " + ev.ID())
			}
			handled.Add(1)
			return nil
		},
	})
	for i := range 4 {
		ev := valid(t, events.DataBatchArrived, "p1", i)
		if i == 1 {
			ev.SetID("boom")
		}
		if err := e.pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the 3 good messages handled after the panic", 10*time.Second, func() bool { return handled.Load() == 3 })
	msgs := e.dlqMessages()
	if len(msgs) != 1 {
		t.Fatalf("%d dead letters, want 1", len(msgs))
	}
	h := msgs[0].Headers()
	if h.Get(bus.HeaderDLQKind) != "panic" || !strings.Contains(h.Get(bus.HeaderDLQReason), "handler bug: cannot handle boom") {
		t.Errorf("dead letter kind %q reason %q", h.Get(bus.HeaderDLQKind), truncateForLog(h.Get(bus.HeaderDLQReason)))
	}
	if h.Get(bus.HeaderID) != "boom" {
		t.Errorf("dead letter is %q, want boom", h.Get(bus.HeaderID))
	}
}

func TestShutdownDrainsInFlightMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	started := make(chan struct{}, 8)
	var finished atomic.Int32
	decl := consumer("drain", events.DataBatchArrived)
	stop := e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		decl: func(ctx context.Context, _ event.Event) error {
			started <- struct{}{}
			time.Sleep(700 * time.Millisecond) // a slow handler, in flight at shutdown
			if ctx.Err() != nil {
				return ctx.Err()
			}
			finished.Add(1)
			return nil
		},
	}, bus.WithConcurrency(3))
	for i := range 3 {
		if err := e.pub.Publish(context.Background(), valid(t, events.DataBatchArrived, "p1", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("handlers did not start")
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("router stop: %v", err)
	}
	if n := finished.Load(); n != 3 {
		t.Fatalf("%d of 3 in-flight messages finished before Run returned", n)
	}
	// Every message was acknowledged: nothing pending, nothing to redeliver.
	c, err := e.js.Consumer(context.Background(), decl.Stream, decl.Durable())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "acks to reach the server", 5*time.Second, func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 3
	})
}

func TestMalformedMessagesGoToDLQ(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled atomic.Int32
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("malformed", events.DataBatchArrived): func(context.Context, event.Event) error {
			handled.Add(1)
			return nil
		},
	})
	subject := "gyre.ev.p1.data.batch.arrived"
	good := func(h nats.Header) nats.Header {
		base := nats.Header{
			bus.HeaderSpecVersion: {"1.0"}, bus.HeaderID: {"x"}, bus.HeaderSource: {"/producer"},
			bus.HeaderType: {events.Type(events.DataBatchArrived)},
		}
		for k, v := range h {
			if v == nil {
				delete(base, k)
			} else {
				base[k] = v
			}
		}
		return base
	}
	cases := []struct {
		name   string
		header nats.Header
		data   string
		reason string
	}{
		{"no ce-type", good(nats.Header{bus.HeaderType: nil, bus.HeaderID: {"no-type"}}), "{}", "type"},
		{"bad specversion", good(nats.Header{bus.HeaderSpecVersion: {"0.1"}, bus.HeaderID: {"bad-version"}}), "{}", `unsupported specversion "0.1"`},
		{"garbage", nil, "\x00\xffnot an event", "not a structured-mode JSON object"},
		{"structured without specversion", nats.Header{bus.HeaderContentType: {bus.ContentTypeCEJSON}}, `{"id":"s1","type":"t","source":"/s"}`, "no specversion"},
		{"bad time", good(nats.Header{bus.HeaderTime: {"yesterday"}, bus.HeaderID: {"bad-time"}}), "{}", "is not an RFC 3339 time"},
		{"bad extension name", good(nats.Header{"ce-Bad_Name": {"v"}, bus.HeaderID: {"bad-ext"}}), "{}", "ce-bad_name"},
	}
	for _, c := range cases {
		if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Header: c.header, Data: []byte(c.data)}); err != nil {
			t.Fatal(err)
		}
	}
	// A good event after the bad ones is handled.
	if err := e.pub.Publish(context.Background(), valid(t, events.DataBatchArrived, "p1", 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the good event", 10*time.Second, func() bool { return handled.Load() == 1 })
	var msgs []jetstream.Msg
	waitFor(t, "dead letters", 10*time.Second, func() bool {
		msgs = e.dlqMessages()
		return len(msgs) == len(cases)
	})
	for i, c := range cases {
		h := msgs[i].Headers()
		if h.Get(bus.HeaderDLQKind) != "malformed" {
			t.Errorf("%s: kind %q, want malformed", c.name, h.Get(bus.HeaderDLQKind))
		}
		if reason := h.Get(bus.HeaderDLQReason); !strings.Contains(reason, c.reason) {
			t.Errorf("%s: reason %q does not mention %q", c.name, reason, c.reason)
		}
		if string(msgs[i].Data()) != c.data {
			t.Errorf("%s: payload not kept intact: %q", c.name, msgs[i].Data())
		}
	}
	if handled.Load() != 1 {
		t.Errorf("handler ran %d times; malformed messages must not reach it", handled.Load())
	}
}

func TestStructuredModeFromPlainNATSIsConsumed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan event.Event, 1)
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("structured", events.LabelReceived): func(_ context.Context, ev event.Event) error {
			got <- ev
			return nil
		},
	})
	// What a Python or shell producer sends with a plain NATS client: one JSON
	// document, no ce- headers, not even a content-type.
	doc := `{"specversion":"1.0","id":"py-1","source":"/python/producer","type":"dev.gyre.label.received.v1",
	  "subject":"elec2","time":"2026-11-22T10:00:00Z","datacontenttype":"application/json","pipeline":"elec2",
	  "data":{"pipeline":"elec2","labels":[{"predictionId":"p-1","value":"1"}]}}`
	if err := e.nc.Publish("gyre.ev.elec2.label.received", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev.ID() != "py-1" || ev.Source() != "/python/producer" || bus.Ext(ev, bus.ExtPipeline) != "elec2" {
			t.Errorf("event = %s", ev)
		}
		var data struct {
			Labels []struct{ PredictionID string }
		}
		if err := json.Unmarshal(ev.Data(), &data); err != nil || len(data.Labels) != 1 || data.Labels[0].PredictionID != "p-1" {
			t.Errorf("data = %s (%v)", ev.Data(), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("structured event not consumed")
	}
}

func TestLineageAndTracePropagateToEmittedEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tracer := tp.Tracer("test")

	emitted := make(chan event.Event, 1)
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		consumer("cause", events.DataBatchArrived): func(ctx context.Context, ev event.Event) error {
			// The handler emits the next event of the loop with its ctx.
			ctx, span := tracer.Start(ctx, "ingest")
			defer span.End()
			return e.pub.Publish(ctx, valid(t, events.DataBatchReceived, "p1", "b1"))
		},
		consumer("effect", events.DataBatchReceived): func(_ context.Context, ev event.Event) error {
			emitted <- ev
			return nil
		},
	})

	ctx, root := tracer.Start(context.Background(), "producer")
	cause := valid(t, events.DataBatchArrived, "p1", "b1")
	cause.SetID("cause-1")
	cause.SetExtension(bus.ExtCorrelationID, "corr-xyz")
	if err := e.pub.Publish(ctx, cause); err != nil {
		t.Fatal(err)
	}
	root.End()
	traceID := root.SpanContext().TraceID()

	select {
	case ev := <-emitted:
		if got := bus.Ext(ev, bus.ExtCorrelationID); got != "corr-xyz" {
			t.Errorf("correlationid = %q, want corr-xyz", got)
		}
		if got := bus.Ext(ev, bus.ExtCausationID); got != "cause-1" {
			t.Errorf("causationid = %q, want cause-1", got)
		}
		if got := bus.Ext(ev, bus.ExtPipeline); got != "p1" {
			t.Errorf("pipeline = %q", got)
		}
		tc := bus.ExtractTrace(context.Background(), &ev)
		sc := trace.SpanContextFromContext(tc)
		if !sc.IsValid() || sc.TraceID() != traceID {
			t.Errorf("traceparent %q does not continue trace %s", bus.Ext(ev, bus.ExtTraceParent), traceID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("emitted event not seen")
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name string, labelPairs ...string) prometheus.Collector {
	t.Helper()
	return gathererCollector{reg: reg, name: name, labels: labelPairs}
}

// gathererCollector exposes the sum of one metric family's series that match
// the given label pairs, so testutil.ToFloat64 can read it.
type gathererCollector struct {
	reg    *prometheus.Registry
	name   string
	labels []string
}

func (g gathererCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc(g.name+"_sum_view", "test view", nil, nil)
}

func (g gathererCollector) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(g.labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == g.labels[i] && lp.GetValue() == g.labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name+"_sum_view", "test view", nil, nil), prometheus.UntypedValue, sum)
}

func truncateForLog(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
