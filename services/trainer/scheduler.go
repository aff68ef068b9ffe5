package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
)

// Emitter publishes events on their catalog subjects.
type Emitter interface {
	Publish(ctx context.Context, ev event.Event) error
}

// Publisher also publishes on an explicit subject: the job queue.
type Publisher interface {
	Emitter
	PublishTo(ctx context.Context, subject string, ev event.Event) (*jetstream.PubAck, error)
}

// Queues makes sure a pool's work queue has its consumer before a job is
// queued on it. Jobs wait in the work-queue stream whether or not a consumer
// exists, but an autoscaler that starts a pool's workers from zero (KEDA's
// nats-jetstream scaler) reads the lag of that consumer: without it, a pool
// scaled to zero would never be woken.
type Queues interface {
	EnsureQueue(ctx context.Context, pool string) error
}

// Buckets opens the JetStream buckets (store.Lazy does, once provisioned).
type Buckets interface {
	Get(ctx context.Context) (*store.Buckets, error)
}

// Scheduler turns triggers into training requests under the retrain policy
// (see Decide) and queues each request as a job on its pool's work queue.
type Scheduler struct {
	buckets Buckets
	pub     Publisher
	queues  Queues
	source  string
	now     func() time.Time
	// expiry is how long a request may stay in flight before it is presumed
	// lost (its worker's attempts ran out without a word).
	expiry time.Duration
	// token is the fencing token of the lease tenure this scheduler acts
	// for (see Fenced); 0 for one that acts for none.
	token uint64
}

// NewScheduler returns a scheduler emitting with source /gyre/trainer. It
// asks queues for a pool's consumer before queueing the pool's first job;
// with queues nil it queues without asking.
func NewScheduler(buckets Buckets, pub Publisher, queues Queues, inFlightExpiry time.Duration) *Scheduler {
	return &Scheduler{buckets: buckets, pub: pub, queues: queues, source: "/gyre/" + Name, now: time.Now, expiry: inFlightExpiry}
}

// Fenced returns the scheduler acting for the tenure of the scheduler's
// lease whose fencing token is token. Each of its writes of a pipeline's
// state stamps the token there (SchedulerState.LeaseToken) and is refused
// with a *DeposedError when the state carries a larger one: a later holder
// has acted on that pipeline, so this one was deposed, whatever its own
// clock says. Unfenced (token 0), a scheduler is refused on any state a
// holder has written: it is for tests and tools on state no holder owns.
func (s *Scheduler) Fenced(token uint64) *Scheduler {
	c := *s
	c.token = token
	return &c
}

// DeposedError is a scheduler state write refused by fencing: the state
// was written by a later tenure of the lease than the writer's. It is
// transient, deliberately: the message in hand goes back to the stream
// (after the in-process retries, which are refused too), where the
// holder — which has it or gets it next, the consumer being ordered —
// handles it, and a message the holder has handled already is not handled
// again (an ack from the holder settles it; this replica's nak of an older
// delivery changes nothing). A permanent error would dead-letter a message
// the holder may still need.
type DeposedError struct {
	Pipeline string
	// Token is the writer's; Current is the one the state carries.
	Token, Current uint64
}

func (e *DeposedError) Error() string {
	return fmt.Sprintf("scheduler deposed: the state of %s was written by lease tenure %d, this replica acts for %d; the message is left to the holder",
		e.Pipeline, e.Current, e.Token)
}

// fence checks the writer's token against the state's and stamps it there;
// stamped says the state changed, so that it is written even when nothing
// else changes: the first write of a new holder fences the old one out
// before the old one can act on what the new one decided.
func (s *Scheduler) fence(st *SchedulerState) (stamped bool, err error) {
	switch {
	case st.LeaseToken > s.token:
		return false, &DeposedError{Pipeline: st.Pipeline, Token: s.token, Current: st.LeaseToken}
	case st.LeaseToken < s.token:
		st.LeaseToken = s.token
		return true, nil
	}
	return false, nil
}

// unlessStamped is ErrNoChange, or nil when the state has a new token to write.
func unlessStamped(stamped bool) error {
	if stamped {
		return nil
	}
	return store.ErrNoChange
}

// Scheduled says what the scheduler did with a trigger.
type Scheduled struct {
	// Request is the request made (or made again on a redelivery); nil when
	// the trigger was dropped, and Why says why.
	Request *gyrev1.TrainingRequested
	EventID string
	Why     string
}

