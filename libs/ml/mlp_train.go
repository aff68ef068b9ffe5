package ml

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
)

// Training follows scikit-learn's MLPClassifier / MLPRegressor with
// solver="adam":
//
//   - Weights and biases start uniform in ±sqrt(6/(fan_in+fan_out)) (Glorot).
//   - Every epoch shuffles the rows (seeded) and takes Adam steps (β1 0.9, β2
//     0.999, ε 1e-8) on minibatches of batchSize rows; a step minimises the
//     batch's mean loss (log-loss, or half the squared error) plus
//     l2/(2·batch)·‖W‖².
//   - Training stops after epochs epochs, or when nIterNoChange epochs in a
//     row fail to lower the epoch's mean training loss by more than tol. With
//     earlyStopping it is the validation loss (scikit-learn uses validation
//     accuracy or R², a noisier signal) that must improve, and the weights of
//     the best epoch are kept.
//
// The one departure: a regression target is standardised for training (the
// model maps its output back), so that the default learning rate suits any
// target scale.
//
// Parallelism: a minibatch is split into fixed chunks of rows whose size
// depends only on batchSize; each chunk's loss and gradient are computed by
// one goroutine into its own buffer, and the chunks are summed in order. The
// model is therefore the same for a seed whatever the number of cores.

// mlpMinChunk is the fewest rows in a gradient chunk, and mlpMaxChunks the
// most chunks per minibatch (bounding the gradient buffers to mlpMaxChunks
// copies of the parameters).
const (
	mlpMinChunk  = 32
	mlpMaxChunks = 8
)

// Adam's constants, as in scikit-learn and PyTorch.
const (
	adamBeta1 = 0.9
	adamBeta2 = 0.999
	adamEps   = 1e-8
)

// mlpSlot is the scratch of one gradient chunk.
type mlpSlot struct {
	acts, deltas [][]float64
	y            []float64
	grad         []float64
	loss         float64
}

