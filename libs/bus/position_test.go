package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
)

// TestMessagePosition: a handler learns the stream sequence of its message,
// the one the server stored it at, and the same on a redelivery; outside a
// handler there is none.
func TestMessagePosition(t *testing.T) {
	t.Parallel()
	if _, ok := bus.MessagePosition(context.Background()); ok {
		t.Fatal("MessagePosition outside a handler: ok")
	}
	e := newEnv(t)
	type call struct {
		id  string
		pos bus.Position
		ok  bool
	}
	var (
		mu    sync.Mutex
		calls []call
		fails = map[string]int{"second": 5} // past the in-process retries: a redelivery by the server
	)
	e.run(bus.RouterConfig{Retries: 1}, map[events.Consumer]bus.Handler{
		consumer("position", events.DataBatchReceived): func(ctx context.Context, ev event.Event) error {
			pos, ok := bus.MessagePosition(ctx)
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{ev.ID(), pos, ok})
			if fails[ev.ID()] > 0 {
				fails[ev.ID()]--
				return errors.New("not yet")
			}
			return nil
		},
	})
	stored := map[string]uint64{}
	for _, id := range []string{"first", "second"} {
		ev := valid(t, events.DataBatchReceived, "p1", id)
		ev.SetID(id)
		if err := e.pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		st, err := e.js.Stream(context.Background(), events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		stored[id] = info.State.LastSeq
	}
	waitFor(t, "both handled", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return fails["second"] == 0 && len(calls) >= 7
	})
	mu.Lock()
	defer mu.Unlock()
	for _, c := range calls {
		if !c.ok || c.pos.Stream != events.StreamEvents || c.pos.Seq != stored[c.id] || c.pos.Stored.IsZero() {
			t.Errorf("%s: position %+v (ok %v), want %s sequence %d", c.id, c.pos, c.ok, events.StreamEvents, stored[c.id])
		}
	}
}
