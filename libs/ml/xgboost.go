package ml

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// XGBoost models, read from the files XGBoost's save_model writes (JSON,
// or UBJSON: xgboost_ubjson.go), are scored by the compiled-node predictor
// of the GBDT (gbdt_predict.go), with the same results as XGBoost's own
// predictor. The mapping:
//
//   - A tree is the arrays left_children, right_children, split_indices,
//     split_conditions and default_left, indexed by node id, node 0 the
//     root; a leaf has left_children -1 and its value (learning rate
//     applied) in split_conditions.
//   - XGBoost rounds each input to float32 and goes left when
//     float32(x) < c, with c the float32 split condition, right otherwise;
//     NaN (the default "missing") goes to the default_left side. The
//     compiled predictor goes right when x > T on float64 inputs; for a
//     float64 x, float32(x) ≥ c exactly when x lies above the midpoint of c
//     and the float32 below it (or on it, when the midpoint rounds to c), so
//     T is that midpoint, or the float64 just below it (xgbThreshold). The
//     rows need no copy or rounding, and the branch is XGBoost's for every
//     input, including values between float32 neighbours.
//   - The margin of a row starts at the base score in margin space and
//     adds the leaf value of every tree of its output, in tree order, in
//     float32 arithmetic: the forest rounds each partial sum to float32
//     (forest.sum32), so margins are bit-identical to XGBoost's
//     (Booster.predict with output_margin=True).
//   - base_score is stored in probability space: binary:logistic's margin
//     starts at logit(base_score), computed as XGBoost does in float32;
//     reg:squarederror and multi:softprob start at base_score itself (for
//     multi:softprob, in every class).
//   - multi:softprob has num_class outputs; tree_info names the output of
//     each tree (with num_parallel_tree > 1 a round holds several trees per
//     class, [0 0 1 1 2 2 ...]). The forest takes tree t for output
//     t % outputs, so the trees are reordered round-robin by class, each
//     class keeping its own order (and so its float32 sums).
//   - Probabilities are the logistic function or the softmax of the margins
//     in float64 (XGBoost computes them in float32: they differ by float32
//     rounding, about 1e-7).
//
// Not supported, each refused with an error that names it: the legacy
// binary model format, boosters other than gbtree (dart, gblinear),
// objectives other than binary:logistic, multi:softprob and
// reg:squarederror, categorical features and splits, multi-target trees
// (vector leaves), a base_score given per output and more than 65536
// features (rows are dense). Like Booster.predict, every tree is used (the
// best_iteration attribute that early stopping leaves is not applied). Only
// NaN is missing (XGBoost's default): a model trained with another
// "missing" value needs that value turned into NaN before prediction.

// The XGBoost objectives LoadXGBoost supports.
const (
	XGBoostBinaryLogistic  = "binary:logistic"
	XGBoostMultiSoftprob   = "multi:softprob"
	XGBoostRegSquaredError = "reg:squarederror"
)

const (
	xgbSupportedObjectives = XGBoostBinaryLogistic + ", " + XGBoostMultiSoftprob + ", " + XGBoostRegSquaredError
	// xgbMaxNodes bounds the nodes of a model (node indices are int32).
	xgbMaxNodes = math.MaxInt32 / 2
	// xgbMaxFeatures bounds the row width: the predictor keeps a block of
	// 64 rows (here up to 32 MiB) per goroutine, and serving's rows are
	// dense.
	xgbMaxFeatures = 1 << 16
	// xgbMaxClasses bounds num_class, so that a damaged file cannot make
	// the loader allocate per class beyond reason.
	xgbMaxClasses = 1 << 16
)

// XGBoostModel is a gradient-boosted tree model trained by XGBoost, read by
// LoadXGBoost. It implements Model: PredictProba and Predict follow the
// conventions of Gyre's own models (class probabilities in Signature().Classes
// order; the class index or the value), PredictRaw gives XGBoost's margins.
// It is immutable and safe for concurrent use. It cannot be saved with Save:
// its artifact is the XGBoost file it was read from.
type XGBoostModel struct {
	objective string
	format    string
	numTrees  int
	// g scores the trees: its forest is the compiled XGBoost trees, its
	// baseline the base margin.
	g *GBDT
}

