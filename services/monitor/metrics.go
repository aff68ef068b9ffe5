package monitor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// metrics export the latest drift measurement of each pipeline, so that a
// dashboard graphs drift per feature and an alert can name the pipeline
// (drift.measured carries the same figures, one event per batch).
type metrics struct {
	featureDrift *prometheus.GaugeVec
	driftedShare *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		featureDrift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_feature_drift_score",
			Help: "Drift score of each feature in the pipeline's latest batch against the champion's training window, by method (psi, ks, wasserstein, jensenshannon, chisquare); higher is more drift.",
		}, []string{"pipeline", "feature", "method"}),
		driftedShare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gyre_monitor_drifted_feature_share",
			Help: "Share of the features that drifted in the pipeline's latest batch, in [0, 1]; the dataset drifts at spec.drift.shareOfFeatures.",
		}, []string{"pipeline"}),
	}
	var err error
	if m.featureDrift, err = bus.RegisterCollector(reg, m.featureDrift); err != nil {
		return nil, err
	}
	if m.driftedShare, err = bus.RegisterCollector(reg, m.driftedShare); err != nil {
		return nil, err
	}
	return m, nil
}

// observeDrift records a batch's measurement. One with no reference (no
// champion yet) compared nothing and leaves the figures as they were. A
// redelivered batch sets the same values again.
func (m *metrics) observeDrift(d *gyrev1.DriftMeasured) {
	if d.GetReferenceModelVersion() == 0 {
		return
	}
	for _, f := range d.GetFeatures() {
		m.featureDrift.WithLabelValues(d.GetPipeline(), f.GetFeature(), d.GetMethod()).Set(f.GetScore())
	}
	m.driftedShare.WithLabelValues(d.GetPipeline()).Set(d.GetShareDrifted())
}
