package feature

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// The online store is off the critical path: a batch is materialised — its
// snapshot stored, features.materialized emitted — whether or not the online
// store takes its rows. Rows the store does not take at once (it is down,
// its circuit breaker is open, or earlier rows of the pipeline are still
// waiting) are queued durably in gyre-state and written by a catch-up loop
// when the store is back, in the order the batches were materialised.
//
// The queue of a pipeline is a cursor and one entry per queued batch:
//
//	feature.online.<pipeline>        {queued, written, oldestQueuedAt, owner, leaseUntil, …}
//	feature.online.<pipeline>.<seq>  {batchId, featureSetVersion, snapshot, columns, …}
//
// Entries 1..queued were queued; 1..written are in the online store. An
// entry does not hold the rows, only where they are: a batch's online rows
// are its offline snapshot's (gyre-features, Parquet) laid out by row, so the
// catch-up reads the snapshot back and re-derives them (snapshotOnlineRows),
// byte for byte. An entry is a few hundred bytes however large the batch.
//
// Why gyre-state: it is replicated like the rest of the bus, survives a
// restart of the service (and of NATS, on file storage), is already written
// by the feature service under its NATS identity, and needs no new stream or
// bucket in the topology. Why a queue of snapshots rather than re-deriving
// the work from the validated-batch log and a watermark: a late batch is
// inserted into the log before batches already materialised, so a log
// position is not a watermark, and the log does not say which feature-set
// version (so which snapshot) a batch got without fitting its window again.
//
// Replicas: every replica runs the catch-up loop and watches the cursors.
// One replica at a time writes a pipeline's queue: it takes the cursor's
// lease (compare-and-set), renews it with each batch it records as written,
// and gives it back when the queue is empty or the store fails; a replica
// that dies loses it after onlineLease. Writes are upserts by key, so a
// batch written twice (a replica stopped after writing, before recording)
// changes nothing. The enqueueing side needs no lease: data.batch.validated
// is an ordered consumer (one message in hand across all replicas), so only
// one batch is materialised at a time, and a redelivery of the one in hand
// queues the same entry.

// Keys of the queue in gyre-state.
const onlineQueuePrefix = "feature.online."

func onlineCursorKey(pipeline string) string { return onlineQueuePrefix + pipeline }

func onlineEntryKey(pipeline string, seq uint64) string {
	return onlineQueuePrefix + pipeline + "." + strconv.FormatUint(seq, 10)
}

// Timing of the catch-up.
const (
	// onlineLease is how long a replica holds a pipeline's queue without
	// recording progress: the wait after a replica dies mid-catch-up.
	onlineLease = 30 * time.Second
	// onlineTick is how often the catch-up loop looks at the queues and
	// refreshes the lag metrics (it is also woken by every change).
	onlineTick = time.Second
	// catchUpSlice is how many rows are written between lease checks.
	catchUpSlice = 16384
	// maxRetryDelay bounds the wait before the catch-up of a pipeline is
	// tried again after a failure (doubling from onlineTick): the circuit
	// breaker's own wait, so that a store without one (gyre-online) is not
	// retried in a tight loop either.
	maxRetryDelay = 10 * time.Second
)

// onlineCursor is the value of feature.online.<pipeline>.
type onlineCursor struct {
	// Queued is the sequence of the newest entry queued, Written of the
	// newest written to the online store; entries are written in order.
	Queued  uint64 `json:"queued"`
	Written uint64 `json:"written"`
	// OldestQueuedAt is when entry Written+1 was queued: the lag's start.
	OldestQueuedAt time.Time `json:"oldestQueuedAt,omitzero"`
	// LastBatchID and LastVersion are the entry Queued's: a redelivery of
	// the batch in hand is not queued twice.
	LastBatchID string `json:"lastBatchId,omitempty"`
	LastVersion string `json:"lastFeatureSetVersion,omitempty"`
	// Owner is the replica writing the queue until LeaseUntil.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// WrittenAt is when the last entry was written.
	WrittenAt time.Time `json:"writtenAt,omitzero"`
}

// pending is how many queued batches are not in the online store yet.
func (c onlineCursor) pending() uint64 {
	if c.Queued > c.Written {
		return c.Queued - c.Written
	}
	return 0
}

