package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// joinConcurrency bounds the key operations one event has in flight: a
// label.received or prediction.logged of 1,000 ids is 1,000 round trips,
// which one at a time would cap a replica at a few events a second.
const joinConcurrency = 64

// maxJoinAttempts bounds the compare-and-set retries of one key. Only the
// two sides of one id (or duplicates) race for a key, so a conflict is
// resolved by the next read; running out means something is wrong.
const maxJoinAttempts = 20

// maxPlainIDLen is the longest prediction id a join key holds as such (or
// base64url-encoded); a longer one is hashed, since ids come from outside
// producers and a key is part of a NATS subject, whose length the server
// bounds.
const maxPlainIDLen = 192

// JoinKey is the gyre-joins key of a prediction id:
// <pipeline>.<store.BatchKey(id)>, or <pipeline>.==<hex sha256(id)> for an
// id longer than maxPlainIDLen. '=' never appears in a BatchKey past its
// first character, so the forms cannot collide.
func JoinKey(pipeline, predictionID string) string {
	if len(predictionID) > maxPlainIDLen {
		sum := sha256.Sum256([]byte(predictionID))
		return pipeline + ".==" + hex.EncodeToString(sum[:])
	}
	return pipeline + "." + store.BatchKey(predictionID)
}

// kvJoins is the monitoring.JoinStore of every replica: gyre-joins, one
// key per prediction id holding a monitoring.JoinEntry as JSON, written
// with compare-and-set (Create for a new key, Update at the revision
// read), so that of two replicas applying the two sides of an id at once
// one writes and the other reads the result and applies its side to it.
// What a side does to an entry is the application's (JoinEntry.Add*); this
// adapter only reads, writes and retries. The bucket's TTL bounds the join.
type kvJoins struct{ lazy *store.Lazy }

var _ monitoring.JoinStore = kvJoins{}

func (j kvJoins) JoinPredictions(ctx context.Context, pipeline, eventID string, version int64, rows []monitoring.Prediction) (monitoring.Joined, error) {
	// A prediction is nearly always logged before its label: try to create
	// its key first, one round trip instead of a read and a write.
	return j.join(ctx, pipeline, monitoring.PredictionSides(eventID, version, rows), true)
}

func (j kvJoins) JoinLabels(ctx context.Context, pipeline, eventID string, labels []monitoring.Label) (monitoring.Joined, error) {
	return j.join(ctx, pipeline, monitoring.LabelSides(eventID, labels), false)
}

func (j kvJoins) join(ctx context.Context, pipeline string, sides []monitoring.Side, createFirst bool) (monitoring.Joined, error) {
	if len(sides) == 0 {
		return monitoring.Joined{}, nil
	}
	b, err := j.lazy.Get(ctx)
	if err != nil {
		return monitoring.Joined{}, err
	}
	// Each side's step goes to its own index: the pairs come out in the
	// event's order, whatever order the keys were written in.
	steps := make([]monitoring.Step, len(sides))
	err = forEachLimit(ctx, len(sides), joinConcurrency, func(ctx context.Context, i int) error {
		s, err := applySide(ctx, b.Joins, JoinKey(pipeline, sides[i].ID), sides[i], createFirst)
		steps[i] = s
		return err
	})
	if err != nil {
		return monitoring.Joined{}, err
	}
	return monitoring.Collect(steps), nil
}

// applySide applies one side to its key with compare-and-set.
func applySide(ctx context.Context, kv jetstream.KeyValue, key string, side monitoring.Side, createFirst bool) (monitoring.Step, error) {
	if createFirst {
		var e monitoring.JoinEntry
		st := side.Apply(&e)
		if _, err := putEntry(ctx, kv, key, e, 0); !isConflict(err) {
			return st, err
		}
	}
	for attempt := 1; ; attempt++ {
		e, rev, err := getEntry(ctx, kv, key)
		if err != nil {
			return monitoring.Step{}, err
		}
		st := side.Apply(&e)
		if !st.Write {
			return st, nil
		}
		_, err = putEntry(ctx, kv, key, e, rev)
		if !isConflict(err) {
			return st, err
		}
		if attempt >= maxJoinAttempts {
			return monitoring.Step{}, fmt.Errorf("join key %s: still conflicting after %d attempts: %w", key, attempt, err)
		}
		select {
		case <-ctx.Done():
			return monitoring.Step{}, ctx.Err()
		case <-time.After(time.Duration(attempt) * time.Millisecond):
		}
	}
}

// getEntry reads a key's entry and revision; a missing key is the zero
// entry at revision 0.
func getEntry(ctx context.Context, kv jetstream.KeyValue, key string) (monitoring.JoinEntry, uint64, error) {
	var e monitoring.JoinEntry
	kve, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return e, 0, nil
	}
	if err != nil {
		return e, 0, fmt.Errorf("kv %s get %s: %w", kv.Bucket(), key, err)
	}
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		// Only the monitor writes the bucket: reading it again will not
		// make the value readable.
		return e, 0, bus.Permanent(fmt.Errorf("kv %s key %s: not a join entry: %w", kv.Bucket(), key, err))
	}
	return e, kve.Revision(), nil
}

// putEntry writes an entry over revision rev (0: a new key).
func putEntry(ctx context.Context, kv jetstream.KeyValue, key string, e monitoring.JoinEntry, rev uint64) (uint64, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return 0, bus.Permanent(fmt.Errorf("join key %s: %w", key, err))
	}
	if rev == 0 {
		rev, err = kv.Create(ctx, key, data)
	} else {
		rev, err = kv.Update(ctx, key, data, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("kv %s write %s: %w", kv.Bucket(), key, err)
	}
	return rev, nil
}

// isConflict reports whether a write lost a compare-and-set race.
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// forEachLimit calls fn for 0..n-1, at most limit calls at once, and
// returns the first error; the first error cancels the ctx the other calls
// get, and no call starts after it. The calls run on min(limit, n)
// goroutines, each taking the next index, rather than on a goroutine each:
// a goroutine grows its stack once, not for every key. Every goroutine has
// returned when it returns.
func forEachLimit(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		done  atomic.Int64
		once  sync.Once
		first error
	)
	for range min(max(limit, 1), n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel(err) })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if int(done.Load()) < n {
		return context.Cause(ctx) // the caller's ctx ended first
	}
	return nil
}
