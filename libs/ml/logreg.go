package ml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"

	"gonum.org/v1/gonum/optimize"
)

var logregAlgorithm = algorithm{
	name: "logreg",
	params: []paramSpec{
		{name: "l2", kind: kindFloat, def: 1.0, min: 0, max: math.Inf(1),
			doc: "L2 penalty λ = 1/C of scikit-learn's LogisticRegression: the objective is mean log-loss + λ/(2n)·‖w‖² over standardised inputs; the intercept is not penalised; 0 disables it"},
		{name: "maxIter", kind: kindInt, def: 200, min: 1, max: 1e6,
			doc: "maximum L-BFGS iterations"},
		{name: "tol", kind: kindFloat, def: 1e-4, min: 0, minOpen: true, max: 1,
			doc: "stop when the largest gradient component of the objective is below tol (scikit-learn's tol for lbfgs)"},
	},
	train:  trainLogReg,
	decode: decodeLogReg,
}

// LogReg is a binary or multinomial logistic regression.
//
// Inputs are standardised inside the model (training mean and population
// standard deviation; missing values are imputed with the training mean, i.e.
// 0 after standardisation). Categorical inputs are expanded to one-hot
// columns that are not standardised; a missing or unseen category is all
// zeros. Training with penalty l2 is therefore equivalent to scikit-learn's
// make_pipeline(StandardScaler(), LogisticRegression(C=1/l2)) with mean
// imputation.
type LogReg struct {
	sig  Signature
	info ModelInfo
	// mean and scale standardise each expanded column: (x-mean)/scale.
	mean, scale []float64
	// w holds one row per output (1 for binary, K for multinomial) of
	// width+1 values: the weights on standardised columns, then the intercept.
	w     []float64
	outs  int
	width int
}

// Signature returns the model's inputs and classes.
func (m *LogReg) Signature() Signature { return m.sig.clone() }

// Info returns the model's provenance.
func (m *LogReg) Info() ModelInfo { return m.info.clone() }

// Coefficients returns the model in the original (unstandardised) input
// space: a name per expanded column ("x" for numeric inputs, "color=red" for
// one-hot columns), one weight row per output and the intercepts, so that
// raw score = intercept + Σ weight·x. Binary models have one output, the
// score of Classes[1].
func (m *LogReg) Coefficients() (names []string, weights [][]float64, intercepts []float64) {
	for _, in := range m.sig.Inputs {
		if in.Type == Categorical {
			for _, c := range in.Categories {
				names = append(names, in.Name+"="+c)
			}
		} else {
			names = append(names, in.Name)
		}
	}
	for o := 0; o < m.outs; o++ {
		row := m.w[o*(m.width+1) : (o+1)*(m.width+1)]
		ws := make([]float64, m.width)
		b := row[m.width]
		for j := 0; j < m.width; j++ {
			ws[j] = row[j] / m.scale[j]
			b -= row[j] * m.mean[j] / m.scale[j]
		}
		weights = append(weights, ws)
		intercepts = append(intercepts, b)
	}
	return names, weights, intercepts
}

// expand writes the standardised expanded form of row x into dst and
// reports false if the row has the wrong width.
func (m *LogReg) expand(dst, x []float64) bool {
	return expandRow(m.sig.Inputs, m.mean, m.scale, dst, x)
}

// raw computes the raw scores of one expanded row.
func (m *LogReg) raw(dst, xs []float64) {
	for o := 0; o < m.outs; o++ {
		row := m.w[o*(m.width+1) : (o+1)*(m.width+1)]
		z := row[m.width]
		for j, v := range xs {
			z += row[j] * v
		}
		dst[o] = z
	}
}

// PredictProba returns class probabilities per row.
func (m *LogReg) PredictProba(x [][]float64) [][]float64 {
	k := len(m.sig.Classes)
	out := make([][]float64, len(x))
	flat := make([]float64, len(x)*k)
	forChunks(len(x), 1024, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
		xs := make([]float64, m.width)
		z := make([]float64, m.outs)
		for i := lo; i < hi; i++ {
			p := flat[i*k : (i+1)*k : (i+1)*k]
			out[i] = p
			if !m.expand(xs, x[i]) {
				for c := range p {
					p[c] = math.NaN()
				}
				continue
			}
			m.raw(z, xs)
			copy(p, probaFromRaw(z, k))
		}
	})
	return out
}

