package deployer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/libs/bus"
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
			Help: "Inference requests whose predictions were logged (several requests share one prediction.logged event), by outcome: published, dropped (queue full), failed (publish error).",
		}, []string{"outcome"}),
	}
	var err error
	m.requests, err = bus.RegisterCollector(reg, m.requests)
	if err != nil {
		return nil, err
	}
	m.duration, err = bus.RegisterCollector(reg, m.duration)
	if err != nil {
		return nil, err
	}
	m.predictionLogs, err = bus.RegisterCollector(reg, m.predictionLogs)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// registerQueueGauge exports the prediction log's queue length, read at
// each scrape: how far publishing lags behind serving.
func registerQueueGauge(reg prometheus.Registerer, q *predictionLog) error {
	_, err := bus.RegisterCollector(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gyre_deployer_prediction_log_queued",
		Help: "Requests whose predictions wait in the prediction log's queue (GYRE_DEPLOYER_PREDICTION_QUEUE bounds it; a full queue drops).",
	}, func() float64 { return float64(len(q.queue)) }))
	return err
}
