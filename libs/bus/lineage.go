package bus

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
)

// Cause is what an event emitted while handling another inherits from it.
type Cause struct {
	// ID is the id of the event being handled: the causationid of what it causes.
	ID string
	// Type is its CloudEvents type.
	Type string
	// CorrelationID names the whole cascade: the correlationid of the cause,
	// or its id when the cause started the cascade.
	CorrelationID string
	// Pipeline is the cause's pipeline extension, when it has one.
	Pipeline string
}

type causeKey struct{}

// CauseOf returns the lineage of an event: what events it causes inherit.
func CauseOf(ev event.Event) Cause {
	c := Cause{ID: ev.ID(), Type: ev.Type(), CorrelationID: extString(ev, ExtCorrelationID), Pipeline: extString(ev, ExtPipeline)}
	if c.CorrelationID == "" {
		c.CorrelationID = ev.ID()
	}
	return c
}

// WithCause returns a context whose published events are caused by c. The
// router does this for every handler; call it yourself when an HTTP request
// or a CLI command acts on behalf of an event.
func WithCause(ctx context.Context, c Cause) context.Context {
	return context.WithValue(ctx, causeKey{}, c)
}

// CauseFrom returns the cause carried by ctx.
func CauseFrom(ctx context.Context) (Cause, bool) {
	c, ok := ctx.Value(causeKey{}).(Cause)
	return c, ok
}

// Stamp fills what a publisher owes every event: id, source, time, and the
// lineage of the cause in ctx (correlationid, causationid, pipeline) plus the
// trace context of ctx (traceparent, tracestate). Attributes already set are
// kept, so a producer can choose its own id or correlation.
func Stamp(ctx context.Context, ev *event.Event, source string) {
	if ev.ID() == "" {
		ev.SetID(newID())
	}
	if ev.Source() == "" {
		ev.SetSource(source)
	}
	if ev.Time().IsZero() {
		ev.SetTime(time.Now().UTC())
	}
	if c, ok := CauseFrom(ctx); ok {
		if extString(*ev, ExtCorrelationID) == "" {
			ev.SetExtension(ExtCorrelationID, c.CorrelationID)
		}
		if extString(*ev, ExtCausationID) == "" {
			ev.SetExtension(ExtCausationID, c.ID)
		}
		if extString(*ev, ExtPipeline) == "" && c.Pipeline != "" {
			ev.SetExtension(ExtPipeline, c.Pipeline)
		}
	}
	if extString(*ev, ExtCorrelationID) == "" {
		ev.SetExtension(ExtCorrelationID, ev.ID())
	}
	if extString(*ev, ExtTraceParent) == "" {
		propagation.TraceContext{}.Inject(ctx, eventCarrier{ev})
	}
}

// ExtractTrace returns ctx carrying the remote span context named by the
// event's traceparent/tracestate extensions.
func ExtractTrace(ctx context.Context, ev *event.Event) context.Context {
	return propagation.TraceContext{}.Extract(ctx, eventCarrier{ev})
}

// eventCarrier lets the W3C trace-context propagator read and write the
// CloudEvents distributed-tracing extensions.
type eventCarrier struct{ ev *event.Event }

func (c eventCarrier) Get(key string) string { return extString(*c.ev, key) }
func (c eventCarrier) Set(key, value string) { c.ev.SetExtension(key, value) }
func (c eventCarrier) Keys() []string        { return []string{ExtTraceParent, ExtTraceState} }

var _ propagation.TextMapCarrier = eventCarrier{}

func extString(ev event.Event, name string) string {
	if ev.Context == nil {
		return ""
	}
	// GetExtension, not Extensions(): the latter copies the whole map.
	v, err := ev.Context.GetExtension(name)
	if err != nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		return ""
	}
	return s
}

// Ext returns an extension of ev as a string ("" when absent).
func Ext(ev event.Event, name string) string { return extString(ev, name) }

// newID returns a time-ordered UUID (v7): ids sort by creation in logs and
// stream browsers.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

type loggerKey struct{}

// WithLogger returns ctx carrying a logger; handlers get one with service,
// ce_id, ce_type and correlationid already set.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// Logger returns the logger carried by ctx, or slog.Default. In a handler it
// has the attributes handler, ce_id, ce_type and correlationid.
func Logger(ctx context.Context) *slog.Logger {
	switch l := ctx.Value(loggerKey{}).(type) {
	case *slog.Logger:
		return l
	case *lazyLogger:
		return l.get()
	}
	return slog.Default()
}

// lazyLogger builds a handler's logger on first use: most messages are
// handled without a log line, and slog.With formats its attributes eagerly.
type lazyLogger struct {
	once          sync.Once
	l             *slog.Logger
	base          *slog.Logger
	handler       string
	ev            *event.Event
	correlationID string
}

func (z *lazyLogger) get() *slog.Logger {
	z.once.Do(func() {
		z.l = z.base.With("handler", z.handler, "ce_id", z.ev.ID(), "ce_type", z.ev.Type(), "correlationid", z.correlationID)
	})
	return z.l
}

// stableNamespace is the UUIDv5 namespace of Gyre's deterministic event ids.
var stableNamespace = uuid.MustParse("6f1c2a4e-8d3b-5e7f-9a0b-1c2d3e4f5a6b")

// StableID returns a deterministic event id (a UUIDv5 of its parts): a
// handler that emits with it publishes the same id when it runs again for
// the same input, and JetStream's duplicate window stores the event once.
func StableID(parts ...string) string {
	return uuid.NewSHA1(stableNamespace, []byte(strings.Join(parts, "\x00"))).String()
}

// Position is where the message a handler is handling sits in its stream.
type Position struct {
	// Stream names the stream.
	Stream string
	// Seq is the message's stream sequence: assigned by the server when it
	// stored the message, increasing in the stream, and the same on every
	// redelivery, whichever replica gets it.
	Seq uint64
	// Stored is when the server stored the message.
	Stored time.Time
}

// MessagePosition returns the stream position of the message whose handler
// ctx is: what a handler keys on to put its effects in the stream's order
// rather than in the order it happens to handle messages. ok is false
// outside a handler.
func MessagePosition(ctx context.Context) (Position, bool) {
	// The router derives every handler's context from the message's, which
	// carries the raw JetStream message (see Subscriber.deliver).
	raw, ok := ctx.Value(rawMsgKey{}).(jetstream.Msg)
	if !ok {
		return Position{}, false
	}
	md, err := raw.Metadata()
	if err != nil {
		return Position{}, false
	}
	return Position{Stream: md.Stream, Seq: md.Sequence.Stream, Stored: md.Timestamp}, true
}
