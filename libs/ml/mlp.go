package ml

import (
	"encoding/json"
	"math"
	"runtime"
	"slices"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

var mlpAlgorithm = algorithm{
	name: "mlp",
	params: []paramSpec{
		{name: "hidden", kind: kindInts, def: []any{100}, min: 1, max: 1 << 16, maxLen: 16,
			doc: `widths of the hidden layers, e.g. [64, 32] or "64,32" (scikit-learn's hidden_layer_sizes); empty for none (a linear model)`},
		{name: "activation", kind: kindString, def: "relu", choices: []string{"relu", "tanh"},
			doc: "activation of the hidden layers"},
		{name: "learningRate", kind: kindFloat, def: 0.001, min: 0, minOpen: true, max: 10,
			doc: "Adam step size (scikit-learn's learning_rate_init)"},
		{name: "epochs", kind: kindInt, def: 200, min: 1, max: 1e6,
			doc: "maximum passes over the training rows (scikit-learn's max_iter)"},
		{name: "batchSize", kind: kindInt, def: 200, min: 1, max: 1 << 20,
			doc: "rows per Adam step (clipped to the number of training rows)"},
		{name: "l2", kind: kindFloat, def: 1e-4, min: 0, max: math.Inf(1),
			doc: "L2 penalty on the weights (not the biases), scikit-learn's alpha: each step minimises the batch's mean loss + l2/(2·batch)·‖W‖²"},
		{name: "tol", kind: kindFloat, def: 1e-4, min: 0, max: 1,
			doc: "an epoch improves when it lowers the loss (training loss, or validation loss with earlyStopping) by more than tol"},
		{name: "nIterNoChange", kind: kindInt, def: 10, min: 1, max: 100000,
			doc: "stop after this many epochs in a row without improvement"},
		{name: "earlyStopping", kind: kindBool, def: false,
			doc: "judge improvement on held-out validation loss instead of training loss, and keep the weights of the best epoch"},
		{name: "validationFraction", kind: kindFloat, def: 0.1, min: 0, minOpen: true, max: 0.9,
			doc: "share of the training rows held out (stratified, seeded) for early stopping when TrainOptions.Validation is nil"},
	},
	train:  trainMLP,
	decode: decodeMLP,
}

// activation is the function a layer applies to its affine output.
type activation uint8

const (
	actIdentity activation = iota
	actReLU
	actTanh
	actSigmoid
	actSoftmax
)

var activationNames = [...]string{actIdentity: "identity", actReLU: "relu", actTanh: "tanh", actSigmoid: "sigmoid", actSoftmax: "softmax"}

func (a activation) String() string { return activationNames[a] }

func parseActivation(s string) (activation, bool) {
	for i, n := range activationNames {
		if n == s {
			return activation(i), true
		}
	}
	return 0, false
}

// outputActivation is the activation of the last layer for a task: sigmoid
// for a binary classifier (one output, the probability of Classes[1]),
// softmax for a multiclass one, identity for regression.
func outputActivation(sig Signature) activation {
	switch {
	case sig.Task == Regression:
		return actIdentity
	case len(sig.Classes) == 2:
		return actSigmoid
	default:
		return actSoftmax
	}
}

// blasImpl is gonum's pure-Go BLAS, named explicitly (rather than through
// blas64, whose implementation a program can swap) so that results do not
// depend on what else is linked in. Its Dgemm splits work only by output
// block and by matrix shape, never by core count, so products are
// reproducible.
var blasImpl gonum.Implementation

// mlpNet is the shape and the math of a multi-layer perceptron, shared by
// training and prediction. The parameters live in one flat vector theta
// (so that Adam, the L2 term and the gradient reduction are single loops):
// for each layer l, its weights then its bias.
//
// A layer's weights are stored in whichever orientation makes its matrix
// products run along the longer side: [out][in] (the artifact's layout)
// when it narrows (in > out, as the output layer of a classifier does),
// [in][out] otherwise. The products of a 100→1 layer are then 100-long dot
// products and axpys instead of a hundred 1-long ones.
type mlpNet struct {
	sizes []int // sizes[0] is the expanded input width, the last the outputs
	offs  []int // offs[l] is where layer l starts in theta
	// outMajor[l] says layer l's weights are [out][in].
	outMajor []bool
	hidden   activation
	out      activation
}

func newMLPNet(sizes []int, hidden, out activation) *mlpNet {
	n := &mlpNet{sizes: sizes, hidden: hidden, out: out}
	off := 0
	for l := 0; l+1 < len(sizes); l++ {
		n.offs = append(n.offs, off)
		n.outMajor = append(n.outMajor, sizes[l] > sizes[l+1])
		off += sizes[l]*sizes[l+1] + sizes[l+1]
	}
	n.offs = append(n.offs, off)
	return n
}

// numParams is the length of theta.
func (n *mlpNet) numParams() int { return n.offs[len(n.offs)-1] }

// layers is the number of weight layers.
func (n *mlpNet) layers() int { return len(n.sizes) - 1 }

// layer returns the weights and bias of layer l within theta.
func (n *mlpNet) layer(theta []float64, l int) (w, b []float64) {
	in, out := n.sizes[l], n.sizes[l+1]
	o := n.offs[l]
	return theta[o : o+in*out], theta[o+in*out : o+in*out+out]
}

// weightIndex is the position within a layer's weights of the weight from
// input i to output o.
func (n *mlpNet) weightIndex(l, o, i int) int {
	if n.outMajor[l] {
		return o*n.sizes[l] + i
	}
	return i*n.sizes[l+1] + o
}

// newActs allocates activation buffers for rows rows: acts[0] is the input,
// acts[l+1] the output of layer l.
func (n *mlpNet) newActs(rows int) [][]float64 {
	acts := make([][]float64, len(n.sizes))
	for l, s := range n.sizes {
		acts[l] = make([]float64, rows*s)
	}
	return acts
}

// forward computes every layer's output for the first rows rows of
// acts[0]. The last layer's output is left raw (logits or the standardised
// regression value): the output activation belongs to the loss or to the
// caller. Each value is the bias plus the products in input order, so the
// result does not depend on how rows are grouped.
func (n *mlpNet) forward(theta []float64, acts [][]float64, rows int) {
	last := n.layers() - 1
	for l := 0; l <= last; l++ {
		in, out := n.sizes[l], n.sizes[l+1]
		w, b := n.layer(theta, l)
		a, z := acts[l][:rows*in], acts[l+1][:rows*out]
		for r := 0; r < rows; r++ {
			copy(z[r*out:(r+1)*out], b)
		}
		switch {
		case in == 0:
		case n.outMajor[l]: // z += a·wᵀ, w [out][in]
			blasImpl.Dgemm(blas.NoTrans, blas.Trans, rows, out, in, 1, a, in, w, in, 1, z, out)
		default: // z += a·w, w [in][out]
			blasImpl.Dgemm(blas.NoTrans, blas.NoTrans, rows, out, in, 1, a, in, w, out, 1, z, out)
		}
		if l < last {
			activate(n.hidden, z)
		}
	}
}

// backward computes the gradient of the summed loss of rows rows with
// respect to theta into grad (overwriting it), given the activations of
// forward and the output layer's error (∂loss/∂z) in deltas[last]. It uses
// deltas[l] as scratch for the error of layer l.
func (n *mlpNet) backward(theta, grad []float64, acts, deltas [][]float64, rows int) {
	for l := n.layers() - 1; l >= 0; l-- {
		in, out := n.sizes[l], n.sizes[l+1]
		w, _ := n.layer(theta, l)
		gw, gb := n.layer(grad, l)
		d := deltas[l][:rows*out]
		a := acts[l][:rows*in]
		switch {
		case in == 0:
		case n.outMajor[l]: // gw = dᵀ·a
			blasImpl.Dgemm(blas.Trans, blas.NoTrans, out, in, rows, 1, d, out, a, in, 0, gw, in)
		default: // gw = aᵀ·d
			blasImpl.Dgemm(blas.Trans, blas.NoTrans, in, out, rows, 1, a, in, d, out, 0, gw, out)
		}
		clear(gb)
		for r := 0; r < rows; r++ {
			for o, dv := range d[r*out : (r+1)*out] {
				gb[o] += dv
			}
		}
		if l == 0 {
			break
		}
		prev := deltas[l-1][:rows*in]
		if n.outMajor[l] { // prev = d·w
			blasImpl.Dgemm(blas.NoTrans, blas.NoTrans, rows, in, out, 1, d, out, w, in, 0, prev, in)
		} else { // prev = d·wᵀ
			blasImpl.Dgemm(blas.NoTrans, blas.Trans, rows, in, out, 1, d, out, w, out, 0, prev, in)
		}
		derive(n.hidden, prev, a)
	}
}

// activate applies a hidden activation in place. ReLU works on the bits so
// that it has no data-dependent branch: a set sign bit (negative, -0) gives
// +0.
func activate(act activation, z []float64) {
	switch act {
	case actReLU:
		for i, v := range z {
			bits := math.Float64bits(v)
			z[i] = math.Float64frombits(bits &^ uint64(int64(bits)>>63))
		}
	case actTanh:
		for i, v := range z {
			z[i] = math.Tanh(v)
		}
	}
}

// derive multiplies the error d by the activation's derivative, written in
// terms of the activation's output a. For ReLU, a is +0 exactly where the
// unit was off (activate never yields -0), so a non-zero bit pattern is the
// "on" mask.
func derive(act activation, d, a []float64) {
	switch act {
	case actReLU:
		for i, v := range a {
			bits := math.Float64bits(v)
			on := uint64(int64(bits|-bits) >> 63)
			d[i] = math.Float64frombits(math.Float64bits(d[i]) & on)
		}
	case actTanh:
		for i, v := range a {
			d[i] *= 1 - v*v
		}
	}
}

// MLP is a multi-layer perceptron: dense layers with ReLU or tanh hidden
// activations and a sigmoid (binary), softmax (multiclass) or identity
// (regression) output.
//
// Inputs are encoded like LogReg's: standardised numeric inputs (a missing
// value is the training mean) and one-hot categorical ones. A regression
// model also standardises its target during training and maps its output
// back (output·scale + mean).
type MLP struct {
	sig   Signature
	info  ModelInfo
	net   *mlpNet
	theta []float64
	// mean and scale standardise each expanded input column.
	mean, scale []float64
	// targetMean and targetScale map a regression output back to the
	// target's units; hasTarget says whether the artifact stored them.
	targetMean, targetScale float64
	hasTarget               bool
}

// Signature returns the model's inputs and outputs.
func (m *MLP) Signature() Signature { return m.sig.clone() }

// Info returns the model's provenance.
func (m *MLP) Info() ModelInfo { return m.info.clone() }

// LayerSizes returns the width of every layer: the expanded input width,
// the hidden layers, then the outputs.
func (m *MLP) LayerSizes() []int { return slices.Clone(m.net.sizes) }

// mlpPredictChunk is the number of rows one goroutine pushes through the
// network at a time: enough for the matrix products to run at speed, few
// enough that the activations stay in cache.
const mlpPredictChunk = 128

// mlpBuffers holds the activations for one chunk of prediction.
type mlpBuffers struct{ acts [][]float64 }

// predictChunks runs the network over x in parallel chunks and calls emit
// for every row with its raw outputs (already mapped to target units for
// regression), or nil for a row of the wrong width.
func (m *MLP) predictChunks(x [][]float64, emit func(i int, raw []float64)) {
	pool := sync.Pool{New: func() any { return &mlpBuffers{acts: m.net.newActs(mlpPredictChunk)} }}
	width, outs := m.net.sizes[0], m.net.sizes[len(m.net.sizes)-1]
	forChunks(len(x), mlpPredictChunk, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
		buf := pool.Get().(*mlpBuffers)
		defer pool.Put(buf)
		in := buf.acts[0]
		bad := make([]bool, hi-lo)
		for i := lo; i < hi; i++ {
			dst := in[(i-lo)*width : (i-lo+1)*width]
			if !expandRow(m.sig.Inputs, m.mean, m.scale, dst, x[i]) {
				clear(dst)
				bad[i-lo] = true
			}
		}
		m.net.forward(m.theta, buf.acts, hi-lo)
		z := buf.acts[len(buf.acts)-1]
		for i := lo; i < hi; i++ {
			if bad[i-lo] {
				emit(i, nil)
				continue
			}
			raw := z[(i-lo)*outs : (i-lo+1)*outs]
			if m.sig.Task == Regression {
				raw[0] = raw[0]*m.targetScale + m.targetMean
			}
			emit(i, raw)
		}
	})
}

