package validation

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// batchReceived is the port of data.batch.received: it decodes the event
// into a Received command and validates the batch.
func (s *Service) batchReceived(ctx context.Context, ev event.Event) error {
	var msg gyrev1.DataBatchReceived
	if err := events.Decode(ev, &msg); err != nil {
		return err
	}
	if err := events.Validate(&msg); err != nil {
		return fmt.Errorf("data.batch.received %s: %w", ev.ID(), err)
	}
	if msg.GetDuplicate() {
		// A content received before: its first arrival was validated.
		bus.Logger(ctx).Info("duplicate batch skipped", "pipeline", msg.GetPipeline(), "batchId", msg.GetBatchId())
		return nil
	}
	if msg.GetBatchId() == "" || msg.GetObject().GetKey() == "" {
		return bus.Permanentf("data.batch.received %s: batchId and object.key are required", ev.ID())
	}
	cmd := Received{Pipeline: msg.GetPipeline(), BatchID: msg.GetBatchId(), Format: msg.GetFormat(), Object: msg.GetObject()}
	// The announcement's place in GYRE_EVENTS is the batch's place in
	// arrival order: ingest announces batches in the order they arrive, the
	// server numbers them, and a redelivery keeps the number. (The
	// producer's time on data.batch.arrived would not do: producers' clocks
	// differ, uploads have none, and ties are common.)
	if pos, ok := bus.MessagePosition(ctx); ok && pos.Stream == events.StreamEvents {
		cmd.ArrivalSeq, cmd.ArrivedAt = pos.Seq, pos.Stored
	}
	_, err := s.validator.Validate(ctx, cmd)
	return err
}

// pipelineApplied is the port of pipeline.applied.
func (s *Service) pipelineApplied(ctx context.Context, ev event.Event) error {
	var msg gyrev1.PipelineApplied
	if err := events.Decode(ev, &msg); err != nil {
		return err
	}
	if err := events.Validate(&msg); err != nil {
		return fmt.Errorf("pipeline.applied %s: %w", ev.ID(), err)
	}
	p, err := pipeline.Parse([]byte(msg.GetSpecJson()))
	if err != nil {
		return fmt.Errorf("pipeline.applied %s: specJson: %w", ev.ID(), err)
	}
	if p.Name() != msg.GetPipeline() {
		return bus.Permanentf("pipeline.applied %s: specJson names pipeline %q, the event %q", ev.ID(), p.Name(), msg.GetPipeline())
	}
	return s.validator.PipelineApplied(ctx, Applied{Pipeline: msg.GetPipeline(), Spec: p})
}