// pendingBatch is the value of feature.online.<pipeline>.<seq>: a batch
// whose online rows are still to be written, and where to find them.
type pendingBatch struct {
	BatchID           string `json:"batchId"`
	FeatureSetVersion string `json:"featureSetVersion"`
	// Snapshot is the key of the batch's snapshot in gyre-features.
	Snapshot string `json:"snapshot"`
	// Columns are the snapshot's columns as materialised, in order (the
	// label's included), so that the rows come back as they were laid out.
	Columns     []pendingColumn `json:"columns"`
	LabelColumn string          `json:"labelColumn,omitempty"`
	Rows        int             `json:"rows"`
	QueuedAt    time.Time       `json:"queuedAt"`
	// Reason is why the rows were not written at once.
	Reason string `json:"reason"`
}

type pendingColumn struct {
	Name string `json:"name"`
	// Text says a string column; the others are floats.
	Text bool `json:"text,omitempty"`
}

func pendingColumns(cols []table.Column) []pendingColumn {
	out := make([]pendingColumn, len(cols))
	for i, c := range cols {
		out[i] = pendingColumn{Name: c.Name, Text: c.Text != nil}
	}
	return out
}

// snapshotOnlineRows re-derives a queued batch's online rows from its
// snapshot (Parquet, as Materialize wrote it): the same columns, so the same
// rows as Materialize built from them. A float goes through Parquet as a
// double and its shortest decimal form, both exact; a missing float is null
// there and NaN here again; a text column is "" where missing, as written.
func snapshotOnlineRows(pipeline string, b pendingBatch, snapshot []byte) ([]OnlineRow, error) {
	t, err := table.Read(table.FormatParquet, snapshot)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", b.Snapshot, err)
	}
	cols := make([]table.Column, len(b.Columns))
	for i, c := range b.Columns {
		j := t.Index(c.Name)
		if j < 0 {
			return nil, bus.Permanentf("snapshot %s has no column %q", b.Snapshot, c.Name)
		}
		cols[i].Name = c.Name
		if c.Text {
			cols[i].Text = make([]string, t.Len())
			for r := range t.Rows {
				if !t.IsMissing(r, j) {
					cols[i].Text[r] = t.Rows[r][j]
				}
			}
			continue
		}
		cols[i].Float = make([]float64, t.Len())
		for r := range t.Rows {
			x := math.NaN()
			if !t.IsMissing(r, j) {
				if x, err = strconv.ParseFloat(t.Rows[r][j], 64); err != nil {
					return nil, bus.Permanentf("snapshot %s: row %d column %q: %v", b.Snapshot, r+1, c.Name, err)
				}
			}
			cols[i].Float[r] = x
		}
	}
	rows, err := onlineRows(pipeline, b.BatchID, b.FeatureSetVersion, cols, b.LabelColumn)
	if err != nil {
		return nil, bus.Permanentf("snapshot %s: %v", b.Snapshot, err)
	}
	return rows, nil
}

// breakerState is an online store behind a circuit breaker (RedisOnline):
// "closed", "half-open" or "open".
type breakerState interface{ State() string }

func storeState(s OnlineStore) string {
	if b, ok := s.(breakerState); ok {
		return b.State()
	}
	return "closed"
}

// onlineMetrics are the online store's series.
type onlineMetrics struct {
	lagBatches  *prometheus.GaugeVec
	lagSeconds  *prometheus.GaugeVec
	rowsWritten *prometheus.CounterVec
	deferred    *prometheus.CounterVec
	skipped     *prometheus.CounterVec
}

// Paths of gyre_feature_online_rows_written_total.
const (
	pathDirect  = "direct"
	pathCatchUp = "catchup"
)

