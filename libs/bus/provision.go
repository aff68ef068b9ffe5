package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
)

// Topology is what a server must hold: streams, durable consumers, key-value
// and object store buckets.
type Topology struct {
	Streams   []jetstream.StreamConfig
	Consumers []events.Consumer
	// Retired are durable consumers a former version declared: provisioning
	// deletes them, so that no message waits on a consumer nobody reads.
	Retired      []events.RetiredConsumer
	KeyValues    []jetstream.KeyValueConfig
	ObjectStores []jetstream.ObjectStoreConfig
	// Replicas is how many copies a JetStream cluster keeps of each stream
	// and bucket (0 means 1). Provisioning creates them with that many and
	// raises one that has fewer; it never lowers one that has more, so a
	// service run with the default leaves alone what an operator or another
	// service raised. Consumers follow their stream's.
	Replicas int
	// CreateOnly creates missing streams and buckets but never changes an
	// existing one: a difference is reported (Differs) rather than applied.
	// It is how a service provisions with its own NATS identity, which may
	// create Gyre's streams but not update them (libs/natsauth); the
	// admin's provisioning applies the difference.
	CreateOnly bool
}

// FullTopology is the catalog's whole topology: every stream, every service's
// consumers, every bucket. `gyre up` provisions it.
func FullTopology() Topology {
	return Topology{
		Streams:      events.Streams(),
		Consumers:    events.AllConsumers(),
		Retired:      events.RetiredConsumers(),
		KeyValues:    events.KeyValues(),
		ObjectStores: events.ObjectStores(),
	}
}

// ServiceTopology is what one service needs when it runs alone: every stream
// and bucket (the loop's events cross them all) and its own consumers.
func ServiceTopology(service string) Topology {
	t := FullTopology()
	t.Consumers = events.ServiceConsumers()[service]
	t.Retired = nil
	for _, r := range events.RetiredConsumers() {
		if r.Service == service {
			t.Retired = append(t.Retired, r)
		}
	}
	return t
}

// Action says what provisioning did to one resource.
type Action string

// Provisioning actions.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
	Deleted   Action = "deleted"
	// Differs: the resource differs from the declaration and this
	// provisioning may not change it (Topology.CreateOnly).
	Differs Action = "differs"
)

// Change is one line of a provisioning report.
type Change struct {
	Kind   string // stream, consumer, kv, object
	Name   string
	Action Action
	// Diff names the settings that differed, for Updated.
	Diff []string
}

func (c Change) String() string {
	s := fmt.Sprintf("%-8s %-40s %s", c.Kind, c.Name, c.Action)
	if len(c.Diff) > 0 {
		s += " (" + strings.Join(c.Diff, ", ") + ")"
	}
	return s
}

// Provision makes the server hold the topology, idempotently: it creates what
// is missing, updates what differs in a setting that can change in place, and
// leaves the rest alone, so a second run reports every resource unchanged.
// A difference that cannot be changed in place (a stream's retention or
// storage) is an error naming the resource and setting.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) ([]Change, error) {
	var report []Change
	replicas := max(t.Replicas, 1)
	for _, cfg := range t.Streams {
		cfg.Replicas = max(cfg.Replicas, replicas)
		c, err := provisionStream(ctx, js, cfg, t.CreateOnly)
		if err != nil {
			return report, err
		}
		report = append(report, c)
	}
	for _, decl := range t.Consumers {
		if decl.PerReplica {
			// Each replica makes its own when it subscribes.
			continue
		}
		c, err := provisionConsumer(ctx, js, decl)
		if err != nil {
			return report, err
		}
		report = append(report, c)
	}
	for _, r := range t.Retired {
		c, err := retireConsumer(ctx, js, r)
		if err != nil {
			return report, err
		}
		if c.Action != "" {
			report = append(report, c)
		}
	}
	for _, cfg := range t.KeyValues {
		cfg.Replicas = max(cfg.Replicas, replicas)
		c, err := provisionKV(ctx, js, cfg, t.CreateOnly)
		if err != nil {
			return report, err
		}
		report = append(report, c)
	}
	for _, cfg := range t.ObjectStores {
		cfg.Replicas = max(cfg.Replicas, replicas)
		c, err := provisionObjectStore(ctx, js, cfg, t.CreateOnly)
		if err != nil {
			return report, err
		}
		report = append(report, c)
	}
	return report, nil
}

func provisionStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, createOnly bool) (Change, error) {
	ch := Change{Kind: "stream", Name: want.Name}
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			if _, again := js.Stream(ctx, want.Name); again == nil {
				return lostRace(ch), nil
			}
			return ch, fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		ch.Action = Created
		return ch, nil
	}
	if err != nil {
		return ch, fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if have.Retention != want.Retention {
		return ch, fmt.Errorf("stream %s has retention %s, declared %s: retention cannot change in place; remove the stream or migrate it", want.Name, have.Retention, want.Retention)
	}
	if have.Storage != want.Storage {
		return ch, fmt.Errorf("stream %s has storage %s, declared %s: storage cannot change in place; remove the stream or migrate it", want.Name, have.Storage, want.Storage)
	}
	var diff []string
	if !slices.Equal(have.Subjects, want.Subjects) {
		diff = append(diff, "subjects")
	}
	if have.MaxAge != want.MaxAge {
		diff = append(diff, "max_age")
	}
	if have.Duplicates != want.Duplicates {
		diff = append(diff, "duplicate_window")
	}
	if have.Discard != want.Discard {
		diff = append(diff, "discard")
	}
	if have.Description != want.Description {
		diff = append(diff, "description")
	}
	if have.Replicas < want.Replicas {
		diff = append(diff, "replicas")
	}
	if len(diff) == 0 {
		ch.Action = Unchanged
		return ch, nil
	}
	if createOnly {
		ch.Action, ch.Diff = Differs, diff
		return ch, nil
	}
	// Keep the server's settings the declaration does not name.
	upd := have
	upd.Subjects, upd.MaxAge, upd.Duplicates, upd.Discard, upd.Description = want.Subjects, want.MaxAge, want.Duplicates, want.Discard, want.Description
	upd.Replicas = max(have.Replicas, want.Replicas)
	if _, err := js.UpdateStream(ctx, upd); err != nil {
		return ch, fmt.Errorf("update stream %s (%s): %w", want.Name, strings.Join(diff, ", "), err)
	}
	ch.Action, ch.Diff = Updated, diff
	return ch, nil
}

// lostRace is the change of a resource that another process created while
// this one did: services starting together all find a stream missing and
// all create it, and a NATS 2.9 server may answer the losers with an error
// (subjects overlap with an existing stream) rather than the stream. It is
// there, as declared by the same catalog: the next provisioning compares it.
func lostRace(ch Change) Change {
	ch.Action = Unchanged
	return ch
}

func provisionConsumer(ctx context.Context, js jetstream.JetStream, decl events.Consumer) (Change, error) {
	ch := Change{Kind: "consumer", Name: decl.Stream + "/" + decl.Durable()}
	if err := decl.Validate(); err != nil {
		return ch, err
	}
	want := decl.Config()
	c, err := js.Consumer(ctx, decl.Stream, decl.Durable())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if _, err := js.CreateOrUpdateConsumer(ctx, decl.Stream, want); err != nil {
			return ch, fmt.Errorf("create consumer %s: %w", ch.Name, err)
		}
		ch.Action = Created
		return ch, nil
	}
	if err != nil {
		return ch, fmt.Errorf("consumer %s: %w", ch.Name, err)
	}
	have := c.CachedInfo().Config
	if have.DeliverPolicy != want.DeliverPolicy || have.AckPolicy != want.AckPolicy {
		return ch, fmt.Errorf("consumer %s has deliver/ack policy %s/%s, declared %s/%s: these cannot change in place; remove the consumer or give the handler a new name",
			ch.Name, have.DeliverPolicy, have.AckPolicy, want.DeliverPolicy, want.AckPolicy)
	}
	var diff []string
	if have.FilterSubject != want.FilterSubject {
		diff = append(diff, "filter_subject")
	}
	if have.AckWait != want.AckWait {
		diff = append(diff, "ack_wait")
	}
	if have.MaxDeliver != want.MaxDeliver {
		diff = append(diff, "max_deliver")
	}
	if have.MaxAckPending != want.MaxAckPending {
		diff = append(diff, "max_ack_pending")
	}
	if have.Description != want.Description {
		diff = append(diff, "description")
	}
	if len(diff) == 0 {
		ch.Action = Unchanged
		return ch, nil
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, decl.Stream, want); err != nil {
		return ch, fmt.Errorf("update consumer %s (%s): %w", ch.Name, strings.Join(diff, ", "), err)
	}
	ch.Action, ch.Diff = Updated, diff
	return ch, nil
}

