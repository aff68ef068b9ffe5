package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gyrehq/gyre/events"
)

// Heartbeat is what a worker writes in gyre-workers under <pool>.<worker>
// while it runs; the bucket's TTL (events.WorkerHeartbeatTTL) removes the key
// of a worker that stopped writing it.
type Heartbeat struct {
	Worker      string      `json:"worker"`
	Pool        string      `json:"pool"`
	Concurrency int         `json:"concurrency"`
	Jobs        []ActiveJob `json:"jobs"`
	Since       time.Time   `json:"since"`
	At          time.Time   `json:"at"`
}

// HeartbeatInterval is how often a worker renews its heartbeat: a third of
// the TTL, so one lost write does not make it look dead.
const HeartbeatInterval = events.WorkerHeartbeatTTL / 3

// HeartbeatKey returns the gyre-workers key of a worker.
func HeartbeatKey(pool, worker string) string { return pool + "." + worker }

// DefaultWorkerID names a worker after its host and process: what
// distinguishes the replicas of a pool.
func DefaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	return SanitizeWorkerID(fmt.Sprintf("%s-%d", host, os.Getpid()))
}

// SanitizeWorkerID maps an id onto the characters a key-value key takes
// (letters, digits, '-', '_'), since it is one token of <pool>.<worker>.
func SanitizeWorkerID(id string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, id)
}

// heartbeat writes the worker's heartbeat every HeartbeatInterval until ctx
// ends, then deletes it: a worker that stops cleanly leaves at once, one
// that dies leaves when the TTL expires.
func (w *Worker) heartbeat(ctx context.Context, concurrency int) {
	since := w.now().UTC()
	key := HeartbeatKey(w.pool, w.id)
	beat := func() bool {
		b, err := w.buckets.Get(ctx)
		if err != nil {
			return false // not provisioned yet
		}
		hb := Heartbeat{Worker: w.id, Pool: w.pool, Concurrency: concurrency, Jobs: w.active.list(), Since: since, At: w.now().UTC()}
		data, err := json.Marshal(hb)
		if err != nil {
			return false
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = b.Workers.Put(pctx, key, data)
		return err == nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if b, err := w.buckets.Get(dctx); err == nil {
				_ = b.Workers.Delete(dctx, key)
			}
			return
		case <-t.C:
			// After a failed write (the bucket may not be provisioned
			// yet), try again soon rather than let the key expire.
			next := HeartbeatInterval
			if !beat() {
				next = time.Second
			}
			t.Reset(next)
		}
	}
}