// PredictRaw returns the raw outputs per row: the log-odds of Classes[1]
// (binary), per-class logits (multiclass) or the predicted value
// (regression).
func (m *MLP) PredictRaw(x [][]float64) [][]float64 {
	outs := m.sig.numOutputs()
	out := make([][]float64, len(x))
	flat := make([]float64, len(x)*outs)
	m.predictChunks(x, func(i int, raw []float64) {
		r := flat[i*outs : (i+1)*outs : (i+1)*outs]
		out[i] = r
		if raw == nil {
			fillNaN(r)
			return
		}
		copy(r, raw)
	})
	return out
}

// PredictProba returns class probabilities per row, or nil for regression.
func (m *MLP) PredictProba(x [][]float64) [][]float64 {
	if m.sig.Task != Classification {
		return nil
	}
	k := len(m.sig.Classes)
	out := make([][]float64, len(x))
	flat := make([]float64, len(x)*k)
	m.predictChunks(x, func(i int, raw []float64) {
		p := flat[i*k : (i+1)*k : (i+1)*k]
		out[i] = p
		switch {
		case raw == nil:
			fillNaN(p)
		case k == 2:
			s := sigmoid(raw[0])
			p[0], p[1] = 1-s, s
		default:
			copy(p, raw)
			softmaxInPlace(p)
		}
	})
	return out
}

