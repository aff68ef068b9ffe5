package ml

import (
	"math"
	"runtime"
	"sync"
)

// Batch prediction works like XGBoost's CPU predictor: the trees are
// compiled into a compact layout, and rows are scored in blocks of 64, tree
// by tree, so that one tree's nodes stay in L1 cache while the whole block
// walks it.
//
// The compiled layout:
//
//   - A node is 16 bytes: threshold, feature, and the index of its left
//     child; the right child is always next to it (left+1), because each
//     tree is renumbered breadth-first at compile time.
//   - A leaf points at itself with threshold +Inf, so a walk can take a fixed
//     number of steps (the tree's depth) with no leaf test: once at a leaf,
//     every further step stays there. (Deep, lopsided trees fall back to
//     stopping at the leaf, so they do not pay for their longest path on
//     every row.)
//   - Leaf values and the side that missing values take live in separate
//     arrays, read only at a leaf and on a NaN.
//
// The step has no branch at all (a tree walk's branches are as
// unpredictable as the data, and a mispredicted branch costs more than the
// rest of the step): with v and the threshold finite, or the threshold
// +Inf, v > threshold exactly when threshold - v is negative — a difference
// of distinct floats is never zero, and a zero threshold is stored as +0 so
// that -0 cannot flip the sign — so the sign bit of the difference is the
// offset of the child. A row holding a NaN or an infinity takes the exact,
// branching walk instead. Eight rows walk a tree together, interleaved, so
// the CPU overlaps their chains of dependent loads.
//
// Each row still adds its trees' values in tree order, starting from the
// baseline, so the scores are bit-identical to walking the trees one row at
// a time.

// fnode is a compiled tree node.
type fnode struct {
	threshold float64 // go right when x > threshold; +Inf for a leaf
	left      int32   // left child (right is left+1); the node itself for a leaf
	feature   int32   // input index; 0 for a leaf
}

// forest is the prediction-only form of a GBDT's trees.
type forest struct {
	nodes     []fnode
	values    []float64 // leaf value per node (0 for internal nodes)
	missRight []bool    // per node: where NaN goes
	roots     []int32
	// steps[t] is the depth of tree t, or -1 for a tree too deep for
	// fixed-step walking.
	steps []int32
	outs  int
	nIn   int
	// sum32 rounds every score to float32 after each tree's value is added,
	// as XGBoost sums its float32 margins (xgboost.go): with float32 leaf
	// values and baseline the sums are then bit-identical to XGBoost's (the
	// float64 sum of two float32s rounded to float32 is their float32 sum:
	// 53 ≥ 2·24+2 bits, so the double rounding is harmless).
	sum32 bool
	// scratch holds *blockScratch: a serving process scores many small
	// batches, and a block's buffers (4 KiB and more) would otherwise be
	// most of what each call allocates.
	scratch sync.Pool
}

// blockScratch is the working memory of scoring one block.
type blockScratch struct {
	xt      []float64
	rows    [][]float64
	special []bool
	zeros   []float64
}

// maxFixedSteps is the deepest tree walked with a fixed number of steps.
// Deeper trees (leaf-wise growth without a depth limit) are walked until
// they reach a leaf.
const maxFixedSteps = 12

// maxFixedInputs bounds the width of the rows the fixed-step walk handles,
// so that its uint32 offsets into a feature-major block cannot overflow.
const maxFixedInputs = 1 << 24

// predictBlockRows is the number of rows that walk one tree before the next
// tree is taken: enough to amortise bringing the tree into cache, few
// enough that the rows and their scores stay in L1.
const predictBlockRows = 64

