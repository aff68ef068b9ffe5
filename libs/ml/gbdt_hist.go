package ml

import (
	"math"
	"slices"
)

// Tree growth: histograms, split finding and row partitioning (see the
// overview at the top of gbdt_train.go). The hot loops follow
// scikit-learn's and LightGBM's layout:
//
//   - Gradients and hessians of a row sit side by side (ghPair), and before
//     a node's histograms are built its rows' pairs are gathered once into a
//     buffer in node order ("ordered gradients"), so the per-feature loops
//     read the pairs sequentially and only the one-byte bin at random.
//   - The root holds every row in order: its loops use no row index at all,
//     and its per-bin row counts, which never change, are counted once.
//   - Each feature's histogram has 256 slots, so indexing it by a uint8 bin
//     needs no bounds check.
//   - Partitioning is branch-free and runs over fixed blocks of rows in
//     parallel; the blocks are stitched together in block order, so the
//     result is the stable partition whatever the number of workers.
//   - Features are handled in contiguous groups, one group per task, and a
//     group's histograms are filled block of rows by block of rows, so a
//     block's gradient pairs are read from cache for every feature.
//   - The parallel loops run on a workPool whose helpers outlive a call.
//
// Every floating-point sum runs over rows in increasing order within one
// goroutine, so the model does not depend on the number of workers.

// ghPair is one row's gradient and hessian.
type ghPair struct{ g, h float64 }

// histBin accumulates one bin of a gradient/hessian histogram.
type histBin struct {
	g, h float64
	n    int
	_    int // 32 bytes: a bin's g and h never straddle a cache line
}

// histStride is the number of bins reserved per feature in a node
// histogram: at most 255 value bins plus the missing-value bin.
const histStride = 256

// featHist is one feature's histogram.
type featHist = [histStride]histBin

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
	cfg    gbdtConfig
	binned [][]uint8
	edges  [][]float64
	nBins  []int // non-missing bins per feature; the missing bin is nBins[f]
	// rootN[f][b] is the number of rows in bin b of feature f: the root's
	// counts, the same for every tree.
	rootN   [][histStride]int
	workers int
	pool    *workPool
	idx     []int32 // row indices, partitioned by node
	scratch []int32
	// scratch2 holds the right rows of partition blocks.
	scratch2 []int32
	// ordered[p] is the gradient pair of row idx[p], filled for the rows
	// of a node just before its histograms are built.
	ordered  []ghPair
	blockNL  []int // per partition block: rows that go left
	blockOff []int // per partition block: where its left rows start
	free     [][]histBin
	perFeat  []splitInfo
	perFeat2 []splitInfo
}

func newGrower(cfg gbdtConfig, binned [][]uint8, edges [][]float64, n, workers int, pool *workPool) *grower {
	gr := &grower{cfg: cfg, binned: binned, edges: edges, workers: workers, pool: pool}
	gr.nBins = make([]int, len(edges))
	for f, e := range edges {
		gr.nBins[f] = len(e) + 1
	}
	gr.rootN = make([][histStride]int, len(edges))
	pool.run(len(binned), workers, func(f int) {
		c := &gr.rootN[f]
		for _, b := range binned[f] {
			c[b]++
		}
	})
	gr.idx = make([]int32, n)
	gr.scratch = make([]int32, n)
	gr.scratch2 = make([]int32, n)
	gr.ordered = make([]ghPair, n)
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
	return make([]histBin, histStride*len(gr.binned))
}

func (gr *grower) releaseHist(h []histBin) {
	if h != nil {
		gr.free = append(gr.free, h)
	}
}

// feature returns feature f's part of a node histogram.
func feature(hist []histBin, f int) *featHist {
	return (*featHist)(hist[f*histStride : (f+1)*histStride])
}

// histBlock is the number of rows whose gradient pairs are read once for
// all the features of a group (they stay in the L1/L2 cache meanwhile).
const histBlock = 2048

// featureGroupsPerWorker sets how finely the features are grouped: more
// groups balance the work better across workers, fewer reread the
// gradient pairs more often.
const featureGroupsPerWorker = 2

// featureGroups splits the features into contiguous groups for workers:
// group j is features groups[j]..groups[j+1]-1.
func (gr *grower) featureGroups(workers int) []int {
	nf := len(gr.binned)
	k := min(nf, max(1, featureGroupsPerWorker*workers))
	if workers <= 1 {
		k = 1
	}
	groups := make([]int, k+1)
	for j := range groups {
		groups[j] = j * nf / k
	}
	return groups
}

// buildRootFeatures fills the histograms of features [flo, fhi) over all
// rows, each in row order.
func (gr *grower) buildRootFeatures(hist []histBin, flo, fhi int, gh []ghPair) {
	for f := flo; f < fhi; f++ {
		clear(feature(hist, f)[:gr.nBins[f]+1])
	}
	n := len(gh)
	for lo := 0; lo < n; lo += histBlock {
		hi := min(lo+histBlock, n)
		ghb := gh[lo:hi]
		for f := flo; f < fhi; f++ {
			histAll(feature(hist, f), gr.binned[f][lo:hi], ghb)
		}
	}
	for f := flo; f < fhi; f++ {
		hf, c := feature(hist, f), &gr.rootN[f]
		for b := range gr.nBins[f] + 1 {
			hf[b].n = c[b]
		}
	}
}

