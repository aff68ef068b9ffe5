package ml

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
)

var gbdtAlgorithm = algorithm{
	name: "gbdt",
	params: []paramSpec{
		{name: "trees", kind: kindInt, def: 100, min: 1, max: 100000,
			doc: "boosting iterations (multiclass: one tree per class per iteration)"},
		{name: "learningRate", kind: kindFloat, def: 0.1, min: 0, minOpen: true, max: 10,
			doc: "shrinkage applied to every leaf value"},
		{name: "maxDepth", kind: kindInt, def: 6, min: 0, max: 1000,
			doc: "maximum edges from root to leaf; 0 = unlimited"},
		{name: "maxLeaves", kind: kindInt, def: 31, min: 0, max: 1 << 20,
			check: func(v float64) error {
				if v == 1 {
					return errors.New("must be 0 (unlimited) or at least 2, got 1")
				}
				return nil
			},
			doc: "maximum leaves per tree (best-first growth); 0 = unlimited"},
		{name: "minSamplesLeaf", kind: kindInt, def: 20, min: 1, max: 1 << 30,
			doc: "minimum training rows in a leaf"},
		{name: "l2", kind: kindFloat, def: 0.0, min: 0, max: math.Inf(1),
			doc: "L2 regularisation of leaf values (added to the hessian sum)"},
		{name: "maxBins", kind: kindInt, def: 255, min: 2, max: 255,
			doc: "maximum histogram bins per feature for non-missing values (missing values get their own bin)"},
		{name: "earlyStopping", kind: kindBool, def: false,
			doc: "stop when the validation loss has not improved by 1e-7 for nIterNoChange iterations"},
		{name: "validationFraction", kind: kindFloat, def: 0.1, min: 0, minOpen: true, max: 0.9,
			doc: "share of the training rows held out (stratified, seeded) for early stopping when TrainOptions.Validation is nil"},
		{name: "nIterNoChange", kind: kindInt, def: 10, min: 1, max: 100000,
			doc: "early-stopping patience in iterations"},
	},
	train:  trainGBDT,
	decode: decodeGBDT,
}

// node is one node of a fitted tree. All trees live in one flat slice so
// prediction walks contiguous memory; child indices are absolute.
type node struct {
	threshold float64 // go left when x <= threshold
	value     float64 // leaf value (already shrunk); 0 for internal nodes
	feature   int32   // input index; -1 for a leaf
	left      int32
	right     int32
	missLeft  bool // where NaN goes
}

// GBDT is a gradient-boosted ensemble of regression trees (binary logistic,
// multiclass softmax or squared-error regression).
type GBDT struct {
	sig  Signature
	info ModelInfo
	// baseline is the initial raw score per output.
	baseline []float64
	// outs is the number of trees per iteration (1, or K for multiclass).
	outs  int
	nodes []node
	// roots[t] is the root of tree t; tree t belongs to output t % outs.
	roots      []int32
	importance []float64
	// forest is the compiled form of the trees that prediction walks.
	forest *forest
}

// Signature returns the model's inputs and outputs.
func (m *GBDT) Signature() Signature { return m.sig.clone() }

// Info returns the model's provenance.
func (m *GBDT) Info() ModelInfo { return m.info.clone() }

// NumTrees returns the number of trees (iterations × trees per iteration).
func (m *GBDT) NumTrees() int { return len(m.roots) }

// FeatureImportance returns, per input in Signature order, the total gain
// of the splits on it (sum over trees of the decrease of the second-order
// loss approximation, as in LightGBM's "gain" importance).
func (m *GBDT) FeatureImportance() []float64 { return slices.Clone(m.importance) }

// walk returns the leaf value of the tree rooted at i for row x (x must
// have every feature the tree uses). The common case compiles to a
// conditional move instead of an unpredictable branch; the NaN test is a
// branch that is almost always predicted right.
func walk(nodes []node, i int32, x []float64) float64 {
	for {
		nd := &nodes[i]
		if nd.feature < 0 {
			return nd.value
		}
		v := x[nd.feature]
		if v != v { // NaN: the learned side
			if nd.missLeft {
				i = nd.left
			} else {
				i = nd.right
			}
			continue
		}
		next := nd.left
		if v > nd.threshold {
			next = nd.right
		}
		i = next
	}
}

