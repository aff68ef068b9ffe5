package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
)

// settleStreams are the streams whose consumers carry the loop's work.
var settleStreams = []string{events.StreamEvents, events.StreamJobs, events.StreamPredictions}

// quiet reports whether no durable consumer of the loop has work left: none
// has messages pending or delivered but unacknowledged. A handler publishes
// what it causes before it acknowledges its input, so at an instant when
// every consumer is quiet, no event is in flight between services.
func quiet(ctx context.Context, js jetstream.JetStream) (bool, string, error) {
	for _, stream := range settleStreams {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return false, "", fmt.Errorf("stream %s: %w", stream, err)
		}
		lister := s.ListConsumers(ctx)
		for info := range lister.Info() {
			if info.Config.Durable == "" {
				continue // ordered consumers of readers such as gyre events
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return false, fmt.Sprintf("%s has %d pending, %d in flight", info.Name, info.NumPending, info.NumAckPending), nil
			}
		}
		if err := lister.Err(); err != nil {
			return false, "", fmt.Errorf("consumers of %s: %w", stream, err)
		}
	}
	return true, "", nil
}

// settle waits until the loop has been quiet for two checks in a row (a
// handler between acknowledging one message and taking the next looks quiet
// for an instant) or the timeout passes; it returns what was still busy then.
func settle(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	streak := 0
	busy := ""
	for {
		ok, what, err := quiet(ctx, js)
		if err != nil {
			return err
		}
		if ok {
			streak++
			if streak >= 2 {
				return nil
			}
		} else {
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