func newOnlineMetrics(reg prometheus.Registerer, kind string) (*onlineMetrics, error) {
	m := &onlineMetrics{
		lagBatches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_feature_online_lag_batches",
			Help: "Materialised batches of the pipeline whose online rows are queued, not yet in the online store (the store was down, or is catching up); 0 when it is current. Every replica reports the queue, which they share: aggregate with max.",
		}, []string{"pipeline"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_feature_online_lag_seconds",
			Help: "Age of the oldest materialised batch of the pipeline whose online rows are not in the online store yet; 0 when it is current. Aggregate replicas with max.",
		}, []string{"pipeline"}),
		rowsWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_feature_online_rows_written_total",
			Help: "Rows this replica wrote to the online store, by store (redis, jetstream-kv) and path: direct (as the batch was materialised) or catchup (from the queue, after an outage).",
		}, []string{"store", "path"}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_feature_online_batches_deferred_total",
			Help: "Batches whose online rows this replica queued instead of writing at once (the store failed, its circuit breaker was open, or earlier batches were queued).",
		}, []string{"store"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_feature_online_batches_skipped_total",
			Help: "Queued batches the catch-up could never write (their snapshot is gone or unreadable) and dropped from the queue, logged as errors.",
		}, []string{"store"}),
	}
	var err error
	for _, g := range []**prometheus.GaugeVec{&m.lagBatches, &m.lagSeconds} {
		if *g, err = bus.RegisterCollector(reg, *g); err != nil {
			return nil, err
		}
	}
	for _, c := range []**prometheus.CounterVec{&m.rowsWritten, &m.deferred, &m.skipped} {
		if *c, err = bus.RegisterCollector(reg, *c); err != nil {
			return nil, err
		}
	}
	m.rowsWritten.WithLabelValues(kind, pathDirect)
	m.rowsWritten.WithLabelValues(kind, pathCatchUp)
	m.deferred.WithLabelValues(kind)
	m.skipped.WithLabelValues(kind)
	return m, nil
}

// onlineWriter writes materialised batches' online rows: at once when it
// can, through the durable queue otherwise (see the top of this file).
type onlineWriter struct {
	buckets buckets
	store   OnlineStore
	logger  *slog.Logger
	metrics *onlineMetrics
	// owner names this replica in the cursors' leases.
	owner string
	lease time.Duration
	tick  time.Duration

	kick chan struct{}
	// retryAt and retryDelay pace the catch-up of a pipeline that failed
	// (run's goroutine only).
	retryAt    map[string]time.Time
	retryDelay map[string]time.Duration

	mu   sync.Mutex
	view map[string]onlineCursor // every pipeline's cursor, from the watch
	// lastDrainErr throttles the catch-up's failure logs.
	lastDrainErr     string
	lastDrainErrTime time.Time
}

func newOnlineWriter(b buckets, s OnlineStore, logger *slog.Logger, reg prometheus.Registerer) (*onlineWriter, error) {
	m, err := newOnlineMetrics(reg, s.Kind())
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	var id [4]byte
	_, _ = rand.Read(id[:])
	return &onlineWriter{
		buckets: b, store: s, logger: logger.With("component", "online-store"), metrics: m,
		owner: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(id[:])),
		lease: onlineLease, tick: onlineTick,
		kick:    make(chan struct{}, 1),
		view:    map[string]onlineCursor{},
		retryAt: map[string]time.Time{}, retryDelay: map[string]time.Duration{},
	}, nil
}

// write puts a materialised batch's online rows in the store now — when
// nothing of the pipeline is queued before them and the store's breaker is
// closed — or queues them. It returns the rows written now (0 when queued).
// Its only errors are those of the queue itself (NATS unreachable): the
// batch's event is then retried, as for any other bus failure.
func (w *onlineWriter) write(ctx context.Context, bk *store.Buckets, pipeline string, b pendingBatch, rows []OnlineRow) (int, error) {
	if len(rows) == 0 {
		w.observe(pipeline)
		return 0, nil
	}
	cur, _, _, err := store.GetJSON[onlineCursor](ctx, bk.State, onlineCursorKey(pipeline))
	if err != nil {
		return 0, fmt.Errorf("online store queue: %w", err)
	}
	var reason string
	switch state := storeState(w.store); {
	case cur.pending() > 0:
		// After them, so that the store sees the pipeline's batches in order.
		reason = fmt.Sprintf("%d earlier batches of the pipeline are queued", cur.pending())
	case state != "closed":
		reason = "circuit breaker is " + state
	default:
		err := w.store.Put(ctx, rows)
		if err == nil {
			w.metrics.rowsWritten.WithLabelValues(w.store.Kind(), pathDirect).Add(float64(len(rows)))
			w.observe(pipeline)
			return len(rows), nil
		}
		if ctx.Err() != nil {
			// Stopping: the event is redelivered and decides again.
			return 0, err
		}
		reason = err.Error()
	}
	b.Reason, b.QueuedAt = reason, time.Now().UTC()
	seq, queued, err := w.enqueue(ctx, bk.State, pipeline, b)
	if err != nil {
		return 0, fmt.Errorf("online store queue: %w", err)
	}
	if !queued {
		return 0, nil // queued by an earlier delivery of the event
	}
	w.metrics.deferred.WithLabelValues(w.store.Kind()).Inc()
	bus.Logger(ctx).Warn("online write deferred: queued for the catch-up", "pipeline", pipeline, "batchId", b.BatchID,
		"rows", len(rows), "onlineStore", w.store.Kind(), "queueSeq", seq, "reason", reason)
	w.wake()
	return 0, nil
}

