package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// Job is a training job taken from a pool's queue: the typed command of the
// job handler.
type Job struct {
	// ID is the job event's id, which is the training.requested event's.
	ID      string
	Request *gyrev1.TrainingRequested
}

// JobRecord is a worker's record of a job: the value of gyre-state key
// trainer.<pipeline>.jobs.<requestId>. Attempts counts the times a worker
// took the job (a redelivery after a crash is one more), and Done keeps a
// job that finished from being trained again when its acknowledgement was
// lost.
type JobRecord struct {
	RequestID  string    `json:"requestId"`
	Pipeline   string    `json:"pipeline"`
	Attempts   int       `json:"attempts"`
	Worker     string    `json:"worker"`
	StartedAt  time.Time `json:"startedAt"`
	Done       bool      `json:"done,omitempty"`
	Status     string    `json:"status,omitempty"` // completed or failed
	Error      string    `json:"error,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// JobKey returns the gyre-state key of a job's record.
func JobKey(pipeline, requestID string) string {
	return "trainer." + pipeline + ".jobs." + requestID
}

// Outcome statuses.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Worker trains the jobs of one pool.
type Worker struct {
	buckets Buckets
	pub     Emitter
	source  string
	id      string
	pool    string
	timeout time.Duration
	now     func() time.Time
	active  *activeJobs
}

// NewWorker returns a worker named id serving pool; each job may train for
// at most timeout.
func NewWorker(buckets Buckets, pub Emitter, id, pool string, timeout time.Duration) *Worker {
	return &Worker{
		buckets: buckets, pub: pub, source: "/gyre/" + Name, id: id, pool: pool, timeout: timeout,
		now: time.Now, active: &activeJobs{jobs: map[string]ActiveJob{}},
	}
}

// Run trains a job: it emits training.started, reads the window, fits the
// feature set and the model, stores the bundle and the reference statistics
// in gyre-models, and emits training.completed. A failure the data or the
// spec causes emits training.failed (final) and returns nil: the job is done.
// Any other failure emits training.failed (retryable) and is returned, so
// the job is retried and then redelivered.
//
// Every effect is idempotent: event ids derive from the request id (and the
// attempt, for started and retryable failures), the bundle is the same bytes
// for the same window and is stored content-addressed, so a worker killed
// mid-training and the one that takes the job after it produce one
// completion and one artifact.
func (w *Worker) Run(ctx context.Context, job Job) error {
	req := job.Request
	b, err := w.buckets.Get(ctx)
	if err != nil {
		return err
	}
	rec, err := w.begin(ctx, b, req)
	if err != nil {
		return err
	}
	log := bus.Logger(ctx).With("pipeline", req.GetPipeline(), "request_id", req.GetRequestId(), "attempt", rec.Attempts)
	if rec.Done {
		log.Info("training job already done; acknowledging it", "status", rec.Status)
		return nil
	}
	w.active.add(ActiveJob{Pipeline: req.GetPipeline(), RequestID: req.GetRequestId(), Attempt: rec.Attempts, StartedAt: rec.StartedAt})
	defer w.active.remove(req.GetRequestId())

	start := w.now()
	completed, err := w.train(ctx, b, job, rec.Attempts)
	if err != nil {
		return w.fail(ctx, b, job, rec.Attempts, start, err)
	}
	if err := w.emit(ctx, req, completed, completedID(req)); err != nil {
		return err
	}
	if err := w.finish(ctx, b, req, StatusCompleted, ""); err != nil {
		return err
	}
	log.Info("training completed", "duration_ms", completed.GetDurationMs(), "metrics", completed.GetMetrics(),
		"artifact", completed.GetArtifact().GetKey())
	return nil
}

// completedID is the id of a request's training.completed: one per
// request, whichever attempt and worker completes it.
func completedID(req *gyrev1.TrainingRequested) string {
	return bus.StableID(events.TrainingCompleted, req.GetPipeline(), req.GetRequestId())
}

// begin counts an attempt in the job's record.
func (w *Worker) begin(ctx context.Context, b *store.Buckets, req *gyrev1.TrainingRequested) (JobRecord, error) {
	now := w.now().UTC()
	return store.UpdateJSON(ctx, b.State, JobKey(req.GetPipeline(), req.GetRequestId()), func(r *JobRecord, _ bool) error {
		if r.Done {
			return store.ErrNoChange
		}
		r.RequestID, r.Pipeline = req.GetRequestId(), req.GetPipeline()
		r.Attempts++
		r.Worker, r.StartedAt = w.id, now
		return nil
	})
}

// finish marks the job done.
func (w *Worker) finish(ctx context.Context, b *store.Buckets, req *gyrev1.TrainingRequested, status, msg string) error {
	now := w.now().UTC()
	_, err := store.UpdateJSON(ctx, b.State, JobKey(req.GetPipeline(), req.GetRequestId()), func(r *JobRecord, _ bool) error {
		if r.Done {
			return store.ErrNoChange
		}
		r.RequestID, r.Pipeline = req.GetRequestId(), req.GetPipeline()
		r.Done, r.Status, r.Error, r.FinishedAt = true, status, msg, now
		return nil
	})
	return err
}

// train does the work of one attempt and returns the completion to emit.
func (w *Worker) train(ctx context.Context, b *store.Buckets, job Job, attempt int) (*gyrev1.TrainingCompleted, error) {
	req := job.Request
	start := w.now()
	spec, _, err := store.Pipeline(ctx, b.Pipelines, req.GetPipeline())
	if err != nil {
		return nil, err
	}
	window := make([]*table.Table, 0, len(req.GetWindow()))
	rows := int64(0)
	for _, ref := range req.GetWindow() {
		data, err := store.GetObject(ctx, b.Batches, ref.GetObject().GetKey())
		if err != nil {
			return nil, fmt.Errorf("window batch %s: %w", ref.GetBatchId(), err)
		}
		t, err := table.Read(ref.GetFormat(), data)
		if err != nil {
			return nil, fmt.Errorf("window batch %s: %w", ref.GetBatchId(), err)
		}
		window = append(window, t)
		rows += int64(t.Len())
	}
	started := &gyrev1.TrainingStarted{
		Pipeline: req.GetPipeline(), RequestId: req.GetRequestId(), JobId: job.ID, Worker: w.id, Pool: w.pool,
		Attempt: int32(attempt), Algorithm: req.GetAlgorithm(), DatasetVersion: req.GetDatasetVersion(), Rows: rows,
	}
	if err := w.emit(ctx, req, started, bus.StableID(events.TrainingStarted, req.GetPipeline(), req.GetRequestId(), strconv.Itoa(attempt))); err != nil {
		return nil, err
	}

	tctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	trained, err := Train(tctx, TrainSpec{
		Pipeline: spec, Algorithm: req.GetAlgorithm(), Params: ml.Params(req.GetParams().AsMap()), Seed: spec.Spec.Model.Seed,
		Progress: progressLog(bus.Logger(ctx).With("pipeline", req.GetPipeline(), "request_id", req.GetRequestId(), "job_id", job.ID),
			w.now, progressLogEvery),
	}, window)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, bus.Permanent(fmt.Errorf("training exceeded the job timeout of %s: %w", w.timeout, err))
	}
	if err != nil {
		return nil, err
	}

	data, err := bundle.Marshal(&bundle.Bundle{
		Pipeline: req.GetPipeline(), RequestID: req.GetRequestId(), Features: trained.Features, Model: trained.Model,
	})
	if err != nil {
		return nil, err
	}
	artifact, _, err := store.PutObject(ctx, b.Models, bundle.Key(req.GetPipeline(), req.GetRequestId()), bundle.MediaType, data)
	if err != nil {
		return nil, err
	}
	ref, err := bundle.NewReference(req.GetPipeline(), req.GetRequestId(), req.GetWindowBatchIds(), trained.Features, window...)
	if err != nil {
		return nil, bus.Permanent(err)
	}
	refData, err := bundle.MarshalReference(ref)
	if err != nil {
		return nil, err
	}
	reference, _, err := store.PutObject(ctx, b.Models, bundle.ReferenceKey(req.GetPipeline(), req.GetRequestId()), bundle.ReferenceMediaType, refData)
	if err != nil {
		return nil, err
	}

	info := trained.Model.Info()
	params, err := structpb.NewStruct(info.Params)
	if err != nil {
		return nil, fmt.Errorf("encode params: %w", err)
	}
	sig := trained.Model.Signature()
	schema := &gyrev1.ModelSchema{Label: sig.Label, Classes: sig.Classes, Task: string(sig.Task)}
	for _, in := range sig.Inputs {
		schema.Features = append(schema.Features, in.Name)
	}
	// The chain of events that led here, oldest first; the evaluator and
	// the registry append theirs.
	var chain []string
	if req.GetCauseEventId() != "" {
		chain = append(chain, req.GetCauseEventId())
	}
	chain = append(chain, job.ID, completedID(req))
	return &gyrev1.TrainingCompleted{
		Pipeline: req.GetPipeline(), RequestId: req.GetRequestId(), JobId: job.ID, Worker: w.id, Pool: w.pool,
		Attempt: int32(attempt), Algorithm: req.GetAlgorithm(), Params: params, Metrics: trained.Metrics,
		Artifact: artifact, Reference: reference, DurationMs: w.now().Sub(start).Milliseconds(),
		TrainRows: int64(trained.TrainRows), Schema: schema,
		Lineage: &gyrev1.Lineage{
			BatchIds: req.GetWindowBatchIds(), FeatureSetVersion: trained.Features.Version,
			DatasetVersion: req.GetDatasetVersion(), TrainingRequestId: req.GetRequestId(), TrainingJobId: job.ID,
			PipelineRevision: req.GetPipelineRevision(), Reason: req.GetReason(), EventIds: chain,
		},
	}, nil
}

// fail reports a failed attempt. A permanent error ends the job: a final
// training.failed, the record marked done, and nil so the job is
// acknowledged. A transient one emits a retryable training.failed and is
// returned for a retry.
func (w *Worker) fail(ctx context.Context, b *store.Buckets, job Job, attempt int, start time.Time, cause error) error {
	req := job.Request
	final := bus.IsPermanent(cause)
	failed := &gyrev1.TrainingFailed{
		Pipeline: req.GetPipeline(), RequestId: req.GetRequestId(), JobId: job.ID, Worker: w.id, Pool: w.pool,
		Attempt: int32(attempt), Algorithm: req.GetAlgorithm(), Error: cause.Error(), Retryable: !final,
		DurationMs: w.now().Sub(start).Milliseconds(),
	}
	id := bus.StableID(events.TrainingFailed, req.GetPipeline(), req.GetRequestId())
	if !final {
		id = bus.StableID(events.TrainingFailed, req.GetPipeline(), req.GetRequestId(), strconv.Itoa(attempt))
	}
	log := bus.Logger(ctx).With("pipeline", req.GetPipeline(), "request_id", req.GetRequestId(), "attempt", attempt)
	if err := w.emit(ctx, req, failed, id); err != nil {
		if final {
			return err
		}
		log.Warn("could not report a retryable training failure", "error", err)
		return cause
	}
	if !final {
		log.Warn("training failed; it will be retried", "error", cause)
		return cause
	}
	if err := w.finish(ctx, b, req, StatusFailed, cause.Error()); err != nil {
		return err
	}
	log.Warn("training failed for good", "error", cause)
	return nil
}

// emit publishes a payload about a job's request with a deterministic id.
func (w *Worker) emit(ctx context.Context, req *gyrev1.TrainingRequested, msg proto.Message, id string) error {
	ev, err := events.New(w.source, req.GetPipeline(), msg)
	if err != nil {
		return bus.Permanent(err)
	}
	ev.SetID(id)
	if dv := req.GetDatasetVersion(); dv != "" {
		ev.SetExtension(bus.ExtDatasetVersion, dv)
	}
	return w.pub.Publish(ctx, ev)
}

// ActiveJob is a job a worker is training, as its heartbeat lists it.
type ActiveJob struct {
	Pipeline  string    `json:"pipeline"`
	RequestID string    `json:"requestId"`
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"startedAt"`
}

// activeJobs are the jobs in hand.
type activeJobs struct {
	mu   sync.Mutex
	jobs map[string]ActiveJob
}

func (a *activeJobs) add(j ActiveJob) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.jobs[j.RequestID] = j
}

func (a *activeJobs) remove(requestID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.jobs, requestID)
}

func (a *activeJobs) list() []ActiveJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ActiveJob, 0, len(a.jobs))
	for _, j := range a.jobs {
		out = append(out, j)
	}
	return out
}

// progressLogEvery is how often a long training logs how far it has come.
const progressLogEvery = 10 * time.Second

// progressLog returns a training progress callback that logs a line at most
// once per every, the first after every: a long training shows in the
// worker's log that it moves, and where.
func progressLog(log *slog.Logger, now func() time.Time, every time.Duration) func(ml.Progress) {
	return ml.EveryProgress(now(), every, now, func(p ml.Progress, elapsed time.Duration) {
		attrs := []any{"unit", p.Unit, "done", p.Done, "total", p.Total, "elapsed_s", math.Round(elapsed.Seconds()*10) / 10}
		if !math.IsNaN(p.Loss) {
			attrs = append(attrs, "loss", p.Loss)
		}
		log.Info("training in progress", attrs...)
	})
}