// Predict returns the most probable class index (classification) or the
// predicted value (regression) per row.
func (m *MLP) Predict(x [][]float64) []float64 {
	out := make([]float64, len(x))
	m.predictChunks(x, func(i int, raw []float64) {
		if raw == nil {
			out[i] = math.NaN()
			return
		}
		out[i] = predictFromRaw(m.sig.Task, raw)
	})
	return out
}

func fillNaN(v []float64) {
	for i := range v {
		v[i] = math.NaN()
	}
}

// mlpPayload is the "model" section of an mlp artifact; docs/ml.md
// documents it for trainers written in other languages.
type mlpPayload struct {
	// Scaler standardises the expanded inputs: (x - mean) / scale.
	Scaler scalerPayload `json:"scaler"`
	// Layers are applied in order; the last one's activation is sigmoid,
	// softmax or identity according to the task.
	Layers []layerPayload `json:"layers"`
	// Target maps a regression output back to the target's units
	// (output·scale + mean); optional, regression only.
	Target *targetPayload `json:"target,omitempty"`
}

type scalerPayload struct {
	Mean  []float64 `json:"mean"`
	Scale []float64 `json:"scale"`
}

type targetPayload struct {
	Mean  float64 `json:"mean"`
	Scale float64 `json:"scale"`
}

