package ml

import (
	"cmp"
	"context"
	"math"
	"math/rand/v2"
	"slices"
)

// Training follows scikit-learn's HistGradientBoosting and LightGBM:
//
//   - Binning: each feature's non-missing values are mapped to at most
//     maxBins bins by quantile edges (every distinct value gets its own bin
//     when there are few enough); missing values get one extra bin.
//   - Trees grow best-first (leaf-wise): the leaf whose best split has the
//     largest gain is split next, until maxLeaves leaves exist or no leaf can
//     be split (maxDepth, minSamplesLeaf, no positive gain).
//   - A split is found by scanning the gradient/hessian histogram of each
//     feature twice, once with the missing-value bin on the right and once
//     on the left, so missing values go to the side that reduces the loss
//     most. When a node had no missing values for the chosen feature,
//     missing values at prediction time go to the child with more rows.
//   - The histogram of the larger child is the parent's minus the smaller
//     child's (subtraction trick), so each split scans only the smaller
//     child's rows.
//   - Histograms are built in parallel across features. Each feature's
//     histogram is summed by one goroutine in row order, so the result does
//     not depend on the number of cores. (gbdt_hist.go has the growth and
//     its data layout, gbdt_bins.go the binning, gbdt_pool.go the workers.)

// binSubsample caps the rows used to find bin edges (like scikit-learn).
const binSubsample = 200_000

// minHessianToSplit guards leaf values -G/(H+λ) against tiny hessian sums.
const minHessianToSplit = 1e-3

// earlyStoppingTol is the loss improvement that counts (scikit-learn's tol).
const earlyStoppingTol = 1e-7

// gbdtConfig is the parsed params.
type gbdtConfig struct {
	trees, maxDepth, maxLeaves, minLeaf, maxBins, patience int
	lr, l2, valFrac                                        float64
	early                                                  bool
}

