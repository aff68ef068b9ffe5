package validation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// Received is the command to validate one stored batch.
type Received struct {
	Pipeline string
	BatchID  string
	Format   string
	// Object is the stored batch in gyre-batches.
	Object *gyrev1.ObjectRef
	// ArrivalSeq and ArrivedAt place the batch in arrival order: the stream
	// sequence and stored time of its data.batch.received (zero when
	// unknown: the batch goes at the end of the log). See
	// store.ValidatedBatch.
	ArrivalSeq uint64
	ArrivedAt  time.Time
}

// Outcome is what validating a batch decided.
type Outcome struct {
	Validated bool
	Report    *Report
	// EventID is the id of the data.batch.validated or data.batch.rejected event.
	EventID string
	// SchemaInferred is true when the schema was inferred from this batch.
	SchemaInferred bool
	// Object is what a validated batch was passed on as: the batch as
	// received, or its cleaned copy.
	Object *gyrev1.ObjectRef
}

// Rejection is what gyre-state rejected.<pipeline>.<batch> keeps of a
// batch validation kept something out of, for inspection: a rejected batch
// (status rejected), or the quarantined rows and undeclared columns of a
// validated one (status validated). The batch as received stays in
// gyre-batches (ObjectKey).
type Rejection struct {
	// Status is StatusRejected or StatusValidated; empty in records from
	// before the quarantine, which are all of rejected batches.
	Status    string `json:"status,omitempty"`
	BatchID   string `json:"batchId"`
	ObjectKey string `json:"objectKey"`
	Sha256    string `json:"sha256"`
	// Rows is the number of data rows received.
	Rows int `json:"rows"`
	// RowsQuarantined and ColumnsDropped are what a validated batch was
	// passed on without; ValidatedKey names the copy passed on.
	RowsQuarantined int               `json:"rowsQuarantined,omitempty"`
	ColumnsDropped  []string          `json:"columnsDropped,omitempty"`
	ValidatedKey    string            `json:"validatedKey,omitempty"`
	Anomalies       []*gyrev1.Anomaly `json:"anomalies,omitempty"`
	// Reasons are the first MaxReasons problems; when ReasonsTotal is
	// more, QuarantineKey names the gyre-batches object with every reason
	// of the quarantined rows.
	Reasons          []*gyrev1.RejectReason `json:"reasons"`
	ReasonsTotal     int                    `json:"reasonsTotal"`
	QuarantineKey    string                 `json:"quarantineKey,omitempty"`
	PipelineRevision uint64                 `json:"pipelineRevision"`
	EventID          string                 `json:"eventId"`
	At               time.Time              `json:"at"`
}

// publisher publishes an event; *bus.Publisher is one.
type publisher interface {
	Publish(ctx context.Context, ev event.Event) error
}

// buckets gives the JetStream buckets; *store.Lazy is one.
type buckets interface {
	Get(ctx context.Context) (*store.Buckets, error)
}

// Validator validates stored batches against their pipeline's schema and
// rules. It is the application code behind the service's event handlers.
type Validator struct {
	buckets buckets
	pub     publisher
}

// NewValidator returns a Validator.
func NewValidator(b buckets, pub publisher) *Validator {
	return &Validator{buckets: b, pub: pub}
}

