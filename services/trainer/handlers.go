package trainer

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// The handlers are the service's ports: each decodes its event into a typed
// command (a Trigger, an Outcome, a Job) and calls the scheduler or the
// worker. Malformed payloads are permanent errors (events.DecodeError).

// schedulerPorts are the handlers of the scheduler role, bound to the
// scheduler of one tenure of its lease: every state write they cause
// carries that tenure's fencing token.
type schedulerPorts struct{ sch *Scheduler }

// route is a consumer and its handler.
type route struct {
	decl events.Consumer
	h    bus.Handler
}

// routes declares the scheduler's consumers with their handlers.
func (p schedulerPorts) routes() []route {
	return []route{
		{events.EventConsumer(Name, "batch-validated", events.DataBatchValidated), p.onBatchValidated},
		{events.EventConsumer(Name, "drift-detected", events.DriftDetected), p.onDriftDetected},
		{events.EventConsumer(Name, "performance-degraded", events.PerformanceDegraded), p.onPerformanceDegraded},
		{events.EventConsumer(Name, "training-requested", events.TrainingRequested), p.onTrainingRequested},
		{events.EventConsumer(Name, "training-completed", events.TrainingCompleted), p.onTrainingCompleted},
		{events.EventConsumer(Name, "training-failed", events.TrainingFailed), p.onTrainingFailed},
	}
}

func (p schedulerPorts) onBatchValidated(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.DataBatchValidated{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	if msg.GetBatchId() == "" {
		return bus.Permanentf("%s %s: no batch id", ev.Type(), ev.ID())
	}
	_, err := p.sch.Schedule(ctx, Trigger{
		Pipeline: msg.GetPipeline(), Reason: ReasonBootstrap, EventID: ev.ID(), EventType: ev.Type(),
		RequestedBy: Name, BatchID: msg.GetBatchId(),
	})
	return err
}

func (p schedulerPorts) onDriftDetected(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.DriftDetected{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	_, err := p.sch.Schedule(ctx, Trigger{
		Pipeline: msg.GetPipeline(), Reason: ReasonDrift, EventID: ev.ID(), EventType: ev.Type(), RequestedBy: Name,
	})
	return err
}

func (p schedulerPorts) onPerformanceDegraded(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.PerformanceDegraded{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	_, err := p.sch.Schedule(ctx, Trigger{
		Pipeline: msg.GetPipeline(), Reason: ReasonPerformance, EventID: ev.ID(), EventType: ev.Type(), RequestedBy: Name,
	})
	return err
}

// onTrainingRequested takes manual requests (from the CLI or any client).
// The scheduler's own requests travel the same subject; they are not
// triggers and are skipped by their source.
func (p schedulerPorts) onTrainingRequested(ctx context.Context, ev event.Event) error {
	if ev.Source() == p.sch.source {
		return nil
	}
	msg := &gyrev1.TrainingRequested{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	by := msg.GetRequestedBy()
	if by == "" {
		by = ev.Source()
	}
	_, err := p.sch.Schedule(ctx, Trigger{
		Pipeline: msg.GetPipeline(), Reason: ReasonManual, EventID: ev.ID(), EventType: ev.Type(), RequestedBy: by,
	})
	return err
}

func (p schedulerPorts) onTrainingCompleted(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.TrainingCompleted{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	return p.sch.Settle(ctx, msg.GetPipeline(), Outcome{RequestID: msg.GetRequestId(), Status: StatusCompleted})
}

// onTrainingFailed settles a request only on a final failure: a retryable
// one is still in flight.
func (p schedulerPorts) onTrainingFailed(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.TrainingFailed{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	if msg.GetRetryable() {
		return nil
	}
	return p.sch.Settle(ctx, msg.GetPipeline(), Outcome{RequestID: msg.GetRequestId(), Status: StatusFailed, Error: msg.GetError()})
}

// onJob takes a job from the pool's queue.
func (s *Service) onJob(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.TrainingRequested{}
	if err := decode(ev, msg, msg.GetPipeline); err != nil {
		return err
	}
	switch {
	case msg.GetRequestId() == "":
		return bus.Permanentf("job %s: no request id", ev.ID())
	case len(msg.GetWindow()) == 0:
		return bus.Permanentf("job %s (request %s): empty training window", ev.ID(), msg.GetRequestId())
	}
	return s.worker.Run(ctx, Job{ID: ev.ID(), Request: msg})
}

// decode decodes ev into msg and checks the pipeline name it carries
// (pipeline is msg's getter, called after decoding).
func decode(ev event.Event, msg proto.Message, pipeline func() string) error {
	if err := events.Decode(ev, msg); err != nil {
		return err
	}
	if err := events.ValidatePipeline(pipeline()); err != nil {
		return bus.Permanent(fmt.Errorf("%s %s: %w", ev.Type(), ev.ID(), err))
	}
	return nil
}
