package deployer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
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

// registerRolloutCollector exports the deployment records that records
// returns (rolloutCollector).
func registerRolloutCollector(reg prometheus.Registerer, records func() []serving.Record) error {
	_, err := bus.RegisterCollector(reg, newRolloutCollector(records))
	return err
}

// rolloutCollector exports each pipeline's deployment record when scraped:
// the champion's version, and while a rollout is in progress the
// candidate's version and share of live traffic. Dashboards follow a
// canary's steps with it, and an alert can name the pipeline.
type rolloutCollector struct {
	records                      func() []serving.Record
	champion, candidate, traffic *prometheus.Desc
}

var _ prometheus.Collector = (*rolloutCollector)(nil)

func newRolloutCollector(records func() []serving.Record) *rolloutCollector {
	return &rolloutCollector{
		records: records,
		champion: prometheus.NewDesc("gyre_deployer_champion_version",
			"Model version of the pipeline's champion: what serves, or during a rollout what served before it and serves again on a rollback.",
			[]string{"pipeline"}, nil),
		candidate: prometheus.NewDesc("gyre_deployer_candidate_version",
			"Model version of the candidate of the pipeline's rollout in progress, by strategy (canary, shadow, blue-green); absent when none is.",
			[]string{"pipeline", "strategy"}, nil),
		traffic: prometheus.NewDesc("gyre_deployer_candidate_traffic_percent",
			"The candidate's share of live traffic in the pipeline's rollout in progress, in percent (0 for a shadow, which scores copies).",
			[]string{"pipeline", "strategy"}, nil),
	}
}

// Describe sends the descriptors of the three gauges.
func (c *rolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.champion
	ch <- c.candidate
	ch <- c.traffic
}

// Collect sends the gauges of every deployment record.
func (c *rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	for _, r := range c.records() {
		if r.Champion != nil {
			gauge(c.champion, float64(r.Champion.Version), r.Pipeline)
		}
		if serving.InProgress(r.Status) && r.Candidate != nil {
			gauge(c.candidate, float64(r.Candidate.Version), r.Pipeline, r.Strategy)
			gauge(c.traffic, r.TrafficPercent, r.Pipeline, r.Strategy)
		}
	}
}
