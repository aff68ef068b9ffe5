package validation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// The quarantine of a batch is what validation kept out of it: the rows
// flagged by a check (at most spec.dataset.maxRowErrors of them, else the
// whole batch is rejected) and the columns nothing declares. Downstream
// services read a validated batch only through the validated-batch log and
// data.batch.validated, so validation writes the batch as it passes it on —
// a cleaned copy in gyre-batches — and names that copy in both: feature
// (snapshots, online rows), trainer, evaluator and monitor (reference
// statistics) then never see a quarantined row or an undeclared column,
// with no change of their own, and the batch as received stays where ingest
// stored it for inspection. The reasons are kept at
// gyre-state rejected.<pipeline>.<batch> (a Rejection with status
// "validated"), next to those of the batches rejected whole.

// Statuses of a Rejection.
const (
	// StatusRejected: the whole batch was rejected.
	StatusRejected = "rejected"
	// StatusValidated: the batch was validated without its quarantined
	// rows and undeclared columns.
	StatusValidated = "validated"
)

// Media types of what validation stores in gyre-batches.
const (
	cleanedMediaType    = "text/csv"
	quarantineMediaType = "application/json"
)

// CleanedKey is the gyre-batches key of the cleaned copy of a batch with
// the given content: <pipeline>/validated/<sha256>.csv. Content addressing
// makes storing it again (a redelivery) a no-op.
func CleanedKey(pipeline, sha256 string) string {
	return pipeline + "/validated/" + sha256 + "." + table.FormatCSV
}

// QuarantineKey is the gyre-batches key of the reasons of every
// quarantined row of a batch (the batch as received has the given sha256),
// stored when there are more than a gyre-state record carries (MaxReasons).
func QuarantineKey(pipeline, sha256 string) string {
	return pipeline + "/quarantine/" + sha256 + ".json"
}

// cleaned returns t without the report's quarantined rows and undeclared
// columns, or nil when there is nothing to remove (the batch is passed on
// as received).
func cleaned(t *table.Table, r *Report) *table.Table {
	if len(r.Quarantine) == 0 && len(r.Undeclared) == 0 {
		return nil
	}
	var keep []int
	for j, name := range t.Columns {
		if !slices.Contains(r.Undeclared, name) {
			keep = append(keep, j)
		}
	}
	out := &table.Table{Columns: make([]string, len(keep)), Rows: make([][]string, 0, t.Len()-len(r.Quarantine))}
	for k, j := range keep {
		out.Columns[k] = t.Columns[j]
	}
	q := 0
	for i, row := range t.Rows {
		if q < len(r.Quarantine) && r.Quarantine[q].Row == i+1 {
			q++
			continue
		}
		cells := make([]string, len(keep))
		for k, j := range keep {
			// A missing cell is written empty, which is how CSV says
			// missing.
			if !t.IsMissing(i, j) {
				cells[k] = row[j]
			}
		}
		out.Rows = append(out.Rows, cells)
	}
	return out
}

// encodeCSV writes t as CSV with a header. CSV keeps the column order and
// every cell's text, and an empty cell reads back as missing, so the copy
// reads (table.Read) as the rows it was made of, whatever the format the
// batch arrived in.
func encodeCSV(t *table.Table) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	if err := w.Write(t.Columns); err != nil {
		return nil, err
	}
	if err := w.WriteAll(t.Rows); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// storeCleaned stores the cleaned copy of a batch and returns its reference.
func storeCleaned(ctx context.Context, objects store.Objects, pipeline string, t *table.Table) (*gyrev1.ObjectRef, error) {
	data, err := encodeCSV(t)
	if err != nil {
		return nil, fmt.Errorf("encode the cleaned batch: %w", err)
	}
	sum := sha256.Sum256(data)
	ref, _, err := store.PutObject(ctx, objects, CleanedKey(pipeline, hex.EncodeToString(sum[:])), cleanedMediaType, data)
	if err != nil {
		return nil, fmt.Errorf("store the cleaned batch: %w", err)
	}
	return ref, nil
}

