package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gyrehq/gyre/events"
)

// Handler handles one CloudEvent. Return nil when it is handled, a permanent
// error (see Permanent) when the event can never be handled, and any other
// error when a retry may succeed. Events published through the Publisher with
// the handler's ctx inherit the event's correlationid, get it as their
// causationid, and continue its trace.
type Handler func(ctx context.Context, ev event.Event) error

// DecodePayload reads an event's payload into msg, which must be the payload
// message of its type, as a handler does first: decoded and checked against
// its contract (events.DecodeChecked). A payload that breaks it is a
// permanent *events.ContractError, dead-lettered as "contract"; a msg of
// another type is a permanent *events.DecodeError.
//
// In a handler the router has decoded and checked the payload already,
// before calling it: the first DecodePayload of the event takes that
// message over instead of decoding the data again (a 500-row
// prediction.logged costs milliseconds of protojson).
func DecodePayload(ev event.Event, msg proto.Message) error {
	if data := ev.Data(); len(data) > 0 && msg != nil {
		if v, ok := handoffs.LoadAndDelete(&data[0]); ok {
			checked := v.(proto.Message)
			if checked.ProtoReflect().Descriptor() == msg.ProtoReflect().Descriptor() {
				moveInto(msg, checked)
				return nil
			}
		}
	}
	return events.DecodeChecked(ev, msg)
}

// handoffs holds, while its handler runs, the payload the router decoded
// and checked for a message, keyed by the address of the event's data: the
// handler's copy of the event shares that array, and no other message's
// data can have the same address while the entry lives (the router holds
// the array until the handler returns, then deletes the entry).
var handoffs sync.Map // *byte → proto.Message

// moveInto makes dst what src is, sharing src's memory: src is the router's,
// handed over and never used again.
func moveInto(dst, src proto.Message) {
	proto.Reset(dst)
	d, s := dst.ProtoReflect(), src.ProtoReflect()
	s.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		d.Set(fd, v)
		return true
	})
	if u := s.GetUnknown(); len(u) > 0 {
		d.SetUnknown(u)
	}
}

// RouterConfig configures a Router.
type RouterConfig struct {
	// Service names the service; it labels metrics and logs and names the
	// dead-letter subject gyre.dlq.<service>.
	Service string
	// Retries is how many times a transient error is retried in-process
	// before the message is returned to the server for a delayed redelivery.
	Retries int
	// RetryInitial and RetryMax bound the exponential backoff between retries.
	RetryInitial, RetryMax time.Duration
	// CloseTimeout bounds the drain on shutdown.
	CloseTimeout time.Duration
	// Logger receives the router's logs; handlers get a child with event attributes.
	Logger *slog.Logger
	// Metrics records per-handler metrics (nil: none).
	Metrics *Metrics
}

func (c *RouterConfig) setDefaults() {
	if c.Retries == 0 {
		c.Retries = 3
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 2 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Router runs a service's handlers on a Watermill router: each handler reads
// one durable consumer, and every message passes through the bus middleware —
// metrics and logs, dead-lettering, retry with exponential backoff, panic
// recovery, CloudEvent decoding, lineage and tracing.
type Router struct {
	cfg    RouterConfig
	js     jetstream.JetStream
	wm     *message.Router
	dlq    string
	tracer trace.Tracer
}

// NewRouter returns a router for a service.
func NewRouter(js jetstream.JetStream, cfg RouterConfig) (*Router, error) {
	cfg.setDefaults()
	dlq, err := events.DLQSubject(cfg.Service)
	if err != nil {
		return nil, err
	}
	wm, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, quietLogger{
		LoggerAdapter: watermill.NewSlogLoggerWithLevelMapping(
			cfg.Logger.With("component", "watermill"),
			map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug},
		),
	})
	if err != nil {
		return nil, err
	}
	return &Router{cfg: cfg, js: js, wm: wm, dlq: dlq, tracer: otel.Tracer("github.com/gyrehq/gyre/libs/bus")}, nil
}

// HandlerOption configures one handler.
type HandlerOption func(*handlerOptions)

type handlerOptions struct{ concurrency int }

// WithConcurrency lets up to n messages of the handler run at once (default 1,
// which keeps the stream's order).
func WithConcurrency(n int) HandlerOption {
	return func(o *handlerOptions) { o.concurrency = n }
}