func trainGBDT(ctx context.Context, p Params, d *trainData, opts TrainOptions) (Model, error) {
	cfg := gbdtConfig{
		trees: p.int("trees"), maxDepth: p.int("maxDepth"), maxLeaves: p.int("maxLeaves"),
		minLeaf: p.int("minSamplesLeaf"), maxBins: p.int("maxBins"), patience: p.int("nIterNoChange"),
		lr: p.float("learningRate"), l2: p.float("l2"), valFrac: p.float("validationFraction"),
		early: p.boolean("earlyStopping"),
	}
	workers := opts.workers()
	rng := rand.New(rand.NewPCG(uint64(opts.Seed), 0x6779726520676264)) // "gyre gbd"
	sig := d.sig
	outs := sig.numOutputs()
	nIn := len(sig.Inputs)

	// Rows used for fitting, and the early-stopping validation set.
	x, y := d.x, d.y
	var valRows [][]float64
	var valY []float64
	if cfg.early {
		var valX [][]float64
		var err error
		if x, y, valX, valY, err = holdOut(d, cfg.valFrac, rng); err != nil {
			return nil, err
		}
		valRows = rowsOf(valX)
	}
	n := len(y)

	// Bin edges from (a seeded subsample of) the fitting rows.
	var sample []int
	if n > binSubsample {
		sample = rng.Perm(n)[:binSubsample]
		slices.Sort(sample)
	}
	edges := make([][]float64, nIn)
	binned := make([][]uint8, nIn)
	pool := newWorkPool(workers)
	defer pool.close()
	pool.run(nIn, workers, func(f int) {
		edges[f] = binEdges(x[f], sample, cfg.maxBins)
		binned[f] = binColumn(x[f], edges[f])
	})

	m := &GBDT{sig: sig, outs: outs, importance: make([]float64, nIn)}
	m.baseline = baseline(sig, y, outs)

	// raw[k*n+i] is the current raw score of row i for output k.
	raw := make([]float64, outs*n)
	for k := 0; k < outs; k++ {
		for i := 0; i < n; i++ {
			raw[k*n+i] = m.baseline[k]
		}
	}
	var valRaw []float64
	var valLosses []float64
	if valRows != nil {
		valRaw = make([]float64, outs*len(valRows))
		for k := 0; k < outs; k++ {
			for i := range valRows {
				valRaw[k*len(valRows)+i] = m.baseline[k]
			}
		}
		valLosses = append(valLosses, meanLoss(sig, valRaw, valY, outs))
	}
	// gh[k*n+i] is the gradient and hessian of row i for output k.
	gh := make([]ghPair, outs*n)
	gr := newGrower(cfg, binned, edges, n, workers, pool)
	stop := "trees"
	iter := 0
	for iter < cfg.trees {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		gradients(pool, sig, raw, y, outs, gh, workers)
		for k := 0; k < outs; k++ {
			t, leaves := gr.grow(gh[k*n : (k+1)*n])
			base := int32(len(m.nodes))
			for _, nd := range t.nodes {
				if nd.feature >= 0 {
					nd.left += base
					nd.right += base
				}
				m.nodes = append(m.nodes, nd)
			}
			m.roots = append(m.roots, base)
			for f, v := range t.gains {
				m.importance[f] += v
			}
			rk := raw[k*n : (k+1)*n]
			// Every row is in one leaf (the leaves' idx ranges tile
			// [0, n)), so adding the leaf values in parallel over row
			// chunks is exact.
			slices.SortFunc(leaves, func(a, b growNode) int { return a.start - b.start })
			pool.chunks(n, rawChunk, gr.workersFor(n), func(_, lo, hi int) {
				j, _ := slices.BinarySearchFunc(leaves, lo, func(lf growNode, p int) int {
					return cmp.Compare(lf.end, p+1) // the first leaf ending after lo
				})
				for p := lo; p < hi; j++ {
					lf := &leaves[j]
					e := min(lf.end, hi)
					v := t.nodes[lf.id].value
					for _, r := range gr.idx[p:e] {
						rk[r] += v
					}
					p = e
				}
			})
			if valRows != nil {
				vk := valRaw[k*len(valRows) : (k+1)*len(valRows)]
				for i, row := range valRows {
					vk[i] += walk(t.nodes, 0, row)
				}
			}
		}
		iter++
		if valRows != nil {
			valLosses = append(valLosses, meanLoss(sig, valRaw, valY, outs))
			opts.report("tree", iter, cfg.trees, valLosses[len(valLosses)-1])
			if shouldStop(valLosses, cfg.patience) {
				stop = "earlyStopping"
				break
			}
		} else {
			opts.report("tree", iter, cfg.trees, math.NaN())
		}
	}
	trainLoss := meanLoss(sig, raw, y, outs)
	m.forest = compileForest(m.nodes, m.roots, outs, nIn)
	m.info = ModelInfo{
		Algorithm: "gbdt",
		Params:    p,
		Seed:      opts.Seed,
		Training: TrainingInfo{
			Rows:        n,
			ClassCounts: countClasses(sig, y),
			Iterations:  iter,
			Stop:        stop,
			TrainLoss:   trainLoss,
		},
	}
	if valRows != nil {
		v := valLosses[len(valLosses)-1]
		m.info.Training.ValidationRows = len(valRows)
		m.info.Training.ValidationLoss = &v
	}
	return m, nil
}

// shouldStop is scikit-learn's rule: stop when none of the last patience
// losses beats the one before them by more than the tolerance.
func shouldStop(losses []float64, patience int) bool {
	if len(losses) <= patience {
		return false
	}
	ref := losses[len(losses)-patience-1] - earlyStoppingTol
	for _, l := range losses[len(losses)-patience:] {
		if l < ref {
			return false
		}
	}
	return true
}

