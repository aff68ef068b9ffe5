package feature

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// fakeOnline is an online store that records the keys written, in order,
// and fails while down.
type fakeOnline struct {
	mu   sync.Mutex
	down bool
	keys []string
}

func (f *fakeOnline) Kind() string { return "fake" }

func (f *fakeOnline) Put(_ context.Context, rows []OnlineRow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("connection refused")
	}
	for _, r := range rows {
		f.keys = append(f.keys, r.Key)
	}
	return nil
}

func (f *fakeOnline) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeOnline) written() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.keys...)
}

// queueBatch stores a snapshot of n rows for batch id and returns what
// write takes for it.
func queueBatch(t *testing.T, bk *store.Buckets, pipeline, id string, n int) (pendingBatch, []OnlineRow) {
	t.Helper()
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(i)
	}
	cols := []table.Column{{Name: "x", Float: xs}}
	var buf bytes.Buffer
	if err := table.WriteParquet(&buf, cols); err != nil {
		t.Fatal(err)
	}
	ref, _, err := store.PutObject(context.Background(), bk.Features, pipeline+"/"+id+"/v.parquet", SnapshotMediaType, buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := onlineRows(pipeline, id, "v", cols, "")
	if err != nil {
		t.Fatal(err)
	}
	return pendingBatch{BatchID: id, FeatureSetVersion: "v", Snapshot: ref.Key, Columns: pendingColumns(cols), Rows: n}, rows
}

func newTestWriter(t *testing.T, js jetstream.JetStream, s OnlineStore) (*onlineWriter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := newOnlineWriter(store.NewLazy(js), s, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return w, reg
}

// counter returns the value of the series of a counter whose labels
// include every one of labels (name=value).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]bool{}
			for _, l := range m.GetLabel() {
				have[l.GetName()+"="+l.GetValue()] = true
			}
			match := true
			for _, l := range labels {
				match = match && have[l]
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func cursorOf(t *testing.T, bk *store.Buckets, pipeline string) onlineCursor {
	t.Helper()
	c, _, _, err := store.GetJSON[onlineCursor](context.Background(), bk.State, onlineCursorKey(pipeline))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestOnlineQueueOrderLeaseAndRedelivery: what a down store does not take
// is queued, a redelivery of the batch in hand once; later batches queue
// behind earlier ones even with the store back; one replica at a time
// drains (the lease), another takes over a lease that ran out; the store
// sees every batch once, in order; a batch whose snapshot is gone is
// dropped from the queue and counted.
func TestOnlineQueueOrderLeaseAndRedelivery(t *testing.T) {
	t.Parallel()
	_, js, bk := servicetest.Provisioned(t)
	ctx := context.Background()
	fake := &fakeOnline{down: true}
	w1, reg1 := newTestWriter(t, js, fake)
	w2, _ := newTestWriter(t, js, fake)
	const p = "q"

	var want []string
	write := func(w *onlineWriter, id string, n int) int {
		t.Helper()
		b, rows := queueBatch(t, bk, p, id, n)
		written, err := w.write(ctx, bk, p, b, rows)
		if err != nil {
			t.Fatal(err)
		}
		return written
	}
	for i, id := range []string{"b1", "b2"} {
		if n := write(w1, id, 3); n != 0 {
			t.Fatalf("store down: %s wrote %d rows", id, n)
		}
		for r := 1; r <= 3; r++ {
			want = append(want, store.OnlineKey(p, id, r))
		}
		if c := cursorOf(t, bk, p); c.Queued != uint64(i+1) || c.Written != 0 {
			t.Fatalf("after %s: cursor %+v", id, c)
		}
	}
	// The redelivery of b2, the batch in hand, is not queued again.
	write(w2, "b2", 3)
	// The store is back, but b3 goes behind b1 and b2.
	fake.setDown(false)
	if n := write(w2, "b3", 2); n != 0 || len(fake.written()) != 0 {
		t.Fatalf("b3 written at once (%d rows) ahead of the queue", n)
	}
	want = append(want, store.OnlineKey(p, "b3", 1), store.OnlineKey(p, "b3", 2))
	// b4's snapshot is gone: the catch-up drops it.
	b4, _ := queueBatch(t, bk, p, "b4", 1)
	if _, _, err := w1.enqueue(ctx, bk.State, p, pendingBatch{BatchID: "b4", Snapshot: "q/none.parquet", Columns: b4.Columns}); err != nil {
		t.Fatal(err)
	}
	if c := cursorOf(t, bk, p); c.Queued != 4 || c.pending() != 4 || c.OldestQueuedAt.IsZero() {
		t.Fatalf("cursor %+v, want 4 queued", c)
	}

	// w2 holds the lease: w1 does not drain.
	if _, err := w2.claim(ctx, bk.State, p); err != nil {
		t.Fatal(err)
	}
	if err := w1.drain(ctx, p); !errors.Is(err, errQueueLeased) {
		t.Fatalf("drain under another's lease: %v", err)
	}
	// w2 dies holding it; the lease runs out and w1 takes over.
	if _, err := w2.update(ctx, bk.State, p, func(c *onlineCursor) error {
		c.LeaseUntil = time.Now().Add(-time.Second)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := w1.drain(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := fake.written(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("store got %v\nwant %v", got, want)
	}
	c := cursorOf(t, bk, p)
	if c.Written != 4 || c.pending() != 0 || c.Owner != "" || !c.OldestQueuedAt.IsZero() {
		t.Errorf("after the catch-up: cursor %+v", c)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		if _, err := bk.State.Get(ctx, onlineEntryKey(p, seq)); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("entry %d still there: %v", seq, err)
		}
	}
	if n := counter(t, reg1, "gyre_feature_online_batches_skipped_total", "store=fake"); n != 1 {
		t.Errorf("skipped %v batches, want 1", n)
	}
	if n := counter(t, reg1, "gyre_feature_online_rows_written_total", "store=fake", "path=catchup"); n != float64(len(want)) {
		t.Errorf("catch-up rows %v, want %d", n, len(want))
	}
	if n := counter(t, reg1, "gyre_feature_online_batches_deferred_total", "store=fake"); n != 2 {
		t.Errorf("w1 deferred %v batches, want 2 (b1, b2)", n)
	}
	// Nothing queued: the next batch is written at once.
	if n := write(w2, "b5", 2); n != 2 {
		t.Errorf("b5 with the queue empty: %d rows written", n)
	}
	if err := w1.drain(ctx, p); !errors.Is(err, errQueueIdle) {
		t.Errorf("drain of an empty queue: %v", err)
	}
}