// Validate checks a received batch. A valid one is appended to the
// pipeline's validated-batch log and announced with data.batch.validated; an
// invalid one is recorded at rejected.<pipeline>.<batch> and announced with
// data.batch.rejected, and changes nothing else. Only what cannot be checked
// at all — an unknown pipeline, a missing object — is an error (permanent).
func (v *Validator) Validate(ctx context.Context, cmd Received) (Outcome, error) {
	bk, err := v.buckets.Get(ctx)
	if err != nil {
		return Outcome{}, fmt.Errorf("validate: %w", err)
	}
	p, rev, err := store.Pipeline(ctx, bk.Pipelines, cmd.Pipeline)
	if err != nil {
		return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
	}
	if b := cmd.Object.GetBucket(); b != bk.Batches.Name {
		return Outcome{}, bus.Permanentf("validate batch %q: object is in bucket %q, not %s", cmd.BatchID, b, bk.Batches.Name)
	}
	data, err := store.GetObject(ctx, bk.Batches, cmd.Object.GetKey())
	if err != nil {
		return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
	}
	sum := sha256.Sum256(data)
	if want := cmd.Object.GetSha256(); want != "" && hex.EncodeToString(sum[:]) != want {
		return Outcome{}, bus.Permanentf("validate batch %q: object %s has sha256 %x, the event says %s", cmd.BatchID, cmd.Object.GetKey(), sum, want)
	}
	cmd.Object.Sha256 = hex.EncodeToString(sum[:])
	t, err := table.Read(cmd.Format, data)
	if err != nil {
		// Ingest parsed it; a batch that does not parse now is rejected
		// like any other bad batch, with the parser's row and column.
		var te *table.Error
		if !errors.As(err, &te) {
			return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
		}
		r := &Report{BatchProblems: 1, ReasonsTotal: 1, Reasons: []*gyrev1.RejectReason{{
			Column: te.Column, Row: int64(te.Row), Rule: "format", Message: te.Error(),
		}}, Checks: []*gyrev1.Check{{Name: "format", Kind: KindSchema, Message: te.Error()}}}
		return v.reject(ctx, bk, cmd, rev, r)
	}

	rules, err := pipeline.NewRuleSet(p.Spec.Dataset.Rules, nil)
	if err != nil {
		return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
	}
	// The batch is checked against the schema as stored, and a valid
	// batch in the learning window is learned from; should another batch
	// be learned from (or the schema frozen) in between, the batch is
	// checked again against what that made: every batch is held to one
	// schema.
	for attempt := 0; ; attempt++ {
		rec, found, err := loadSchema(ctx, bk.State, cmd.Pipeline)
		if err != nil {
			return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
		}
		pl := makePlan(p, rec, found, cmd.BatchID, t)
		report := NewChecker(pl.columns, p.Spec.Dataset, rules).WithFeatures(p.Spec.Features).
			WithState(pl.state).WithReference(pl.reference, pl.refBatches).Check(t)
		if !report.Passed(p.Spec.Dataset.MaxRowErrors) {
			return v.reject(ctx, bk, cmd, rev, report)
		}
		if pl.learn {
			err := v.learn(ctx, bk.State, p, pl, report, cmd.BatchID, rev)
			if errors.Is(err, errReplan) && attempt < 10 {
				continue
			}
			if err != nil {
				return Outcome{}, fmt.Errorf("validate batch %q: learn the schema: %w", cmd.BatchID, err)
			}
		}
		return v.accept(ctx, bk, cmd, p, rev, report, t)
	}
}

