package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
)

func countActions(report []bus.Change) map[bus.Action]int {
	n := map[bus.Action]int{}
	for _, c := range report {
		n[c.Action]++
	}
	return n
}

func TestProvisionIsIdempotent(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topo := bus.FullTopology()
	total := len(topo.Streams) + len(topo.Consumers) + len(topo.KeyValues) + len(topo.ObjectStores)

	first, err := bus.Provision(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := countActions(first); got[bus.Created] != total {
		t.Fatalf("first provision: %v, want %d created", got, total)
	}
	created := map[string]time.Time{}
	for _, s := range topo.Streams {
		st, err := js.Stream(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		created[s.Name] = st.CachedInfo().Created
	}

	second, err := bus.Provision(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := countActions(second); got[bus.Unchanged] != total {
		t.Fatalf("second provision changed something: %v", second)
	}
	for _, s := range topo.Streams {
		st, err := js.Stream(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !st.CachedInfo().Created.Equal(created[s.Name]) {
			t.Errorf("stream %s was recreated", s.Name)
		}
	}

	// A declaration that changes a mutable setting updates in place, naming it.
	changed := bus.Topology{Consumers: []events.Consumer{topo.Consumers[0]}, Streams: []jetstream.StreamConfig{topo.Streams[0]}}
	changed.Consumers[0].MaxDeliver++
	changed.Streams[0].MaxAge += time.Hour
	report, err := bus.Provision(ctx, js, changed)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range report {
		if c.Action != bus.Updated {
			t.Errorf("%s: %s, want updated", c.Name, c.Action)
		}
	}
	if strings.Join(report[0].Diff, ",") != "max_age" || strings.Join(report[1].Diff, ",") != "max_deliver" {
		t.Errorf("diffs = %v, %v", report[0].Diff, report[1].Diff)
	}

	// One that cannot change in place is refused with the resource and setting named.
	bad := bus.Topology{Streams: []jetstream.StreamConfig{topo.Streams[0]}}
	bad.Streams[0].Retention = jetstream.WorkQueuePolicy
	if _, err := bus.Provision(ctx, js, bad); err == nil || !strings.Contains(err.Error(), "GYRE_EVENTS") || !strings.Contains(err.Error(), "retention") {
		t.Errorf("retention change: %v", err)
	}
}

func TestServiceTopologyHasOnlyItsConsumers(t *testing.T) {
	t.Parallel()
	topo := bus.ServiceTopology(events.ServiceTrainer)
	if len(topo.Consumers) == 0 {
		t.Fatal("trainer has no consumers")
	}
	for _, c := range topo.Consumers {
		if c.Service != events.ServiceTrainer {
			t.Errorf("consumer %s in the trainer's topology", c.Durable())
		}
	}
	if len(topo.Streams) != len(events.Streams()) {
		t.Errorf("service topology lacks streams")
	}
}