// Reason is one problem of a quarantined row (or of a batch rejected
// whole), as `gyre data rejected` and the HTTP route show it.
type Reason struct {
	// Row is the 1-based data row of the batch as received; 0 for a
	// problem of the whole batch.
	Row int64 `json:"row"`
	// Column is the column at fault; empty for a rule on the whole row.
	Column string `json:"column,omitempty"`
	// Value is the offending value, truncated to 100 characters.
	Value string `json:"value,omitempty"`
	// Check is the check that failed: required, type, range, category,
	// rule:<expression>, or for a whole batch label, missing, format, rows.
	Check string `json:"check"`
	// Reason says what is wrong, e.g. `value "7" is not one of the
	// categories 0, 1`.
	Reason string `json:"reason"`
}

func reasonOf(r *gyrev1.RejectReason) Reason {
	return Reason{Row: r.GetRow(), Column: r.GetColumn(), Value: r.GetValue(), Check: r.GetRule(), Reason: r.GetMessage()}
}

// quarantineObject is the content of a QuarantineKey object.
type quarantineObject struct {
	Pipeline string   `json:"pipeline"`
	BatchID  string   `json:"batchId"`
	Reasons  []Reason `json:"reasons"`
}

// record writes the batch's quarantine: rejected.<pipeline>.<batch> with
// the first MaxReasons reasons, and, when there are more, every reason as
// an object. A redelivery that reaches the same decision changes nothing.
func (v *Validator) record(ctx context.Context, bk *store.Buckets, cmd Received, rev uint64, r *Report, validated *gyrev1.ObjectRef, id string) error {
	rec := Rejection{
		Status: StatusValidated, BatchID: cmd.BatchID, ObjectKey: cmd.Object.GetKey(), Sha256: cmd.Object.GetSha256(),
		Rows: r.Rows, RowsQuarantined: len(r.Quarantine), ColumnsDropped: r.Undeclared, Anomalies: r.Anomalies,
		Reasons: r.Reasons, ReasonsTotal: r.ReasonsTotal, ValidatedKey: validated.GetKey(), PipelineRevision: rev, EventID: id,
	}
	if r.ReasonsTotal > len(r.Reasons) {
		all := quarantineObject{Pipeline: cmd.Pipeline, BatchID: cmd.BatchID}
		for _, q := range r.Quarantine {
			for _, reason := range q.Reasons {
				all.Reasons = append(all.Reasons, reasonOf(reason))
			}
		}
		data, err := json.Marshal(all)
		if err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
		ref, _, err := store.PutObject(ctx, bk.Batches, QuarantineKey(cmd.Pipeline, cmd.Object.GetSha256()), quarantineMediaType, data)
		if err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
		rec.QuarantineKey = ref.GetKey()
	}
	_, err := store.UpdateJSON(ctx, bk.State, store.RejectedKey(cmd.Pipeline, cmd.BatchID), func(old *Rejection, exists bool) error {
		if exists && old.EventID == id && old.ValidatedKey == rec.ValidatedKey && old.ReasonsTotal == rec.ReasonsTotal {
			return store.ErrNoChange // a redelivery
		}
		rec.At = time.Now().UTC()
		*old = rec
		return nil
	})
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	return nil
}

// Quarantine is what validation kept out of one batch: its rows flagged by
// a check and its undeclared columns (status validated), or the whole
// batch (status rejected). It is the answer of GET
// /v1/pipelines/{pipeline}/rejected/{batch} and `gyre data rejected
// PIPELINE BATCH -o json`; in a list, Reasons is left out.
type Quarantine struct {
	Pipeline string `json:"pipeline"`
	BatchID  string `json:"batchId"`
	// Status is rejected (the whole batch) or validated (the batch was
	// passed on without the rows and columns below).
	Status string `json:"status"`
	// RowsIn is the number of data rows received.
	RowsIn int `json:"rowsIn"`
	// RowsQuarantined is the number of rows kept out: every row of a
	// rejected batch.
	RowsQuarantined int `json:"rowsQuarantined"`
	// ColumnsDropped are the undeclared columns left out.
	ColumnsDropped []string          `json:"columnsDropped,omitempty"`
	Anomalies      []*gyrev1.Anomaly `json:"anomalies,omitempty"`
	// ReasonsTotal counts every problem found.
	ReasonsTotal int `json:"reasonsTotal"`
	// Object is the batch as received in gyre-batches; Validated the
	// cleaned copy passed on (status validated).
	Object           string    `json:"object"`
	Validated        string    `json:"validated,omitempty"`
	PipelineRevision uint64    `json:"pipelineRevision"`
	EventID          string    `json:"eventId"`
	At               time.Time `json:"at"`
	// Reasons are the problems, in row order (problems of the whole batch
	// first): every one of a validated batch, the first MaxReasons of a
	// rejected one.
	Reasons []Reason `json:"reasons,omitempty"`
}

