package store

import (
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ValidatedBatch is one entry of a pipeline's log of validated batches, in
// the order the batches arrived: what training windows and evaluation
// batches are chosen from.
type ValidatedBatch struct {
	// Seq numbers the pipeline's validated batches in arrival order,
	// consecutively (1, 2, … until the log is trimmed). A batch validated
	// late is inserted at its arrival position and the entries after it are
	// renumbered, so Seq is an entry's place, not a name: refer to a batch
	// by BatchID. The difference of two Seqs read from one log is how many
	// batches lie between them.
	Seq       int64     `json:"seq"`
	BatchID   string    `json:"batchId"`
	ObjectKey string    `json:"objectKey"`
	Format    string    `json:"format"`
	Rows      int64     `json:"rows"`
	Sha256    string    `json:"sha256"`
	EventID   string    `json:"eventId"`
	At        time.Time `json:"at"`
	// ArrivalSeq is the batch's arrival position: the GYRE_EVENTS stream
	// sequence of the data.batch.received that announced it. The server
	// assigns it when ingest announces the batch, ingest announces batches
	// in the order they arrive, and a redelivery of the announcement keeps
	// it. 0 when unknown (entries written before it existed, batches not
	// validated from an event): such an entry is appended, and keeps its
	// place.
	ArrivalSeq uint64 `json:"arrivalSeq,omitempty"`
	// ArrivedAt is when the server stored that announcement. It confirms
	// ArrivalSeq: a batch is only placed before an entry that arrived after
	// it by both, so that a stream recreated with its sequence starting
	// again at 1 cannot put new batches before old ones.
	ArrivedAt time.Time `json:"arrivedAt,omitzero"`
	// AppendSeq numbers the entries in the order validation appended them
	// (1, 2, …), never renumbered: the log as it stood when a batch was
	// appended is the entries with an AppendSeq at most its own. 0 for
	// entries written before it existed.
	AppendSeq int64 `json:"appendSeq,omitempty"`
}

// MaxBatchLog bounds the log kept per pipeline; older entries are dropped.
const MaxBatchLog = 500

// BatchLogKey is the gyre-state key of a pipeline's validated-batch log.
func BatchLogKey(pipeline string) string { return "batches." + pipeline }

// AppendValidated adds b to the pipeline's log at its arrival position
// (b.ArrivalSeq; at the end when it is 0) unless a batch with the same id is
// there already (a redelivery), and returns the entry as stored: its Seq,
// AppendSeq and place as of this write.
func AppendValidated(ctx context.Context, kv jetstream.KeyValue, pipeline string, b ValidatedBatch) (ValidatedBatch, error) {
	var stored ValidatedBatch
	_, err := UpdateJSON(ctx, kv, BatchLogKey(pipeline), func(log *[]ValidatedBatch, _ bool) error {
		next, entry, added := insertValidated(*log, b)
		stored = entry
		if !added {
			return ErrNoChange
		}
		*log = next
		return nil
	})
	return stored, err
}

// insertValidated returns log with b inserted at its arrival position,
// renumbered, and trimmed to MaxBatchLog, and b as stored; added is false
// (and log unchanged) when log holds b's batch id already.
//
// b goes after the last entry that did not arrive after it (see
// arrivedAfter): since every entry was placed that way, the log is sorted by
// arrival wherever arrival is known, and an entry whose arrival is unknown
// is a barrier that nothing is moved across, so older logs keep their order.
// The scan runs from the end: a late batch is rarely more than a few entries
// late.
func insertValidated(log []ValidatedBatch, b ValidatedBatch) (next []ValidatedBatch, stored ValidatedBatch, added bool) {
	var lastAppend int64
	for _, e := range log {
		if e.BatchID == b.BatchID {
			return log, e, false
		}
		lastAppend = max(lastAppend, e.AppendSeq)
	}
	b.AppendSeq = lastAppend + 1
	at := len(log)
	for at > 0 && arrivedAfter(log[at-1], b) {
		at--
	}
	next = slices.Insert(slices.Clone(log), at, b)
	// Seq stays consecutive from where the log starts (1, or the first
	// kept entry's after trimming): an entry's Seq is its place.
	first := int64(1)
	if len(log) > 0 {
		first = log[0].Seq
	}
	for i := range next {
		next[i].Seq = first + int64(i)
	}
	stored = next[at]
	if len(next) > MaxBatchLog {
		// The oldest go; a batch so late that it would be older than every
		// kept entry goes at once (stored keeps the Seq it would have had).
		next = next[len(next)-MaxBatchLog:]
	}
	return next, stored, true
}

// arrivedAfter reports whether entry e is known to have arrived after b:
// both have arrival positions, e's is later, and e was not stored earlier
// than b (a stream recreated since would give a later batch a smaller
// sequence, but not an earlier time).
func arrivedAfter(e, b ValidatedBatch) bool {
	if e.ArrivalSeq == 0 || b.ArrivalSeq == 0 || e.ArrivalSeq <= b.ArrivalSeq {
		return false
	}
	return e.ArrivedAt.IsZero() || b.ArrivedAt.IsZero() || !e.ArrivedAt.Before(b.ArrivedAt)
}

// ValidatedBatches returns the pipeline's log, oldest first.
func ValidatedBatches(ctx context.Context, kv jetstream.KeyValue, pipeline string) ([]ValidatedBatch, error) {
	log, _, _, err := GetJSON[[]ValidatedBatch](ctx, kv, BatchLogKey(pipeline))
	return log, err
}

// AsAppended returns the entries of log that were there when the entry at
// index end was appended, up to and including it, oldest first: the log as
// that batch's validation left it, whatever was inserted before it since.
// What is computed from "the log up to a batch" (the feature service's
// fitting window) then comes out the same on a redelivery.
func AsAppended(log []ValidatedBatch, end int) []ValidatedBatch {
	e := log[end]
	if e.AppendSeq == 0 {
		// Appended before AppendSeq existed: nothing is ever inserted
		// before such an entry, so everything before it was there.
		return slices.Clone(log[:end+1])
	}
	out := make([]ValidatedBatch, 0, end+1)
	for _, x := range log[:end+1] {
		if x.AppendSeq <= e.AppendSeq {
			out = append(out, x)
		}
	}
	return out
}
