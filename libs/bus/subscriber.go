package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
)

// Subscriber is a Watermill message.Subscriber over one durable JetStream pull
// consumer (the jetstream API of nats.go). It is written for the bus rather
// than taken from watermill-nats because the bus needs what that adapter does
// not give: the raw message (headers and body byte for byte) for the
// dead-letter stream, the delivery count, progress acknowledgements that keep
// long handlers alive past AckWait, redelivery delays that grow with the
// delivery count, bounded concurrency, and a drain that finishes the messages
// in hand before it closes.
type Subscriber struct {
	js          jetstream.JetStream
	decl        events.Consumer
	concurrency int
	nakDelay    func(delivered uint64) time.Duration
	logger      *slog.Logger

	mu      sync.Mutex
	closing chan struct{}
	closed  bool
	done    chan struct{}
	started bool
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a subscriber of the declared consumer that hands at
// most concurrency messages to the router at once.
func NewSubscriber(js jetstream.JetStream, decl events.Consumer, concurrency int, logger *slog.Logger) *Subscriber {
	if concurrency < 1 {
		concurrency = 1
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Subscriber{
		js: js, decl: decl, concurrency: concurrency, nakDelay: defaultNakDelay, logger: logger,
		closing: make(chan struct{}), done: make(chan struct{}),
	}
}

// defaultNakDelay spaces redeliveries of a message whose handler keeps
// failing transiently: 1s, 2s, 4s … up to a minute.
func defaultNakDelay(delivered uint64) time.Duration {
	if delivered < 1 {
		delivered = 1
	}
	shift := min(delivered-1, 6)
	return min(time.Second<<shift, time.Minute)
}

type rawMsgKey struct{}

// RawMessage returns the JetStream message a Watermill message was made from.
func RawMessage(m *message.Message) (jetstream.Msg, bool) {
	raw, ok := m.Context().Value(rawMsgKey{}).(jetstream.Msg)
	return raw, ok
}

// Subscribe starts consuming. The topic must be the declared consumer's
// durable name: the router registers one subscriber per handler. The channel
// closes when the subscriber is closed or ctx ends, after every message in
// hand has been acknowledged or returned.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != s.decl.Durable() {
		return nil, fmt.Errorf("subscriber of %s cannot subscribe to %q", s.decl.Durable(), topic)
	}
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("subscriber of %s: already started or closed", topic)
	}
	s.started = true
	s.mu.Unlock()

	cons, err := s.consumer(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", s.decl.Durable(), s.decl.Stream, err)
	}
	// A pull iterator rather than a Consume callback: workers take a message
	// when they are free, so a handler that runs for minutes blocks nothing
	// inside the client (heartbeats are only watched while waiting in Next).
	// It buffers no more than the server would deliver anyway: an ordered
	// consumer's one message, else a few per worker, so that a crash leaves
	// few messages waiting for their ack wait.
	it, err := cons.Messages(jetstream.PullMaxMessages(max(1, min(max(2*s.concurrency, 64), s.decl.MaxAckPending))))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", s.decl.Durable(), err)
	}

	out := make(chan *message.Message)
	var workers sync.WaitGroup
	for range s.concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(ctx, it, out)
		}()
	}
	go func() {
		select {
		case <-s.closing:
		case <-ctx.Done():
		}
		// Drain: no more pulls; what the client has buffered is handed back
		// by the workers (Nak) so that another instance takes it at once.
		it.Drain()
		workers.Wait()
		close(out)
		close(s.done)
	}()
	return out, nil
}

// consumer binds the declared durable consumer (creating it when it is
// missing), or for a per-replica declaration makes this replica's ordered
// consumer, from the newest message on.
func (s *Subscriber) consumer(ctx context.Context) (jetstream.Consumer, error) {
	if s.decl.PerReplica {
		return s.js.OrderedConsumer(ctx, s.decl.Stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{s.decl.FilterSubject},
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		})
	}
	cons, err := s.js.Consumer(ctx, s.decl.Stream, s.decl.Durable())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = s.js.CreateOrUpdateConsumer(ctx, s.decl.Stream, s.decl.Config())
	}
	return cons, err
}

// work takes messages one at a time until the iterator is drained.
func (s *Subscriber) work(ctx context.Context, it jetstream.MessagesContext, out chan<- *message.Message) {
	progress := time.NewTicker(time.Hour)
	defer progress.Stop()
	for {
		raw, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			s.logger.Warn("consumer problem", "consumer", s.decl.Durable(), "error", err)
			continue
		}
		select {
		case <-s.closing:
			_ = raw.Nak()
			continue
		case <-ctx.Done():
			_ = raw.Nak()
			continue
		default:
		}
		s.deliver(ctx, raw, out, progress)
	}
}

// deliver hands one message to the router and settles it with the server when
// the handler acks or nacks.
func (s *Subscriber) deliver(ctx context.Context, raw jetstream.Msg, out chan<- *message.Message, progress *time.Ticker) {
	id := headerValue(raw.Headers(), HeaderID)
	if id == "" {
		id = headerValue(raw.Headers(), HeaderNatsMsgID)
	}
	// The handler's context is not cancelled on shutdown: a message in hand is
	// finished, not abandoned (drain). It carries the raw message — headers,
	// body, delivery metadata — for the middleware; nothing is copied.
	m := message.NewMessage(id, raw.Data())
	m.SetContext(context.WithValue(context.WithoutCancel(ctx), rawMsgKey{}, raw))

	select {
	case out <- m:
	case <-s.closing:
		_ = raw.Nak()
		return
	}
	if s.decl.PerReplica {
		// An ordered consumer acknowledges nothing and redelivers nothing:
		// the message is settled when the handler is done with it (a failure
		// was dead-lettered by the router).
		select {
		case <-m.Acked():
		case <-m.Nacked():
			s.logger.Warn("per-replica message not handled; it is not redelivered", "consumer", s.decl.Durable(), "ce_id", id)
		}
		return
	}

	// Keep the delivery alive while the handler works: the server redelivers
	// after AckWait otherwise.
	progress.Reset(max(s.decl.AckWait/3, 100*time.Millisecond))
	for {
		select {
		case <-m.Acked():
			if err := raw.Ack(); err != nil {
				s.logger.Warn("ack failed; the message will be redelivered", "consumer", s.decl.Durable(), "ce_id", id, "error", err)
			}
			return
		case <-m.Nacked():
			if err := raw.NakWithDelay(s.nakDelay(deliveries(raw))); err != nil {
				s.logger.Warn("nak failed; the message will be redelivered after AckWait", "consumer", s.decl.Durable(), "ce_id", id, "error", err)
			}
			return
		case <-progress.C:
			_ = raw.InProgress()
		}
	}
}

// deliveries returns how many times the server has delivered raw (1 when unknown).
func deliveries(raw jetstream.Msg) uint64 {
	md, err := raw.Metadata()
	if err != nil || md.NumDelivered < 1 {
		return 1
	}
	return md.NumDelivered
}

// Close stops pulling, waits (up to the router's close timeout, which bounds
// the caller) for messages in hand to be settled, and closes the channel.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	close(s.closing)
	s.mu.Unlock()
	if started {
		<-s.done
	}
	return nil
}
