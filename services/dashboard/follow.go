package dashboard

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	gyrev1 "github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// follower reads the lifecycle stream (gyre.ev.>) into the board with an
// ordered consumer: ephemeral, so the dashboard holds up nothing and leaves
// nothing behind. It reads the stream's history first, then follows it.
type follower struct {
	js      jetstream.JetStream
	board   *Board
	logger  *slog.Logger
	metrics *metrics

	// caughtUp is set once the history the stream held at start is read.
	caughtUp atomic.Bool
}

// run follows the stream until ctx ends. A broken read (the server gone, the
// stream recreated) is logged and resumed after the last event folded.
func (f *follower) run(ctx context.Context) error {
	delay := 250 * time.Millisecond
	for {
		err := f.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		f.logger.Warn("reading the lifecycle stream failed; retrying", "stream", events.StreamEvents, "error", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (f *follower) follow(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.AllEvents}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if last := f.board.LastSeq(); last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	cons, err := f.js.OrderedConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", events.StreamEvents, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		f.caughtUp.Store(true)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", events.StreamEvents, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read %s: %w", events.StreamEvents, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", events.StreamEvents, err)
		}
		f.add(meta, msg)
		if meta.NumPending == 0 && !f.caughtUp.Load() {
			f.caughtUp.Store(true)
			f.logger.Info("lifecycle history read", "events", f.board.Count(), "last_seq", meta.Sequence.Stream)
		}
	}
}

// add decodes one message and folds it. An event that does not decode
// still shows in the feed, marked so; a message that is no CloudEvent at all
// is skipped and counted (the services that consume it dead-letter it).
func (f *follower) add(meta *jetstream.MsgMetadata, msg jetstream.Msg) {
	subject := msg.Subject()
	ev, err := bus.Decode(msg.Headers(), msg.Data())
	if err != nil {
		f.metrics.events.WithLabelValues(outcomeSkipped).Inc()
		f.logger.Warn("skipping a message that is not a CloudEvent", "subject", subject, "seq", meta.Sequence.Stream, "error", err)
		return
	}
	e := entryOf(subject, meta.Sequence.Stream, ev)
	payload, err := events.NewPayload(ev.Type())
	if err == nil {
		err = events.Decode(ev, payload)
	}
	if err != nil {
		payload = nil
		f.metrics.events.WithLabelValues(outcomeUnreadable).Inc()
		f.logger.Warn("event payload not readable", "ce_id", ev.ID(), "ce_type", ev.Type(), "seq", meta.Sequence.Stream, "error", err)
	} else {
		e.Data = payloadJSON(payload)
		f.metrics.events.WithLabelValues(outcomeFolded).Inc()
	}
	f.board.Add(e, payload)
}

// entryOf builds the envelope part of an entry.
func entryOf(subject string, seq uint64, ev event.Event) Entry {
	e := Entry{
		Seq:           seq,
		Time:          ev.Time().UTC(),
		Pipeline:      cmp.Or(bus.PipelineOf(subject, ev), "-"),
		Type:          ev.Type(),
		ID:            ev.ID(),
		Source:        ev.Source(),
		CorrelationID: bus.Ext(ev, bus.ExtCorrelationID),
		CausationID:   bus.Ext(ev, bus.ExtCausationID),
		ModelVersion:  bus.Ext(ev, bus.ExtModelVersion),
	}
	if spec, ok := events.LookupType(ev.Type()); ok {
		e.Type = spec.Name
	}
	return e
}

// maxDataBytes bounds the payload JSON an entry keeps: the feed shows
// envelopes and figures, not datasets.
const maxDataBytes = 16 << 10

// payloadJSON renders a payload for the feed. An inline batch's content
// and long label lists are left out: they are data, not lifecycle, and
// would hold the board's memory and the browsers' bandwidth.
func payloadJSON(payload proto.Message) []byte {
	switch m := payload.(type) {
	case *gyrev1.DataBatchArrived:
		if len(m.GetContent()) > 0 {
			c := proto.CloneOf(m)
			c.Content = nil
			payload = c
		}
	case *gyrev1.LabelReceived:
		if len(m.GetLabels()) > 20 {
			c := proto.CloneOf(m)
			c.Labels = c.Labels[:20]
			payload = c
		}
	}
	b, err := protojson.Marshal(payload)
	if err != nil {
		return nil
	}
	if n := len(b); n > maxDataBytes {
		return fmt.Appendf(nil, `{"omitted":"a payload of %d bytes"}`, n)
	}
	return b
}