// baseline is the constant model that minimises the loss: log-odds of the
// positive rate, log class priors, or the mean.
func baseline(sig Signature, y []float64, outs int) []float64 {
	n := float64(len(y))
	switch {
	case sig.Task == Regression:
		var s float64
		for _, v := range y {
			s += v
		}
		return []float64{s / n}
	case outs == 1:
		var s float64
		for _, v := range y {
			s += v
		}
		p := s / n
		return []float64{math.Log(p / (1 - p))}
	default:
		counts := make([]float64, outs)
		for _, v := range y {
			counts[int(v)]++
		}
		// A class with no rows in this window still gets a finite score
		// (like scikit-learn's clipping to machine epsilon).
		out := make([]float64, outs)
		var mean float64
		for k, c := range counts {
			out[k] = math.Log(math.Max(c/n, 2.220446049250313e-16))
			mean += out[k]
		}
		mean /= float64(outs)
		for k := range out {
			out[k] -= mean
		}
		return out
	}
}

// rawChunk is the fixed block of rows whose raw scores one goroutine
// updates after a tree.
const rawChunk = 16384

// gradientChunk is the fixed row block for parallel gradient computation.
const gradientChunk = 4096

// gradients fills the per-row gradient and hessian of the loss at raw.
// Every row is independent, so splitting rows over goroutines is exact.
func gradients(pool *workPool, sig Signature, raw, y []float64, outs int, gh []ghPair, workers int) {
	n := len(y)
	pool.chunks(n, gradientChunk, workers, func(_, lo, hi int) {
		switch {
		case sig.Task == Regression:
			for i := lo; i < hi; i++ {
				gh[i] = ghPair{raw[i] - y[i], 1}
			}
		case outs == 1:
			for i := lo; i < hi; i++ {
				p := sigmoidNoBranch(raw[i])
				gh[i] = ghPair{p - y[i], p * (1 - p)}
			}
		default:
			softmaxGradients(raw, y, n, outs, lo, hi, gh)
		}
	})
}

// softmaxGradients fills gh for rows [lo, hi) of a multiclass model: per
// row exactly softmaxInPlace's operations, in its order (the maximum, then
// e_k = exp(z_k - max) summed over k in order, then e_k / sum), but done
// class by class over the rows, so that every loop streams through memory
// without branches.
func softmaxGradients(raw, y []float64, n, outs, lo, hi int, gh []ghPair) {
	m := make([]float64, hi-lo)
	s := make([]float64, hi-lo)
	copy(m, raw[lo:hi])
	for k := 1; k < outs; k++ {
		for i, v := range raw[k*n+lo : k*n+hi] {
			// softmaxInPlace keeps the first of equal maxima; max may
			// return +0 where it kept -0, which changes no difference
			// v - m but that of two zeros, whose exp is 1 either way.
			m[i] = max(m[i], v)
		}
	}
	for k := range outs {
		ghk := gh[k*n+lo : k*n+hi]
		for i, v := range raw[k*n+lo : k*n+hi] {
			e := math.Exp(v - m[i])
			ghk[i].g = e // the numerator, until the sum is known
			s[i] += e
		}
	}
	for k := range outs {
		ghk := gh[k*n+lo : k*n+hi]
		for i := range ghk {
			p := ghk[i].g / s[i]
			g := p
			if int(y[lo+i]) == k {
				g--
			}
			ghk[i] = ghPair{g, p * (1 - p)}
		}
	}
}

// sigmoidNoBranch returns exactly sigmoid(z) (1/(1+e^-z) for z >= 0,
// e^z/(1+e^z) below) without a branch on the sign of z, which is
// unpredictable across rows.
func sigmoidNoBranch(z float64) float64 {
	e := math.Exp(-math.Abs(z))
	// neg is all ones when z < 0 (or z is -0, where e = 1 and both forms
	// give 0.5), else zero: the numerator is e for z < 0, else 1.
	neg := uint64(int64(math.Float64bits(z)) >> 63)
	num := math.Float64frombits(math.Float64bits(e)&neg | math.Float64bits(1)&^neg)
	return num / (1 + e)
}

