// Package looptest helps component tests of the loop's services: a
// JetStream server with Gyre's topology (natstest), the services under test
// running on it, pipelines and validated batches seeded the way ingest and
// validation leave them, events published and read back, and synthetic
// labelled CSV batches to train on.
package looptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// Timeout bounds every wait of the package that is not given its own bound.
const Timeout = 60 * time.Second

// WaitFor polls cond every 20ms until it holds, and fails the test when it
// still does not after d; what names the condition in the failure.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Env is a JetStream server with Gyre's whole topology provisioned.
type Env struct {
	t      testing.TB
	Server *natstest.Server
	// Deps are the deps of the test's service process (Connect, New); zero
	// when there is none (NewFull, Attach).
	Deps    service.Deps
	JS      jetstream.JetStream
	Buckets *store.Buckets
	// Pub publishes as a test client (source /gyre/test).
	Pub *bus.Publisher
}

// New starts a server (natstest.Start), provisions every stream and bucket
// and connects; everything stops at cleanup.
func New(t testing.TB) *Env {
	t.Helper()
	srv := natstest.Start(t)
	return Connect(t, srv)
}

// Connect connects to a running server and provisions every stream and bucket.
func Connect(t testing.TB, srv *natstest.Server) *Env {
	t.Helper()
	cfg := service.Defaults("127.0.0.1:0")
	cfg.NATSURL = srv.URL
	// Component tests call the services' routes without tokens; the routes'
	// scopes are tested with servicetest.NewTokens.
	cfg.HTTPAuth = service.HTTPAuthNone
	proc, err := service.Connect(context.Background(), cfg, "looptest", service.WithLogOutput(logOut()), service.WithTraceOutput(io.Discard))
	if err != nil {
		t.Fatalf("looptest: connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = proc.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	// Streams and buckets only: each service provisions its own consumers.
	topo := bus.FullTopology()
	topo.Consumers = nil
	if _, err := bus.Provision(ctx, proc.JS, topo); err != nil {
		t.Fatalf("looptest: provision: %v", err)
	}
	e := attach(ctx, t, srv, proc.JS)
	e.Deps = proc.Deps
	return e
}

// NewFull starts a server with Gyre's full topology provisioned on a plain
// connection of the test's own, as `gyre up` leaves it: every stream and
// bucket and every service's durable consumers (servicetest.Provisioned).
// No service process is connected: Deps is zero.
func NewFull(t testing.TB) *Env {
	t.Helper()
	srv, js, b := servicetest.Provisioned(t)
	return &Env{t: t, Server: srv, JS: js, Buckets: b, Pub: bus.NewPublisher(js, "test")}
}

// Attach returns the Env of a server whose buckets the service under test
// has provisioned itself, on js, a connection to it; it provisions nothing.
// Deps is zero.
func Attach(t testing.TB, srv *natstest.Server, js jetstream.JetStream) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	return attach(ctx, t, srv, js)
}

// attach opens the buckets of a provisioned server on js and returns its Env.
func attach(ctx context.Context, t testing.TB, srv *natstest.Server, js jetstream.JetStream) *Env {
	t.Helper()
	b, err := store.Open(ctx, js)
	if err != nil {
		t.Fatalf("looptest: open buckets: %v", err)
	}
	return &Env{t: t, Server: srv, JS: js, Buckets: b, Pub: bus.NewPublisher(js, "test")}
}

// Run runs a service until the test ends and waits until it is ready.
func (e *Env) Run(r service.Runner) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("%s: Run: %v", r.Name(), err)
			}
		case <-time.After(30 * time.Second):
			e.t.Errorf("%s: Run did not return after cancel", r.Name())
		}
	})
	deadline := time.Now().Add(Timeout)
	for !r.Readiness().Ready {
		select {
		case err := <-done:
			e.t.Fatalf("%s stopped before it was ready: %v", r.Name(), err)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready: %+v", r.Name(), r.Readiness())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ctx returns a context bounded by Timeout.
func (e *Env) Ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	e.t.Cleanup(cancel)
	return ctx
}

// ApplyPipeline parses a spec and stores it the way `gyre apply` does.
func (e *Env) ApplyPipeline(spec string) *pipeline.Pipeline {
	e.t.Helper()
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		e.t.Fatalf("looptest: pipeline: %v", err)
	}
	if _, err := e.Buckets.Pipelines.Put(e.Ctx(), p.Name(), p.Canonical()); err != nil {
		e.t.Fatalf("looptest: store pipeline: %v", err)
	}
	return p
}

