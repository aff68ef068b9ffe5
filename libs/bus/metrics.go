package bus

import (
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
	}
	var err error
	if m.handled, err = register(reg, m.handled); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.retries, err = register(reg, m.retries); err != nil {
		return nil, err
	}
	if m.deadLetters, err = register(reg, m.deadLetters); err != nil {
		return nil, err
	}
	if m.publishedN, err = register(reg, m.publishedN); err != nil {
		return nil, err
	}
	if m.inFlight, err = register(reg, m.inFlight); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
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

func (m *Metrics) observe(service, handler, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.handled.WithLabelValues(service, handler, outcome).Inc()
	m.duration.WithLabelValues(service, handler).Observe(d.Seconds())
}

func (m *Metrics) retried(service, handler string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(service, handler).Inc()
}

func (m *Metrics) deadLettered(service, handler, kind string) {
	if m == nil {
		return
	}
	m.deadLetters.WithLabelValues(service, handler, kind).Inc()
}

func (m *Metrics) published(service, ceType string) {
	if m == nil {
		return
	}
	m.publishedN.WithLabelValues(service, ceType).Inc()
}

func (m *Metrics) inFlightAdd(service, handler string, d float64) {
	if m == nil {
		return
	}
	m.inFlight.WithLabelValues(service, handler).Add(d)
}