func trainMLP(ctx context.Context, p Params, d *trainData, opts TrainOptions) (Model, error) {
	hidden := p.ints("hidden")
	hiddenAct, _ := parseActivation(p.str("activation"))
	lr, l2, tol := p.float("learningRate"), p.float("l2"), p.float("tol")
	epochs, patience := p.int("epochs"), p.int("nIterNoChange")
	early := p.boolean("earlyStopping")
	workers := opts.workers()
	rng := rand.New(rand.NewPCG(uint64(opts.Seed), 0x67797265206d6c70)) // "gyre mlp"
	sig := d.sig
	outs := sig.numOutputs()

	x, y := d.x, d.y
	var valX [][]float64
	var valY []float64
	if early {
		var err error
		if x, y, valX, valY, err = holdOut(d, p.float("validationFraction"), rng); err != nil {
			return nil, err
		}
	}
	n := len(y)
	batch := min(p.int("batchSize"), n)

	m := &MLP{sig: sig, targetScale: 1}
	m.mean, m.scale = fitScaler(sig.Inputs, x)
	width := len(m.mean)
	xs := designMatrix(sig.Inputs, m.mean, m.scale, x, n)
	ys := y
	if sig.Task == Regression {
		m.hasTarget = true
		m.targetMean, m.targetScale = targetScaling(y)
		ys = standardiseTarget(y, m.targetMean, m.targetScale)
	}
	var vxs, vys []float64
	if valX != nil {
		vxs = designMatrix(sig.Inputs, m.mean, m.scale, valX, len(valY))
		vys = valY
		if sig.Task == Regression {
			vys = standardiseTarget(valY, m.targetMean, m.targetScale)
		}
	}

	sizes := append(append([]int{width}, hidden...), outs)
	net := newMLPNet(sizes, hiddenAct, outputActivation(sig))
	if net.numParams() > maxMLPParams {
		return nil, &ParamError{Algorithm: "mlp", Param: "hidden", Msg: fmt.Sprintf("layers %v give %d parameters, more than %d", sizes, net.numParams(), maxMLPParams)}
	}
	m.net = net
	m.theta = glorotInit(net, rng)

	chunk := max(mlpMinChunk, (batch+mlpMaxChunks-1)/mlpMaxChunks)
	slots := make([]*mlpSlot, (batch+chunk-1)/chunk)
	for c := range slots {
		slots[c] = &mlpSlot{acts: net.newActs(chunk), deltas: net.newActs(chunk)[1:], y: make([]float64, chunk), grad: make([]float64, net.numParams())}
	}
	P := net.numParams()
	theta := m.theta
	grad := make([]float64, P)
	m1 := make([]float64, P)
	m2 := make([]float64, P)
	var best []float64
	if early {
		best = make([]float64, P)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	last := net.layers() - 1
	evalPool := sync.Pool{New: func() any { return &mlpBuffers{acts: net.newActs(mlpPredictChunk)} }}

	step := 0
	bestLoss := math.Inf(1)
	noImprove := 0
	stop := "epochs"
	epoch := 0
	var trainLoss float64
	var valLoss *float64
	for epoch < epochs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rng.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		var accumulated float64
		for start := 0; start < n; start += batch {
			if step%16 == 15 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			end := min(start+batch, n)
			rows := end - start
			chunks := (rows + chunk - 1) / chunk
			forEach(chunks, workers, func(c int) {
				lo := start + c*chunk
				hi := min(lo+chunk, end)
				s := slots[c]
				k := hi - lo
				in := s.acts[0]
				for r, i := range idx[lo:hi] {
					copy(in[r*width:(r+1)*width], xs[i*width:(i+1)*width])
					s.y[r] = ys[i]
				}
				net.forward(theta, s.acts, k)
				s.loss = outputLoss(net.out, s.acts[last+1][:k*outs], s.deltas[last][:k*outs], s.y[:k], outs)
				net.backward(theta, s.grad, s.acts, s.deltas, k)
			})
			// Sum the chunks in order, so the step does not depend on
			// which goroutine finished first.
			copy(grad, slots[0].grad)
			loss := slots[0].loss
			for c := 1; c < chunks; c++ {
				g := slots[c].grad
				for i := range grad {
					grad[i] += g[i]
				}
				loss += slots[c].loss
			}
			var sq float64
			for l := 0; l <= last; l++ {
				v, _ := net.layer(theta, l)
				gv, _ := net.layer(grad, l)
				for i, w := range v {
					sq += w * w
					gv[i] += l2 * w
				}
			}
			// scikit-learn's epoch loss: the batch objectives weighted by
			// batch size.
			accumulated += loss + 0.5*l2*sq
			inv := 1 / float64(rows)
			step++
			lrT := lr * math.Sqrt(1-math.Pow(adamBeta2, float64(step))) / (1 - math.Pow(adamBeta1, float64(step)))
			for i, g := range grad {
				g *= inv
				m1[i] = adamBeta1*m1[i] + (1-adamBeta1)*g
				m2[i] = adamBeta2*m2[i] + (1-adamBeta2)*g*g
				theta[i] -= lrT * m1[i] / (math.Sqrt(m2[i]) + adamEps)
			}
		}
		epoch++
		trainLoss = accumulated / float64(n)
		if math.IsNaN(trainLoss) || math.IsInf(trainLoss, 0) {
			return nil, &ParamError{Algorithm: "mlp", Param: "learningRate", Msg: fmt.Sprintf("training diverged in epoch %d (non-finite loss); lower the learning rate", epoch)}
		}
		current := trainLoss
		if early {
			v := meanNetLoss(net, theta, vxs, vys, &evalPool, workers)
			valLoss = &v
			current = v
		}
		opts.report("epoch", epoch, epochs, current)
		if current > bestLoss-tol {
			noImprove++
		} else {
			noImprove = 0
		}
		if current < bestLoss {
			bestLoss = current
			if early {
				copy(best, theta)
			}
		}
		if noImprove > patience {
			stop = "converged"
			if early {
				stop = "earlyStopping"
			}
			break
		}
	}
	if early {
		copy(theta, best)
		v := bestLoss
		valLoss = &v
	}
	for _, v := range theta {
		if !finite(v) {
			return nil, errors.New("ml: mlp training diverged (non-finite weights); lower the learning rate")
		}
	}
	m.info = ModelInfo{
		Algorithm: "mlp",
		Params:    p,
		Seed:      opts.Seed,
		Training: TrainingInfo{
			Rows:           n,
			ValidationRows: len(valY),
			ClassCounts:    countClasses(sig, y),
			Iterations:     epoch,
			Stop:           stop,
			TrainLoss:      trainLoss,
			ValidationLoss: valLoss,
		},
	}
	return m, nil
}