// AddBatch stores a CSV batch in gyre-batches and appends it to the
// pipeline's validated-batch log, as ingest and validation do.
func (e *Env) AddBatch(pipelineName, batchID string, csv []byte) store.ValidatedBatch {
	e.t.Helper()
	ctx := e.Ctx()
	ref, _, err := store.PutObject(ctx, e.Buckets.Batches, pipelineName+"/"+batchID+".csv", "text/csv", csv)
	if err != nil {
		e.t.Fatalf("looptest: store batch: %v", err)
	}
	vb, err := store.AppendValidated(ctx, e.Buckets.State, pipelineName, store.ValidatedBatch{
		BatchID: batchID, ObjectKey: ref.GetKey(), Format: events.FormatCSV,
		Rows: int64(strings.Count(string(csv), "\n") - 1), Sha256: ref.GetSha256(), At: time.Now().UTC(),
	})
	if err != nil {
		e.t.Fatalf("looptest: append batch: %v", err)
	}
	return vb
}

// StoreBundle trains the spec's model on CSV batches, stores the bundle in
// gyre-models as the artifact of a training request, and returns its
// reference.
func (e *Env) StoreBundle(p *pipeline.Pipeline, requestID string, batches ...[]byte) *gyrev1.ObjectRef {
	e.t.Helper()
	tabs := make([]*table.Table, len(batches))
	for i, csv := range batches {
		t, err := table.Read(table.FormatCSV, csv)
		if err != nil {
			e.t.Fatalf("looptest: batch %d: %v", i+1, err)
		}
		tabs[i] = t
	}
	set, err := features.Fit(p, tabs...)
	if err != nil {
		e.t.Fatalf("looptest: fit: %v", err)
	}
	parts := make([]*ml.Dataset, len(tabs))
	for i, t := range tabs {
		if parts[i], err = set.Dataset(t, true); err != nil {
			e.t.Fatalf("looptest: dataset: %v", err)
		}
	}
	ds, err := ml.Concat(parts...)
	if err != nil {
		e.t.Fatalf("looptest: concat: %v", err)
	}
	m, err := ml.Train(context.Background(), p.Spec.Model.Algorithm, p.Spec.Model.Params, ds, ml.TrainOptions{Seed: p.Spec.Model.Seed})
	if err != nil {
		e.t.Fatalf("looptest: train: %v", err)
	}
	data, err := bundle.Marshal(&bundle.Bundle{Pipeline: p.Name(), RequestID: requestID, Features: set, Model: m})
	if err != nil {
		e.t.Fatalf("looptest: bundle: %v", err)
	}
	ref, _, err := store.PutObject(e.Ctx(), e.Buckets.Models, bundle.Key(p.Name(), requestID), bundle.MediaType, data)
	if err != nil {
		e.t.Fatalf("looptest: store bundle: %v", err)
	}
	return ref
}

// Emit publishes msg as an event of pipeline from source (e.g.
// "/gyre/monitor") and returns it as published.
func (e *Env) Emit(source, pipelineName string, msg proto.Message) event.Event {
	e.t.Helper()
	ev, err := events.New(source, pipelineName, msg)
	if err != nil {
		e.t.Fatalf("looptest: new event: %v", err)
	}
	if err := e.Pub.Publish(e.Ctx(), ev); err != nil {
		e.t.Fatalf("looptest: publish: %v", err)
	}
	return ev
}

