package serving

import "github.com/gyrehq/gyre/libs/ml"

// PredictionRecord is the sampled predictions of one request (up to
// maxLoggedRows of its rows), on their way to the prediction log. It is
// flat — one slice per field, row-major, no value per row — because the
// request path builds one for every request it logs: a message per row
// would cost the request more than scoring it did. The sink turns records
// into prediction.logged events (gyrev1.PredictionLogged) off the request
// path.
//
// A record is the sink's once offered; the slices it shares with the model
// (Features, Classes) and with the answer (IDs, Outputs) are never written.
type PredictionRecord struct {
	Pipeline     string
	ModelVersion int64
	// DeploymentID is the deployment in force; empty when unknown.
	DeploymentID string
	Variant      Variant
	// SampleRate is the share of requests logged, in (0, 1].
	SampleRate float64
	// LatencyMs is the request's serving latency in milliseconds.
	LatencyMs float64
	// Features names the numeric inputs: each row's len(Features) values
	// in Values are in this order.
	Features []string
	// Classes names each row's len(Classes) probabilities in Proba; nil for
	// a regressor.
	Classes []string
	// IDs are the prediction ids (one per row) and Outputs the predicted
	// class labels, or the predicted values as text for a regressor.
	IDs     []string
	Outputs []string
	// Values holds len(IDs) × len(Features) numeric inputs, row-major; NaN
	// for a missing value.
	Values []float64
	// Proba holds len(IDs) × len(Classes) probabilities, row-major; nil for
	// a regressor.
	Proba []float64
	// Text holds, per row, the non-numeric inputs given, by name; nil when
	// the model takes none.
	Text []map[string]string
}

// Rows returns the number of predictions in r.
func (r *PredictionRecord) Rows() int { return len(r.IDs) }

// logPredictions hands the request's predictions to the sink, which
// publishes them off the request path, in records of up to maxLoggedRows
// rows.
func (d *Deployer) logPredictions(req Request, res *Result, rate float64) {
	m := res.Model
	p := res.Predictions
	f := req.frame()
	cols := make([]*Column, len(m.inputs))
	for k, in := range m.inputs {
		cols[k] = f.Column(in.Name)
	}
	text := len(m.numeric) < len(m.inputs)
	classes := m.classes
	if p.Task != ml.Classification || p.Proba == nil {
		classes = nil
	}
	width := len(m.numeric)
	for lo := 0; lo < f.Rows; lo += maxLoggedRows {
		hi := min(lo+maxLoggedRows, f.Rows)
		rec := &PredictionRecord{
			Pipeline: res.Pipeline, ModelVersion: m.Version, DeploymentID: res.DeploymentID,
			Variant: res.Variant, SampleRate: rate, LatencyMs: float64(res.Latency) / 1e6,
			Features: m.numeric, Classes: classes,
			IDs: res.PredictionIDs[lo:hi:hi], Outputs: p.Labels[lo:hi:hi],
			Values: make([]float64, 0, (hi-lo)*width),
		}
		if classes != nil {
			rec.Proba = make([]float64, 0, (hi-lo)*len(classes))
		}
		if text {
			rec.Text = make([]map[string]string, hi-lo)
		}
		for i := lo; i < hi; i++ {
			for k, in := range m.inputs {
				if in.Numeric {
					rec.Values = append(rec.Values, cols[k].Number(i))
					continue
				}
				if v, ok := cols[k].Value(i); ok {
					if rec.Text[i-lo] == nil {
						rec.Text[i-lo] = map[string]string{}
					}
					rec.Text[i-lo][in.Name] = v
				}
			}
			if classes != nil {
				rec.Proba = append(rec.Proba, p.Proba[i][:len(classes)]...)
			}
		}
		d.sink.Offer(rec)
	}
}
