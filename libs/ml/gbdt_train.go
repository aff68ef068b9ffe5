package ml

import (
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
//     not depend on the number of cores.

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

// binEdges computes the bin edges of one column: a value x falls in bin
// #{edges < x}, so "bin <= b" is exactly "x <= edges[b]" and a split found on
// bins is reproduced on raw values by the threshold edges[b].
func binEdges(col []float64, rows []int, maxBins int) []float64 {
	vals := make([]float64, 0, len(rows))
	if rows == nil {
		for _, v := range col {
			if !math.IsNaN(v) {
				vals = append(vals, v)
			}
		}
	} else {
		for _, r := range rows {
			if v := col[r]; !math.IsNaN(v) {
				vals = append(vals, v)
			}
		}
	}
	slices.Sort(vals)
	distinct := slices.Compact(slices.Clone(vals))
	if len(distinct) <= maxBins {
		edges := make([]float64, 0, max(len(distinct)-1, 0))
		for i := 0; i+1 < len(distinct); i++ {
			edges = append(edges, distinct[i]+(distinct[i+1]-distinct[i])/2)
		}
		return edges
	}
	// Quantiles at k/maxBins, k = 1..maxBins-1, with midpoint
	// interpolation (numpy's percentile(method="midpoint"), as
	// scikit-learn uses), then duplicates removed.
	n := len(vals)
	edges := make([]float64, 0, maxBins-1)
	for k := 1; k < maxBins; k++ {
		pos := float64(k) / float64(maxBins) * float64(n-1)
		lo, hi := int(math.Floor(pos)), int(math.Ceil(pos))
		e := vals[lo] + (vals[hi]-vals[lo])/2
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	return edges
}

// binColumn maps a column to bins; NaN goes to the missing bin len(edges)+1.
func binColumn(col []float64, edges []float64) []uint8 {
	out := make([]uint8, len(col))
	missing := uint8(len(edges) + 1)
	for i, v := range col {
		if math.IsNaN(v) {
			out[i] = missing
			continue
		}
		// Binary search for the number of edges < v.
		lo, hi := 0, len(edges)
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if edges[mid] < v {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		out[i] = uint8(lo)
	}
	return out
}

// histBin accumulates one bin of a gradient/hessian histogram.
type histBin struct {
	g, h float64
	n    int
}

// splitInfo is the best split of a node.
type splitInfo struct {
	gain     float64
	feature  int
	bin      int // rows with bin <= bin go left (plus missing if missLeft)
	missLeft bool
	// hadMissing records whether the node had missing values for feature.
	hadMissing     bool
	gL, hL, gR, hR float64
	nL, nR         int
}

// growNode is a node during growth.
type growNode struct {
	id         int // index into the tree's node slice
	start, end int // rows idx[start:end]
	g, h       float64
	n, depth   int
	hist       []histBin
	best       splitInfo
	splittable bool
}

// grower grows one tree at a time over fixed binned data.
type grower struct {
	cfg      gbdtConfig
	binned   [][]uint8
	edges    [][]float64
	nBins    []int // non-missing bins per feature; the missing bin is nBins[f]
	histOff  []int // start of feature f in a node histogram
	histLen  int
	workers  int
	idx      []int32 // row indices, partitioned by node
	scratch  []int32
	free     [][]histBin
	perFeat  []splitInfo
	perFeat2 []splitInfo
}

func newGrower(cfg gbdtConfig, binned [][]uint8, edges [][]float64, n, workers int) *grower {
	gr := &grower{cfg: cfg, binned: binned, edges: edges, workers: workers}
	gr.nBins = make([]int, len(edges))
	gr.histOff = make([]int, len(edges))
	for f, e := range edges {
		gr.nBins[f] = len(e) + 1
		gr.histOff[f] = gr.histLen
		gr.histLen += len(e) + 2
	}
	gr.idx = make([]int32, n)
	gr.scratch = make([]int32, n)
	gr.perFeat = make([]splitInfo, len(edges))
	gr.perFeat2 = make([]splitInfo, len(edges))
	return gr
}

func (gr *grower) allocHist() []histBin {
	if k := len(gr.free); k > 0 {
		h := gr.free[k-1]
		gr.free = gr.free[:k-1]
		return h
	}
	return make([]histBin, gr.histLen)
}

func (gr *grower) releaseHist(h []histBin) {
	if h != nil {
		gr.free = append(gr.free, h)
	}
}

// buildFeature fills feature f's histogram of the rows of nd.
func (gr *grower) buildFeature(hist []histBin, f int, rows []int32, g, h []float64) {
	hf := hist[gr.histOff[f] : gr.histOff[f]+gr.nBins[f]+1]
	clear(hf)
	col := gr.binned[f]
	for _, r := range rows {
		b := &hf[col[r]]
		b.g += g[r]
		b.h += h[r]
		b.n++
	}
}

// subtractFeature turns parent's feature f histogram into parent - child.
func (gr *grower) subtractFeature(parent, child []histBin, f int) {
	lo, hi := gr.histOff[f], gr.histOff[f]+gr.nBins[f]+1
	p, c := parent[lo:hi], child[lo:hi]
	for i := range p {
		p[i].g -= c[i].g
		p[i].h -= c[i].h
		p[i].n -= c[i].n
	}
}

// canSplit reports whether a node may be split at all.
func (gr *grower) canSplit(nd *growNode) bool {
	if gr.cfg.maxDepth > 0 && nd.depth >= gr.cfg.maxDepth {
		return false
	}
	return nd.n >= 2*gr.cfg.minLeaf && nd.h >= 2*minHessianToSplit
}

// bestForFeature finds the best split of nd on feature f.
func (gr *grower) bestForFeature(nd *growNode, f int) splitInfo {
	best := splitInfo{gain: math.Inf(-1), feature: -1}
	hf := nd.hist[gr.histOff[f] : gr.histOff[f]+gr.nBins[f]+1]
	nb := gr.nBins[f]
	miss := hf[nb]
	l2, minLeaf := gr.cfg.l2, gr.cfg.minLeaf
	G, H, N := nd.g, nd.h, nd.n
	parentScore := G * G / (H + l2)
	consider := func(b int, missLeft bool, gl, hl float64, nl int) bool {
		gR, hR, nR := G-gl, H-hl, N-nl
		if nl < minLeaf || hl < minHessianToSplit {
			return true // left still too small: keep scanning
		}
		if nR < minLeaf || hR < minHessianToSplit {
			return false // right only shrinks from here
		}
		gain := gl*gl/(hl+l2) + gR*gR/(hR+l2) - parentScore
		if gain > best.gain {
			best = splitInfo{gain: gain, feature: f, bin: b, missLeft: missLeft, hadMissing: miss.n > 0,
				gL: gl, hL: hl, nL: nl, gR: gR, hR: hR, nR: nR}
		}
		return true
	}
	// Missing values on the right. b = nb-1 puts every non-missing value
	// left and only the missing ones right.
	var gl, hl float64
	var nl int
	for b := 0; b < nb; b++ {
		if b == nb-1 && miss.n == 0 {
			break
		}
		if hf[b].n == 0 && b < nb-1 {
			// An empty bin leaves the partition, hence the gain, as it
			// was at b-1, which already won ties: skipping it changes
			// nothing but time. (b = nb-1 is the "missing only on the
			// right" split and is always considered.)
			continue
		}
		gl += hf[b].g
		hl += hf[b].h
		nl += hf[b].n
		if !consider(b, false, gl, hl, nl) {
			break
		}
	}
	// Missing values on the left.
	if miss.n > 0 {
		gl, hl, nl = miss.g, miss.h, miss.n
		for b := 0; b < nb-1; b++ {
			if hf[b].n == 0 {
				continue
			}
			gl += hf[b].g
			hl += hf[b].h
			nl += hf[b].n
			if !consider(b, true, gl, hl, nl) {
				break
			}
		}
	}
	return best
}

// pickBest reduces per-feature candidates in feature order (ties go to the
// lower feature), so the choice is independent of scheduling.
func pickBest(cands []splitInfo) (splitInfo, bool) {
	best := splitInfo{gain: math.Inf(-1), feature: -1}
	for _, c := range cands {
		if c.feature >= 0 && c.gain > best.gain {
			best = c
		}
	}
	return best, best.feature >= 0 && best.gain > 0
}

// parallelMinWork is the smallest rows×features product worth spreading
// over goroutines; below it the goroutine hand-off costs more than it saves.
const parallelMinWork = 16384

func (gr *grower) workersFor(rows int) int {
	if rows*len(gr.binned) < parallelMinWork {
		return 1
	}
	return gr.workers
}

// tree is a fitted tree before it is appended to the model.
type tree struct {
	nodes []node
	gains []float64 // per feature, this tree's total split gain
}

// grow fits one tree to gradients g and hessians h and returns it together
// with, per leaf, the rows it holds (for updating raw predictions).
func (gr *grower) grow(g, h []float64, rootG, rootH float64) (tree, []growNode) {
	n := len(gr.idx)
	for i := range gr.idx {
		gr.idx[i] = int32(i)
	}
	t := tree{gains: make([]float64, len(gr.binned))}
	t.nodes = append(t.nodes, node{feature: -1})
	root := growNode{id: 0, start: 0, end: n, g: rootG, h: rootH, n: n}
	var leaves []growNode
	var cands []growNode
	if gr.canSplit(&root) {
		root.hist = gr.allocHist()
		forEach(len(gr.binned), gr.workersFor(n), func(f int) {
			gr.buildFeature(root.hist, f, gr.idx, g, h)
			gr.perFeat[f] = gr.bestForFeature(&root, f)
		})
		root.best, root.splittable = pickBest(gr.perFeat)
	}
	if root.splittable {
		cands = append(cands, root)
	} else {
		gr.releaseHist(root.hist)
		leaves = append(leaves, root)
	}
	nLeaves := 1
	for len(cands) > 0 && (gr.cfg.maxLeaves == 0 || nLeaves < gr.cfg.maxLeaves) {
		// Best-first: the candidate with the largest gain, the oldest node
		// on ties (deterministic).
		bi := 0
		for i := 1; i < len(cands); i++ {
			if cands[i].best.gain > cands[bi].best.gain {
				bi = i
			}
		}
		parent := cands[bi]
		cands = slices.Delete(cands, bi, bi+1)
		left, right := gr.split(&t, &parent)
		nLeaves++
		gr.prepareChildren(&parent, &left, &right, g, h)
		for _, c := range []growNode{left, right} {
			if c.splittable {
				cands = append(cands, c)
			} else {
				gr.releaseHist(c.hist)
				c.hist = nil
				leaves = append(leaves, c)
			}
		}
	}
	for _, c := range cands {
		gr.releaseHist(c.hist)
		c.hist = nil
		leaves = append(leaves, c)
	}
	// Leaf values: the Newton step -G/(H+λ), shrunk by the learning rate.
	for _, lf := range leaves {
		v := 0.0
		if d := lf.h + gr.cfg.l2; d > 0 {
			v = -gr.cfg.lr * lf.g / d
		}
		t.nodes[lf.id].value = v
	}
	return t, leaves
}

// split partitions parent's rows and records the split in t.
func (gr *grower) split(t *tree, parent *growNode) (growNode, growNode) {
	s := parent.best
	col := gr.binned[s.feature]
	missing := uint8(gr.nBins[s.feature])
	missLeft := s.missLeft
	if !s.hadMissing {
		// No missing values reached this node on this feature: send
		// future ones where most training rows went.
		missLeft = s.nL > s.nR
	}
	thr := math.MaxFloat64 // b = nBins-1: every non-missing value goes left
	if s.bin < gr.nBins[s.feature]-1 {
		thr = gr.edges[s.feature][s.bin]
	}
	// Stable partition: each child keeps rows in increasing order, which
	// keeps histogram building cache-friendly and deterministic.
	var goLeft [256]bool
	for b := 0; b <= s.bin; b++ {
		goLeft[b] = true
	}
	goLeft[missing] = s.missLeft
	rows := gr.idx[parent.start:parent.end]
	nl, nr := 0, 0
	tmp := gr.scratch[:len(rows)]
	for _, r := range rows {
		if goLeft[col[r]] {
			rows[nl] = r
			nl++
		} else {
			tmp[nr] = r
			nr++
		}
	}
	copy(rows[nl:], tmp[:nr])
	li, ri := len(t.nodes), len(t.nodes)+1
	t.nodes = append(t.nodes, node{feature: -1}, node{feature: -1})
	t.nodes[parent.id] = node{feature: int32(s.feature), threshold: thr, left: int32(li), right: int32(ri), missLeft: missLeft}
	t.gains[s.feature] += s.gain
	left := growNode{id: li, start: parent.start, end: parent.start + nl, g: s.gL, h: s.hL, n: s.nL, depth: parent.depth + 1}
	right := growNode{id: ri, start: parent.start + nl, end: parent.end, g: s.gR, h: s.hR, n: s.nR, depth: parent.depth + 1}
	return left, right
}

// prepareChildren computes the histograms and best splits of both children:
// the smaller child is scanned, the larger one is parent minus smaller
// (reusing the parent's histogram memory).
func (gr *grower) prepareChildren(parent, left, right *growNode, g, h []float64) {
	needL, needR := gr.canSplit(left), gr.canSplit(right)
	if !needL && !needR {
		gr.releaseHist(parent.hist)
		parent.hist = nil
		return
	}
	small, large := left, right
	needSmall, needLarge := needL, needR
	if right.n < left.n {
		small, large = right, left
		needSmall, needLarge = needR, needL
	}
	small.hist = gr.allocHist()
	large.hist = parent.hist
	parent.hist = nil
	rows := gr.idx[small.start:small.end]
	forEach(len(gr.binned), gr.workersFor(parent.n), func(f int) {
		gr.buildFeature(small.hist, f, rows, g, h)
		gr.subtractFeature(large.hist, small.hist, f)
		if needSmall {
			gr.perFeat[f] = gr.bestForFeature(small, f)
		}
		if needLarge {
			gr.perFeat2[f] = gr.bestForFeature(large, f)
		}
	})
	if needSmall {
		small.best, small.splittable = pickBest(gr.perFeat)
	}
	if needLarge {
		large.best, large.splittable = pickBest(gr.perFeat2)
	}
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
		if d.valX != nil {
			valRows = rowsOf(d.valX)
			valY = d.valY
		} else {
			fit, held := splitValidation(d, cfg.valFrac, rng)
			if len(held) == 0 || len(fit) == 0 {
				return nil, dataErr(0, "", "validationFraction %v of %d rows leaves no validation or no training rows", cfg.valFrac, d.n)
			}
			x = takeRows(d.x, fit)
			y = takeValues(d.y, fit)
			valRows = rowsOf(takeRows(d.x, held))
			valY = takeValues(d.y, held)
			if sig.Task == Classification {
				present := map[float64]bool{}
				for _, v := range y {
					present[v] = true
				}
				if len(present) < 2 {
					return nil, dataErr(0, sig.Label, "after holding out validationFraction %v, the training rows have a single class", cfg.valFrac)
				}
			}
		}
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
	forEach(nIn, workers, func(f int) {
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
	grad := make([]float64, outs*n)
	hess := make([]float64, outs*n)
	gr := newGrower(cfg, binned, edges, n, workers)
	stop := "trees"
	iter := 0
	for iter < cfg.trees {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		gradients(sig, raw, y, outs, grad, hess, workers)
		for k := 0; k < outs; k++ {
			g, h := grad[k*n:(k+1)*n], hess[k*n:(k+1)*n]
			var G, H float64
			for i := 0; i < n; i++ {
				G += g[i]
				H += h[i]
			}
			t, leaves := gr.grow(g, h, G, H)
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
			for _, lf := range leaves {
				v := t.nodes[lf.id].value
				for _, r := range gr.idx[lf.start:lf.end] {
					rk[r] += v
				}
			}
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
			if shouldStop(valLosses, cfg.patience) {
				stop = "earlyStopping"
				break
			}
		}
	}
	trainLoss := meanLoss(sig, raw, y, outs)
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

// gradientChunk is the fixed row block for parallel gradient computation.
const gradientChunk = 4096

// gradients fills the per-row gradient and hessian of the loss at raw.
// Every row is independent, so splitting rows over goroutines is exact.
func gradients(sig Signature, raw, y []float64, outs int, grad, hess []float64, workers int) {
	n := len(y)
	forChunks(n, gradientChunk, workers, func(_, lo, hi int) {
		switch {
		case sig.Task == Regression:
			for i := lo; i < hi; i++ {
				grad[i] = raw[i] - y[i]
				hess[i] = 1
			}
		case outs == 1:
			for i := lo; i < hi; i++ {
				p := sigmoid(raw[i])
				grad[i] = p - y[i]
				hess[i] = p * (1 - p)
			}
		default:
			z := make([]float64, outs)
			for i := lo; i < hi; i++ {
				for k := 0; k < outs; k++ {
					z[k] = raw[k*n+i]
				}
				softmaxInPlace(z)
				yi := int(y[i])
				for k := 0; k < outs; k++ {
					p := z[k]
					g := p
					if k == yi {
						g--
					}
					grad[k*n+i] = g
					hess[k*n+i] = p * (1 - p)
				}
			}
		}
	})
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