var _ Model = (*XGBoostModel)(nil)

// LoadXGBoost reads an XGBoost model from the bytes of a file written by
// XGBoost's save_model (or save_raw): JSON (.json) or Universal Binary JSON
// (.ubj), told apart by their first bytes. The model must be a gbtree
// booster with objective binary:logistic, multi:softprob or
// reg:squarederror; anything else is an *ArtifactError naming what is not
// supported.
//
// The signature takes the model's feature_names, or f0, f1, ... (XGBoost's
// own names) when it has none, all numeric; classifiers have the classes
// "0", "1", ... (XGBoost's labels). Use WithSignature to give the names of
// the pipeline's schema.
func LoadXGBoost(data []byte) (*XGBoostModel, error) {
	doc, format, err := decodeXGBoost(data)
	if err != nil {
		return nil, err
	}
	return buildXGBoost(doc, format)
}

// Signature returns the model's inputs and outputs.
func (m *XGBoostModel) Signature() Signature { return m.g.sig.clone() }

// Info returns the model's provenance: algorithm "xgboost", and as params
// the objective, booster, base_score, number of classes, num_parallel_tree,
// the XGBoost version that wrote the file and its format ("json" or
// "ubjson").
func (m *XGBoostModel) Info() ModelInfo { return m.g.info.clone() }

// Objective returns the XGBoost objective, e.g. "binary:logistic".
func (m *XGBoostModel) Objective() string { return m.objective }

// NumTrees returns the number of trees in the model file.
func (m *XGBoostModel) NumTrees() int { return m.numTrees }

// PredictRaw returns XGBoost's margins per row (Booster.predict with
// output_margin=True): one per class for multi:softprob, else one.
func (m *XGBoostModel) PredictRaw(x [][]float64) [][]float64 { return m.g.PredictRaw(x) }

// PredictRawFlat returns the margins (as PredictRaw) of nrows rows given
// row-major in one slice (see GBDT.PredictRawFlat), or nil if len(x) is not
// nrows × inputs.
func (m *XGBoostModel) PredictRawFlat(x []float64, nrows int) []float64 {
	return m.g.PredictRawFlat(x, nrows)
}

// PredictProba returns the class probabilities per row ([1-p, p] for
// binary:logistic, the softmax for multi:softprob), or nil for regression.
func (m *XGBoostModel) PredictProba(x [][]float64) [][]float64 { return m.g.PredictProba(x) }

// Predict returns the most probable class index (classification) or the
// predicted value (regression) per row.
func (m *XGBoostModel) Predict(x [][]float64) []float64 { return m.g.Predict(x) }

// WithSignature returns the model with another signature, e.g. one built
// from the pipeline's schema: it must have as many inputs as the model has
// features (taken in order: input j is XGBoost's feature j), the model's
// task, and for a classifier as many classes as the model has.
func (m *XGBoostModel) WithSignature(sig Signature) (*XGBoostModel, error) {
	own := m.g.sig
	if len(sig.Inputs) != len(own.Inputs) {
		return nil, artifactErr("xgboost: the signature has %d inputs, the model %d features", len(sig.Inputs), len(own.Inputs))
	}
	if sig.Task != own.Task {
		return nil, artifactErr("xgboost: the signature's task is %q, the model's (%s) %q", sig.Task, m.objective, own.Task)
	}
	if len(sig.Classes) != len(own.Classes) {
		return nil, artifactErr("xgboost: the signature has %d classes, the model %d", len(sig.Classes), len(own.Classes))
	}
	seen := make(map[string]bool, len(sig.Inputs))
	for _, in := range sig.Inputs {
		if in.Name == "" || seen[in.Name] {
			return nil, artifactErr("xgboost: the signature's input names must be unique and not empty (%q)", in.Name)
		}
		seen[in.Name] = true
	}
	g := *m.g
	g.sig = sig.clone()
	return &XGBoostModel{objective: m.objective, format: m.format, numTrees: m.numTrees, g: &g}, nil
}