// predictChunk is the number of rows one goroutine predicts at a time.
const predictChunk = 512

// PredictRaw returns the raw scores per row (log-odds for binary, per-class
// logits for multiclass, the value for regression), before the link
// function.
func (m *GBDT) PredictRaw(x [][]float64) [][]float64 {
	flat := m.rawScores(x)
	out := make([][]float64, len(x))
	for i := range out {
		out[i] = flat[i*m.outs : (i+1)*m.outs : (i+1)*m.outs]
	}
	return out
}

// PredictProba returns class probabilities per row, or nil for regression.
func (m *GBDT) PredictProba(x [][]float64) [][]float64 {
	if m.sig.Task != Classification {
		return nil
	}
	raw := m.rawScores(x)
	k := len(m.sig.Classes)
	out := make([][]float64, len(x))
	flat := raw
	if k == 2 {
		flat = make([]float64, len(x)*2)
		for i, z := range raw {
			p := sigmoid(z)
			flat[2*i], flat[2*i+1] = 1-p, p
		}
	} else {
		for i := range out {
			softmaxInPlace(flat[i*k : (i+1)*k])
		}
	}
	for i := range out {
		out[i] = flat[i*k : (i+1)*k : (i+1)*k]
	}
	return out
}

// Predict returns the most probable class index (classification) or the
// predicted value (regression) per row.
func (m *GBDT) Predict(x [][]float64) []float64 {
	raw := m.rawScores(x)
	if m.outs == 1 && m.sig.Task == Regression {
		return raw
	}
	out := make([]float64, len(x))
	for i := range out {
		r := raw[i*m.outs : (i+1)*m.outs]
		if len(x[i]) != len(m.sig.Inputs) {
			out[i] = math.NaN()
			continue
		}
		out[i] = predictFromRaw(m.sig.Task, r)
	}
	return out
}

// gbdtPayload is the "model" section of a gbdt artifact.
type gbdtPayload struct {
	Baseline []float64 `json:"baseline"`
	// TreesPerIteration is 1, or the number of classes for multiclass.
	TreesPerIteration int           `json:"treesPerIteration"`
	Importance        []float64     `json:"importance"`
	Trees             []treePayload `json:"trees"`
}

// treePayload stores one tree as parallel arrays indexed by node; node 0 is
// the root, children have larger indices than their parent, and a leaf has
// feature -1.
type treePayload struct {
	Feature     []int32   `json:"feature"`
	Threshold   []float64 `json:"threshold"`
	Left        []int32   `json:"left"`
	Right       []int32   `json:"right"`
	MissingLeft []bool    `json:"missingLeft"`
	Value       []float64 `json:"value"`
}

func (m *GBDT) payload() any {
	p := gbdtPayload{Baseline: m.baseline, TreesPerIteration: m.outs, Importance: m.importance}
	for t, r := range m.roots {
		end := int32(len(m.nodes))
		if t+1 < len(m.roots) {
			end = m.roots[t+1]
		}
		var tp treePayload
		for i := r; i < end; i++ {
			nd := m.nodes[i]
			l, rr := int32(0), int32(0)
			if nd.feature >= 0 {
				l, rr = nd.left-r, nd.right-r
			}
			tp.Feature = append(tp.Feature, nd.feature)
			tp.Threshold = append(tp.Threshold, nd.threshold)
			tp.Left = append(tp.Left, l)
			tp.Right = append(tp.Right, rr)
			tp.MissingLeft = append(tp.MissingLeft, nd.missLeft)
			tp.Value = append(tp.Value, nd.value)
		}
		p.Trees = append(p.Trees, tp)
	}
	return p
}