func provisionKV(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig, createOnly bool) (Change, error) {
	ch := Change{Kind: "kv", Name: want.Bucket}
	kv, err := js.KeyValue(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateKeyValue(ctx, want); err != nil {
			if _, again := js.KeyValue(ctx, want.Bucket); again == nil {
				return lostRace(ch), nil
			}
			return ch, fmt.Errorf("create kv bucket %s: %w", want.Bucket, err)
		}
		ch.Action = Created
		return ch, nil
	}
	if err != nil {
		return ch, fmt.Errorf("kv bucket %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return ch, fmt.Errorf("kv bucket %s status: %w", want.Bucket, err)
	}
	var diff []string
	if st.History() != int64(max(want.History, 1)) {
		diff = append(diff, "history")
	}
	if st.TTL() != want.TTL {
		diff = append(diff, "ttl")
	}
	have := st.Config().Replicas
	if have < want.Replicas {
		diff = append(diff, "replicas")
	}
	if len(diff) == 0 {
		ch.Action = Unchanged
		return ch, nil
	}
	if createOnly {
		ch.Action, ch.Diff = Differs, diff
		return ch, nil
	}
	want.Replicas = max(have, want.Replicas)
	if _, err := js.UpdateKeyValue(ctx, want); err != nil {
		return ch, fmt.Errorf("update kv bucket %s (%s): %w", want.Bucket, strings.Join(diff, ", "), err)
	}
	ch.Action, ch.Diff = Updated, diff
	return ch, nil
}

func provisionObjectStore(ctx context.Context, js jetstream.JetStream, want jetstream.ObjectStoreConfig, createOnly bool) (Change, error) {
	ch := Change{Kind: "object", Name: want.Bucket}
	obs, err := js.ObjectStore(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateObjectStore(ctx, want); err != nil {
			if _, again := js.ObjectStore(ctx, want.Bucket); again == nil {
				return lostRace(ch), nil
			}
			return ch, fmt.Errorf("create object store %s: %w", want.Bucket, err)
		}
		ch.Action = Created
		return ch, nil
	}
	if err != nil {
		return ch, fmt.Errorf("object store %s: %w", want.Bucket, err)
	}
	st, err := obs.Status(ctx)
	if err != nil {
		return ch, fmt.Errorf("object store %s status: %w", want.Bucket, err)
	}
	if st.Replicas() >= want.Replicas {
		ch.Action = Unchanged
		return ch, nil
	}
	if createOnly {
		ch.Action, ch.Diff = Differs, []string{"replicas"}
		return ch, nil
	}
	if _, err := js.UpdateObjectStore(ctx, want); err != nil {
		return ch, fmt.Errorf("update object store %s (replicas): %w", want.Bucket, err)
	}
	ch.Action, ch.Diff = Updated, []string{"replicas"}
	return ch, nil
}

// retireConsumer deletes a retired durable consumer if the server still
// has it; the change is empty when it had not.
func retireConsumer(ctx context.Context, js jetstream.JetStream, r events.RetiredConsumer) (Change, error) {
	ch := Change{Kind: "consumer", Name: r.Stream + "/" + r.Durable}
	err := js.DeleteConsumer(ctx, r.Stream, r.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return Change{}, nil
	case err != nil:
		return ch, fmt.Errorf("delete retired consumer %s: %w", ch.Name, err)
	}
	ch.Action, ch.Diff = Deleted, []string{r.Why}
	return ch, nil
}

// Teardown deletes every stream and bucket of Gyre from the server — streams
// named GYRE_*, and the KV_gyre-* and OBJ_gyre-* streams behind buckets — and
// returns their names. It is for starting over (a demo, a test), never for a
// running loop.
func Teardown(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	names := js.StreamNames(ctx)
	var doomed []string
	for n := range names.Name() {
		if strings.HasPrefix(n, "GYRE_") || strings.HasPrefix(n, "KV_gyre-") || strings.HasPrefix(n, "OBJ_gyre-") {
			doomed = append(doomed, n)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	for _, n := range doomed {
		if err := js.DeleteStream(ctx, n); err != nil {
			return nil, fmt.Errorf("delete stream %s: %w", n, err)
		}
	}
	return doomed, nil
}