// xgbDoc is the part of XGBoost's model document that prediction needs
// (the JSON schema of XGBoost 1.x and 2.x: doc/model.schema in its
// sources).
type xgbDoc struct {
	Version []int `json:"version"`
	Learner *struct {
		FeatureNames      []string `json:"feature_names"`
		FeatureTypes      []string `json:"feature_types"`
		LearnerModelParam struct {
			BaseScore  xgbParam `json:"base_score"`
			NumClass   xgbParam `json:"num_class"`
			NumFeature xgbParam `json:"num_feature"`
			NumTarget  xgbParam `json:"num_target"`
		} `json:"learner_model_param"`
		Objective struct {
			Name string `json:"name"`
		} `json:"objective"`
		GradientBooster struct {
			Name  string `json:"name"`
			Model *struct {
				Param struct {
					NumTrees        xgbParam `json:"num_trees"`
					NumParallelTree xgbParam `json:"num_parallel_tree"`
					SizeLeafVector  xgbParam `json:"size_leaf_vector"`
				} `json:"gbtree_model_param"`
				TreeInfo []int32   `json:"tree_info"`
				Trees    []xgbTree `json:"trees"`
			} `json:"model"`
		} `json:"gradient_booster"`
	} `json:"learner"`
}

// xgbTree is one tree of the document.
type xgbTree struct {
	TreeParam struct {
		NumNodes       xgbParam `json:"num_nodes"`
		SizeLeafVector xgbParam `json:"size_leaf_vector"`
	} `json:"tree_param"`
	LeftChildren    []int32   `json:"left_children"`
	RightChildren   []int32   `json:"right_children"`
	SplitIndices    []int64   `json:"split_indices"`
	SplitConditions []float32 `json:"split_conditions"`
	DefaultLeft     []xgbBool `json:"default_left"`
	SplitType       []int32   `json:"split_type"`
	Categories      []int64   `json:"categories"`
}

// xgbParam is a parameter value: XGBoost writes them as strings ("5E-1");
// a bare number is accepted too.
type xgbParam string

func (p *xgbParam) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = xgbParam(s)
		return nil
	}
	if string(b) != "null" {
		*p = xgbParam(b)
	}
	return nil
}

// xgbBool is default_left: 0 or 1 (true or false accepted too).
type xgbBool bool

func (v *xgbBool) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "1", "true":
		*v = true
	case "0", "false":
		*v = false
	default:
		return fmt.Errorf("default_left value %s is not 0 or 1", b)
	}
	return nil
}

// decodeXGBoost parses the document, JSON or UBJSON.
func decodeXGBoost(data []byte) (*xgbDoc, string, error) {
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i == len(data) {
		return nil, "", artifactErr("xgboost: the model file is empty")
	}
	format := "json"
	body := data
	switch {
	case i == 0 && len(data) > 1 && data[0] == '{' && strings.IndexByte("iUIlLN$#", data[1]) >= 0:
		// UBJSON: an object whose first key's length marker follows '{';
		// JSON has a quote or white space there.
		format = "ubjson"
		var err error
		if body, err = ubjsonToJSON(data); err != nil {
			return nil, "", artifactErr("xgboost: %v", err)
		}
	case data[i] == '{':
	default:
		return nil, "", artifactErr("xgboost: not an XGBoost JSON or UBJSON model (XGBoost's legacy binary format is not supported: load it with XGBoost and save_model it as .json or .ubj)")
	}
	var doc xgbDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, "", artifactErr("xgboost: %s model: %v", format, err)
	}
	if doc.Learner == nil {
		return nil, "", artifactErr("xgboost: no \"learner\" in the document: not an XGBoost model")
	}
	return &doc, format, nil
}

func xgbUnsupported(format string, args ...any) error {
	return artifactErr("xgboost: not supported: "+format, args...)
}

// xgbIntParam parses a non-negative integer parameter; empty gives def.
func xgbIntParam(name string, p xgbParam, def int) (int, error) {
	if p == "" {
		return def, nil
	}
	v, err := strconv.Atoi(string(p))
	if err != nil || v < 0 {
		return 0, artifactErr("xgboost: %s %q is not a non-negative integer", name, string(p))
	}
	return v, nil
}

