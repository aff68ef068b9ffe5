package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
)

// Metadata keys the subscriber adds to each Watermill message, next to the
// message's NATS headers.
const (
	MetaSubject   = "_gyre_subject"
	MetaDelivered = "_gyre_delivered"
	MetaStreamSeq = "_gyre_stream_seq"
	MetaConsumer  = "_gyre_consumer"
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

	cons, err := s.js.Consumer(ctx, s.decl.Stream, s.decl.Durable())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = s.js.CreateOrUpdateConsumer(ctx, s.decl.Stream, s.decl.Config())
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", s.decl.Durable(), s.decl.Stream, err)
	}

	out := make(chan *message.Message)
	work := make(chan jetstream.Msg)
	var workers sync.WaitGroup
	for range s.concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for raw := range work {
				s.deliver(ctx, raw, out)
			}
		}()
	}

	// The callback runs on one goroutine; handing each message to a worker
	// and blocking while all are busy gives bounded concurrency and
	// backpressure on the server's pull.
	var cbMu sync.Mutex
	stopped := false
	cc, err := cons.Consume(func(raw jetstream.Msg) {
		cbMu.Lock()
		defer cbMu.Unlock()
		if stopped {
			_ = raw.Nak() // arrived after shutdown began: let another instance take it now
			return
		}
		select {
		case work <- raw:
		case <-s.closing:
			_ = raw.Nak()
		case <-ctx.Done():
			_ = raw.Nak()
		}
	}, jetstream.PullMaxMessages(max(2*s.concurrency, 64)), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.logger.Warn("consumer problem", "consumer", s.decl.Durable(), "error", err)
		}
	}))
	if err != nil {
		close(work)
		return nil, fmt.Errorf("consume %s: %w", s.decl.Durable(), err)
	}

	go func() {
		select {
		case <-s.closing:
		case <-ctx.Done():
		}
		cc.Stop()
		cbMu.Lock()
		stopped = true
		close(work)
		cbMu.Unlock()
		workers.Wait()
		close(out)
		close(s.done)
	}()
	return out, nil
}

// deliver hands one message to the router and settles it with the server when
// the handler acks or nacks.
func (s *Subscriber) deliver(ctx context.Context, raw jetstream.Msg, out chan<- *message.Message) {
	md, err := raw.Metadata()
	var delivered uint64 = 1
	if err == nil {
		delivered = md.NumDelivered
	}
	h := raw.Headers()
	id := headerValue(h, HeaderID)
	if id == "" {
		id = headerValue(h, HeaderNatsMsgID)
	}
	if id == "" && md != nil {
		id = s.decl.Stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	m := message.NewMessage(id, raw.Data())
	for k, v := range h {
		if len(v) > 0 {
			m.Metadata[k] = v[0]
		}
	}
	m.Metadata[MetaSubject] = raw.Subject()
	m.Metadata[MetaDelivered] = strconv.FormatUint(delivered, 10)
	m.Metadata[MetaConsumer] = s.decl.Durable()
	if md != nil {
		m.Metadata[MetaStreamSeq] = strconv.FormatUint(md.Sequence.Stream, 10)
	}
	// The handler's context is not cancelled on shutdown: a message in hand is
	// finished, not abandoned (drain). It carries the raw message for the
	// dead-letter middleware.
	m.SetContext(context.WithValue(context.WithoutCancel(ctx), rawMsgKey{}, raw))

	select {
	case out <- m:
	case <-s.closing:
		_ = raw.Nak()
		return
	}

	// Keep the delivery alive while the handler works: the server redelivers
	// after AckWait otherwise.
	progress := time.NewTicker(max(s.decl.AckWait/3, 100*time.Millisecond))
	defer progress.Stop()
	for {
		select {
		case <-m.Acked():
			if err := raw.Ack(); err != nil {
				s.logger.Warn("ack failed; the message will be redelivered", "consumer", s.decl.Durable(), "ce_id", id, "error", err)
			}
			return
		case <-m.Nacked():
			if err := raw.NakWithDelay(s.nakDelay(delivered)); err != nil {
				s.logger.Warn("nak failed; the message will be redelivered after AckWait", "consumer", s.decl.Durable(), "ce_id", id, "error", err)
			}
			return
		case <-progress.C:
			_ = raw.InProgress()
		}
	}
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
