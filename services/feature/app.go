package feature

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// Validated is the command to materialise one validated batch.
type Validated struct {
	Pipeline string
	BatchID  string
	Format   string
	// Object is the raw batch in gyre-batches.
	Object *gyrev1.ObjectRef
	// Labelled says the batch carries labels: the snapshot keeps them.
	Labelled bool
}

// Result is what materialising a batch produced.
type Result struct {
	FeatureSetVersion string
	Snapshot          *gyrev1.ObjectRef
	Rows              int
	// OnlineRows are the rows written to the online store as the batch was
	// materialised: all of them, or none when OnlineDeferred.
	OnlineRows int
	// OnlineDeferred says the online rows were queued for the catch-up (the
	// store was down, or catching up): they are written when it is back.
	OnlineDeferred bool
	// Window are the batch ids the feature set was fitted on, oldest first.
	Window  []string
	EventID string
}

// SnapshotMediaType is the media type of offline snapshots.
const SnapshotMediaType = "application/vnd.apache.parquet"

// publisher publishes an event; *bus.Publisher is one.
type publisher interface {
	Publish(ctx context.Context, ev event.Event) error
}

// buckets gives the JetStream buckets; *store.Lazy is one.
type buckets interface {
	Get(ctx context.Context) (*store.Buckets, error)
}

// Materializer turns validated batches into features: it is the application
// code behind the service's event handler.
type Materializer struct {
	buckets buckets
	pub     publisher
	online  OnlineStore
	// writer, when set, takes the online rows off the critical path: what
	// the store does not take at once is queued (onlinequeue.go). Without
	// it a failed online write fails the batch, to be retried.
	writer *onlineWriter
}

// NewMaterializer returns a Materializer writing online rows to online.
func NewMaterializer(b buckets, pub publisher, online OnlineStore) *Materializer {
	return &Materializer{buckets: b, pub: pub, online: online}
}

// Materialize fits the pipeline's feature transforms on the training window
// that ends at this batch — the newest spec.model.window.batches entries of
// the validated-batch log up to and including it, as the log stood when the
// batch was validated, so a redelivery fits the same window however many
// batches came (or were inserted before it) since — transforms the batch with
// them, writes the offline snapshot (Parquet, gyre-features
// <pipeline>/<batchId>/<featureSetVersion>.parquet) and the online rows, and
// emits features.materialized. An online store that does not take the rows
// (down, or still catching up) delays them, not the batch: they are queued
// and the event says 0 online rows written.
func (m *Materializer) Materialize(ctx context.Context, cmd Validated) (Result, error) {
	bk, err := m.buckets.Get(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("materialize: %w", err)
	}
	p, rev, err := store.Pipeline(ctx, bk.Pipelines, cmd.Pipeline)
	if err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	window, err := m.window(ctx, bk, p, cmd)
	if err != nil {
		return Result{}, err
	}
	tables := make([]*table.Table, len(window))
	for i, e := range window {
		if tables[i], err = readBatch(ctx, bk, e.ObjectKey, e.Format); err != nil {
			return Result{}, fmt.Errorf("materialize batch %q: window batch %q: %w", cmd.BatchID, e.BatchID, err)
		}
	}
	set, err := features.Fit(p, tables...)
	if err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: fit on %d batches: %w", cmd.BatchID, len(tables), err)
	}
	t := tables[len(tables)-1] // the window ends at this batch
	cleared := clearUnreadable(t, set)
	ds, err := set.Dataset(t, false)
	if err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	label := ""
	if li := t.Index(p.Spec.Dataset.Label); cmd.Labelled && li >= 0 {
		label = p.Spec.Dataset.Label
	}
	cols, specs := snapshotColumns(t, set, ds, label)
	var buf bytes.Buffer
	if err := table.WriteParquet(&buf, cols); err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: write snapshot: %w", cmd.BatchID, err)
	}
	key := cmd.Pipeline + "/" + cmd.BatchID + "/" + set.Version + ".parquet"
	snap, _, err := store.PutObject(ctx, bk.Features, key, SnapshotMediaType, buf.Bytes())
	if err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	rows, err := onlineRows(cmd.Pipeline, cmd.BatchID, set.Version, cols, label)
	if err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	written := len(rows)
	if m.writer == nil {
		if err := m.online.Put(ctx, rows); err != nil {
			return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
		}
	} else if written, err = m.writer.write(ctx, bk, cmd.Pipeline, pendingBatch{
		BatchID: cmd.BatchID, FeatureSetVersion: set.Version, Snapshot: snap.GetKey(),
		Columns: pendingColumns(cols), LabelColumn: label, Rows: len(rows),
	}, rows); err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}

	res := Result{FeatureSetVersion: set.Version, Snapshot: snap, Rows: t.Len(), OnlineRows: written,
		OnlineDeferred: written < len(rows),
		EventID:        bus.StableID(events.FeaturesMaterialized, cmd.Pipeline, cmd.BatchID, set.Version)}
	for _, e := range window {
		res.Window = append(res.Window, e.BatchID)
	}
	ev, err := events.New("/gyre/"+Name, cmd.Pipeline, &gyrev1.FeaturesMaterialized{
		Pipeline: cmd.Pipeline, BatchId: cmd.BatchID, FeatureSetVersion: set.Version, Snapshot: snap,
		Rows: int64(res.Rows), OnlineRowsWritten: int64(res.OnlineRows), OnlineStore: m.online.Kind(),
		Columns: specs, LabelColumn: label, Source: cmd.Object, PipelineRevision: int64(rev),
	})
	if err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	ev.SetID(res.EventID)
	if err := m.pub.Publish(ctx, ev); err != nil {
		return Result{}, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	bus.Logger(ctx).Info("features materialized", "pipeline", cmd.Pipeline, "batchId", cmd.BatchID,
		"featureSetVersion", set.Version, "window", res.Window, "rows", res.Rows, "onlineRows", res.OnlineRows,
		"onlineStore", m.online.Kind(), "onlineDeferred", res.OnlineDeferred, "unreadableCellsCleared", cleared)
	return res, nil
}