// Handle registers h for the messages of the declared consumer. Call it
// before Run.
func (r *Router) Handle(decl events.Consumer, h Handler, opts ...HandlerOption) error {
	if err := decl.Validate(); err != nil {
		return err
	}
	o := handlerOptions{concurrency: 1}
	for _, opt := range opts {
		opt(&o)
	}
	name := decl.Durable()
	hm := r.cfg.Metrics.forHandler(r.cfg.Service, name)
	sub := NewSubscriber(r.js, decl, o.concurrency, r.cfg.Logger)
	wh := r.wm.AddConsumerHandler(name, name, sub, r.adapt(decl, h))
	wh.AddMiddleware(
		r.observe(name, hm),
		r.deadLetter(decl, hm),
		middleware.Retry{
			MaxRetries:      r.cfg.Retries,
			InitialInterval: r.cfg.RetryInitial,
			MaxInterval:     r.cfg.RetryMax,
			Multiplier:      2,
			MaxElapsedTime:  time.Minute,
			ShouldRetry: func(p middleware.RetryParams) bool {
				if IsPermanent(p.Err) {
					return false
				}
				if p.RetryNum < r.cfg.Retries {
					hm.retried()
				}
				return true
			},
		}.Middleware,
		middleware.Recoverer,
	)
	return nil
}

// HandleDeclared registers the handlers of the router's service: for each
// consumer events.ServiceConsumers declares for it, the handler its Handler
// names in handlers. A declared consumer without a handler is an error. Call
// it before Run.
func (r *Router) HandleDeclared(handlers map[string]Handler) error {
	for _, decl := range events.ServiceConsumers()[r.cfg.Service] {
		h, ok := handlers[decl.Handler]
		if !ok {
			return fmt.Errorf("consumer %s has no handler", decl.Durable())
		}
		if err := r.Handle(decl, h); err != nil {
			return err
		}
	}
	return nil
}

// Run runs the handlers until ctx ends, then drains: no new message is taken,
// messages in hand are finished and acknowledged, within CloseTimeout.
func (r *Router) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- r.wm.Run(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	closeErr := r.wm.Close()
	runErr := <-errc
	return errors.Join(runErr, closeErr)
}

// Running is closed once every handler is subscribed.
func (r *Router) Running() <-chan struct{} { return r.wm.Running() }

// adapt turns a Handler into a Watermill handler: decode the CloudEvent,
// decode its payload as its catalog message and check it against its
// contract (events.DecodeDelivered: the rules of its message, and the
// pipeline of its subject), then call h with a context that carries the
// event's lineage, trace and logger. An event that breaks its contract never
// reaches h: it is a permanent *events.ContractError, dead-lettered as
// "contract". The checked payload is handed to h's first DecodePayload.
func (r *Router) adapt(decl events.Consumer, h Handler) message.NoPublishHandlerFunc {
	name := decl.Durable()
	return func(m *message.Message) error {
		raw, ok := RawMessage(m)
		if !ok {
			return Permanentf("message %s has no NATS message attached", m.UUID)
		}
		ev, err := Decode(raw.Headers(), raw.Data())
		if err != nil {
			return err
		}
		payload, err := events.DecodeDelivered(raw.Subject(), ev)
		if err != nil {
			return err
		}
		if data := ev.Data(); len(data) > 0 {
			handoffs.Store(&data[0], payload)
			defer handoffs.Delete(&data[0])
		}
		ctx := ExtractTrace(m.Context(), &ev)
		ctx, span := r.tracer.Start(ctx, "handle "+ev.Type(), trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		if span.IsRecording() {
			span.SetAttributes(
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", raw.Subject()),
				attribute.String("messaging.consumer.group.name", name),
				attribute.String("cloudevents.event_id", ev.ID()),
				attribute.String("cloudevents.event_type", ev.Type()),
			)
		}
		cause := CauseOf(ev)
		ctx = WithCause(ctx, cause)
		// The handler's logger is built only if the handler logs.
		ctx = context.WithValue(ctx, loggerKey{}, &lazyLogger{base: r.cfg.Logger, handler: name, ev: &ev, correlationID: cause.CorrelationID})
		if r.cfg.Metrics != nil {
			ctx = context.WithValue(ctx, staleKey{}, staleSink{m: r.cfg.Metrics, service: r.cfg.Service})
		}
		if err := h(ctx, ev); err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			return err
		}
		return nil
	}
}

// observe logs and measures every outcome.
func (r *Router) observe(name string, hm *handlerMetrics) message.HandlerMiddleware {
	return func(next message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			start := time.Now()
			hm.inFlight(1)
			defer hm.inFlight(-1)
			out, err := next(m)
			outcome := outcomeAck
			if err != nil {
				outcome = outcomeNak
				raw, _ := RawMessage(m)
				r.cfg.Logger.Warn("handler failed; message returned for redelivery",
					append(rawAttrs(name, m, raw), "error", err)...)
			} else if m.Metadata[metaDeadLettered] != "" {
				outcome = outcomeDeadLetter
			}
			hm.observe(outcome, time.Since(start))
			return out, err
		}
	}
}

