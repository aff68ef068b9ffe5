package bus

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the bus's Prometheus collectors. One set serves every service of
// a process (labels name the service and handler); a nil *Metrics records nothing.
type Metrics struct {
	handled     *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	publishedN  *prometheus.CounterVec
	inFlight    *prometheus.GaugeVec
	stale       *prometheus.CounterVec
}

// NewMetrics registers the bus collectors on reg, or reuses the ones already
// registered there (several services in one process share a registry).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gyre", Subsystem: "bus", Name: "messages_handled_total",
			Help: "Messages a handler finished, by outcome: ack (handled), dead_letter (sent to GYRE_DLQ), nak (returned for redelivery).",
		}, []string{"service", "handler", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gyre", Subsystem: "bus", Name: "handler_duration_seconds",
			Help:    "Time from delivery to the handler's outcome, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"service", "handler"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gyre", Subsystem: "bus", Name: "handler_retries_total",
			Help: "In-process retries of transient handler errors.",
		}, []string{"service", "handler"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gyre", Subsystem: "bus", Name: "dead_letters_total",
			Help: "Messages sent to the dead-letter stream, by the kind of error.",
		}, []string{"service", "handler", "kind"}),
		publishedN: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gyre", Subsystem: "bus", Name: "events_published_total",
			Help: "Events stored by JetStream (publish acknowledged).",
		}, []string{"service", "type"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "gyre", Subsystem: "bus", Name: "messages_in_flight",
			Help: "Messages delivered to a handler and not yet acknowledged.",
		}, []string{"service", "handler"}),
		stale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gyre", Name: "stale_ignored_total",
			Help: "Inputs a service ignored because it had already applied newer state: a promotion of an older registry generation, a verdict judged against a champion since replaced, the outcome of a superseded deployment. Never applied; each is logged.",
		}, []string{"service", "kind"}),
	}
	var err error
	if m.handled, err = RegisterCollector(reg, m.handled); err != nil {
		return nil, err
	}
	if m.duration, err = RegisterCollector(reg, m.duration); err != nil {
		return nil, err
	}
	if m.retries, err = RegisterCollector(reg, m.retries); err != nil {
		return nil, err
	}
	if m.deadLetters, err = RegisterCollector(reg, m.deadLetters); err != nil {
		return nil, err
	}
	if m.publishedN, err = RegisterCollector(reg, m.publishedN); err != nil {
		return nil, err
	}
	if m.inFlight, err = RegisterCollector(reg, m.inFlight); err != nil {
		return nil, err
	}
	if m.stale, err = RegisterCollector(reg, m.stale); err != nil {
		return nil, err
	}
	return m, nil
}

// RegisterCollector registers c on reg, or returns the collector already
// registered there under the same description: several services of one
// process (gyre up) share a registry, and each registers its collectors.
func RegisterCollector[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// Outcomes of a handled message.
const (
	outcomeAck        = "ack"
	outcomeNak        = "nak"
	outcomeDeadLetter = "dead_letter"
)

// handlerMetrics are one handler's series, resolved once: label lookups on
// every message would cost more than the rest of the bookkeeping.
type handlerMetrics struct {
	m                *Metrics
	service, handler string
	ack, nak, dead   prometheus.Counter
	duration         prometheus.Observer
	retries          prometheus.Counter
	inFlightG        prometheus.Gauge
}

func (m *Metrics) forHandler(service, handler string) *handlerMetrics {
	if m == nil {
		return nil
	}
	return &handlerMetrics{
		m: m, service: service, handler: handler,
		ack:       m.handled.WithLabelValues(service, handler, outcomeAck),
		nak:       m.handled.WithLabelValues(service, handler, outcomeNak),
		dead:      m.handled.WithLabelValues(service, handler, outcomeDeadLetter),
		duration:  m.duration.WithLabelValues(service, handler),
		retries:   m.retries.WithLabelValues(service, handler),
		inFlightG: m.inFlight.WithLabelValues(service, handler),
	}
}

func (h *handlerMetrics) observe(outcome string, d time.Duration) {
	if h == nil {
		return
	}
	switch outcome {
	case outcomeAck:
		h.ack.Inc()
	case outcomeNak:
		h.nak.Inc()
	default:
		h.dead.Inc()
	}
	h.duration.Observe(d.Seconds())
}

func (h *handlerMetrics) retried() {
	if h == nil {
		return
	}
	h.retries.Inc()
}

func (h *handlerMetrics) deadLettered(kind string) {
	if h == nil {
		return
	}
	h.m.deadLetters.WithLabelValues(h.service, h.handler, kind).Inc()
}

func (h *handlerMetrics) inFlight(d float64) {
	if h == nil {
		return
	}
	h.inFlightG.Add(d)
}

func (m *Metrics) published(service, ceType string) {
	if m == nil {
		return
	}
	m.publishedN.WithLabelValues(service, ceType).Inc()
}

// StaleIgnored counts an input a service ignored as stale (see Stale).
func (m *Metrics) StaleIgnored(service, kind string) {
	if m == nil {
		return
	}
	m.stale.WithLabelValues(service, kind).Inc()
}

type staleKey struct{}

// staleSink is what a handler's context carries for Stale.
type staleSink struct {
	m       *Metrics
	service string
}

// Stale records that the handler ignored its input, or part of it, because
// the service has applied newer state already (kind names what: an event
// name such as "model.promoted", or a decision such as "verdict"): one
// warning with msg and attrs on the handler's logger, and one count of
// gyre_stale_ignored_total{service,kind}. Outside a handler it only logs.
func Stale(ctx context.Context, kind, msg string, attrs ...any) {
	Logger(ctx).Warn(msg, append([]any{"stale", kind}, attrs...)...)
	if s, ok := ctx.Value(staleKey{}).(staleSink); ok {
		s.m.StaleIgnored(s.service, kind)
	}
}