// glorotInit draws the initial parameters as scikit-learn does: weights
// and biases of each layer uniform in ±sqrt(6/(fan_in+fan_out)).
func glorotInit(net *mlpNet, rng *rand.Rand) []float64 {
	theta := make([]float64, net.numParams())
	for l := 0; l < net.layers(); l++ {
		bound := math.Sqrt(6 / float64(net.sizes[l]+net.sizes[l+1]))
		v, b := net.layer(theta, l)
		for i := range v {
			v[i] = (2*rng.Float64() - 1) * bound
		}
		for i := range b {
			b[i] = (2*rng.Float64() - 1) * bound
		}
	}
	return theta
}

// targetScaling is the mean and population standard deviation of a
// regression target (scale 1 for a constant target).
func targetScaling(y []float64) (mean, scale float64) {
	var s float64
	for _, v := range y {
		s += v
	}
	mean = s / float64(len(y))
	var ss float64
	for _, v := range y {
		ss += (v - mean) * (v - mean)
	}
	scale = math.Sqrt(ss / float64(len(y)))
	if !(scale > 1e-12*math.Max(1, math.Abs(mean))) {
		scale = 1
	}
	return mean, scale
}

func standardiseTarget(y []float64, mean, scale float64) []float64 {
	out := make([]float64, len(y))
	for i, v := range y {
		out[i] = (v - mean) / scale
	}
	return out
}

// outputLoss computes, for raw outputs z (rows × outs), the error
// ∂loss/∂z into delta and returns the summed loss: log-loss through a
// sigmoid or softmax, or half the squared error. y holds class indices or
// (standardised) targets.
func outputLoss(out activation, z, delta, y []float64, outs int) float64 {
	var loss float64
	switch out {
	case actSigmoid:
		for r, t := range y {
			loss += softplus(z[r]) - t*z[r]
			delta[r] = sigmoid(z[r]) - t
		}
	case actSoftmax:
		for r, t := range y {
			zr, dr := z[r*outs:(r+1)*outs], delta[r*outs:(r+1)*outs]
			mx := zr[0]
			for _, v := range zr[1:] {
				mx = math.Max(mx, v)
			}
			var se float64
			for k, v := range zr {
				e := math.Exp(v - mx)
				dr[k] = e
				se += e
			}
			yi := int(t)
			loss += math.Log(se) + mx - zr[yi]
			for k := range dr {
				dr[k] /= se
			}
			dr[yi]--
		}
	default:
		for r, t := range y {
			e := z[r] - t
			loss += 0.5 * e * e
			delta[r] = e
		}
	}
	return loss
}

// meanNetLoss is the mean loss (without the L2 term) of the network on
// row-major inputs xs, computed in fixed chunks summed in order.
func meanNetLoss(net *mlpNet, theta, xs, ys []float64, pool *sync.Pool, workers int) float64 {
	n := len(ys)
	width, outs := net.sizes[0], net.sizes[len(net.sizes)-1]
	chunks := (n + mlpPredictChunk - 1) / mlpPredictChunk
	parts := make([]float64, chunks)
	forChunks(n, mlpPredictChunk, workers, func(c, lo, hi int) {
		buf := pool.Get().(*mlpBuffers)
		defer pool.Put(buf)
		k := hi - lo
		copy(buf.acts[0], xs[lo*width:hi*width])
		net.forward(theta, buf.acts, k)
		z := buf.acts[len(buf.acts)-1][:k*outs]
		delta := make([]float64, k*outs)
		parts[c] = outputLoss(net.out, z, delta, ys[lo:hi], outs)
	})
	var s float64
	for _, v := range parts {
		s += v
	}
	return s / float64(n)
}