// buildFeatures fills the histograms of features [flo, fhi) over rows,
// whose gradient pairs are og (og[i] belongs to rows[i]), each in row
// order.
func (gr *grower) buildFeatures(hist []histBin, flo, fhi int, rows []int32, og []ghPair) {
	for f := flo; f < fhi; f++ {
		clear(feature(hist, f)[:gr.nBins[f]+1])
	}
	n := len(rows)
	for lo := 0; lo < n; lo += histBlock {
		hi := min(lo+histBlock, n)
		rb, ob := rows[lo:hi], og[lo:hi]
		for f := flo; f < fhi; f++ {
			histRows(feature(hist, f), gr.binned[f], rb, ob)
		}
	}
}

// subtractFeature turns parent's feature f histogram into parent - child.
func (gr *grower) subtractFeature(parent, child []histBin, f int) {
	nb := gr.nBins[f] + 1
	p, c := feature(parent, f)[:nb], feature(child, f)[:nb]
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
	nb := gr.nBins[f]
	hf := feature(nd.hist, f)[:nb+1]
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

// grow fits one tree to the gradient pairs gh (one per row) and returns it
// together with, per leaf, the rows it holds (for updating raw
// predictions).
func (gr *grower) grow(gh []ghPair) (tree, []growNode) {
	n := len(gr.idx)
	t := tree{gains: make([]float64, len(gr.binned))}
	t.nodes = append(t.nodes, node{feature: -1})
	root := growNode{id: 0, start: 0, end: n, n: n}
	// The root's gradient sums (one sequential pass, so their rounding is
	// fixed) are taken while the other workers build its histograms, which
	// do not need them; whether the root can be split at all is known
	// only afterwards.
	workers := gr.workersFor(n)
	groups := gr.featureGroups(workers)
	buildHist := gr.canSplit(&growNode{n: n, h: math.Inf(1)})
	if buildHist {
		root.hist = gr.allocHist()
	}
	gr.pool.run(len(groups)+1, workers, func(j int) {
		switch {
		case j == 0:
			var g, h float64 // locals: root's fields would be memory
			for _, p := range gh {
				g += p.g
				h += p.h
			}
			root.g, root.h = g, h
		case j == 1:
			for i := range gr.idx {
				gr.idx[i] = int32(i)
			}
		case buildHist:
			gr.buildRootFeatures(root.hist, groups[j-2], groups[j-1], gh)
		}
	})
	var leaves []growNode
	var cands []growNode
	if gr.canSplit(&root) {
		gr.pool.run(len(groups)-1, workers, func(j int) {
			for f := groups[j]; f < groups[j+1]; f++ {
				gr.perFeat[f] = gr.bestForFeature(&root, f)
			}
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
		left, right := gr.split(&t, &parent, gh)
		nLeaves++
		gr.prepareChildren(&parent, &left, &right)
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

// smallerIsLeft reports which child's histogram is built from its rows (the
// other one's is the parent's minus it): the one with fewer rows, the left
// one on ties.
func smallerIsLeft(s splitInfo) bool { return s.nR >= s.nL }

// split partitions parent's rows, records the split in t and, when a child
// will need histograms, gathers the smaller child's gradient pairs into
// gr.ordered.
func (gr *grower) split(t *tree, parent *growNode, gh []ghPair) (growNode, growNode) {
	s := parent.best
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
	li, ri := len(t.nodes), len(t.nodes)+1
	t.nodes = append(t.nodes, node{feature: -1}, node{feature: -1})
	t.nodes[parent.id] = node{feature: int32(s.feature), threshold: thr, left: int32(li), right: int32(ri), missLeft: missLeft}
	t.gains[s.feature] += s.gain
	left := growNode{id: li, start: parent.start, end: parent.start + s.nL, g: s.gL, h: s.hL, n: s.nL, depth: parent.depth + 1}
	right := growNode{id: ri, start: parent.start + s.nL, end: parent.end, g: s.gR, h: s.hR, n: s.nR, depth: parent.depth + 1}

	var goLeft [256]uint8
	for b := 0; b <= s.bin; b++ {
		goLeft[b] = 1
	}
	if s.missLeft {
		goLeft[gr.nBins[s.feature]] = 1
	}
	gather := gatherNone
	if gr.canSplit(&left) || gr.canSplit(&right) {
		gather = gatherRight
		if smallerIsLeft(s) {
			gather = gatherLeft
		}
	}
	gr.partition(parent.start, parent.end, gr.binned[s.feature], &goLeft, gather, gh)
	return left, right
}

// Which side of a partition has its gradient pairs gathered.
const (
	gatherNone = iota
	gatherLeft
	gatherRight
)

// partitionBlock is the row block that partitioning works on in parallel.
// Blocks depend only on the node's size, never on the number of workers.
const partitionBlock = 16384

// partition reorders idx[start:end] stably: rows with goLeft[bin] == 1
// first, in their order, then the others in theirs; it returns how many go
// left. A node of one block is partitioned in place (left rows compacted
// forwards, right rows set aside in scratch, then copied back). Larger
// nodes are partitioned block by block into scratch and scratch2 (left and
// right rows), then the blocks are copied back in order. The loops write
// each row to both sides and advance one, so they have no branch to
// mispredict.
func (gr *grower) partition(start, end int, col []uint8, goLeft *[256]uint8, gather int, gh []ghPair) int {
	rows := gr.idx[start:end]
	n := len(rows)
	if n <= partitionBlock {
		right := gr.scratch[start:end]
		nl, nr := 0, 0
		for _, r := range rows {
			l := int(goLeft[col[r]])
			rows[nl] = r // nl <= the current index: nothing unread is lost
			right[nr] = r
			nl += l
			nr += 1 - l
		}
		copy(rows[nl:], right[:nr])
		gr.gather(start, start+nl, start+nl, end, gather, gh)
		return nl
	}
	blocks := (n + partitionBlock - 1) / partitionBlock
	gr.blockNL = slices.Grow(gr.blockNL[:0], blocks)[:blocks]
	gr.blockOff = slices.Grow(gr.blockOff[:0], blocks)[:blocks]
	gr.pool.run(blocks, gr.workers, func(b int) {
		lo, hi := b*partitionBlock, min((b+1)*partitionBlock, n)
		left, right := gr.scratch[start+lo:start+hi], gr.scratch2[start+lo:start+hi]
		nl, nr := 0, 0
		for _, r := range rows[lo:hi] {
			l := int(goLeft[col[r]])
			left[nl] = r
			right[nr] = r
			nl += l
			nr += 1 - l
		}
		gr.blockNL[b] = nl
	})
	total := 0
	for b, nl := range gr.blockNL {
		gr.blockOff[b] = total
		total += nl
	}
	gr.pool.run(blocks, gr.workers, func(b int) {
		lo, hi := b*partitionBlock, min((b+1)*partitionBlock, n)
		nl := gr.blockNL[b]
		lpos := start + gr.blockOff[b]
		// Rows before this block that go right: lo - blockOff[b].
		rpos := start + total + lo - gr.blockOff[b]
		copy(gr.idx[lpos:lpos+nl], gr.scratch[start+lo:start+lo+nl])
		copy(gr.idx[rpos:rpos+hi-lo-nl], gr.scratch2[start+lo:start+hi-nl])
		gr.gather(lpos, lpos+nl, rpos, rpos+hi-lo-nl, gather, gh)
	})
	return total
}

// gather copies the gradient pairs of the rows at idx[llo:lhi] (side
// gatherLeft) or idx[rlo:rhi] (gatherRight) into the same positions of
// gr.ordered; gatherNone does nothing.
func (gr *grower) gather(llo, lhi, rlo, rhi, side int, gh []ghPair) {
	lo, hi := llo, lhi
	switch side {
	case gatherRight:
		lo, hi = rlo, rhi
	case gatherNone:
		return
	}
	og := gr.ordered[lo:hi]
	for j, r := range gr.idx[lo:hi] {
		og[j] = gh[r]
	}
}

// prepareChildren computes the histograms and best splits of both children:
// the smaller child is scanned, the larger one is parent minus smaller
// (reusing the parent's histogram memory).
func (gr *grower) prepareChildren(parent, left, right *growNode) {
	needL, needR := gr.canSplit(left), gr.canSplit(right)
	if !needL && !needR {
		gr.releaseHist(parent.hist)
		parent.hist = nil
		return
	}
	small, large := right, left
	needSmall, needLarge := needR, needL
	if smallerIsLeft(parent.best) {
		small, large = left, right
		needSmall, needLarge = needL, needR
	}
	small.hist = gr.allocHist()
	large.hist = parent.hist
	parent.hist = nil
	rows := gr.idx[small.start:small.end]
	og := gr.ordered[small.start:small.end]
	workers := gr.workersFor(parent.n)
	groups := gr.featureGroups(workers)
	gr.pool.run(len(groups)-1, workers, func(j int) {
		gr.buildFeatures(small.hist, groups[j], groups[j+1], rows, og)
		for f := groups[j]; f < groups[j+1]; f++ {
			gr.subtractFeature(large.hist, small.hist, f)
			if needSmall {
				gr.perFeat[f] = gr.bestForFeature(small, f)
			}
			if needLarge {
				gr.perFeat2[f] = gr.bestForFeature(large, f)
			}
		}
	})
	if needSmall {
		small.best, small.splittable = pickBest(gr.perFeat)
	}
	if needLarge {
		large.best, large.splittable = pickBest(gr.perFeat2)
	}
}