// casConflict: another writer changed the key first.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// enqueue appends b to the pipeline's queue and returns its sequence, and
// whether it queued it now (false: it is the newest entry already). The
// entry is written before the cursor names it, so the catch-up never finds
// a named entry missing; a crash in between leaves an entry the next
// enqueue overwrites.
func (w *onlineWriter) enqueue(ctx context.Context, kv jetstream.KeyValue, pipeline string, b pendingBatch) (seq uint64, queued bool, err error) {
	for attempt := 0; ; attempt++ {
		cur, rev, found, err := store.GetJSON[onlineCursor](ctx, kv, onlineCursorKey(pipeline))
		if err != nil {
			return 0, false, err
		}
		if cur.pending() > 0 && cur.LastBatchID == b.BatchID && cur.LastVersion == b.FeatureSetVersion {
			return cur.Queued, false, nil // a redelivery of the batch just queued
		}
		seq := cur.Queued + 1
		if _, err := store.PutJSON(ctx, kv, onlineEntryKey(pipeline, seq), b); err != nil {
			return 0, false, err
		}
		next := cur
		if cur.pending() == 0 {
			next.OldestQueuedAt = b.QueuedAt
		}
		next.Queued, next.LastBatchID, next.LastVersion = seq, b.BatchID, b.FeatureSetVersion
		data, err := json.Marshal(next)
		if err != nil {
			return 0, false, err
		}
		if found {
			_, err = kv.Update(ctx, onlineCursorKey(pipeline), data, rev)
		} else {
			_, err = kv.Create(ctx, onlineCursorKey(pipeline), data)
		}
		if err == nil {
			w.setView(pipeline, next)
			return seq, true, nil
		}
		if !casConflict(err) || attempt >= 50 {
			return 0, false, fmt.Errorf("kv %s update %s: %w", kv.Bucket(), onlineCursorKey(pipeline), err)
		}
		// The catch-up recorded progress meanwhile: read again.
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

func (w *onlineWriter) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *onlineWriter) setView(pipeline string, c onlineCursor) {
	w.mu.Lock()
	// The watch and this replica's own writes both report cursors; a
	// cursor's counts only grow, so an older report is the one behind.
	if old, ok := w.view[pipeline]; !ok || (c.Queued >= old.Queued && c.Written >= old.Written) {
		w.view[pipeline] = c
	}
	w.mu.Unlock()
	w.observe(pipeline)
}

// observe sets the pipeline's lag series from the view: 0 for a pipeline
// never queued, so that the series exists once the pipeline has a batch.
func (w *onlineWriter) observe(pipeline string) {
	w.mu.Lock()
	c := w.view[pipeline]
	w.mu.Unlock()
	n := c.pending()
	age := 0.0
	if n > 0 && !c.OldestQueuedAt.IsZero() {
		age = max(time.Since(c.OldestQueuedAt).Seconds(), 0)
	}
	w.metrics.lagBatches.WithLabelValues(pipeline).Set(float64(n))
	w.metrics.lagSeconds.WithLabelValues(pipeline).Set(age)
}

// onlineLag is one pipeline's online-store lag as this replica sees it.
type onlineLag struct {
	Pipeline string
	Batches  uint64
	Oldest   time.Time
}

// lags returns the pipelines with batches queued, by name.
func (w *onlineWriter) lags() []onlineLag {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []onlineLag
	for p, c := range w.view {
		if n := c.pending(); n > 0 {
			out = append(out, onlineLag{Pipeline: p, Batches: n, Oldest: c.OldestQueuedAt})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pipeline < out[j].Pipeline })
	return out
}

// run watches the cursors and catches up every queue whenever the store
// may take writes, until ctx ends.
func (w *onlineWriter) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.watch(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
		w.mu.Lock()
		var pipelines []string
		for p := range w.view {
			pipelines = append(pipelines, p)
		}
		w.mu.Unlock()
		sort.Strings(pipelines)
		for _, p := range pipelines {
			w.observe(p)
		}
		for _, l := range w.lags() {
			if ctx.Err() != nil {
				return
			}
			// An open breaker fails every write at once; it half-opens after
			// its timeout, and the next write here is its probe.
			if storeState(w.store) == "open" {
				break
			}
			if time.Now().Before(w.retryAt[l.Pipeline]) {
				continue
			}
			err := w.drain(ctx, l.Pipeline)
			switch {
			case err == nil:
				delete(w.retryAt, l.Pipeline)
				delete(w.retryDelay, l.Pipeline)
			case ctx.Err() != nil, errors.Is(err, errQueueIdle), errors.Is(err, errQueueLeased):
			default:
				d := min(max(2*w.retryDelay[l.Pipeline], w.tick), maxRetryDelay)
				w.retryDelay[l.Pipeline], w.retryAt[l.Pipeline] = d, time.Now().Add(d)
				w.logDrainError(l.Pipeline, err)
			}
		}
	}
}