// Schedule applies the policy to a trigger and, when it says so, records
// the request in the pipeline's state and publishes training.requested and
// the job. The state is written first (compare-and-set) and the events get
// deterministic ids, so a redelivered trigger publishes the same events and
// JetStream stores them once.
func (s *Scheduler) Schedule(ctx context.Context, t Trigger) (Scheduled, error) {
	b, err := s.buckets.Get(ctx)
	if err != nil {
		return Scheduled{}, err
	}
	spec, rev, err := store.Pipeline(ctx, b.Pipelines, t.Pipeline)
	if err != nil {
		return Scheduled{}, err
	}
	batches, err := store.ValidatedBatches(ctx, b.State, t.Pipeline)
	if err != nil {
		return Scheduled{}, err
	}
	if t.BatchID != "" && !slices.ContainsFunc(batches, func(vb store.ValidatedBatch) bool { return vb.BatchID == t.BatchID }) {
		// Validation appends to the log and emits the event; this trigger
		// may have overtaken the write. A retry will see it.
		return Scheduled{}, fmt.Errorf("batch %s is not in the validated-batch log of %s yet", t.BatchID, t.Pipeline)
	}
	hasChampion := false
	if t.Reason == ReasonBootstrap {
		reg, _, _, err := models.Get(ctx, b.Registry, t.Pipeline)
		if err != nil {
			return Scheduled{}, err
		}
		_, hasChampion = reg.Champion()
	}
	policy := Policy{
		Batches:          batches,
		WindowBatches:    spec.Spec.Model.Window.Batches,
		BootstrapBatches: spec.Spec.Model.BootstrapBatches,
		Cooldown:         spec.RetrainCooldown(),
		HasChampion:      hasChampion,
		Now:              s.now().UTC(),
		InFlightExpiry:   s.expiry,
	}

	var out Scheduled
	_, err = store.UpdateJSON(ctx, b.State, StateKey(t.Pipeline), func(st *SchedulerState, _ bool) error {
		st.Pipeline = t.Pipeline
		out = Scheduled{}
		stamped, err := s.fence(st)
		if err != nil {
			return err
		}
		d := Decide(st, t, policy)
		out.Why = d.Why
		if d.Republish {
			req := &gyrev1.TrainingRequested{}
			if err := protojson.Unmarshal(st.InFlight.Request, req); err != nil {
				return fmt.Errorf("state %s: request in flight: %w", StateKey(t.Pipeline), err)
			}
			out.Request, out.EventID = req, st.InFlight.EventID
			return unlessStamped(stamped)
		}
		if !d.Request {
			return unlessStamped(stamped)
		}
		req, err := newRequest(t, spec, rev, d)
		if err != nil {
			return err
		}
		raw, err := protojson.Marshal(req)
		if err != nil {
			return fmt.Errorf("encode training request: %w", err)
		}
		out.Request, out.EventID = req, requestEventID(t.Pipeline, req.GetRequestId())
		st.Record(InFlight{
			RequestID: req.GetRequestId(), EventID: out.EventID, DatasetVersion: d.DatasetVersion,
			Reason: t.Reason, CauseEventID: t.EventID, BatchSeq: d.NewestSeq,
			RequestedAt: policy.Now, Request: raw,
		})
		return nil
	})
	if err != nil {
		return Scheduled{}, deposed(ctx, err)
	}
	log := bus.Logger(ctx)
	if out.Request == nil {
		level := slog.LevelInfo
		if t.Reason == ReasonBootstrap {
			// Every validated batch is a bootstrap trigger; most find a champion.
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "training not requested", "pipeline", t.Pipeline, "trigger", t.Reason, "why", out.Why)
		return out, nil
	}
	if err := s.publish(ctx, out.Request, out.EventID); err != nil {
		return Scheduled{}, err
	}
	log.Info("training requested", "pipeline", t.Pipeline, "trigger", t.Reason, "request_id", out.Request.GetRequestId(),
		"window", out.Request.GetWindowBatchIds(), "pool", out.Request.GetPool(), "note", out.Why)
	return out, nil
}