// meanLoss is the mean training loss: log-loss for classification, half
// squared error for regression (the losses the gradients belong to).
func meanLoss(sig Signature, raw, y []float64, outs int) float64 {
	n := len(y)
	var s float64
	switch {
	case sig.Task == Regression:
		for i := 0; i < n; i++ {
			d := raw[i] - y[i]
			s += 0.5 * d * d
		}
	case outs == 1:
		for i := 0; i < n; i++ {
			s += softplus(raw[i]) - y[i]*raw[i]
		}
	default:
		for i := 0; i < n; i++ {
			mx := math.Inf(-1)
			for k := 0; k < outs; k++ {
				mx = math.Max(mx, raw[k*n+i])
			}
			var se float64
			for k := 0; k < outs; k++ {
				se += math.Exp(raw[k*n+i] - mx)
			}
			s += math.Log(se) + mx - raw[int(y[i])*n+i]
		}
	}
	return s / float64(n)
}

func countClasses(sig Signature, y []float64) []int {
	if sig.Task != Classification {
		return nil
	}
	c := make([]int, len(sig.Classes))
	for _, v := range y {
		c[int(v)]++
	}
	return c
}

// holdOut returns the rows to fit on and the validation rows for early
// stopping (column-major): the given validation set, or else a seeded,
// stratified validationFraction of the training rows.
func holdOut(d *trainData, frac float64, rng *rand.Rand) (x [][]float64, y []float64, valX [][]float64, valY []float64, err error) {
	if d.valX != nil {
		return d.x, d.y, d.valX, d.valY, nil
	}
	fit, held := splitValidation(d, frac, rng)
	if len(held) == 0 || len(fit) == 0 {
		return nil, nil, nil, nil, dataErr(0, "", "validationFraction %v of %d rows leaves no validation or no training rows", frac, d.n)
	}
	y = takeValues(d.y, fit)
	if d.sig.Task == Classification {
		present := map[float64]bool{}
		for _, v := range y {
			present[v] = true
		}
		if len(present) < 2 {
			return nil, nil, nil, nil, dataErr(0, d.sig.Label, "after holding out validationFraction %v, the training rows have a single class", frac)
		}
	}
	return takeRows(d.x, fit), y, takeRows(d.x, held), takeValues(d.y, held), nil
}

// splitValidation holds out a seeded, stratified (per class) share of rows;
// both parts keep the original row order.
func splitValidation(d *trainData, frac float64, rng *rand.Rand) (fit, held []int) {
	groups := map[float64][]int{}
	var keys []float64
	if d.sig.Task == Classification {
		for i, v := range d.y {
			if _, ok := groups[v]; !ok {
				keys = append(keys, v)
			}
			groups[v] = append(groups[v], i)
		}
		slices.Sort(keys) // never iterate the map: its order is random
	} else {
		all := make([]int, d.n)
		for i := range all {
			all[i] = i
		}
		groups[0] = all
		keys = []float64{0}
	}
	isHeld := make([]bool, d.n)
	for _, k := range keys {
		rows := groups[k]
		take := int(math.Round(frac * float64(len(rows))))
		perm := rng.Perm(len(rows))
		for _, p := range perm[:take] {
			isHeld[rows[p]] = true
		}
	}
	for i, h := range isHeld {
		if h {
			held = append(held, i)
		} else {
			fit = append(fit, i)
		}
	}
	return fit, held
}

func takeRows(cols [][]float64, rows []int) [][]float64 {
	out := make([][]float64, len(cols))
	for j, c := range cols {
		out[j] = make([]float64, len(rows))
		for k, r := range rows {
			out[j][k] = c[r]
		}
	}
	return out
}

func takeValues(v []float64, rows []int) []float64 {
	out := make([]float64, len(rows))
	for k, r := range rows {
		out[k] = v[r]
	}
	return out
}

// rowsOf turns columns into rows.
func rowsOf(cols [][]float64) [][]float64 {
	if len(cols) == 0 {
		return nil
	}
	n, p := len(cols[0]), len(cols)
	flat := make([]float64, n*p)
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = flat[i*p : (i+1)*p : (i+1)*p]
		for j := range cols {
			rows[i][j] = cols[j][i]
		}
	}
	return rows
}
