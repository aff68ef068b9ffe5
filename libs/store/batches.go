package store

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ValidatedBatch is one entry of a pipeline's log of validated batches, in
// the order validation accepted them: what training windows and evaluation
// batches are chosen from.
type ValidatedBatch struct {
	// Seq numbers the pipeline's validated batches from 1, in order.
	Seq       int64     `json:"seq"`
	BatchID   string    `json:"batchId"`
	ObjectKey string    `json:"objectKey"`
	Format    string    `json:"format"`
	Rows      int64     `json:"rows"`
	Sha256    string    `json:"sha256"`
	EventID   string    `json:"eventId"`
	At        time.Time `json:"at"`
}

// MaxBatchLog bounds the log kept per pipeline; older entries are dropped.
const MaxBatchLog = 500

// BatchLogKey is the gyre-state key of a pipeline's validated-batch log.
func BatchLogKey(pipeline string) string { return "batches." + pipeline }

// AppendValidated appends b to the pipeline's log unless a batch with the
// same id is there already (a redelivery), and returns the entry as stored.
func AppendValidated(ctx context.Context, kv jetstream.KeyValue, pipeline string, b ValidatedBatch) (ValidatedBatch, error) {
	var stored ValidatedBatch
	_, err := UpdateJSON(ctx, kv, BatchLogKey(pipeline), func(log *[]ValidatedBatch, _ bool) error {
		for _, e := range *log {
			if e.BatchID == b.BatchID {
				stored = e
				return ErrNoChange
			}
		}
		b.Seq = 1
		if n := len(*log); n > 0 {
			b.Seq = (*log)[n-1].Seq + 1
		}
		*log = append(*log, b)
		if len(*log) > MaxBatchLog {
			*log = (*log)[len(*log)-MaxBatchLog:]
		}
		stored = b
		return nil
	})
	return stored, err
}

// ValidatedBatches returns the pipeline's log, oldest first.
func ValidatedBatches(ctx context.Context, kv jetstream.KeyValue, pipeline string) ([]ValidatedBatch, error) {
	log, _, _, err := GetJSON[[]ValidatedBatch](ctx, kv, BatchLogKey(pipeline))
	return log, err
}