// buildXGBoost validates the document and compiles its trees.
func buildXGBoost(doc *xgbDoc, format string) (*XGBoostModel, error) {
	l := doc.Learner
	if len(doc.Version) == 0 || doc.Version[0] < 1 {
		return nil, artifactErr("xgboost: the document has no XGBoost version (1.0 or later writes one)")
	}
	version := make([]string, len(doc.Version))
	for i, v := range doc.Version {
		version[i] = strconv.Itoa(v)
	}
	if name := l.GradientBooster.Name; name != "gbtree" {
		return nil, xgbUnsupported("booster %q: only gbtree", name)
	}
	obj := l.Objective.Name
	switch obj {
	case XGBoostBinaryLogistic, XGBoostMultiSoftprob, XGBoostRegSquaredError:
	default:
		return nil, xgbUnsupported("objective %q: supported are %s", obj, xgbSupportedObjectives)
	}
	mp := l.LearnerModelParam
	nIn, err := xgbIntParam("num_feature", mp.NumFeature, 0)
	if err != nil {
		return nil, err
	}
	if nIn < 1 {
		return nil, artifactErr("xgboost: num_feature %d: the model has no features", nIn)
	}
	if nIn > xgbMaxFeatures {
		return nil, xgbUnsupported("num_feature %d: more than %d features", nIn, xgbMaxFeatures)
	}
	if nt, err := xgbIntParam("num_target", mp.NumTarget, 1); err != nil {
		return nil, err
	} else if nt > 1 {
		return nil, xgbUnsupported("multi-target model (num_target %d)", nt)
	}
	nClass, err := xgbIntParam("num_class", mp.NumClass, 0)
	if err != nil {
		return nil, err
	}
	outs := 1
	if obj == XGBoostMultiSoftprob {
		if nClass < 2 || nClass > xgbMaxClasses {
			return nil, artifactErr("xgboost: multi:softprob with num_class %d (2 to %d supported)", nClass, xgbMaxClasses)
		}
		outs = nClass
	} else if nClass > 1 {
		return nil, artifactErr("xgboost: %s with num_class %d", obj, nClass)
	}
	bs := strings.TrimSpace(string(mp.BaseScore))
	if strings.HasPrefix(bs, "[") {
		return nil, xgbUnsupported("base_score given per output (%s)", bs)
	}
	if bs == "" {
		bs = "0.5"
	}
	bs64, err := strconv.ParseFloat(bs, 32)
	if err != nil || math.IsNaN(bs64) || math.IsInf(bs64, 0) {
		return nil, artifactErr("xgboost: base_score %q is not a finite number", bs)
	}
	baseScore := float32(bs64)
	margin := baseScore
	if obj == XGBoostBinaryLogistic {
		if !(baseScore > 0 && baseScore < 1) {
			return nil, artifactErr("xgboost: base_score %v must be in (0, 1) for binary:logistic", baseScore)
		}
		// XGBoost: -logf(1.0f / base_score - 1.0f), in float32.
		a := float32(float32(1)/baseScore) - 1
		margin = float32(-math.Log(float64(a)))
	}
	sig, err := xgbSignature(l.FeatureNames, l.FeatureTypes, nIn, obj, outs)
	if err != nil {
		return nil, err
	}

	gm := l.GradientBooster.Model
	if gm == nil {
		return nil, artifactErr("xgboost: the gbtree booster has no \"model\"")
	}
	if slv, err := xgbIntParam("size_leaf_vector", gm.Param.SizeLeafVector, 0); err != nil {
		return nil, err
	} else if slv > 1 {
		return nil, xgbUnsupported("multi-target trees (size_leaf_vector %d)", slv)
	}
	nTrees := len(gm.Trees)
	if n, err := xgbIntParam("num_trees", gm.Param.NumTrees, nTrees); err != nil {
		return nil, err
	} else if n != nTrees {
		return nil, artifactErr("xgboost: num_trees is %d but the model has %d trees", n, nTrees)
	}
	if nTrees == 0 {
		return nil, artifactErr("xgboost: the model has no trees")
	}
	if len(gm.TreeInfo) != nTrees {
		return nil, artifactErr("xgboost: tree_info has %d entries for %d trees", len(gm.TreeInfo), nTrees)
	}
	npt, err := xgbIntParam("num_parallel_tree", gm.Param.NumParallelTree, 1)
	if err != nil {
		return nil, err
	}

	nodes, byClass, err := xgbTrees(gm.Trees, gm.TreeInfo, nIn, outs)
	if err != nil {
		return nil, err
	}
	// Round-robin by class. XGBoost grows the same number of trees for
	// every class (num_parallel_tree per class per round).
	rounds := len(byClass[0])
	for c, ts := range byClass {
		if len(ts) != rounds {
			return nil, artifactErr("xgboost: tree_info gives class 0 %d trees but class %d %d", rounds, c, len(ts))
		}
	}
	roots := make([]int32, 0, rounds*outs)
	for j := range rounds {
		for c := range outs {
			roots = append(roots, byClass[c][j])
		}
	}
	f := compileForest(nodes, roots, outs, nIn)
	f.sum32 = true
	baseline := make([]float64, outs)
	for i := range baseline {
		baseline[i] = float64(margin)
	}
	iterations := nTrees / (outs * max(npt, 1))
	info := ModelInfo{
		Algorithm: "xgboost",
		Params: Params{
			"objective":       obj,
			"booster":         "gbtree",
			"baseScore":       float64(baseScore),
			"numClass":        nClass,
			"numParallelTree": npt,
			"numTrees":        nTrees,
			"version":         strings.Join(version, "."),
			"format":          format,
		},
		Training: TrainingInfo{Iterations: iterations},
	}
	g := &GBDT{sig: sig, info: info, baseline: baseline, outs: outs, forest: f}
	return &XGBoostModel{objective: obj, format: format, numTrees: nTrees, g: g}, nil
}