// compileForest renumbers every tree breadth-first into the compact layout.
// nodes and roots are the validated trees of a GBDT.
func compileForest(nodes []node, roots []int32, outs, nIn int) *forest {
	f := &forest{outs: outs, nIn: nIn,
		nodes:     make([]fnode, 0, len(nodes)),
		values:    make([]float64, 0, len(nodes)),
		missRight: make([]bool, 0, len(nodes)),
	}
	var queue []int32
	var depth []int32
	for _, root := range roots {
		base := int32(len(f.nodes))
		f.roots = append(f.roots, base)
		queue = append(queue[:0], root)
		depth = append(depth[:0], 0)
		maxDepth := int32(0)
		f.nodes = append(f.nodes, fnode{})
		f.values = append(f.values, 0)
		f.missRight = append(f.missRight, false)
		for q := 0; q < len(queue); q++ {
			nd := &nodes[queue[q]]
			at := base + int32(q)
			maxDepth = max(maxDepth, depth[q])
			if nd.feature < 0 {
				f.nodes[at] = fnode{threshold: math.Inf(1), left: at}
				f.values[at] = nd.value
				continue
			}
			left := base + int32(len(queue))
			queue = append(queue, nd.left, nd.right)
			depth = append(depth, depth[q]+1, depth[q]+1)
			f.nodes = append(f.nodes, fnode{}, fnode{})
			f.values = append(f.values, 0, 0)
			f.missRight = append(f.missRight, false, false)
			thr := nd.threshold
			if thr == 0 {
				thr = 0 // +0 for -0: see the sign trick above
			}
			f.nodes[at] = fnode{threshold: thr, left: left, feature: nd.feature}
			f.missRight[at] = !nd.missLeft
		}
		if maxDepth > maxFixedSteps || nIn > maxFixedInputs {
			maxDepth = -1
		}
		f.steps = append(f.steps, maxDepth)
	}
	return f
}

// addBlock adds every tree's value to the scores of a block of nr ≤
// predictBlockRows rows. xt holds the block feature-major (feature j of row
// r at xt[j*predictBlockRows+r]), every value finite; rows holds the rows
// themselves; acc holds nr × outs scores. special[r] marks a row with a NaN
// or an infinite value: its xt entries are placeholders, and it takes the
// branching walk on rows[r].
func (f *forest) addBlock(acc, xt []float64, nr int, rows [][]float64, special []bool, anySpecial bool) {
	outs := f.outs
	nodes, values, missRight := f.nodes, f.values, f.missRight
	var idx [predictBlockRows]int32
	k := 0
	for t, root := range f.roots {
		steps := f.steps[t]
		if steps < 0 {
			for r := 0; r < nr; r++ {
				idx[r] = walkToLeaf(nodes, missRight, root, rows[r])
			}
		} else {
			for r := 0; r < nr; r++ {
				idx[r] = root
			}
			r := 0
			for ; r+8 <= nr; r += 8 {
				idx[r], idx[r+1], idx[r+2], idx[r+3], idx[r+4], idx[r+5], idx[r+6], idx[r+7] = walk8(nodes, root, steps, xt[r:])
			}
			for s := int32(0); s < steps; s++ {
				stepRows(nodes, idx[r:nr], xt[r:])
			}
			if anySpecial {
				for r := 0; r < nr; r++ {
					if special[r] {
						idx[r] = walkToLeaf(nodes, missRight, root, rows[r])
					}
				}
			}
		}
		if f.sum32 {
			for r := 0; r < nr; r++ {
				acc[r*outs+k] = float64(float32(acc[r*outs+k] + values[idx[r]]))
			}
		} else {
			for r := 0; r < nr; r++ {
				acc[r*outs+k] += values[idx[r]]
			}
		}
		if k++; k == outs {
			k = 0
		}
	}
}

// walk8 walks eight rows of a block (xt starting at the first) down one
// tree, interleaved: eight independent chains of loads.
func walk8(nodes []fnode, root, steps int32, xt []float64) (i0, i1, i2, i3, i4, i5, i6, i7 int32) {
	u0 := uint32(root)
	u1, u2, u3, u4, u5, u6, u7 := u0, u0, u0, u0, u0, u0, u0
	for s := steps; s > 0; s-- {
		n0 := &nodes[u0]
		u0 = uint32(n0.left) + uint32(math.Float64bits(n0.threshold-xt[uint32(n0.feature)*predictBlockRows+0])>>63)
		n1 := &nodes[u1]
		u1 = uint32(n1.left) + uint32(math.Float64bits(n1.threshold-xt[uint32(n1.feature)*predictBlockRows+1])>>63)
		n2 := &nodes[u2]
		u2 = uint32(n2.left) + uint32(math.Float64bits(n2.threshold-xt[uint32(n2.feature)*predictBlockRows+2])>>63)
		n3 := &nodes[u3]
		u3 = uint32(n3.left) + uint32(math.Float64bits(n3.threshold-xt[uint32(n3.feature)*predictBlockRows+3])>>63)
		n4 := &nodes[u4]
		u4 = uint32(n4.left) + uint32(math.Float64bits(n4.threshold-xt[uint32(n4.feature)*predictBlockRows+4])>>63)
		n5 := &nodes[u5]
		u5 = uint32(n5.left) + uint32(math.Float64bits(n5.threshold-xt[uint32(n5.feature)*predictBlockRows+5])>>63)
		n6 := &nodes[u6]
		u6 = uint32(n6.left) + uint32(math.Float64bits(n6.threshold-xt[uint32(n6.feature)*predictBlockRows+6])>>63)
		n7 := &nodes[u7]
		u7 = uint32(n7.left) + uint32(math.Float64bits(n7.threshold-xt[uint32(n7.feature)*predictBlockRows+7])>>63)
	}
	return int32(u0), int32(u1), int32(u2), int32(u3), int32(u4), int32(u5), int32(u6), int32(u7)
}

