package bus_test

import (
	"context"
	"slices"
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
	total := len(topo.Streams) + len(events.DurableConsumers()) + len(topo.KeyValues) + len(topo.ObjectStores)

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
	changed := bus.Topology{Consumers: []events.Consumer{events.DurableConsumers()[0]}, Streams: []jetstream.StreamConfig{topo.Streams[0]}}
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

// TestProvisionReplicas provisions on a three-node JetStream cluster: with
// Replicas 3 every stream and bucket is created with three copies, one that
// has fewer is raised, and provisioning again with the default (1) lowers
// nothing.
func TestProvisionReplicas(t *testing.T) {
	t.Parallel()
	nodes := natstest.StartCluster(t, 3)
	_, js := nodes[0].Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := bus.FullTopology()

	// One stream exists already with one copy, as a service of the default
	// made it.
	if _, err := bus.Provision(ctx, js, bus.Topology{Streams: topo.Streams[:1]}); err != nil {
		t.Fatal(err)
	}
	topo.Replicas = 3
	report, err := bus.Provision(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range report {
		want := bus.Created
		if c.Kind == "stream" && c.Name == topo.Streams[0].Name {
			want = bus.Updated
			if strings.Join(c.Diff, ",") != "replicas" {
				t.Errorf("%s: diff %v, want replicas", c.Name, c.Diff)
			}
		}
		if c.Action != want {
			t.Errorf("%s %s: %s, want %s", c.Kind, c.Name, c.Action, want)
		}
	}
	checkReplicas(ctx, t, js, topo, 3)

	topo.Replicas = 0
	report, err = bus.Provision(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := countActions(report); got[bus.Unchanged] != len(report) {
		t.Errorf("provisioning with the default replicas changed something: %v", report)
	}
	// A bucket updated for another setting keeps its copies too.
	changed := bus.Topology{KeyValues: slices.Clone(topo.KeyValues[:1])}
	changed.KeyValues[0].History++
	if report, err := bus.Provision(ctx, js, changed); err != nil || report[0].Action != bus.Updated {
		t.Fatalf("history change: %v, %v", report, err)
	}
	checkReplicas(ctx, t, js, topo, 3)
}

// checkReplicas checks the copies the cluster keeps of every stream and
// bucket of topo.
func checkReplicas(ctx context.Context, t *testing.T, js jetstream.JetStream, topo bus.Topology, want int) {
	t.Helper()
	for _, s := range topo.Streams {
		st, err := js.Stream(ctx, s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.Replicas; got != want {
			t.Errorf("stream %s: %d replicas, want %d", s.Name, got, want)
		}
	}
	for _, b := range topo.KeyValues {
		kv, err := js.KeyValue(ctx, b.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Config().Replicas; got != want {
			t.Errorf("kv %s: %d replicas, want %d", b.Bucket, got, want)
		}
	}
	for _, b := range topo.ObjectStores {
		obs, err := js.ObjectStore(ctx, b.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		st, err := obs.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Replicas(); got != want {
			t.Errorf("object store %s: %d replicas, want %d", b.Bucket, got, want)
		}
	}
}

// TestProvisionCreateOnlyReportsWhatDiffers: a service with its own NATS
// identity creates what is missing and reports, without touching it, what
// differs from the catalog (its identity may not update streams).
func TestProvisionCreateOnlyReportsWhatDiffers(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old := events.Streams()[0]
	old.MaxAge = time.Hour
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	topo := bus.ServiceTopology(events.ServiceIngest)
	topo.CreateOnly = true
	changes, err := bus.Provision(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	got := countActions(changes)
	if got[bus.Differs] != 1 || got[bus.Created] != len(changes)-1 {
		t.Fatalf("create-only provisioning: %v, want one differs and the rest created: %v", got, changes)
	}
	st, err := js.Stream(ctx, old.Name)
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().Config.MaxAge != time.Hour {
		t.Fatalf("create-only provisioning changed %s's max age to %s", old.Name, st.CachedInfo().Config.MaxAge)
	}
}

// TestProvisionConcurrently: services start together and provision the
// same topology at once (every one finds the streams missing); each one
// succeeds, whichever created what.
func TestProvisionConcurrently(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 32
	errs := make(chan error, n)
	for range n {
		_, js := srv.Connect(t)
		go func() {
			_, err := bus.Provision(ctx, js, bus.FullTopology())
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent provisioning: %v", err)
		}
	}
}