// Predict returns the most probable class index per row.
func (m *LogReg) Predict(x [][]float64) []float64 {
	out := make([]float64, len(x))
	forChunks(len(x), 1024, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
		xs := make([]float64, m.width)
		z := make([]float64, m.outs)
		for i := lo; i < hi; i++ {
			if !m.expand(xs, x[i]) {
				out[i] = math.NaN()
				continue
			}
			m.raw(z, xs)
			out[i] = predictFromRaw(Classification, z)
		}
	})
	return out
}

// logregChunk is the number of rows per partial sum of the objective. It is
// fixed (not derived from the core count) so sums are reproducible.
const logregChunk = 2048

func trainLogReg(ctx context.Context, p Params, d *trainData, opts TrainOptions) (Model, error) {
	if d.sig.Task != Classification {
		return nil, &ParamError{Algorithm: "logreg", Msg: "logreg supports classification only; use gbdt for regression"}
	}
	l2, maxIter, tol := p.float("l2"), p.int("maxIter"), p.float("tol")
	m := &LogReg{sig: d.sig, width: expandedWidth(d.sig), outs: d.sig.numOutputs()}
	m.mean, m.scale = fitScaler(d.sig.Inputs, d.x)
	// The standardised design matrix, row-major, built once.
	n, w := d.n, m.width
	xs := designMatrix(d.sig.Inputs, m.mean, m.scale, d.x, n)
	y := d.y
	dim := m.outs * (w + 1)
	workers := opts.workers()
	nChunks := (n + logregChunk - 1) / logregChunk
	partLoss := make([]float64, nChunks)
	partGrad := make([]float64, nChunks*dim)
	lambda := l2 / float64(n)
	classes := len(d.sig.Classes)

	// eval computes the objective and its gradient at beta in one pass;
	// gonum asks for them separately at the same point, so the last result
	// is cached.
	lastX := make([]float64, dim)
	lastG := make([]float64, dim)
	lastF := math.NaN()
	eval := func(beta []float64) {
		if !math.IsNaN(lastF) && equalSlices(beta, lastX) {
			return
		}
		forChunks(n, logregChunk, workers, func(c, lo, hi int) {
			g := partGrad[c*dim : (c+1)*dim]
			clear(g)
			z := make([]float64, m.outs)
			var loss float64
			for i := lo; i < hi; i++ {
				xi := xs[i*w : (i+1)*w]
				for o := 0; o < m.outs; o++ {
					b := beta[o*(w+1) : (o+1)*(w+1)]
					s := b[w]
					for j, v := range xi {
						s += b[j] * v
					}
					z[o] = s
				}
				yi := int(y[i])
				if classes == 2 {
					loss += softplus(z[0]) - float64(yi)*z[0]
					r := sigmoid(z[0]) - float64(yi)
					for j, v := range xi {
						g[j] += r * v
					}
					g[w] += r
					continue
				}
				mx := z[0]
				for _, v := range z[1:] {
					mx = math.Max(mx, v)
				}
				zy := z[yi]
				var se float64
				for o := range z {
					z[o] = math.Exp(z[o] - mx)
					se += z[o]
				}
				// loss = logsumexp(z) - z_y, computed max-shifted.
				loss += math.Log(se) + mx - zy
				for o := 0; o < m.outs; o++ {
					r := z[o] / se
					if o == yi {
						r--
					}
					gOut := g[o*(w+1) : (o+1)*(w+1)]
					for j, v := range xi {
						gOut[j] += r * v
					}
					gOut[w] += r
				}
			}
			partLoss[c] = loss
		})
		// Combine the chunks in order: the result is the same whatever the
		// number of workers.
		var f float64
		clear(lastG)
		for c := 0; c < nChunks; c++ {
			f += partLoss[c]
			g := partGrad[c*dim : (c+1)*dim]
			for j := range lastG {
				lastG[j] += g[j]
			}
		}
		inv := 1 / float64(n)
		f *= inv
		for j := range lastG {
			lastG[j] *= inv
		}
		for o := 0; o < m.outs; o++ {
			b := beta[o*(w+1) : (o+1)*(w+1)]
			gb := lastG[o*(w+1) : (o+1)*(w+1)]
			for j := 0; j < w; j++ {
				f += 0.5 * lambda * b[j] * b[j]
				gb[j] += lambda * b[j]
			}
		}
		copy(lastX, beta)
		lastF = f
	}
	problem := optimize.Problem{
		Func: func(beta []float64) float64 { eval(beta); return lastF },
		Grad: func(grad, beta []float64) { eval(beta); copy(grad, lastG) },
	}
	settings := &optimize.Settings{
		GradientThreshold: tol,
		MajorIterations:   maxIter,
		// Like scipy's ftol = 64·eps used by scikit-learn: stop when an
		// iteration no longer lowers the objective measurably.
		Converger: &optimize.FunctionConverge{Absolute: 64 * 2.220446049250313e-16, Relative: 64 * 2.220446049250313e-16, Iterations: 1},
		Recorder:  &ctxRecorder{ctx: ctx, opts: opts, total: maxIter},
	}
	res, err := optimize.Minimize(problem, make([]float64, dim), settings, &optimize.LBFGS{})
	if cerr := ctx.Err(); cerr != nil {
		return nil, cerr
	}
	stop := ""
	if res == nil {
		return nil, fmt.Errorf("ml: logreg solver: %w", err)
	}
	switch res.Status {
	case optimize.GradientThreshold, optimize.FunctionConvergence:
		stop = "converged"
	case optimize.IterationLimit:
		stop = "maxIter"
	default:
		stop = res.Status.String()
	}
	if err != nil {
		// A line search that can no longer make progress means the
		// objective is as low as float64 allows here; the best point found
		// is still the answer (scipy's L-BFGS-B reports the same as a
		// warning).
		stop = "stalled: " + err.Error()
	}
	for _, v := range res.X {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, errors.New("ml: logreg solver diverged (non-finite weights)")
		}
	}
	m.w = append([]float64(nil), res.X...)
	m.info = ModelInfo{
		Algorithm: "logreg",
		Params:    p,
		Seed:      opts.Seed,
		Training: TrainingInfo{
			Rows:        n,
			ClassCounts: d.classCounts,
			Iterations:  res.Stats.MajorIterations,
			Stop:        stop,
			TrainLoss:   res.F,
		},
	}
	return m, nil
}

