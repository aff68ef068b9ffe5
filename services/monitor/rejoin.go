package monitor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// rejoinTimeout bounds the rebuild of the join at start: past it the
// monitor starts with what it has read, and says so.
const rejoinTimeout = 2 * time.Minute

// rejoin rebuilds the join of predictions and labels, which the monitor
// keeps in memory and a restart loses: without it, a label arriving after
// a restart for a prediction logged before it would never be counted. It
// reads prediction.logged and label.received from their streams, each up
// to its consumer's acknowledgement floor, and adds them to the join
// without counting: pairs among them were counted before the restart.
// What the consumers have not acknowledged they deliver again, and it is
// handled as usual.
//
// It runs before the consumers start. A failure is logged, not fatal: the
// monitor then starts with what it read, as it did before rejoin existed.
// Messages acknowledged above a floor (after a retried one) are not read
// back; with one message handled at a time, only a retry around the
// restart leaves such a gap.
func (s *Service) rejoin(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, rejoinTimeout)
	defer cancel()
	log := s.rt.Logger()
	start := time.Now()
	for _, h := range []struct {
		handler string
		restore func(ev event.Event) error
	}{
		{handlerPredictions, s.restorePredictions},
		{handlerLabels, s.restoreLabels},
	} {
		n, err := s.replay(ctx, h.handler, h.restore)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			log.Warn("join not fully rebuilt; labels of predictions logged before the restart may go uncounted",
				"handler", h.handler, "events", n, "error", err)
			continue
		}
		if n > 0 {
			log.Info("join rebuilt", "handler", h.handler, "events", n, "elapsed_ms", time.Since(start).Milliseconds())
		}
	}
	return nil
}

// replay reads the events of a handler's consumer up to its
// acknowledgement floor and hands each to restore; it returns how many it
// read.
func (s *Service) replay(ctx context.Context, handler string, restore func(event.Event) error) (int, error) {
	var decl events.Consumer
	for _, c := range events.ServiceConsumers()[Name] {
		if c.Handler == handler {
			decl = c
		}
	}
	if decl.Handler == "" {
		return 0, fmt.Errorf("no consumer declared for %s", handler)
	}
	js := s.rt.JetStream()
	cons, err := js.Consumer(ctx, decl.Stream, decl.Durable())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil // first start: nothing was handled
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", decl.Durable(), err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s: %w", decl.Durable(), err)
	}
	floor := info.AckFloor.Stream
	if floor == 0 {
		return 0, nil
	}
	oc, err := js.OrderedConsumer(ctx, decl.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{decl.FilterSubject}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", decl.Stream, err)
	}
	n := 0
	for {
		batch, err := oc.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return n, fmt.Errorf("read %s: %w", decl.Stream, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return n, fmt.Errorf("read %s: %w", decl.Stream, err)
			}
			if meta.Sequence.Stream > floor {
				return n, nil
			}
			// An event that does not decode went to the dead-letter stream
			// when it was handled: nothing to restore.
			if ev, err := bus.Decode(msg.Headers(), msg.Data()); err == nil {
				if err := restore(ev); err == nil {
					n++
				}
			}
			if meta.Sequence.Stream == floor || meta.NumPending == 0 {
				return n, nil
			}
		}
		if err := batch.Error(); err != nil {
			return n, fmt.Errorf("read %s: %w", decl.Stream, err)
		}
		if got == 0 {
			// Nothing left (the stream's retention may have dropped the
			// messages up to the floor).
			return n, ctx.Err()
		}
	}
}

func (s *Service) restorePredictions(ev event.Event) error {
	var m gyrev1.PredictionLogged
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	if m.GetVariant() == "shadow" {
		return nil
	}
	s.app.RestorePredictions(predictionLog(ev, &m))
	return nil
}

func (s *Service) restoreLabels(ev event.Event) error {
	var m gyrev1.LabelReceived
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	s.app.RestoreLabels(labelsOf(ev, &m))
	return nil
}
