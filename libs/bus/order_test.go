package bus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
)

// publishN publishes n events of a name with ids prefix-1 … prefix-n.
func (e *env) publishN(name, prefix string, n int) {
	e.t.Helper()
	for i := 1; i <= n; i++ {
		ev := valid(e.t, name, "p", i)
		ev.SetID(fmt.Sprintf("%s-%d", prefix, i))
		if err := e.pub.Publish(context.Background(), ev); err != nil {
			e.t.Fatal(err)
		}
	}
}

// recorder records the ids a handler saw, in order.
type recorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *recorder) add(id string) {
	r.mu.Lock()
	r.ids = append(r.ids, id)
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// TestOrderedConsumerKeepsOrderThroughFailures: a lifecycle consumer
// (EventConsumer: one message in hand) handles its messages in stream
// order even when one fails transiently and comes back after a delay:
// nothing newer is delivered meanwhile.
func TestOrderedConsumerKeepsOrderThroughFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	decl := consumer("ordered", events.DataBatchReceived)
	var handled, delivered recorder
	failures := 0
	// One in-process retry: o-2 fails it too, and goes back to the server
	// for a delayed redelivery.
	e.run(bus.RouterConfig{Retries: 1}, map[events.Consumer]bus.Handler{
		decl: func(_ context.Context, ev event.Event) error {
			delivered.add(ev.ID())
			if ev.ID() == "o-2" && failures < 2 {
				failures++
				return errors.New("transient: try again")
			}
			handled.add(ev.ID())
			return nil
		},
	})
	e.publishN(events.DataBatchReceived, "o", 5)
	waitFor(t, "5 handled", 20*time.Second, func() bool { return len(handled.get()) == 5 })
	want := []string{"o-1", "o-2", "o-3", "o-4", "o-5"}
	if got := handled.get(); !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
	if got := delivered.get(); !slices.Equal(got, []string{"o-1", "o-2", "o-2", "o-2", "o-3", "o-4", "o-5"}) {
		t.Fatalf("delivered %v: something newer was delivered while o-2 waited for its retry", got)
	}
}

// TestCrashedConsumerComesBackInSeconds: a message a crashed replica held
// (delivered, never acknowledged) is delivered to the next replica within
// the default ack wait, under 5 s, and before anything newer.
func TestCrashedConsumerComesBackInSeconds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	decl := events.EventConsumer(testService, "crash", events.DataBatchReceived)
	ctx := context.Background()
	cons, err := e.js.CreateOrUpdateConsumer(ctx, decl.Stream, decl.Config())
	if err != nil {
		t.Fatal(err)
	}
	e.publishN(events.DataBatchReceived, "c", 3)
	// The crashed replica: takes c-1 and dies without a word.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if id := m.Headers().Get(bus.HeaderID); id != "c-1" {
			t.Fatalf("the crashed replica took %s, want c-1", id)
		}
	}
	crashed := time.Now()
	var handled recorder
	var first time.Duration
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{
		decl: func(_ context.Context, ev event.Event) error {
			if ev.ID() == "c-1" && first == 0 {
				first = time.Since(crashed)
			}
			handled.add(ev.ID())
			return nil
		},
	})
	waitFor(t, "3 handled", 20*time.Second, func() bool { return len(handled.get()) == 3 })
	if got := handled.get(); !slices.Equal(got, []string{"c-1", "c-2", "c-3"}) {
		t.Fatalf("handled %v, want c-1 first, then c-2, c-3", got)
	}
	t.Logf("the crashed replica's message came back after %s (ack wait %s)", first.Round(time.Millisecond), events.DefaultAckWait)
	if first > 5*time.Second {
		t.Fatalf("the crashed replica's message came back after %s, want under 5s", first)
	}
}

// TestPerReplicaConsumerReachesEveryReplica: a per-replica declaration
// gives each replica every message from the moment it subscribes, where a
// durable one shares them out.
func TestPerReplicaConsumerReachesEveryReplica(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	decl := events.EventConsumer(testService, "every", events.LabelReceived).EveryReplica()
	var a, b recorder
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{decl: func(_ context.Context, ev event.Event) error { a.add(ev.ID()); return nil }})
	e.run(bus.RouterConfig{}, map[events.Consumer]bus.Handler{decl: func(_ context.Context, ev event.Event) error { b.add(ev.ID()); return nil }})
	e.publishN(events.LabelReceived, "l", 10)
	waitFor(t, "both replicas saw all 10", 20*time.Second, func() bool { return len(a.get()) == 10 && len(b.get()) == 10 })
	if !slices.Equal(a.get(), b.get()) {
		t.Fatalf("replica a %v, replica b %v", a.get(), b.get())
	}
	if _, err := e.js.Consumer(context.Background(), decl.Stream, decl.Durable()); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("a durable %s exists (%v): per-replica consumers must not leave one", decl.Durable(), err)
	}
}

// TestRetiredConsumerIsDeleted: provisioning deletes a durable consumer
// that a former version declared, once, and reports it.
func TestRetiredConsumerIsDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	old := events.EventConsumer(testService, "old", events.ModelPromoted)
	if _, err := e.js.CreateOrUpdateConsumer(ctx, old.Stream, old.Config()); err != nil {
		t.Fatal(err)
	}
	topo := bus.Topology{Streams: events.Streams(), Retired: []events.RetiredConsumer{
		{Service: testService, Stream: old.Stream, Durable: old.Durable(), Why: "the test retired it"},
	}}
	for run, want := range []int{1, 0} {
		changes, err := bus.Provision(ctx, e.js, topo)
		if err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for _, c := range changes {
			if c.Action == bus.Deleted {
				deleted++
			}
		}
		if deleted != want {
			t.Fatalf("run %d: %d deleted, want %d: %v", run+1, deleted, want, changes)
		}
	}
	if _, err := e.js.Consumer(ctx, old.Stream, old.Durable()); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("retired consumer still there: %v", err)
	}
}