// ctxRecorder stops the optimiser when the context is cancelled, and
// reports each major iteration as progress.
type ctxRecorder struct {
	ctx   context.Context
	opts  TrainOptions
	total int
}

func (r *ctxRecorder) Init() error { return r.ctx.Err() }
func (r *ctxRecorder) Record(loc *optimize.Location, op optimize.Operation, st *optimize.Stats) error {
	if op == optimize.MajorIteration && st != nil && loc != nil {
		r.opts.report("iteration", st.MajorIterations, r.total, loc.F)
	}
	return r.ctx.Err()
}

func softplus(z float64) float64 {
	if z > 0 {
		return z + math.Log1p(math.Exp(-z))
	}
	return math.Log1p(math.Exp(z))
}

func equalSlices(a, b []float64) bool {
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

// logregPayload is the "model" section of a logreg artifact.
type logregPayload struct {
	Mean  []float64 `json:"mean"`
	Scale []float64 `json:"scale"`
	// Weights has one row per output: the weights of the standardised
	// expanded columns, then the intercept.
	Weights [][]float64 `json:"weights"`
}

func (m *LogReg) payload() any {
	p := logregPayload{Mean: m.mean, Scale: m.scale}
	for o := 0; o < m.outs; o++ {
		p.Weights = append(p.Weights, m.w[o*(m.width+1):(o+1)*(m.width+1)])
	}
	return p
}

func decodeLogReg(raw json.RawMessage, sig Signature, info ModelInfo) (Model, error) {
	if sig.Task != Classification {
		return nil, artifactErr("logreg model must be a classifier")
	}
	var p logregPayload
	if err := strictUnmarshal(raw, &p); err != nil {
		return nil, artifactErr("logreg model: %v", err)
	}
	m := &LogReg{sig: sig, info: info, width: expandedWidth(sig), outs: sig.numOutputs()}
	if err := checkScaler(p.Mean, p.Scale, m.width); err != nil {
		return nil, artifactErr("logreg model: %v", err)
	}
	if len(p.Weights) != m.outs {
		return nil, artifactErr("logreg model: %d weight rows, want %d", len(p.Weights), m.outs)
	}
	for o, r := range p.Weights {
		if len(r) != m.width+1 {
			return nil, artifactErr("logreg model: weight row %d has %d values, want %d", o, len(r), m.width+1)
		}
		for _, v := range r {
			if !finite(v) {
				return nil, artifactErr("logreg model: non-finite weight in row %d", o)
			}
		}
		m.w = append(m.w, r...)
	}
	m.mean, m.scale = p.Mean, p.Scale
	return m, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