// rawAttrs are the log attributes of a message the router could not handle;
// they come from the raw headers since the event may not even decode.
func rawAttrs(handler string, m *message.Message, raw jetstream.Msg) []any {
	attrs := []any{"handler", handler, "ce_id", m.UUID}
	if raw != nil {
		h := raw.Headers()
		attrs = append(attrs, "ce_type", headerValue(h, HeaderType),
			"correlationid", headerValue(h, HeaderPrefix+ExtCorrelationID),
			"delivered", deliveries(raw), "subject", raw.Subject())
	}
	return attrs
}

// Dead-letter headers added to the original message.
const (
	HeaderDLQReason     = "Gyre-Dlq-Reason"
	HeaderDLQKind       = "Gyre-Dlq-Kind"
	HeaderDLQService    = "Gyre-Dlq-Service"
	HeaderDLQHandler    = "Gyre-Dlq-Handler"
	HeaderDLQDeliveries = "Gyre-Dlq-Deliveries"
	HeaderDLQSubject    = "Gyre-Dlq-Subject"
	HeaderDLQStream     = "Gyre-Dlq-Stream"
	HeaderDLQStreamSeq  = "Gyre-Dlq-Stream-Seq"
	HeaderDLQTime       = "Gyre-Dlq-Time"
	HeaderDLQMsgID      = "Gyre-Dlq-Original-Msg-Id"

	metaDeadLettered = "_gyre_dead_lettered"
)

// maxReasonLen bounds the reason header; panics carry whole stack traces.
const maxReasonLen = 4096

// deadLetter sends a message whose handler failed permanently — or
// transiently on the consumer's last delivery — to gyre.dlq.<service> with
// its headers and body untouched plus the reason, and acknowledges it so the
// handler moves on. If the dead-letter publish fails, the message is returned
// for redelivery: it is never lost.
func (r *Router) deadLetter(decl events.Consumer, hm *handlerMetrics) message.HandlerMiddleware {
	name := decl.Durable()
	return func(next message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			out, err := next(m)
			if err == nil {
				return out, nil
			}
			raw, ok := RawMessage(m)
			if !ok {
				return out, err
			}
			delivered := deliveries(raw)
			if !IsPermanent(err) {
				if decl.MaxDeliver <= 0 || delivered < uint64(decl.MaxDeliver) {
					return out, err
				}
				err = &exhaustedError{deliveries: delivered, err: err}
			}
			if dlqErr := r.publishDeadLetter(raw, name, err, delivered); dlqErr != nil {
				r.cfg.Logger.Error("dead-letter publish failed; message returned for redelivery",
					append(rawAttrs(name, m, raw), "error", dlqErr, "reason", err)...)
				return out, fmt.Errorf("dead-letter publish: %w (handler error: %v)", dlqErr, err)
			}
			kind := errorKind(err)
			hm.deadLettered(kind)
			r.cfg.Logger.Error("message dead-lettered",
				append(rawAttrs(name, m, raw), "kind", kind, "dlq", r.dlq, "reason", truncate(err.Error(), 512))...)
			m.Metadata[metaDeadLettered] = "1"
			return nil, nil
		}
	}
}

func (r *Router) publishDeadLetter(raw jetstream.Msg, handler string, cause error, delivered uint64) error {
	h := make(nats.Header, len(raw.Headers())+10)
	for k, v := range raw.Headers() {
		h[k] = append([]string(nil), v...)
	}
	if orig := h.Get(nats.MsgIdHdr); orig != "" {
		h.Set(HeaderDLQMsgID, orig)
	}
	stream, seq := "", ""
	if md, err := raw.Metadata(); err == nil {
		stream, seq = md.Stream, strconv.FormatUint(md.Sequence.Stream, 10)
	}
	// One dead letter per (consumer, stream sequence): if the ack after a
	// successful dead-letter publish is lost, the redelivered copy dedups.
	h.Set(nats.MsgIdHdr, "dlq:"+handler+":"+stream+":"+seq)
	h.Set(HeaderDLQReason, truncate(cause.Error(), maxReasonLen))
	h.Set(HeaderDLQKind, errorKind(cause))
	h.Set(HeaderDLQService, r.cfg.Service)
	h.Set(HeaderDLQHandler, handler)
	h.Set(HeaderDLQDeliveries, strconv.FormatUint(delivered, 10))
	h.Set(HeaderDLQSubject, raw.Subject())
	h.Set(HeaderDLQStream, stream)
	h.Set(HeaderDLQStreamSeq, seq)
	h.Set(HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: r.dlq, Header: h, Data: raw.Data()})
	return err
}

// quietLogger drops Watermill's per-message trace and debug lines before
// their fields are built (the adapter builds them even when the level is
// off); the bus logs every failure itself, with the event's attributes.
type quietLogger struct{ watermill.LoggerAdapter }

func (quietLogger) Trace(string, watermill.LogFields) {}
func (quietLogger) Debug(string, watermill.LogFields) {}
func (q quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{q.LoggerAdapter.With(fields)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
