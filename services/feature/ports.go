package feature

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// batchValidated is the port of data.batch.validated: it decodes the event
// into a Validated command and materialises the batch.
func (s *Service) batchValidated(ctx context.Context, ev event.Event) error {
	var msg gyrev1.DataBatchValidated
	if err := events.Decode(ev, &msg); err != nil {
		return err
	}
	if err := events.Validate(&msg); err != nil {
		return fmt.Errorf("data.batch.validated %s: %w", ev.ID(), err)
	}
	if msg.GetBatchId() == "" || msg.GetObject().GetKey() == "" {
		return bus.Permanentf("data.batch.validated %s: batchId and object.key are required", ev.ID())
	}
	_, err := s.materializer.Materialize(ctx, Validated{
		Pipeline: msg.GetPipeline(), BatchID: msg.GetBatchId(), Format: msg.GetFormat(),
		Object: msg.GetObject(), Labelled: msg.GetLabelled(),
	})
	return err
}