// QuarantineList is the answer of GET /v1/pipelines/{pipeline}/rejected:
// every batch of the pipeline validation kept something out of, oldest
// first.
type QuarantineList struct {
	Pipeline string       `json:"pipeline"`
	Batches  []Quarantine `json:"batches"`
}

func (rec *Rejection) view(pipeline string) Quarantine {
	q := Quarantine{
		Pipeline: pipeline, BatchID: rec.BatchID, Status: rec.Status, RowsIn: rec.Rows, RowsQuarantined: rec.RowsQuarantined,
		ColumnsDropped: rec.ColumnsDropped, Anomalies: rec.Anomalies, ReasonsTotal: rec.ReasonsTotal, Object: rec.ObjectKey,
		Validated: rec.ValidatedKey, PipelineRevision: rec.PipelineRevision, EventID: rec.EventID, At: rec.At,
	}
	if q.Status == "" || q.Status == StatusRejected {
		// Records from before the quarantine are all of rejected batches.
		q.Status, q.RowsQuarantined = StatusRejected, rec.Rows
	}
	return q
}

// Quarantines lists the batches of a pipeline that validation kept
// something out of, oldest first, without their reasons.
func Quarantines(ctx context.Context, kv jetstream.KeyValue, pipeline string) (QuarantineList, error) {
	out := QuarantineList{Pipeline: pipeline, Batches: []Quarantine{}}
	prefix := strings.TrimSuffix(store.RejectedKey(pipeline, "x"), "x")
	w, err := kv.WatchFiltered(ctx, []string{prefix + "*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return out, fmt.Errorf("list the quarantine of %s: %w", pipeline, err)
	}
	defer func() { _ = w.Stop() }()
	// The watcher sends every current value, then nil; a key written
	// meanwhile may come twice, the newest last.
	latest := map[string]Rejection{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return out, fmt.Errorf("list the quarantine of %s: %w", pipeline, ctx.Err())
		}
		if e == nil {
			break
		}
		var rec Rejection
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return out, fmt.Errorf("list the quarantine of %s: %s: %w", pipeline, e.Key(), err)
		}
		latest[e.Key()] = rec
	}
	for _, rec := range latest {
		out.Batches = append(out.Batches, rec.view(pipeline))
	}
	sort.Slice(out.Batches, func(i, j int) bool {
		a, b := out.Batches[i], out.Batches[j]
		if !a.At.Equal(b.At) {
			return a.At.Before(b.At)
		}
		return a.BatchID < b.BatchID
	})
	return out, nil
}

// QuarantineOf returns what validation kept out of one batch, with every
// reason; a batch with nothing kept out is a store.NotFoundError.
func QuarantineOf(ctx context.Context, kv jetstream.KeyValue, objects store.Objects, pipeline, batchID string) (Quarantine, error) {
	rec, _, found, err := store.GetJSON[Rejection](ctx, kv, store.RejectedKey(pipeline, batchID))
	if err != nil {
		return Quarantine{}, fmt.Errorf("quarantine of batch %q: %w", batchID, err)
	}
	if !found {
		return Quarantine{}, &store.NotFoundError{What: fmt.Sprintf("quarantine of batch %q of %s (nothing was kept out of it, or no such batch was validated)", batchID, pipeline)}
	}
	q := rec.view(pipeline)
	if rec.QuarantineKey == "" {
		q.Reasons = make([]Reason, len(rec.Reasons))
		for i, r := range rec.Reasons {
			q.Reasons[i] = reasonOf(r)
		}
		return q, nil
	}
	data, err := store.GetObject(ctx, objects, rec.QuarantineKey)
	if err != nil {
		return Quarantine{}, fmt.Errorf("quarantine of batch %q: %w", batchID, err)
	}
	var all quarantineObject
	if err := json.Unmarshal(data, &all); err != nil {
		return Quarantine{}, fmt.Errorf("quarantine of batch %q: %s: %w", batchID, rec.QuarantineKey, err)
	}
	q.Reasons = all.Reasons
	return q, nil
}