// window returns the validated-batch log entries the feature set is fitted
// on: the newest spec.model.window.batches up to and including this batch,
// among those in the log when this batch was appended.
func (m *Materializer) window(ctx context.Context, bk *store.Buckets, p *pipeline.Pipeline, cmd Validated) ([]store.ValidatedBatch, error) {
	log, err := store.ValidatedBatches(ctx, bk.State, cmd.Pipeline)
	if err != nil {
		return nil, fmt.Errorf("materialize batch %q: %w", cmd.BatchID, err)
	}
	end := -1
	for i, e := range log {
		if e.BatchID == cmd.BatchID {
			end = i
			break
		}
	}
	if end < 0 {
		// Validation appends before it announces, so the batch is there
		// unless the log was trimmed past it or written by someone else.
		return nil, bus.Permanentf("materialize batch %q: it is not in the validated-batch log of %s", cmd.BatchID, cmd.Pipeline)
	}
	if e := log[end]; e.ObjectKey != cmd.Object.GetKey() {
		return nil, bus.Permanentf("materialize batch %q: the validated-batch log has it as object %s, the event as %s", cmd.BatchID, e.ObjectKey, cmd.Object.GetKey())
	}
	// The log is in arrival order, and a batch validated late is inserted
	// at its arrival place, possibly before this one after this one was
	// materialised. Fitting on the log as this batch's validation left it
	// keeps the window — so the feature set version, the snapshot key and
	// the event id — the same on a redelivery, whatever was inserted since;
	// the late batch is in the windows of the batches validated after it.
	asAppended := store.AsAppended(log, end)
	n := max(p.Spec.Model.Window.Batches, 1)
	return asAppended[max(0, len(asAppended)-n):], nil
}

func readBatch(ctx context.Context, bk *store.Buckets, key, format string) (*table.Table, error) {
	data, err := store.GetObject(ctx, bk.Batches, key)
	if err != nil {
		return nil, err
	}
	return table.Read(format, data)
}

// clearUnreadable marks as missing the cells of numeric feature columns that
// are not numbers. A validated batch has none unless its pipeline tolerates
// bad rows (spec.dataset.maxRowErrors); those rows then get missing
// features, as the model handles missing values, instead of failing the
// whole batch.
func clearUnreadable(t *table.Table, set *features.Set) int {
	cleared := 0
	for _, c := range set.Columns {
		j := t.Index(c.Name)
		if !c.Numeric || j < 0 {
			continue
		}
		for i := range t.Rows {
			if t.IsMissing(i, j) || isNumber(t.Rows[i][j]) {
				continue
			}
			markMissing(t, i, j)
			cleared++
		}
	}
	return cleared
}