// Events returns the events of a pipeline and name (catalog name, e.g.
// "training.requested"; "" for every one) stored so far, oldest first.
func (e *Env) Events(pipelineName, name string) []event.Event {
	e.t.Helper()
	filter, err := events.FilterSubject(pipelineName, name)
	if err != nil {
		e.t.Fatalf("looptest: %v", err)
	}
	stream := events.StreamEvents
	if s, ok := events.Lookup(name); ok {
		stream = s.Stream
	}
	ctx := e.Ctx()
	c, err := e.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		e.t.Fatalf("looptest: consumer: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.t.Fatalf("looptest: consumer info: %v", err)
	}
	var out []event.Event
	for left := info.NumPending; left > 0; {
		batch, err := c.Fetch(int(min(left, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.t.Fatalf("looptest: fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			ev, err := bus.Decode(m.Headers(), m.Data())
			if err != nil {
				e.t.Fatalf("looptest: decode %s: %v", m.Subject(), err)
			}
			out = append(out, ev)
			got++
		}
		if got == 0 {
			break
		}
		left -= uint64(got)
	}
	return out
}

// WaitEvents waits until at least n events of a pipeline and name are
// stored, and returns them all.
func (e *Env) WaitEvents(pipelineName, name string, n int) []event.Event {
	e.t.Helper()
	return e.WaitEventsWithin(pipelineName, name, n, Timeout)
}

// WaitEventsWithin is WaitEvents failing after d instead of Timeout.
func (e *Env) WaitEventsWithin(pipelineName, name string, n int, d time.Duration) []event.Event {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		evs := e.Events(pipelineName, name)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("looptest: %d %s event(s) of %s after %s, want %d", len(evs), name, pipelineName, d, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitConsumed waits until a durable consumer has no message pending or
// unacknowledged and its ack floor has reached the last message its filter
// matched when the call began: every event published before the call is
// handled. The ack floor matters because the server counts a new message as
// pending asynchronously, after the publish is acknowledged: pending counts
// alone can read zero before the consumer has seen the message.
func (e *Env) WaitConsumed(c events.Consumer) {
	e.t.Helper()
	last := e.lastSeq(c)
	deadline := time.Now().Add(Timeout)
	for {
		cons, err := e.JS.Consumer(e.Ctx(), c.Stream, c.Durable())
		if err == nil {
			info, err := cons.Info(e.Ctx())
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0 &&
				info.AckFloor.Stream >= last {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("looptest: consumer %s has not handled up to %s sequence %d after %s", c.Durable(), c.Stream, last, Timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastSeq returns the stream sequence of the last message matching c's
// filter subject, 0 when there is none.
func (e *Env) lastSeq(c events.Consumer) uint64 {
	e.t.Helper()
	stream, err := e.JS.Stream(e.Ctx(), c.Stream)
	if err != nil {
		e.t.Fatalf("looptest: stream %s: %v", c.Stream, err)
	}
	filter := c.FilterSubject
	if filter == "" {
		filter = ">"
	}
	msg, err := stream.GetLastMsgForSubject(e.Ctx(), filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0
	}
	if err != nil {
		e.t.Fatalf("looptest: last message of %s on %s: %v", c.Stream, filter, err)
	}
	return msg.Sequence
}

// Decode decodes an event's payload into msg, failing the test on error.
func Decode[M proto.Message](t testing.TB, ev event.Event, msg M) M {
	t.Helper()
	if err := events.Decode(ev, msg); err != nil {
		t.Fatalf("looptest: %v", err)
	}
	return msg
}

// CSV returns a labelled batch of rows: numeric x1, x2, a category colour
// and class 1 when x1 + x2 > 1 + shift or the colour is red, so that a
// model learns it and a shift moves the boundary (concept drift).
func CSV(seed uint64, rows int, shift float64) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	colors := []string{"red", "green", "blue"}
	var b strings.Builder
	b.WriteString("x1,x2,color,class\n")
	for range rows {
		x1, x2 := r.Float64(), r.Float64()
		c := colors[r.IntN(len(colors))]
		class := 0
		if x1+x2 > 1+shift || c == "red" {
			class = 1
		}
		fmt.Fprintf(&b, "%.4f,%.4f,%s,%d\n", x1, x2, c, class)
	}
	return []byte(b.String())
}

// Spec returns a pipeline spec for CSV batches; extra is YAML appended
// under spec: (indented two spaces), e.g. "  evaluation: {gates: [...]}".
func Spec(name, model, extra string) string {
	return fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: class
    schema:
      - {name: x1, type: float}
      - {name: x2, type: float}
      - {name: color, type: category}
      - {name: class, type: category}
  model: %s
%s`, name, model, extra)
}

// logOut is where the services of a test log: nowhere, unless
// GYRE_TEST_LOGS is set (to debug a test).
func logOut() io.Writer {
	if os.Getenv("GYRE_TEST_LOGS") != "" {
		return os.Stderr
	}
	return io.Discard
}