func (v *Validator) accept(ctx context.Context, bk *store.Buckets, cmd Received, p *pipeline.Pipeline, rev uint64, r *Report, t *table.Table) (Outcome, error) {
	id := bus.StableID(events.DataBatchValidated, cmd.Pipeline, cmd.BatchID, cmd.Object.GetSha256())
	// What is passed on: the batch as received, or a copy without its
	// quarantined rows and undeclared columns, stored before the log names
	// it so that no reader finds the log pointing at nothing.
	obj, format, rows := cmd.Object, cmd.Format, r.Rows
	if c := cleaned(t, r); c != nil {
		ref, err := storeCleaned(ctx, bk.Batches, cmd.Pipeline, c)
		if err != nil {
			return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
		}
		obj, format, rows = ref, table.FormatCSV, c.Len()
		// The reasons are recorded before the log names the batch: a batch
		// downstream has already seen never lacks its quarantine.
		if err := v.record(ctx, bk, cmd, rev, r, ref, id); err != nil {
			return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
		}
	}
	// The batch takes its arrival position in the log, not the position of
	// the moment its validation finished: a batch whose validation was
	// retried, or that another replica held while it crashed, still comes
	// before the batches that arrived after it.
	entry, err := store.AppendValidated(ctx, bk.State, cmd.Pipeline, store.ValidatedBatch{
		BatchID: cmd.BatchID, ObjectKey: obj.GetKey(), Format: format, Rows: int64(rows),
		Sha256: obj.GetSha256(), EventID: id, At: time.Now().UTC(),
		ArrivalSeq: cmd.ArrivalSeq, ArrivedAt: cmd.ArrivedAt.UTC(),
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
	}
	// The entry is of this content when it carries this content's event id
	// (or, in entries from before the quarantine, its sha256).
	if entry.EventID != id && entry.Sha256 != cmd.Object.GetSha256() && entry.Sha256 != obj.GetSha256() {
		// Ingest binds a batch id to one content, so this is a log written
		// by something else; do not announce a batch the log does not hold.
		return Outcome{}, bus.Permanentf("validate batch %q: the validated-batch log holds this id for other content (sha256 %s)", cmd.BatchID, entry.Sha256)
	}
	if entry.ObjectKey != obj.GetKey() {
		// An earlier delivery, validated against another revision of the
		// spec, cleaned the batch otherwise: the log is what downstream
		// reads, so the event names what it holds.
		bus.Logger(ctx).Warn("batch validated again with another outcome; the validated-batch log keeps the first",
			"pipeline", cmd.Pipeline, "batchId", cmd.BatchID, "logged", entry.ObjectKey, "now", obj.GetKey())
		obj = &gyrev1.ObjectRef{Bucket: bk.Batches.Name, Key: entry.ObjectKey, Sha256: entry.Sha256,
			Uri: events.ObjectURI(bk.Batches.Name, entry.ObjectKey)}
		format, rows = entry.Format, int(entry.Rows)
	}
	// The first batch validated for a pipeline without a declared schema is
	// the one its schema was inferred from: the first appended, wherever a
	// batch that arrived before it (validated later) now puts it. The
	// stored entry answers the same on a redelivery. (Entries from before
	// AppendSeq: the first in the log.)
	inferred := len(p.Spec.Dataset.Schema) == 0 && (entry.AppendSeq == 1 || entry.AppendSeq == 0 && entry.Seq == 1)
	var quarantined []*gyrev1.RejectReason
	if len(r.Quarantine) > 0 {
		quarantined = r.Reasons
	}
	ev, err := events.New("/gyre/"+Name, cmd.Pipeline, &gyrev1.DataBatchValidated{
		Pipeline: cmd.Pipeline, BatchId: cmd.BatchID, Object: obj, Format: format, Rows: int64(rows),
		Columns: r.Columns, Checks: r.Checks, ChecksPassed: r.AllChecksPassed(), LabelColumn: p.Spec.Dataset.Label,
		Labelled: r.Labelled, SchemaInferred: inferred, PipelineRevision: int64(rev),
		RowsIn: int64(r.Rows), RowsQuarantined: int64(r.Rows - rows), QuarantineReasons: quarantined,
		Anomalies: r.Anomalies, Received: cmd.Object,
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
	}
	ev.SetID(id)
	if err := v.pub.Publish(ctx, ev); err != nil {
		return Outcome{}, fmt.Errorf("validate batch %q: %w", cmd.BatchID, err)
	}
	bus.Logger(ctx).Info("batch validated", "pipeline", cmd.Pipeline, "batchId", cmd.BatchID, "rows", rows,
		"rowsQuarantined", r.Rows-rows, "columnsDropped", r.Undeclared,
		"seq", entry.Seq, "arrivalSeq", entry.ArrivalSeq, "labelled", r.Labelled, "schemaInferred", inferred)
	return Outcome{Validated: true, Report: r, EventID: id, SchemaInferred: inferred, Object: obj}, nil
}

func (v *Validator) reject(ctx context.Context, bk *store.Buckets, cmd Received, rev uint64, r *Report) (Outcome, error) {
	id := bus.StableID(events.DataBatchRejected, cmd.Pipeline, cmd.BatchID, cmd.Object.GetSha256())
	_, err := store.UpdateJSON(ctx, bk.State, store.RejectedKey(cmd.Pipeline, cmd.BatchID), func(rej *Rejection, exists bool) error {
		if exists && rej.EventID == id {
			return store.ErrNoChange // a redelivery
		}
		*rej = Rejection{
			Status: StatusRejected, BatchID: cmd.BatchID, ObjectKey: cmd.Object.GetKey(), Sha256: cmd.Object.GetSha256(), Rows: r.Rows,
			Anomalies: r.Anomalies, Reasons: r.Reasons, ReasonsTotal: r.ReasonsTotal, PipelineRevision: rev, EventID: id, At: time.Now().UTC(),
		}
		return nil
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("reject batch %q: %w", cmd.BatchID, err)
	}
	ev, err := events.New("/gyre/"+Name, cmd.Pipeline, &gyrev1.DataBatchRejected{
		Pipeline: cmd.Pipeline, BatchId: cmd.BatchID, Object: cmd.Object, Rows: int64(r.Rows),
		Reasons: r.Reasons, ReasonsTotal: int64(r.ReasonsTotal), Checks: r.Checks,
		// The batch stays where ingest stored it, and nothing downstream
		// reads it: that object is its quarantine.
		Quarantine: cmd.Object, PipelineRevision: int64(rev), Anomalies: r.Anomalies,
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("reject batch %q: %w", cmd.BatchID, err)
	}
	ev.SetID(id)
	if err := v.pub.Publish(ctx, ev); err != nil {
		return Outcome{}, fmt.Errorf("reject batch %q: %w", cmd.BatchID, err)
	}
	first := ""
	if len(r.Reasons) > 0 {
		first = r.Reasons[0].GetMessage()
	}
	bus.Logger(ctx).Warn("batch rejected", "pipeline", cmd.Pipeline, "batchId", cmd.BatchID,
		"reasons", r.ReasonsTotal, "rowsWithErrors", r.RowsWithErrors, "first", first)
	return Outcome{Report: r, EventID: id}, nil
}

// Applied is the command of a pipeline.applied event.
type Applied struct {
	Pipeline string
	Spec     *pipeline.Pipeline
}

// PipelineApplied follows a spec change. When the spec now declares a
// schema, the schema learned from earlier batches (frozen or not) is
// dropped: the declared one rules from now on, and should the declaration
// be removed again later, the next batches learn a fresh schema rather
// than reviving a stale one. When it no longer declares one, the
// reference learned beside the declared schema is dropped the same way.
// Any other change needs nothing: every batch reads the current spec (a
// raised inferSchema.batches reopens the learning of a schema not frozen).
func (v *Validator) PipelineApplied(ctx context.Context, cmd Applied) error {
	bk, err := v.buckets.Get(ctx)
	if err != nil {
		return fmt.Errorf("pipeline applied: %w", err)
	}
	rec, found, err := loadSchema(ctx, bk.State, cmd.Pipeline)
	if err != nil {
		return fmt.Errorf("pipeline applied: %w", err)
	}
	declared := len(cmd.Spec.Spec.Dataset.Schema) > 0
	if !found || declared == (rec.Source == SourceDeclared) {
		return nil
	}
	key := store.SchemaKey(cmd.Pipeline)
	if err := bk.State.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("pipeline applied: drop the learned schema %s: %w", key, err)
	}
	if declared {
		bus.Logger(ctx).Info("learned schema dropped: the spec declares one now", "pipeline", cmd.Pipeline, "frozen", rec.Frozen != nil)
	} else {
		bus.Logger(ctx).Info("reference of the declared schema dropped: the spec declares none now", "pipeline", cmd.Pipeline)
	}
	return nil
}