func decodeGBDT(raw json.RawMessage, sig Signature, info ModelInfo) (Model, error) {
	var p gbdtPayload
	if err := strictUnmarshal(raw, &p); err != nil {
		return nil, artifactErr("gbdt model: %v", err)
	}
	outs := sig.numOutputs()
	if p.TreesPerIteration != outs {
		return nil, artifactErr("gbdt model: %d trees per iteration, want %d", p.TreesPerIteration, outs)
	}
	if len(p.Baseline) != outs {
		return nil, artifactErr("gbdt model: %d baseline values, want %d", len(p.Baseline), outs)
	}
	for _, v := range p.Baseline {
		if !finite(v) {
			return nil, artifactErr("gbdt model: non-finite baseline")
		}
	}
	if len(p.Importance) != len(sig.Inputs) {
		return nil, artifactErr("gbdt model: %d importance values, want %d", len(p.Importance), len(sig.Inputs))
	}
	for _, v := range p.Importance {
		if !finite(v) || v < 0 {
			return nil, artifactErr("gbdt model: bad importance value")
		}
	}
	if len(p.Trees)%outs != 0 || len(p.Trees)/outs != info.Training.Iterations {
		return nil, artifactErr("gbdt model: %d trees do not match %d iterations × %d", len(p.Trees), info.Training.Iterations, outs)
	}
	m := &GBDT{sig: sig, info: info, baseline: p.Baseline, outs: outs, importance: p.Importance}
	total := 0
	for _, t := range p.Trees {
		total += len(t.Feature)
	}
	if total > math.MaxInt32 {
		return nil, artifactErr("gbdt model: too many nodes")
	}
	m.nodes = make([]node, 0, total)
	nIn := int32(len(sig.Inputs))
	for t, tp := range p.Trees {
		n := len(tp.Feature)
		if n == 0 {
			return nil, artifactErr("gbdt tree %d: no nodes", t)
		}
		if len(tp.Threshold) != n || len(tp.Left) != n || len(tp.Right) != n || len(tp.MissingLeft) != n || len(tp.Value) != n {
			return nil, artifactErr("gbdt tree %d: node arrays differ in length", t)
		}
		// Every node but the root must have exactly one parent, and
		// children must come after their parent: together that makes the
		// nodes a tree rooted at 0 (no cycles, nothing unreachable, nothing
		// shared), so prediction always terminates.
		parents := make([]int, n)
		base := int32(len(m.nodes))
		for i := 0; i < n; i++ {
			f := tp.Feature[i]
			nd := node{feature: f, threshold: tp.Threshold[i], missLeft: tp.MissingLeft[i], value: tp.Value[i]}
			if f == -1 {
				if !finite(nd.value) {
					return nil, artifactErr("gbdt tree %d node %d: non-finite leaf value", t, i)
				}
				if tp.Left[i] != 0 || tp.Right[i] != 0 {
					return nil, artifactErr("gbdt tree %d node %d: leaf has children", t, i)
				}
				m.nodes = append(m.nodes, nd)
				continue
			}
			if f < 0 || f >= nIn {
				return nil, artifactErr("gbdt tree %d node %d: feature %d out of range [0,%d)", t, i, f, nIn)
			}
			if math.IsNaN(nd.threshold) {
				return nil, artifactErr("gbdt tree %d node %d: NaN threshold", t, i)
			}
			l, r := tp.Left[i], tp.Right[i]
			if l <= int32(i) || r <= int32(i) || int(l) >= n || int(r) >= n || l == r {
				return nil, artifactErr("gbdt tree %d node %d: bad children %d, %d", t, i, l, r)
			}
			parents[l]++
			parents[r]++
			nd.left, nd.right = base+l, base+r
			m.nodes = append(m.nodes, nd)
		}
		for i := 1; i < n; i++ {
			if parents[i] != 1 {
				return nil, artifactErr("gbdt tree %d node %d: %d parents, want 1", t, i, parents[i])
			}
		}
		m.roots = append(m.roots, base)
	}
	m.forest = compileForest(m.nodes, m.roots, m.outs, len(sig.Inputs))
	return m, nil
}
