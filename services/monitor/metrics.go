package monitor

import (
	"cmp"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// metrics export the latest drift measurement of each pipeline, so that a
// dashboard graphs drift per feature and an alert can name the pipeline
// (drift.measured carries the same figures, one event per batch).
type metrics struct {
	featureDrift *prometheus.GaugeVec
	driftedShare *prometheus.GaugeVec
	// The champion's live accuracy, as performance.degraded judges it, so
	// that an alert or a graph can follow it before it falls.
	liveAccuracy     *prometheus.GaugeVec
	liveRows         *prometheus.GaugeVec
	baselineAccuracy *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		featureDrift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_feature_drift_score",
			Help: "Drift score of each feature in the pipeline's latest batch against the champion's training window, by the test run on it (psi, ks, wasserstein, jensenshannon, chisquare, z; under method auto, the one picked per feature); higher is more drift. Skipped features have none.",
		}, []string{"pipeline", "feature", "method"}),
		driftedShare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_drifted_feature_share",
			Help: "Share of the features that drifted in the pipeline's latest batch, in [0, 1]; the dataset drifts at spec.drift.shareOfFeatures.",
		}, []string{"pipeline"}),
		liveAccuracy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_live_accuracy",
			Help: "The champion's accuracy on its newest labelled predictions (gyre_monitor_live_accuracy_rows of them), as performance.degraded judges it, in [0, 1]; set when labelled predictions of the champion are counted, dropped when another model is promoted.",
		}, []string{"pipeline"}),
		liveRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_live_accuracy_rows",
			Help: "How many labelled predictions gyre_monitor_live_accuracy is measured on: the newest max(spec.drift.minRows, labels in the event).",
		}, []string{"pipeline"}),
		baselineAccuracy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_baseline_accuracy",
			Help: "The champion's evaluation accuracy, which live accuracy is judged against (a fall of more than spec.drift.accuracyDrop degrades).",
		}, []string{"pipeline"}),
	}
	var err error
	if m.featureDrift, err = bus.RegisterCollector(reg, m.featureDrift); err != nil {
		return nil, err
	}
	if m.driftedShare, err = bus.RegisterCollector(reg, m.driftedShare); err != nil {
		return nil, err
	}
	for _, g := range []**prometheus.GaugeVec{&m.liveAccuracy, &m.liveRows, &m.baselineAccuracy} {
		if *g, err = bus.RegisterCollector(reg, *g); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeLive records the champion's live accuracy.
func (m *metrics) observeLive(l monitoring.LiveAccuracy) {
	m.liveAccuracy.WithLabelValues(l.Pipeline).Set(l.Accuracy)
	m.liveRows.WithLabelValues(l.Pipeline).Set(float64(l.Rows))
	if l.Baseline != nil {
		m.baselineAccuracy.WithLabelValues(l.Pipeline).Set(*l.Baseline)
	} else {
		m.baselineAccuracy.DeleteLabelValues(l.Pipeline)
	}
}

// observeDrift records a batch's measurement. One with no reference (no
// champion yet) compared nothing and leaves the figures as they were. A
// redelivered batch sets the same values again. A feature's score is
// labelled with the test run on it, which auto may change from one batch to
// the next (a new value makes a binary feature ternary): the feature's
// other series are dropped, and so are a skipped feature's.
func (m *metrics) observeDrift(d *gyrev1.DriftMeasured) {
	if d.GetReferenceModelVersion() == 0 {
		return
	}
	for _, f := range d.GetFeatures() {
		method := cmp.Or(f.GetMethod(), d.GetMethod())
		m.featureDrift.DeletePartialMatch(prometheus.Labels{"pipeline": d.GetPipeline(), "feature": f.GetFeature()})
		m.featureDrift.WithLabelValues(d.GetPipeline(), f.GetFeature(), method).Set(f.GetScore())
	}
	for _, f := range d.GetSkippedFeatures() {
		m.featureDrift.DeletePartialMatch(prometheus.Labels{"pipeline": d.GetPipeline(), "feature": f.GetFeature()})
	}
	m.driftedShare.WithLabelValues(d.GetPipeline()).Set(d.GetShareDrifted())
}

// forgetLive drops a pipeline's live figures when its champion changes.
func (m *metrics) forgetLive(pipeline string) {
	m.liveAccuracy.DeleteLabelValues(pipeline)
	m.liveRows.DeleteLabelValues(pipeline)
	m.baselineAccuracy.DeleteLabelValues(pipeline)
}