// xgbSignature builds the default signature of a model.
func xgbSignature(names, types []string, nIn int, obj string, outs int) (Signature, error) {
	if len(names) != 0 && len(names) != nIn {
		return Signature{}, artifactErr("xgboost: %d feature_names for num_feature %d", len(names), nIn)
	}
	if len(types) != 0 && len(types) != nIn {
		return Signature{}, artifactErr("xgboost: %d feature_types for num_feature %d", len(types), nIn)
	}
	sig := Signature{Task: Regression, Inputs: make([]Input, nIn)}
	seen := make(map[string]bool, nIn)
	for j := range sig.Inputs {
		name := "f" + strconv.Itoa(j)
		if len(names) != 0 {
			name = names[j]
		}
		if name == "" || seen[name] {
			return Signature{}, artifactErr("xgboost: feature name %q is empty or repeated", name)
		}
		seen[name] = true
		if len(types) != 0 {
			switch types[j] {
			case "float", "int", "i", "q":
			case "c":
				return Signature{}, xgbUnsupported("categorical feature %q", name)
			default:
				return Signature{}, xgbUnsupported("feature type %q of feature %q", types[j], name)
			}
		}
		sig.Inputs[j] = Input{Name: name, Type: Numeric}
	}
	if obj != XGBoostRegSquaredError {
		sig.Task = Classification
		k := max(outs, 2)
		sig.Classes = make([]string, k)
		for c := range sig.Classes {
			sig.Classes[c] = strconv.Itoa(c)
		}
	}
	return sig, nil
}