// stepRows moves every row of a block one level down its tree.
func stepRows(nodes []fnode, idx []int32, xt []float64) {
	for r, i := range idx {
		nd := &nodes[i]
		idx[r] = nd.left + int32(math.Float64bits(nd.threshold-xt[int(nd.feature)*predictBlockRows+r])>>63)
	}
}

// walkToLeaf walks one row down a compiled tree until it reaches a leaf.
func walkToLeaf(nodes []fnode, missRight []bool, i int32, x []float64) int32 {
	for {
		nd := &nodes[i]
		if nd.left == i {
			return i
		}
		v := x[nd.feature]
		next := nd.left
		if v > nd.threshold || (v != v && missRight[i]) {
			next++
		}
		i = next
	}
}

// scoreRows computes the raw scores of n rows into raw (n × outs): row i is
// row(i), a slice of width f.nIn, or nil when the row has the wrong width,
// which gives NaN scores. Rows are scored in parallel blocks; each row's
// sum is computed in tree order whatever the block.
func (f *forest) scoreRows(raw []float64, n int, baseline []float64, row func(i int) []float64) {
	p, outs := f.nIn, f.outs
	forChunks(n, predictChunk, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
		sc, _ := f.scratch.Get().(*blockScratch)
		if sc == nil {
			sc = &blockScratch{xt: make([]float64, predictBlockRows*p), rows: make([][]float64, predictBlockRows),
				special: make([]bool, predictBlockRows), zeros: make([]float64, p)}
		}
		defer func() {
			clear(sc.rows) // the caller's rows are not the pool's to keep
			f.scratch.Put(sc)
		}()
		xt, rows, special, zeros := sc.xt, sc.rows, sc.special, sc.zeros
		for b := lo; b < hi; b += predictBlockRows {
			e := min(b+predictBlockRows, hi)
			nr := e - b
			anySpecial := false
			for r := 0; r < nr; r++ {
				x := row(b + r)
				if x == nil {
					x = zeros
				}
				rows[r] = x
				// v-v is 0 for a finite v and NaN for NaN and ±Inf.
				var sp float64
				for j, v := range x {
					xt[j*predictBlockRows+r] = v
					sp += v - v
				}
				special[r] = sp != 0
				if special[r] {
					anySpecial = true
					for j := range x {
						xt[j*predictBlockRows+r] = 0
					}
				}
				copy(raw[(b+r)*outs:(b+r+1)*outs], baseline)
			}
			f.addBlock(raw[b*outs:e*outs], xt, nr, rows, special, anySpecial)
			for i := b; i < e; i++ {
				if row(i) == nil {
					fillNaN(raw[i*outs : (i+1)*outs])
				}
			}
		}
	})
}

// PredictRawFlat returns the raw scores (as PredictRaw) of nrows rows given
// row-major in one slice, nrows × len(Signature().Inputs) values: the
// layout of a serving batch, with no slice per row. The result is nrows ×
// outputs, row-major (outputs is 1, or the number of classes for
// multiclass). It returns nil if len(x) is not nrows × inputs.
func (m *GBDT) PredictRawFlat(x []float64, nrows int) []float64 {
	p := len(m.sig.Inputs)
	if nrows < 0 || len(x) != nrows*p {
		return nil
	}
	raw := make([]float64, nrows*m.outs)
	m.forest.scoreRows(raw, nrows, m.baseline, func(i int) []float64 { return x[i*p : (i+1)*p] })
	return raw
}

// rawScores computes the raw scores of rows, flat (len(x) × outs).
func (m *GBDT) rawScores(x [][]float64) []float64 {
	p := len(m.sig.Inputs)
	raw := make([]float64, len(x)*m.outs)
	m.forest.scoreRows(raw, len(x), m.baseline, func(i int) []float64 {
		if len(x[i]) != p {
			return nil
		}
		return x[i]
	})
	return raw
}