// layerPayload is one dense layer: out = activation(weights·in + bias),
// weights row-major [out][in] (PyTorch's nn.Linear.weight layout).
type layerPayload struct {
	Weights    [][]float64 `json:"weights"`
	Bias       []float64   `json:"bias"`
	Activation string      `json:"activation"`
}

func (m *MLP) payload() any {
	p := mlpPayload{Scaler: scalerPayload{Mean: m.mean, Scale: m.scale}}
	for l := 0; l < m.net.layers(); l++ {
		in, out := m.net.sizes[l], m.net.sizes[l+1]
		v, b := m.net.layer(m.theta, l)
		w := make([][]float64, out)
		for o := range w {
			w[o] = make([]float64, in)
			for i := range w[o] {
				w[o][i] = v[m.net.weightIndex(l, o, i)]
			}
		}
		act := m.net.hidden
		if l == m.net.layers()-1 {
			act = m.net.out
		}
		p.Layers = append(p.Layers, layerPayload{Weights: w, Bias: b, Activation: act.String()})
	}
	if m.hasTarget {
		p.Target = &targetPayload{Mean: m.targetMean, Scale: m.targetScale}
	}
	return p
}

// maxMLPParams bounds the size of a network (16.7M parameters: 128 MiB of
// float64, about 1.5 GiB for training's Adam state and per-chunk gradients),
// so that a typo in hidden cannot exhaust memory.
const maxMLPParams = 1 << 24