func isNumber(s string) bool {
	s = strings.TrimSpace(s)
	if l := strings.ToLower(s); l == "true" || l == "false" {
		return true
	}
	x, err := strconv.ParseFloat(s, 64)
	return err == nil && !math.IsNaN(x) && !math.IsInf(x, 0)
}

func markMissing(t *table.Table, row, col int) {
	for len(t.Missing) < len(t.Rows) {
		t.Missing = append(t.Missing, nil)
	}
	if t.Missing[row] == nil {
		t.Missing[row] = make([]bool, len(t.Columns))
	}
	t.Missing[row][col] = true
}

// snapshotColumns lays out the snapshot: every feature output (a float; the
// raw text for an identity-transformed text column, which is how it reads
// best offline), then the label, raw, when the batch is labelled.
func snapshotColumns(t *table.Table, set *features.Set, ds *ml.Dataset, label string) ([]table.Column, []*gyrev1.FeatureColumn) {
	var cols []table.Column
	var specs []*gyrev1.FeatureColumn
	k := 0
	for _, c := range set.Columns {
		width := 1
		if c.Transform == pipeline.TransformOneHot {
			width = len(c.Categories)
		}
		for w := 0; w < width; w++ {
			name := ds.Features[k]
			spec := &gyrev1.FeatureColumn{Name: name, Source: c.Name, Transform: c.Transform, Type: "float"}
			if !c.Numeric && c.Transform != pipeline.TransformOneHot {
				spec.Type = "string"
				cols = append(cols, table.Column{Name: name, Text: rawColumn(t, c.Name)})
			} else {
				cols = append(cols, table.Column{Name: name, Float: ds.X[k]})
			}
			specs = append(specs, spec)
			k++
		}
	}
	if label != "" {
		raw := rawColumn(t, label)
		if set.Task == ml.Regression {
			xs := make([]float64, len(raw))
			for i, v := range raw {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil || v == "" {
					x = math.NaN()
				}
				xs[i] = x
			}
			cols = append(cols, table.Column{Name: label, Float: xs})
		} else {
			cols = append(cols, table.Column{Name: label, Text: raw})
		}
	}
	return cols, specs
}

// rawColumn is a column's trimmed text, "" where missing.
func rawColumn(t *table.Table, name string) []string {
	j := t.Index(name)
	out := make([]string, t.Len())
	for i := range t.Rows {
		if j >= 0 && !t.IsMissing(i, j) {
			out[i] = strings.TrimSpace(t.Rows[i][j])
		}
	}
	return out
}

// onlineRow is the value of one online row.
type onlineRow struct {
	FeatureSetVersion string         `json:"featureSetVersion"`
	BatchID           string         `json:"batchId"`
	Row               int            `json:"row"`
	Features          map[string]any `json:"features"`
	// Label is the row's label, when the batch is labelled.
	Label *string `json:"label,omitempty"`
}

// onlineRows builds one online row per batch row (rows numbered from 1):
// features by name, a missing value as null.
func onlineRows(pipelineName, batchID, version string, cols []table.Column, label string) ([]OnlineRow, error) {
	n := 0
	if len(cols) > 0 {
		n = max(len(cols[0].Float), len(cols[0].Text))
	}
	out := make([]OnlineRow, n)
	for i := 0; i < n; i++ {
		r := onlineRow{FeatureSetVersion: version, BatchID: batchID, Row: i + 1, Features: make(map[string]any, len(cols))}
		for _, c := range cols {
			var v any
			switch {
			case c.Text != nil && c.Text[i] != "":
				v = c.Text[i]
			case c.Text == nil && !math.IsNaN(c.Float[i]):
				v = c.Float[i]
			}
			if c.Name == label {
				if v != nil {
					s := fmt.Sprint(v)
					r.Label = &s
				}
				continue
			}
			r.Features[c.Name] = v
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("online row %d: %w", i+1, err)
		}
		out[i] = OnlineRow{Key: store.OnlineKey(pipelineName, batchID, i+1), Value: b}
	}
	return out, nil
}
