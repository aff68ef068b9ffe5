package servicetest

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// Running is one or more services running on a test's own JetStream server
// (natstest), with the topology provisioned: what component tests of a
// service's handlers drive with real events.
type Running struct {
	// URL is the server's client URL.
	URL string
	// JS is a JetStream API of the test's own connection.
	JS jetstream.JetStream
	// Buckets are the topology's buckets.
	Buckets *store.Buckets
	// Publisher publishes as /gyre/test, like any producer.
	Publisher *bus.Publisher
	// Services are the services running, in the order given.
	Services []service.Runner
}

// Start provisions the full topology on natstest.Start(t) (Provisioned),
// builds every service with build (each gets the same deps: one connection,
// one registry, as under `gyre up`), runs them until the test ends, and
// waits until they are ready. HTTP authentication is off (--http-auth
// none), so that tests call the services' routes without tokens;
// StartWith(t, Options{Tokens: NewTokens(t)}, ...) turns it on.
func Start(t *testing.T, builds ...Build) *Running {
	t.Helper()
	return StartWith(t, Options{}, builds...)
}

// Options configure StartWith.
type Options struct {
	// Tokens, when set, turns HTTP authentication on with its token file:
	// the services' routes need a token of the right scope (Tokens.Authorize).
	Tokens *Tokens
}

// StartWith is Start with options.
func StartWith(t *testing.T, o Options, builds ...Build) *Running {
	t.Helper()
	srv, js, b := Provisioned(t)
	cfg := service.Defaults("127.0.0.1:0")
	cfg.NATSURL = srv.URL
	o.Tokens.configure(&cfg)
	proc, err := service.Connect(context.Background(), cfg, "servicetest", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	r := &Running{URL: srv.URL, JS: js, Buckets: b, Publisher: bus.NewPublisher(js, "test")}
	for _, build := range builds {
		svc, err := build(srv.URL, proc.Deps)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		r.Services = append(r.Services, svc)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, len(r.Services))
	for _, svc := range r.Services {
		go func() { done <- svc.Run(runCtx) }()
	}
	t.Cleanup(func() {
		stop()
		for range r.Services {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(StopTimeout):
				t.Errorf("a service did not stop within %s", StopTimeout)
			}
		}
		cctx, ccancel := context.WithTimeout(context.Background(), StopTimeout)
		defer ccancel()
		if err := proc.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	deadline := time.Now().Add(ReadyTimeout)
	for _, svc := range r.Services {
		for !svc.Readiness().Ready {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready after %s: %+v", svc.Name(), ReadyTimeout, svc.Readiness())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return r
}

// Provisioned starts a server (natstest.Start) and provisions Gyre's full
// topology on a plain connection of the test's own (Server.Connect): every
// stream and bucket and every service's durable consumers, as `gyre up`
// leaves it. It returns the server, the connection's JetStream API and the
// opened buckets.
func Provisioned(t testing.TB) (*natstest.Server, jetstream.JetStream, *store.Buckets) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.Provision(ctx, js, bus.FullTopology()); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	b, err := store.Open(ctx, js)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	return srv, js, b
}

// Apply parses a pipeline spec and applies it as `gyre apply` does.
func (r *Running) Apply(t *testing.T, spec string) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		t.Fatalf("pipeline.Parse: %v", err)
	}
	if _, err := store.ApplyPipeline(context.Background(), r.JS, r.Publisher, p, "test"); err != nil {
		t.Fatalf("ApplyPipeline: %v", err)
	}
	return p
}

// Publish publishes a catalog payload for a pipeline and returns the event.
func (r *Running) Publish(t *testing.T, pipeline string, msg proto.Message) event.Event {
	t.Helper()
	ev, err := events.New("/gyre/test", pipeline, msg)
	if err != nil {
		t.Fatalf("events.New: %v", err)
	}
	if err := r.Publisher.Publish(context.Background(), ev); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return ev
}

// Events returns every stored event of a name for a pipeline, oldest first.
func (r *Running) Events(t *testing.T, pipeline, name string) []event.Event {
	t.Helper()
	spec, ok := events.Lookup(name)
	if !ok {
		t.Fatalf("unknown event %q", name)
	}
	filter, err := events.FilterSubject(pipeline, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for _, m := range r.messages(t, spec.Stream, filter) {
		ev, err := bus.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatalf("decode %s: %v", m.Subject, err)
		}
		out = append(out, ev)
	}
	return out
}

// WaitEvents waits until at least n events of a name are stored for a
// pipeline and returns them all.
func (r *Running) WaitEvents(t *testing.T, pipeline, name string, n int) []event.Event {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		evs := r.Events(t, pipeline, name)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events for %s after %s, want %d", len(evs), name, pipeline, WaitTimeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DeadLetters returns the dead letters of a service, oldest first.
func (r *Running) DeadLetters(t *testing.T, svc string) []*jetstream.RawStreamMsg {
	t.Helper()
	return r.messages(t, events.StreamDLQ, events.DLQPrefix+"."+svc)
}

// WaitDeadLetters waits until a service has at least n dead letters.
func (r *Running) WaitDeadLetters(t *testing.T, svc string, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for {
		dl := r.DeadLetters(t, svc)
		if len(dl) >= n {
			return dl
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters of %s after %s, want %d", len(dl), svc, WaitTimeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitTimeout bounds the waits of Running.
const WaitTimeout = 20 * time.Second

// messages reads every message of a stream on a subject filter.
func (r *Running) messages(t *testing.T, stream, filter string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatalf("stream %s: get %s from %d: %v", stream, filter, seq, err)
		}
		out = append(out, m)
		seq = m.Sequence + 1
	}
}
