package serving

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/ml"
)

// Errors of an inference request; the HTTP port maps each to a status.
var (
	// ErrUnknownModel: no pipeline of that name (404).
	ErrUnknownModel = errors.New("unknown model")
	// ErrNotDeployed: the pipeline exists but no model serves it yet (503).
	ErrNotDeployed = errors.New("no model deployed")
	// ErrUnknownVersion: the version asked for does not serve (404).
	ErrUnknownVersion = errors.New("unknown model version")
)

// InputError says what is wrong with a request's inputs (400).
type InputError struct{ Reason string }

func (e *InputError) Error() string { return e.Reason }

// Request is one inference request, decoded.
type Request struct {
	Pipeline string
	// Version pins a serving version; 0 lets the routing choose.
	Version int64
	// RoutingKey makes the canary choice sticky; empty: random.
	RoutingKey string
	// Columns are the inputs given, by name; Records the rows (column →
	// text, absent when missing).
	Columns []string
	Records []map[string]string
}

// Result is the answer to a request.
type Result struct {
	Pipeline     string
	DeploymentID string
	Model        *Model
	Variant      Variant
	// PredictionIDs name each row's prediction, for labels to refer to.
	PredictionIDs []string
	Predictions   *bundle.Predictions
	Latency       time.Duration
}

// Infer answers a request with the routing in force when it starts, which
// it keeps to the end: a swap meanwhile affects only later requests.
func (d *Deployer) Infer(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	r := d.server.routing(req.Pipeline)
	if r == nil {
		return nil, d.absent(ctx, req.Pipeline)
	}
	for _, c := range req.Columns {
		if !r.accepts(c) {
			return nil, &InputError{Reason: fmt.Sprintf("unexpected input %q: the model takes %s", c, inputNames(r.Champion))}
		}
	}
	var m *Model
	var v Variant
	if req.Version != 0 {
		var ok bool
		if m, v, ok = r.version(req.Version); !ok {
			return nil, fmt.Errorf("%w: %s version %d does not serve (serving %v)", ErrUnknownVersion, req.Pipeline, req.Version, r.Versions())
		}
	} else {
		m, v = r.pick(req.RoutingKey)
	}
	// Only routed traffic counts towards a canary: a client pinning a
	// version chose it.
	rollout := r.Rollout
	if req.Version != 0 {
		rollout = nil
	}
	res, err := d.predict(req, m)
	latency := time.Since(start)
	if err != nil {
		if rollout != nil {
			rollout.record(v, true, latency, nil, nil)
		}
		return nil, err
	}
	ids := make([]string, len(req.Records))
	for i := range ids {
		ids[i] = newPredictionID()
	}
	if rollout != nil {
		rollout.record(v, false, latency, ids, res.Labels)
	}
	out := &Result{
		Pipeline: req.Pipeline, DeploymentID: r.DeploymentID, Model: m, Variant: v,
		PredictionIDs: ids, Predictions: res, Latency: latency,
	}
	if r.SampleRate > 0 && rand.Float64() < r.SampleRate {
		d.logPredictions(req, out, r.SampleRate)
	}
	return out, nil
}

func (d *Deployer) predict(req Request, m *Model) (*bundle.Predictions, error) {
	given := make(map[string]bool, len(req.Columns))
	for _, c := range req.Columns {
		given[c] = true
	}
	for _, in := range m.inputs {
		if !given[in.Name] {
			return nil, &InputError{Reason: fmt.Sprintf("missing input %q: the model takes %s", in.Name, inputNames(m))}
		}
	}
	return m.predict(req.Records)
}

// absent explains why a pipeline has no routing: unknown, or not deployed.
func (d *Deployer) absent(ctx context.Context, name string) error {
	if _, err := d.specs.Pipeline(ctx, name); err != nil {
		if d.notFound(err) {
			return fmt.Errorf("%w %q", ErrUnknownModel, name)
		}
		return fmt.Errorf("model %q: %w", name, err)
	}
	return fmt.Errorf("%w for %s yet", ErrNotDeployed, name)
}

func inputNames(m *Model) string {
	if m == nil {
		return "nothing"
	}
	names := make([]string, len(m.inputs))
	for i, in := range m.inputs {
		names[i] = in.Name
	}
	return strings.Join(names, ", ")
}

// newPredictionID returns a time-ordered UUID: unique per pipeline, and
// sortable in logs.
func newPredictionID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// maxLoggedRows bounds the rows of one prediction.logged, so that a large
// request stays under the server's message size.
const maxLoggedRows = 500

// logPredictions hands the request's predictions to the sink, which
// publishes them off the request path.
func (d *Deployer) logPredictions(req Request, res *Result, rate float64) {
	m := res.Model
	var numeric []string
	for _, in := range m.inputs {
		if in.Numeric {
			numeric = append(numeric, in.Name)
		}
	}
	classes := m.Classes()
	p := res.Predictions
	for lo := 0; lo < len(req.Records); lo += maxLoggedRows {
		hi := min(lo+maxLoggedRows, len(req.Records))
		msg := &gyrev1.PredictionLogged{
			Pipeline: res.Pipeline, ModelVersion: m.Version, DeploymentId: res.DeploymentID,
			Variant: string(res.Variant), Features: numeric, SampleRate: rate,
			LatencyMs: float64(res.Latency) / 1e6,
		}
		for i := lo; i < hi; i++ {
			rec := req.Records[i]
			row := &gyrev1.Prediction{PredictionId: res.PredictionIDs[i], Output: p.Labels[i]}
			for _, in := range m.inputs {
				v, ok := rec[in.Name]
				if in.Numeric {
					row.Values = append(row.Values, parseOr(v, ok))
					continue
				}
				if ok {
					if row.TextInputs == nil {
						row.TextInputs = map[string]string{}
					}
					row.TextInputs[in.Name] = v
				}
			}
			if p.Task == ml.Classification && p.Proba != nil {
				row.Probabilities = make(map[string]float64, len(classes))
				for k, c := range classes {
					row.Probabilities[c] = p.Proba[i][k]
				}
			}
			msg.Rows = append(msg.Rows, row)
		}
		d.sink.Offer(msg)
	}
}

func parseOr(v string, ok bool) float64 {
	if !ok {
		return math.NaN()
	}
	x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true":
			return 1
		case "false":
			return 0
		}
		return math.NaN()
	}
	return x
}
