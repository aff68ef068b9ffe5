package serving

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gyrehq/gyre/libs/bundle"
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
	// RoutingKey is the value of the pipeline's route header
	// (spec.deployment.routeHeader): it pins the request to one variant of
	// a canary, by a stable hash against the step's share; empty: random.
	RoutingKey string
	// Columns are the inputs given, by name. The rows are Inputs, typed
	// column by column as the client sent them, or when Inputs is nil
	// Records (column → text, absent when missing).
	Columns []string
	Inputs  *Frame
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
// it keeps to the end: a swap meanwhile affects only later requests. While
// a rollout runs, routed requests count towards its judgement, and a
// mirror (a shadow candidate, or the previous model after a blue-green
// switch) scores a copy of those answered, after the answer and off the
// request path: it adds no latency and no error to it. The copy reads the
// request's rows (Inputs or Records) after Infer returns; the caller must
// not change them.
func (d *Deployer) Infer(ctx context.Context, req Request) (*Result, error) {
	start := time.Now()
	r := d.server.routing(req.Pipeline)
	if r == nil {
		return nil, d.absent(ctx, req.Pipeline)
	}
	for _, c := range req.Columns {
		if !r.accepts(c) {
			return nil, &InputError{Reason: fmt.Sprintf("unexpected input %q: the model takes %s", c, inputNames(r.Serving()))}
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
	// Only routed traffic counts towards a rollout: a client pinning a
	// version chose it.
	rollout := r.Rollout
	if req.Version != 0 {
		rollout = nil
	}
	d.injected(m)
	res, err := d.predict(ctx, req, m)
	latency := time.Since(start)
	if err != nil {
		// A request its client abandoned says nothing of the model.
		if rollout != nil && ctx.Err() == nil {
			rollout.record(v, true, latency, nil, nil)
		}
		return nil, err
	}
	ids := make([]string, req.Len())
	for i := range ids {
		ids[i] = newPredictionID()
	}
	if rollout != nil {
		rollout.record(v, false, latency, ids, res)
	}
	if r.recent != nil && req.Version == 0 && len(ids) <= recentMaxRows {
		r.recent.add(&req)
	}
	out := &Result{
		Pipeline: req.Pipeline, DeploymentID: r.DeploymentID, Model: m, Variant: v,
		PredictionIDs: ids, Predictions: res, Latency: latency,
	}
	sampled := r.SampleRate > 0 && rand.Float64() < r.SampleRate
	if sampled {
		d.logPredictions(req, out, r.SampleRate)
	}
	if rollout != nil && r.Mirror != nil && r.Mirror != m {
		d.mirror(r, rollout, req, ids, sampled)
	}
	return out, nil
}

// mirror has r.Mirror score a copy of a request that was answered, in a
// goroutine of its own, and counts the result in the rollout; a shadow's
// predictions are logged (variant shadow) under the answer's prediction
// ids, so that labels join both. When MirrorsInFlight copies are being
// scored already the request is not mirrored, only counted: a mirror must
// never queue work behind live traffic.
func (d *Deployer) mirror(r *Routing, rollout *Rollout, req Request, ids []string, sampled bool) {
	select {
	case d.mirrors <- struct{}{}:
	default:
		rollout.skipped.Add(1)
		return
	}
	m, as := r.Mirror, r.MirrorAs
	go func() {
		defer func() { <-d.mirrors }()
		start := time.Now()
		d.injected(m)
		res, err := d.predict(context.Background(), req, m)
		latency := time.Since(start)
		if err != nil {
			rollout.record(as, true, latency, nil, nil)
			return
		}
		rollout.record(as, false, latency, ids, res)
		if sampled && as == Shadow {
			d.logPredictions(req, &Result{
				Pipeline: req.Pipeline, DeploymentID: r.DeploymentID, Model: m, Variant: as,
				PredictionIDs: ids, Predictions: res, Latency: latency,
			}, r.SampleRate)
		}
	}()
}

// predict scores a request's rows with m: every input the model takes must
// be given (an input it does not take was refused before). Concurrent
// requests to m may share one model call (spec.deployment.batching); ctx
// ending while the request waits for the model abandons it.
func (d *Deployer) predict(ctx context.Context, req Request, m *Model) (*bundle.Predictions, error) {
	f := req.frame()
	for _, in := range m.inputs {
		if f.Column(in.Name) == nil {
			return nil, &InputError{Reason: fmt.Sprintf("missing input %q: the model takes %s", in.Name, inputNames(m))}
		}
	}
	return m.predict(ctx, f)
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