// xgbTrees validates the trees and turns them into nodes (each tree's node
// i at the tree's base + i; nodes no path reaches become leaves of value 0)
// and the roots of each class's trees, in model order.
func xgbTrees(trees []xgbTree, treeInfo []int32, nIn, outs int) ([]node, [][]int32, error) {
	total := 0
	for t := range trees {
		total += len(trees[t].LeftChildren)
		if total > xgbMaxNodes {
			return nil, nil, artifactErr("xgboost: more than %d nodes", xgbMaxNodes)
		}
	}
	nodes := make([]node, 0, total+1)
	byClass := make([][]int32, outs)
	var stack []int32
	var seen []bool
	for t := range trees {
		tr := &trees[t]
		fail := func(format string, args ...any) error {
			return artifactErr("xgboost: tree %d: %s", t, fmt.Sprintf(format, args...))
		}
		c := treeInfo[t]
		if c < 0 || int(c) >= outs {
			return nil, nil, fail("tree_info names output %d of %d", c, outs)
		}
		if slv, err := xgbIntParam("size_leaf_vector", tr.TreeParam.SizeLeafVector, 0); err != nil {
			return nil, nil, err
		} else if slv > 1 {
			return nil, nil, xgbUnsupported("multi-target trees (tree %d: size_leaf_vector %d)", t, slv)
		}
		n := len(tr.LeftChildren)
		if nn, err := xgbIntParam("num_nodes", tr.TreeParam.NumNodes, n); err != nil {
			return nil, nil, err
		} else if nn != n {
			return nil, nil, fail("num_nodes is %d but left_children has %d", nn, n)
		}
		if n == 0 {
			return nil, nil, fail("no nodes")
		}
		if len(tr.RightChildren) != n || len(tr.SplitIndices) != n || len(tr.SplitConditions) != n || len(tr.DefaultLeft) != n {
			return nil, nil, fail("node arrays of different lengths (left_children %d, right_children %d, split_indices %d, split_conditions %d, default_left %d)",
				n, len(tr.RightChildren), len(tr.SplitIndices), len(tr.SplitConditions), len(tr.DefaultLeft))
		}
		if len(tr.Categories) != 0 || slices.ContainsFunc(tr.SplitType, func(v int32) bool { return v != 0 }) {
			return nil, nil, xgbUnsupported("categorical splits (tree %d)", t)
		}
		base := int32(len(nodes))
		for range n {
			nodes = append(nodes, node{feature: -1})
		}
		seen = append(seen[:0], make([]bool, n)...)
		stack = append(stack[:0], 0)
		seen[0] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			l, r := tr.LeftChildren[i], tr.RightChildren[i]
			cond := tr.SplitConditions[i]
			if math.IsNaN(float64(cond)) || math.IsInf(float64(cond), 0) {
				return nil, nil, fail("node %d: split condition or leaf value %v is not finite", i, cond)
			}
			if l == -1 {
				if r != -1 {
					return nil, nil, fail("node %d has a right child but no left one", i)
				}
				nodes[base+i] = node{feature: -1, value: float64(cond)}
				continue
			}
			for _, ch := range []int32{l, r} {
				if ch <= 0 || int(ch) >= n || seen[ch] {
					return nil, nil, fail("node %d: child %d is out of range or reached twice", i, ch)
				}
				seen[ch] = true
			}
			feat := tr.SplitIndices[i]
			if feat < 0 || feat >= int64(nIn) {
				return nil, nil, fail("node %d splits on feature %d of %d", i, feat, nIn)
			}
			nodes[base+i] = node{
				threshold: xgbThreshold(cond),
				feature:   int32(feat),
				left:      base + l,
				right:     base + r,
				missLeft:  bool(tr.DefaultLeft[i]),
			}
			stack = append(stack, r, l)
		}
		byClass[c] = append(byClass[c], base)
	}
	return nodes, byClass, nil
}

// xgbThreshold returns the T for which "right when x > T", on any float64
// x that is not NaN, takes XGBoost's branch for split condition c: right
// when float32(x) ≥ c (c finite). float32(x) rounds to nearest, ties to
// even, so float32(x) ≥ c exactly when x is above the midpoint m of c and
// the float32 below it, or on m when m rounds to c (c's significand even).
// m is exact in float64.
func xgbThreshold(c float32) float64 {
	below := float64(math.Nextafter32(c, float32(math.Inf(-1))))
	if math.IsInf(below, -1) {
		below = -0x1p128 // below -MaxFloat32, float32 has only -Inf
	}
	m := (below + float64(c)) / 2
	if math.Float32bits(c)&1 == 0 {
		return math.Nextafter(m, math.Inf(-1))
	}
	return m
}
