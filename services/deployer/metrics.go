package deployer

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the deployer's own Prometheus collectors.
type metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	predictionLogs *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_deployer_infer_requests_total",
			Help: "Inference requests by pipeline, variant served (champion, canary; empty when none) and HTTP status code.",
		}, []string{"pipeline", "variant", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gyre_deployer_infer_duration_seconds",
			Help:    "Time to answer an inference request, decoding and encoding included.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"pipeline"}),
		predictionLogs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gyre_deployer_prediction_logs_total",
			Help: "prediction.logged events by outcome: published, dropped (queue full), failed (publish error).",
		}, []string{"outcome"}),
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err != nil {
		return nil, err
	}
	m.duration, err = register(reg, m.duration)
	if err != nil {
		return nil, err
	}
	m.predictionLogs, err = register(reg, m.predictionLogs)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name (a second deployer in the same process shares it).
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