func decodeMLP(raw json.RawMessage, sig Signature, info ModelInfo) (Model, error) {
	var p mlpPayload
	if err := strictUnmarshal(raw, &p); err != nil {
		return nil, artifactErr("mlp model: %v", err)
	}
	width := expandedWidth(sig)
	if err := checkScaler(p.Scaler.Mean, p.Scaler.Scale, width); err != nil {
		return nil, artifactErr("mlp model: scaler: %v", err)
	}
	hidden := info.Params.ints("hidden")
	hiddenAct, _ := parseActivation(info.Params.str("activation"))
	if len(p.Layers) != len(hidden)+1 {
		return nil, artifactErr("mlp model: %d layers, want %d (params.hidden %v plus the output layer)", len(p.Layers), len(hidden)+1, hidden)
	}
	sizes := append(append([]int{width}, hidden...), sig.numOutputs())
	outAct := outputActivation(sig)
	net := newMLPNet(sizes, hiddenAct, outAct)
	if net.numParams() > maxMLPParams {
		return nil, artifactErr("mlp model: %d parameters, more than %d", net.numParams(), maxMLPParams)
	}
	// Check every shape before allocating: the params alone must not make
	// Load allocate what the artifact does not hold.
	for l, lp := range p.Layers {
		in, out := sizes[l], sizes[l+1]
		want := hiddenAct
		if l == len(p.Layers)-1 {
			want = outAct
		}
		if lp.Activation != want.String() {
			return nil, artifactErr("mlp layer %d: activation %q, want %q", l, lp.Activation, want)
		}
		if len(lp.Weights) != out || len(lp.Bias) != out {
			return nil, artifactErr("mlp layer %d: %d weight rows and %d biases, want %d", l, len(lp.Weights), len(lp.Bias), out)
		}
		for o, row := range lp.Weights {
			if len(row) != in {
				return nil, artifactErr("mlp layer %d: weight row %d has %d values, want %d", l, o, len(row), in)
			}
		}
	}
	theta := make([]float64, net.numParams())
	for l, lp := range p.Layers {
		v, b := net.layer(theta, l)
		for o, row := range lp.Weights {
			for i, w := range row {
				if !finite(w) {
					return nil, artifactErr("mlp layer %d: non-finite weight in row %d", l, o)
				}
				v[net.weightIndex(l, o, i)] = w
			}
			if !finite(lp.Bias[o]) {
				return nil, artifactErr("mlp layer %d: non-finite bias %d", l, o)
			}
			b[o] = lp.Bias[o]
		}
	}
	m := &MLP{sig: sig, info: info, net: net, theta: theta, mean: p.Scaler.Mean, scale: p.Scaler.Scale, targetScale: 1}
	if p.Target != nil {
		if sig.Task != Regression {
			return nil, artifactErr("mlp model: a classifier has no target scaling")
		}
		if !finite(p.Target.Mean) || !finite(p.Target.Scale) || p.Target.Scale <= 0 {
			return nil, artifactErr("mlp model: bad target scaling")
		}
		m.targetMean, m.targetScale, m.hasTarget = p.Target.Mean, p.Target.Scale, true
	}
	return m, nil
}