// publish emits training.requested and queues the same event as the job on
// gyre.jobs.train.<pool>, both with the request's deterministic id: each
// stream stores it once however often it is published.
func (s *Scheduler) publish(ctx context.Context, req *gyrev1.TrainingRequested, id string) error {
	ev, err := events.New(s.source, req.GetPipeline(), req)
	if err != nil {
		return bus.Permanent(err)
	}
	ev.SetID(id)
	ev.SetExtension(bus.ExtDatasetVersion, req.GetDatasetVersion())
	if err := s.pub.Publish(ctx, ev); err != nil {
		return err
	}
	subject, err := events.JobSubject(req.GetPool())
	if err != nil {
		return bus.Permanent(fmt.Errorf("pipeline %s: model pool: %w", req.GetPipeline(), err))
	}
	if s.queues != nil {
		if err := s.queues.EnsureQueue(ctx, req.GetPool()); err != nil {
			return fmt.Errorf("pipeline %s: work queue of pool %s: %w", req.GetPipeline(), req.GetPool(), err)
		}
	}
	if _, err := s.pub.PublishTo(ctx, subject, ev); err != nil {
		return err
	}
	return nil
}

// requestEventID is the id of a request's training.requested event (and job).
func requestEventID(pipeline, requestID string) string {
	return bus.StableID(events.TrainingRequested, pipeline, requestID)
}

// RequestID is the id of the request to train a pipeline on a window: the
// same window gives the same id, whoever triggers it.
func RequestID(pipeline, datasetVersion string) string {
	return bus.StableID("training-request", pipeline, datasetVersion)
}

// newRequest builds the request the policy decided.
func newRequest(t Trigger, spec *pipeline.Pipeline, rev uint64, d Decision) (*gyrev1.TrainingRequested, error) {
	params, err := structpb.NewStruct(spec.Spec.Model.Params)
	if err != nil {
		return nil, bus.Permanent(fmt.Errorf("pipeline %s: spec.model.params: %w", t.Pipeline, err))
	}
	req := &gyrev1.TrainingRequested{
		Pipeline:         t.Pipeline,
		RequestId:        RequestID(t.Pipeline, d.DatasetVersion),
		Reason:           t.Reason,
		CauseEventId:     t.EventID,
		CauseEventType:   t.EventType,
		Pool:             spec.Spec.Model.Pool,
		Algorithm:        spec.Spec.Model.Algorithm,
		Params:           params,
		DatasetVersion:   d.DatasetVersion,
		LabelColumn:      spec.Spec.Dataset.Label,
		PipelineRevision: int64(rev),
		RequestedBy:      t.RequestedBy,
	}
	for _, b := range d.Window {
		req.WindowBatchIds = append(req.WindowBatchIds, b.BatchID)
		req.Window = append(req.Window, &gyrev1.BatchRef{
			BatchId: b.BatchID,
			Object: &gyrev1.ObjectRef{
				Bucket: events.ObjectBatches, Key: b.ObjectKey, Uri: events.ObjectURI(events.ObjectBatches, b.ObjectKey),
				Sha256: b.Sha256,
			},
			Format: b.Format,
			Rows:   b.Rows,
		})
	}
	return req, nil
}

// Settle records that a request finished: completed, or failed for good.
// It clears the request in flight, so the next trigger may request again.
func (s *Scheduler) Settle(ctx context.Context, pipeline string, o Outcome) error {
	b, err := s.buckets.Get(ctx)
	if err != nil {
		return err
	}
	if o.At.IsZero() {
		o.At = s.now().UTC()
	}
	_, err = store.UpdateJSON(ctx, b.State, StateKey(pipeline), func(st *SchedulerState, exists bool) error {
		if !exists {
			st.Pipeline = pipeline
		}
		stamped, err := s.fence(st)
		if err != nil {
			return err
		}
		if !st.Settle(o) {
			return unlessStamped(stamped)
		}
		return nil
	})
	if err != nil {
		return deposed(ctx, err)
	}
	bus.Logger(ctx).Info("training request settled", "pipeline", pipeline, "request_id", o.RequestID, "status", o.Status)
	return nil
}

// deposed logs a write refused by fencing, once per attempt, and returns err.
func deposed(ctx context.Context, err error) error {
	var d *DeposedError
	if errors.As(err, &d) {
		bus.Logger(ctx).Warn("scheduler deposed: state write refused; the message is left to the lease holder",
			"pipeline", d.Pipeline, "token", d.Token, "holder_token", d.Current)
	}
	return err
}

// State reads a pipeline's scheduler state.
func (s *Scheduler) State(ctx context.Context, pipeline string) (*SchedulerState, error) {
	b, err := s.buckets.Get(ctx)
	if err != nil {
		return nil, err
	}
	st, _, _, err := store.GetJSON[SchedulerState](ctx, b.State, StateKey(pipeline))
	if err != nil {
		return nil, err
	}
	return &st, nil
}
