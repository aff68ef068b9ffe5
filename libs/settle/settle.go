// Package settle tells when the loop has nothing left to do: every durable
// consumer of its streams is idle, and every deployment follows the
// registry's champion. Drivers that feed the loop one batch at a time and
// read what it decided (gyre demo, the chaos and end-to-end tests) wait for
// it between batches.
package settle

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

// checkTimeout bounds one Quiet.
const checkTimeout = 10 * time.Second

// Streams are the streams whose consumers carry the loop's work.
var Streams = []string{events.StreamEvents, events.StreamJobs, events.StreamPredictions}

// Quiet reports whether the loop has no work left, and when it has, what:
//   - no durable consumer has messages pending or delivered but
//     unacknowledged (a handler publishes what it causes before it
//     acknowledges its input, so at an instant when every consumer is
//     quiet, no event is in flight between services);
//   - every pipeline's deployment record follows the registry's newest
//     generation: the deployer reacts to the registry's record, which no
//     consumer shows.
func Quiet(ctx context.Context, js jetstream.JetStream, opts ...Option) (bool, string, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	// Each check is bounded: a request lost as a cluster node dies must not
	// hold the caller until its own deadline.
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	for _, stream := range Streams {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false, "", fmt.Errorf("stream %s: %w", stream, err)
		}
		busy := ""
		lister := s.ListConsumers(ctx)
		// Read the listing to its end: the lister's goroutine blocks on a
		// consumer nobody reads.
		for info := range lister.Info() {
			if busy != "" || info.Config.Durable == "" || o.ignored(info.Name) {
				continue // ordered consumers of readers and per-replica ones
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				busy = fmt.Sprintf("%s has %d pending, %d in flight", info.Name, info.NumPending, info.NumAckPending)
			}
		}
		if err := lister.Err(); err != nil {
			return false, "", fmt.Errorf("consumers of %s: %w", stream, err)
		}
		if busy != "" {
			return false, busy, nil
		}
	}
	if o.skipDeployments {
		return true, "", nil
	}
	return deployed(ctx, js)
}

// Option adjusts what Quiet and Wait look at.
type Option func(*options)

type options struct {
	except          []string
	skipDeployments bool
}

func (o options) ignored(consumer string) bool {
	for _, p := range o.except {
		if strings.HasPrefix(consumer, p) {
			return true
		}
	}
	return false
}

// Except ignores the durable consumers whose names start with one of the
// prefixes (e.g. "registry_": a service that is down on purpose), and the
// deployments' convergence with the registry, which waits on them.
func Except(prefixes ...string) Option {
	return func(o *options) {
		o.except = append(o.except, prefixes...)
		o.skipDeployments = true
	}
}

// deployment is what Quiet reads of a deployment record.
type deployment struct {
	Generation int64 `json:"generation"`
}

// deployed reports whether every pipeline with a champion has a deployment
// record of the registry's generation or newer.
func deployed(ctx context.Context, js jetstream.JetStream) (bool, string, error) {
	reg, err := js.KeyValue(ctx, events.BucketRegistry)
	if err != nil {
		return false, "", fmt.Errorf("kv %s: %w", events.BucketRegistry, err)
	}
	deps, err := js.KeyValue(ctx, events.BucketDeployments)
	if err != nil {
		return false, "", fmt.Errorf("kv %s: %w", events.BucketDeployments, err)
	}
	names, err := models.Pipelines(ctx, reg)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return true, "", nil
		}
		return false, "", err
	}
	sort.Strings(names)
	for _, p := range names {
		rec, _, found, err := models.Get(ctx, reg, p)
		if err != nil {
			return false, "", err
		}
		if _, ok := rec.Champion(); !found || !ok {
			continue
		}
		d, _, _, err := store.GetJSON[deployment](ctx, deps, p)
		if err != nil {
			return false, "", err
		}
		if d.Generation < rec.Generation() {
			return false, fmt.Sprintf("the deployment of %s follows generation %d, the registry is at %d", p, d.Generation, rec.Generation()), nil
		}
	}
	return true, "", nil
}

// Wait waits until the loop has been quiet for two checks in a row (a
// handler between acknowledging one message and taking the next looks
// quiet for an instant) or the timeout passes; it returns what was still
// busy then.
func Wait(ctx context.Context, js jetstream.JetStream, timeout time.Duration, opts ...Option) error {
	deadline := time.Now().Add(timeout)
	streak := 0
	busy := ""
	for {
		ok, what, err := Quiet(ctx, js, opts...)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err != nil:
			// A server electing a leader answers nothing for a moment: a
			// check that fails is not quiet, and the wait goes on.
			streak, busy = 0, err.Error()
		case ok:
			streak++
			if streak >= 2 {
				return nil
			}
		default:
			streak, busy = 0, what
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the loop did not settle within %s (%s)", timeout, busy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(40 * time.Millisecond):
		}
	}
}