// watch keeps the view of every pipeline's cursor current.
func (w *onlineWriter) watch(ctx context.Context) {
	for ctx.Err() == nil {
		if err := w.watchOnce(ctx); err != nil && ctx.Err() == nil {
			w.logger.Warn("watching the online-store queues failed; watching again", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (w *onlineWriter) watchOnce(ctx context.Context) error {
	bk, err := w.buckets.Get(ctx)
	if err != nil {
		return err
	}
	kw, err := bk.State.Watch(ctx, onlineQueuePrefix+"*")
	if err != nil {
		return err
	}
	defer func() { _ = kw.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-kw.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var c onlineCursor
			if err := json.Unmarshal(e.Value(), &c); err != nil {
				w.logger.Error("online-store queue cursor is not JSON", "key", e.Key(), "error", err)
				continue
			}
			w.setView(strings.TrimPrefix(e.Key(), onlineQueuePrefix), c)
			if c.pending() > 0 {
				w.wake()
			}
		}
	}
}

func (w *onlineWriter) logDrainError(pipeline string, err error) {
	w.mu.Lock()
	msg := err.Error()
	quiet := msg == w.lastDrainErr && time.Since(w.lastDrainErrTime) < time.Minute
	if !quiet {
		w.lastDrainErr, w.lastDrainErrTime = msg, time.Now()
	}
	w.mu.Unlock()
	if !quiet {
		w.logger.Warn("online store catch-up failed; retrying when the store takes writes", "pipeline", pipeline,
			"onlineStore", w.store.Kind(), "breaker", storeState(w.store), "error", err)
	}
}

var (
	errQueueIdle   = errors.New("nothing queued")
	errQueueLeased = errors.New("another replica is writing the queue")
	errLeaseLost   = errors.New("the queue's lease was taken over")
)

// drain writes the pipeline's queued batches in order while this replica
// holds the queue's lease and the store takes them.
func (w *onlineWriter) drain(ctx context.Context, pipeline string) (err error) {
	bk, err := w.buckets.Get(ctx)
	if err != nil {
		return err
	}
	kv := bk.State
	cur, err := w.claim(ctx, kv, pipeline)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && !errors.Is(err, errLeaseLost) {
			w.release(kv, pipeline)
		}
	}()
	start := time.Now()
	first, batches, rows := cur.Written+1, 0, 0
	for cur.Written < cur.Queued {
		seq := cur.Written + 1
		b, _, found, err := store.GetJSON[pendingBatch](ctx, kv, onlineEntryKey(pipeline, seq))
		if err != nil {
			return err
		}
		n := 0
		if !found {
			w.skip(pipeline, seq, b, errors.New("its queue entry is missing"))
		} else if batchRows, err := w.rowsOf(ctx, bk, pipeline, b); err != nil {
			if !bus.IsPermanent(err) {
				return err
			}
			w.skip(pipeline, seq, b, err)
		} else {
			if err := w.put(ctx, kv, pipeline, batchRows); err != nil {
				return err
			}
			n = len(batchRows)
		}
		if cur, err = w.advance(ctx, kv, pipeline, seq); err != nil {
			return err
		}
		w.metrics.rowsWritten.WithLabelValues(w.store.Kind(), pathCatchUp).Add(float64(n))
		batches++
		rows += n
		if err := kv.Purge(ctx, onlineEntryKey(pipeline, seq)); err != nil {
			w.logger.Debug("purging a written queue entry failed", "key", onlineEntryKey(pipeline, seq), "error", err)
		}
	}
	if batches > 0 {
		w.logger.Info("online store caught up", "pipeline", pipeline, "onlineStore", w.store.Kind(),
			"batches", batches, "rows", rows, "fromSeq", first, "toSeq", cur.Written, "took", time.Since(start).String())
	}
	return nil
}

func (w *onlineWriter) skip(pipeline string, seq uint64, b pendingBatch, err error) {
	w.metrics.skipped.WithLabelValues(w.store.Kind()).Inc()
	w.logger.Error("online store catch-up: a queued batch cannot be written; dropped from the queue",
		"pipeline", pipeline, "queueSeq", seq, "batchId", b.BatchID, "snapshot", b.Snapshot, "error", err)
}

func (w *onlineWriter) rowsOf(ctx context.Context, bk *store.Buckets, pipeline string, b pendingBatch) ([]OnlineRow, error) {
	data, err := store.GetObject(ctx, bk.Features, b.Snapshot)
	if err != nil {
		return nil, err
	}
	return snapshotOnlineRows(pipeline, b, data)
}

// put writes rows in slices, renewing the lease between them when a third
// of it has gone.
func (w *onlineWriter) put(ctx context.Context, kv jetstream.KeyValue, pipeline string, rows []OnlineRow) error {
	renewed := time.Now()
	for start := 0; start < len(rows); start += catchUpSlice {
		if time.Since(renewed) > w.lease/3 {
			if _, err := w.update(ctx, kv, pipeline, func(c *onlineCursor) error {
				c.LeaseUntil = time.Now().Add(w.lease).UTC()
				return nil
			}); err != nil {
				return err
			}
			renewed = time.Now()
		}
		if err := w.store.Put(ctx, rows[start:min(start+catchUpSlice, len(rows))]); err != nil {
			return err
		}
	}
	return nil
}

// claim takes the pipeline's queue for this replica.
func (w *onlineWriter) claim(ctx context.Context, kv jetstream.KeyValue, pipeline string) (onlineCursor, error) {
	c, err := store.UpdateJSON(ctx, kv, onlineCursorKey(pipeline), func(c *onlineCursor, exists bool) error {
		if !exists || c.pending() == 0 {
			return errQueueIdle
		}
		if c.Owner != "" && c.Owner != w.owner && time.Now().Before(c.LeaseUntil) {
			return errQueueLeased
		}
		c.Owner, c.LeaseUntil = w.owner, time.Now().Add(w.lease).UTC()
		return nil
	})
	if err == nil {
		w.setView(pipeline, c)
	}
	return c, err
}

// update changes the cursor while this replica holds its lease.
func (w *onlineWriter) update(ctx context.Context, kv jetstream.KeyValue, pipeline string, fn func(c *onlineCursor) error) (onlineCursor, error) {
	c, err := store.UpdateJSON(ctx, kv, onlineCursorKey(pipeline), func(c *onlineCursor, exists bool) error {
		if !exists || c.Owner != w.owner {
			return errLeaseLost
		}
		return fn(c)
	})
	if err == nil {
		w.setView(pipeline, c)
	}
	return c, err
}

// advance records entry seq as written and renews the lease, or gives it
// back when the queue is empty.
func (w *onlineWriter) advance(ctx context.Context, kv jetstream.KeyValue, pipeline string, seq uint64) (onlineCursor, error) {
	return w.update(ctx, kv, pipeline, func(c *onlineCursor) error {
		if c.Written != seq-1 {
			return errLeaseLost
		}
		now := time.Now().UTC()
		c.Written, c.WrittenAt = seq, now
		if c.pending() == 0 {
			c.Owner, c.LeaseUntil, c.OldestQueuedAt = "", time.Time{}, time.Time{}
			return nil
		}
		c.LeaseUntil = now.Add(w.lease)
		c.OldestQueuedAt = now
		if next, _, found, err := store.GetJSON[pendingBatch](ctx, kv, onlineEntryKey(pipeline, seq+1)); err == nil && found {
			c.OldestQueuedAt = next.QueuedAt
		}
		return nil
	})
}

// release gives the lease back, so that a restarted replica or another one
// need not wait for it to run out.
func (w *onlineWriter) release(kv jetstream.KeyValue, pipeline string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := w.update(ctx, kv, pipeline, func(c *onlineCursor) error {
		c.Owner, c.LeaseUntil = "", time.Time{}
		return nil
	})
	if err != nil && !errors.Is(err, errLeaseLost) {
		w.logger.Debug("giving the online-store queue's lease back failed; it runs out", "pipeline", pipeline, "error", err)
	}
}
