package ml

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
)

// LightGBM models, read from the text files LightGBM's save_model writes
// (model.txt), are scored by the compiled-node predictor of the GBDT
// (gbdt_predict.go), with the same results as LightGBM's own predictor
// (Booster.predict on a dense float64 matrix). The mapping:
//
//   - A tree is the arrays split_feature, threshold, decision_type,
//     left_child and right_child over its num_leaves-1 internal nodes (node
//     0 the root), and leaf_value over its leaves; a child c ≥ 0 is an
//     internal node, c < 0 the leaf ^c. The leaf values have the learning
//     rate (shrinkage) applied, and the first trees carry the initial score
//     (boost_from_average): the raw score of a row is the sum of its leaf
//     values, in tree order, in float64, from 0 — exactly LightGBM's sum.
//   - decision_type is a bit field: bit 0 a categorical split (refused),
//     bit 1 default_left, bits 2-3 the missing type: None, Zero or NaN.
//   - LightGBM's dense predictor first turns every input x with
//     |x| ≤ kZeroThreshold (the float32 1e-35, as a double) into 0. Then a
//     numerical node (Tree::NumericalDecision) turns NaN into 0 unless its
//     missing type is NaN; sends "missing" (NaN for type NaN, a zero for
//     type Zero) to its default side; and otherwise goes left when
//     x ≤ threshold, in float64.
//   - The compiled predictor goes right when x > T, and sends NaN to one
//     side per node. For types None and NaN, T is the threshold, except a
//     threshold within the band [-kZeroThreshold, kZeroThreshold), where
//     the zeroing of the inputs moves the boundary to the band's edge
//     (lgbThreshold); NaN goes where 0 goes (None) or to the default side
//     (NaN).
//   - For type Zero, the band of zeros goes to the default side. Where
//     that side already holds the band (default left with a threshold at
//     or above the band, or default right below it), the node is a plain
//     one with NaN to the default side. Otherwise the node reads a derived
//     input: a copy of the feature with the band (and NaN) made NaN, which
//     the forest then sends to the default side. Rows of a model with such
//     nodes are copied, wider, before they are scored.
//   - num_tree_per_iteration trees make one iteration: multiclass trees
//     are interleaved by class (tree t belongs to class t % num_class), as
//     the forest takes them.
//   - Outputs: binary p = 1 / (1 + exp(-sigmoid · raw)), multiclass the
//     softmax of the raw scores (computed as LightGBM's Common::Softmax),
//     regression the raw score (exp of it for poisson, gamma and tweedie).
//     A random forest (average_output) divides the raw scores by the
//     number of iterations first, as GBDT::Predict does; its raw scores
//     (PredictRaw, like Booster.predict with raw_score=True) are the sums.
//
// Not supported, each refused with an error that names it: categorical
// splits, linear trees (linear_tree), objectives other than binary,
// multiclass and the regression ones (multiclassova, cross_entropy,
// lambdarank, rank_xendcg, regression with reg_sqrt, custom objectives),
// and more than 65536 features (rows are dense). Every tree in the file is
// used, as LightGBM does for a model it loads from a file.

// The LightGBM objectives LoadLightGBM supports, by task.
const (
	LightGBMBinary     = "binary"
	LightGBMMulticlass = "multiclass"
	LightGBMRegression = "regression"
)

// lgbIdentityObjectives are the regression objectives whose prediction is
// the raw score; lgbExpObjectives predict exp(raw score).
var (
	lgbIdentityObjectives = []string{"regression", "regression_l1", "huber", "fair", "quantile", "mape"}
	lgbExpObjectives      = []string{"poisson", "gamma", "tweedie"}
)

const (
	lgbSupportedObjectives = "binary, multiclass, regression, regression_l1, huber, fair, quantile, mape, poisson, gamma, tweedie"
	// lgbZero is LightGBM's kZeroThreshold: the float32 1e-35 as a double.
	lgbZero = float64(float32(1e-35))
	// lgbMaxFeatures bounds the row width, as for XGBoost (dense rows).
	lgbMaxFeatures = xgbMaxFeatures
	// lgbMaxClasses bounds num_class.
	lgbMaxClasses = xgbMaxClasses
	// lgbMaxNodes bounds the nodes of a model (node indices are int32).
	lgbMaxNodes = xgbMaxNodes
)

// The missing types of decision_type's bits 2-3.
const (
	lgbMissingNone = 0
	lgbMissingZero = 1
	lgbMissingNaN  = 2
)

// LightGBMModel is a gradient-boosted tree model (or random forest) trained
// by LightGBM, read by LoadLightGBM. It implements Model: PredictProba and
// Predict follow the conventions of Gyre's own models (class probabilities
// in Signature().Classes order; the class index or the value), PredictRaw
// gives LightGBM's raw scores. It is immutable and safe for concurrent use.
// It cannot be saved with Save: its artifact is the LightGBM file it was
// read from.
type LightGBMModel struct {
	objective string // LightGBM's objective line, e.g. "binary sigmoid:1"
	name      string // its first word, e.g. "binary"
	sigmoid   float64
	expOutput bool
	average   bool
	numTrees  int
	iters     int
	sig       Signature
	info      ModelInfo
	outs      int
	nIn       int
	// zeroCols lists, per derived input (at nIn+k), the feature it copies
	// with zeros made NaN; empty for most models.
	zeroCols []int32
	baseline []float64
	f        *forest
}

var _ Model = (*LightGBMModel)(nil)

// LoadLightGBM reads a LightGBM model from the bytes of a text model file
// (Booster.save_model, the CLI's output_model, or model_to_string). The
// objective must be binary, multiclass or one of the regression objectives
// (regression, regression_l1, huber, fair, quantile, mape, poisson, gamma,
// tweedie); boosting gbdt, dart, goss or rf. Anything else is an
// *ArtifactError naming what is not supported.
//
// The signature takes the model's feature_names (LightGBM writes Column_0,
// Column_1, ... when it was given none), all numeric; classifiers have the
// classes "0", "1", ... (LightGBM's labels). Use WithSignature to give the
// names of the pipeline's schema.
func LoadLightGBM(data []byte) (*LightGBMModel, error) {
	doc, err := parseLightGBM(data)
	if err != nil {
		return nil, err
	}
	return buildLightGBM(doc)
}

// Signature returns the model's inputs and outputs.
func (m *LightGBMModel) Signature() Signature { return m.sig.clone() }

// Info returns the model's provenance: algorithm "lightgbm", and as params
// the objective (LightGBM's line, e.g. "binary sigmoid:1"), the number of
// classes, trees and iterations, average_output and the format version.
func (m *LightGBMModel) Info() ModelInfo { return m.info.clone() }

// Objective returns the objective's name, e.g. "binary" or "multiclass".
func (m *LightGBMModel) Objective() string { return m.name }

// NumTrees returns the number of trees in the model file.
func (m *LightGBMModel) NumTrees() int { return m.numTrees }

// PredictRaw returns LightGBM's raw scores per row (Booster.predict with
// raw_score=True): one per class for multiclass, else one.
func (m *LightGBMModel) PredictRaw(x [][]float64) [][]float64 {
	flat := m.rawRows(x)
	out := make([][]float64, len(x))
	for i := range out {
		out[i] = flat[i*m.outs : (i+1)*m.outs : (i+1)*m.outs]
	}
	return out
}

// rawRows computes the raw scores of rows, flat (len(x) × outputs).
func (m *LightGBMModel) rawRows(x [][]float64) []float64 {
	return m.scores(len(x), func(i int) []float64 {
		if len(x[i]) != m.nIn {
			return nil
		}
		return x[i]
	})
}

// PredictRawFlat returns the raw scores (as PredictRaw) of nrows rows given
// row-major in one slice, nrows × inputs values, as nrows × outputs values,
// row-major; nil if len(x) is not nrows × inputs.
func (m *LightGBMModel) PredictRawFlat(x []float64, nrows int) []float64 {
	p := m.nIn
	if nrows < 0 || len(x) != nrows*p {
		return nil
	}
	return m.scores(nrows, func(i int) []float64 { return x[i*p : (i+1)*p] })
}

// PredictProba returns the class probabilities per row ([1-p, p] for
// binary, the softmax for multiclass), or nil for regression.
func (m *LightGBMModel) PredictProba(x [][]float64) [][]float64 {
	if m.sig.Task != Classification {
		return nil
	}
	raw := m.averaged(m.rawRows(x))
	k := len(m.sig.Classes)
	flat := raw
	if m.outs == 1 {
		flat = make([]float64, len(x)*k)
	}
	out := make([][]float64, len(x))
	for i := range out {
		o := flat[i*k : (i+1)*k : (i+1)*k]
		m.proba(raw[i*m.outs:(i+1)*m.outs], o)
		out[i] = o
	}
	return out
}

// Predict returns the most probable class index (classification; ties go
// to the lower index) or the predicted value (regression: LightGBM's
// Booster.predict) per row.
func (m *LightGBMModel) Predict(x [][]float64) []float64 {
	raw := m.averaged(m.rawRows(x))
	out := make([]float64, len(x))
	var buf []float64
	if m.sig.Task == Classification {
		buf = make([]float64, len(m.sig.Classes))
	}
	for i := range out {
		r := raw[i*m.outs : (i+1)*m.outs]
		switch {
		case len(x[i]) != m.nIn:
			out[i] = math.NaN()
		case m.sig.Task == Regression:
			out[i] = m.value(r[0])
		default:
			m.proba(r, buf)
			out[i] = float64(argmax(buf))
		}
	}
	return out
}

// value is a regression model's prediction from its raw score.
func (m *LightGBMModel) value(raw float64) float64 {
	if m.expOutput {
		return math.Exp(raw)
	}
	return raw
}

// proba writes the class probabilities of one row's (averaged) raw scores
// into o, which may be raw itself.
func (m *LightGBMModel) proba(raw, o []float64) {
	if m.outs == 1 {
		// BinaryLogloss::ConvertOutput.
		p := 1 / (1 + math.Exp(-m.sigmoid*raw[0]))
		o[0], o[1] = 1-p, p
		return
	}
	copy(o, raw)
	softmaxInPlace(o) // Common::Softmax: max-shifted, the same operations
}

// scores computes the raw scores of n rows (row(i) of width nIn, or nil
// for a row of the wrong width, which gets NaN scores), flat.
func (m *LightGBMModel) scores(n int, row func(i int) []float64) []float64 {
	raw := make([]float64, n*m.outs)
	if len(m.zeroCols) == 0 {
		m.f.scoreRows(raw, n, m.baseline, row)
	} else {
		// Rows with the derived inputs appended (see the comment at the
		// top): feature j's copy with every zero, and NaN, made NaN.
		p, w := m.nIn, m.nIn+len(m.zeroCols)
		wide := make([]float64, n*w)
		ok := make([]bool, n)
		forChunks(n, predictChunk, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				x := row(i)
				if x == nil {
					continue
				}
				ok[i] = true
				dst := wide[i*w : (i+1)*w]
				copy(dst, x)
				for k, j := range m.zeroCols {
					v := x[j]
					if v >= -lgbZero && v <= lgbZero {
						v = math.NaN()
					}
					dst[p+k] = v
				}
			}
		})
		m.f.scoreRows(raw, n, m.baseline, func(i int) []float64 {
			if !ok[i] {
				return nil
			}
			return wide[i*w : (i+1)*w]
		})
	}
	return raw
}

// averaged divides a random forest's raw scores (flat, owned by the caller)
// by the number of iterations, in place, as GBDT::Predict does before
// converting them (the raw scores themselves, GBDT::PredictRaw, are sums);
// other models' scores are returned unchanged.
func (m *LightGBMModel) averaged(raw []float64) []float64 {
	if m.average {
		d := float64(m.iters)
		for k := range raw {
			raw[k] /= d
		}
	}
	return raw
}

// WithSignature returns the model with another signature, e.g. one built
// from the pipeline's schema: it must have as many inputs as the model has
// features (taken in order: input j is LightGBM's feature j), the model's
// task, and for a classifier as many classes as the model has.
func (m *LightGBMModel) WithSignature(sig Signature) (*LightGBMModel, error) {
	own := m.sig
	if len(sig.Inputs) != len(own.Inputs) {
		return nil, artifactErr("lightgbm: the signature has %d inputs, the model %d features", len(sig.Inputs), len(own.Inputs))
	}
	if sig.Task != own.Task {
		return nil, artifactErr("lightgbm: the signature's task is %q, the model's (%s) %q", sig.Task, m.name, own.Task)
	}
	if len(sig.Classes) != len(own.Classes) {
		return nil, artifactErr("lightgbm: the signature has %d classes, the model %d", len(sig.Classes), len(own.Classes))
	}
	seen := make(map[string]bool, len(sig.Inputs))
	for _, in := range sig.Inputs {
		if in.Name == "" || seen[in.Name] {
			return nil, artifactErr("lightgbm: the signature's input names must be unique and not empty (%q)", in.Name)
		}
		seen[in.Name] = true
	}
	c := *m
	c.sig = sig.clone()
	return &c, nil
}

// lgbDoc is a parsed model file: the header's key=value lines, the trees,
// and the parameters section.
type lgbDoc struct {
	header map[string]string
	trees  []lgbTree
	params map[string]string
}

// lgbTree is one "Tree=" block's key=value lines.
type lgbTree struct {
	index  int
	fields map[string]string
}

func lgbUnsupported(format string, args ...any) error {
	return artifactErr("lightgbm: not supported: "+format, args...)
}

// parseLightGBM splits the text into its sections, as GBDT::LoadModelFromString
// reads them.
func parseLightGBM(data []byte) (*lgbDoc, error) {
	text := string(bytes.TrimLeft(data, " \t\r\n"))
	if text == "" {
		return nil, artifactErr("lightgbm: the model file is empty")
	}
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	if lines[0] != "tree" {
		return nil, artifactErr("lightgbm: not a LightGBM text model: the first line is %q, not \"tree\" (LightGBM's JSON dump, dump_model, cannot be loaded: use save_model)", lgbClip(lines[0]))
	}
	doc := &lgbDoc{header: map[string]string{}, params: map[string]string{}}
	i := 1
	for ; i < len(lines) && !strings.HasPrefix(lines[i], "Tree="); i++ {
		l := lines[i]
		if l == "" {
			continue
		}
		if l == "end of trees" {
			break
		}
		k, v, _ := strings.Cut(l, "=")
		if _, dup := doc.header[k]; dup {
			return nil, artifactErr("lightgbm: header line %q appears twice", k)
		}
		doc.header[k] = v
	}
	for i < len(lines) && strings.HasPrefix(lines[i], "Tree=") {
		idx, err := strconv.Atoi(strings.TrimPrefix(lines[i], "Tree="))
		if err != nil || idx != len(doc.trees) {
			return nil, artifactErr("lightgbm: line %d: %q where Tree=%d was expected", i+1, lgbClip(lines[i]), len(doc.trees))
		}
		t := lgbTree{index: idx, fields: map[string]string{}}
		for i++; i < len(lines) && lines[i] != ""; i++ {
			k, v, ok := strings.Cut(lines[i], "=")
			if !ok {
				return nil, artifactErr("lightgbm: tree %d: line %q is not key=value", idx, lgbClip(lines[i]))
			}
			if _, dup := t.fields[k]; dup {
				return nil, artifactErr("lightgbm: tree %d: %q appears twice", idx, k)
			}
			t.fields[k] = v
		}
		doc.trees = append(doc.trees, t)
		for i < len(lines) && lines[i] == "" {
			i++
		}
	}
	if i >= len(lines) || lines[i] != "end of trees" {
		where := "the end of the file"
		if i < len(lines) {
			where = strconv.Quote(lgbClip(lines[i]))
		}
		return nil, artifactErr("lightgbm: %s where \"end of trees\" was expected: the file is cut short or damaged", where)
	}
	// The parameters section: "[name: value]" lines.
	in := false
	for _, l := range lines[i+1:] {
		switch {
		case l == "parameters:":
			in = true
		case l == "end of parameters":
			in = false
		case in && strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			k, v, ok := strings.Cut(l[1:len(l)-1], ": ")
			if ok {
				doc.params[k] = v
			}
		}
	}
	return doc, nil
}

// lgbClip shortens a line quoted in an error.
func lgbClip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// lgbInt parses a header or tree integer.
func lgbInt(what, s string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, artifactErr("lightgbm: %s %q is not an integer", what, lgbClip(s))
	}
	return v, nil
}

// lgbObjective is what an objective line means for prediction.
type lgbObjective struct {
	name      string
	task      Task
	outs      int
	sigmoid   float64
	expOutput bool
}

// parseLGBObjective reads the objective line, e.g. "binary sigmoid:1",
// "multiclass num_class:3", "regression", "quantile" (ObjectiveFunction's
// ToString).
func parseLGBObjective(line string, numClass int) (lgbObjective, error) {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return lgbObjective{}, lgbUnsupported("a model without an objective (trained with a custom objective function)")
	}
	o := lgbObjective{name: fields[0], task: Regression, outs: 1}
	params := map[string]string{}
	var flags []string
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(f, ":"); ok {
			params[k] = v
		} else {
			flags = append(flags, f)
		}
	}
	switch {
	case o.name == "binary":
		o.task, o.sigmoid = Classification, 1
		if s, ok := params["sigmoid"]; ok {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || !(v > 0) || math.IsInf(v, 0) {
				return o, artifactErr("lightgbm: objective %q: sigmoid %q is not a positive number", line, s)
			}
			o.sigmoid = v
		}
		if numClass != 1 {
			return o, artifactErr("lightgbm: objective binary with num_class %d", numClass)
		}
	case o.name == "multiclass":
		o.task = Classification
		k, err := lgbInt("num_class of the objective", params["num_class"])
		if err != nil {
			return o, err
		}
		if k != numClass || k < 2 || k > lgbMaxClasses {
			return o, artifactErr("lightgbm: objective %q with num_class %d (2 to %d classes, the same in both)", line, numClass, lgbMaxClasses)
		}
		o.outs = k
	case o.name == "regression" && len(flags) > 0 && flags[0] == "sqrt":
		return o, lgbUnsupported("objective %q (reg_sqrt)", line)
	case lgbIn(o.name, lgbIdentityObjectives), lgbIn(o.name, lgbExpObjectives):
		o.expOutput = lgbIn(o.name, lgbExpObjectives)
		if numClass != 1 {
			return o, artifactErr("lightgbm: objective %s with num_class %d", o.name, numClass)
		}
	default:
		return o, lgbUnsupported("objective %q: supported are %s", line, lgbSupportedObjectives)
	}
	return o, nil
}

func lgbIn(s string, list []string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// buildLightGBM validates the document and compiles its trees.
func buildLightGBM(doc *lgbDoc) (*LightGBMModel, error) {
	h := doc.header
	for _, k := range []string{"version", "num_class", "max_feature_idx", "feature_names"} {
		if _, ok := h[k]; !ok {
			return nil, artifactErr("lightgbm: the header has no %s", k)
		}
	}
	numClass, err := lgbInt("num_class", h["num_class"])
	if err != nil {
		return nil, err
	}
	perIter := numClass
	if s, ok := h["num_tree_per_iteration"]; ok {
		if perIter, err = lgbInt("num_tree_per_iteration", s); err != nil {
			return nil, err
		}
	}
	maxIdx, err := lgbInt("max_feature_idx", h["max_feature_idx"])
	if err != nil {
		return nil, err
	}
	nIn := maxIdx + 1
	if nIn < 1 {
		return nil, artifactErr("lightgbm: max_feature_idx %d: the model has no features", maxIdx)
	}
	if nIn > lgbMaxFeatures {
		return nil, lgbUnsupported("max_feature_idx %d: more than %d features", maxIdx, lgbMaxFeatures)
	}
	objLine, ok := h["objective"]
	if !ok {
		return nil, lgbUnsupported("a model without an objective (trained with a custom objective function)")
	}
	obj, err := parseLGBObjective(objLine, numClass)
	if err != nil {
		return nil, err
	}
	if perIter != obj.outs {
		return nil, artifactErr("lightgbm: num_tree_per_iteration %d for objective %q (%d expected)", perIter, objLine, obj.outs)
	}
	if v := doc.params["linear_tree"]; v != "" && v != "0" {
		return nil, lgbUnsupported("linear trees (linear_tree: %s)", v)
	}
	_, average := h["average_output"]
	sig, err := lgbSignature(h["feature_names"], nIn, obj)
	if err != nil {
		return nil, err
	}
	nTrees := len(doc.trees)
	if nTrees == 0 {
		return nil, artifactErr("lightgbm: the model has no trees")
	}
	if s, ok := h["tree_sizes"]; ok && len(strings.Fields(s)) != nTrees {
		return nil, artifactErr("lightgbm: tree_sizes lists %d trees, the file has %d", len(strings.Fields(s)), nTrees)
	}
	if nTrees%obj.outs != 0 {
		return nil, artifactErr("lightgbm: %d trees is not a whole number of iterations of %d trees", nTrees, obj.outs)
	}
	nodes, roots, zeroCols, err := lgbTrees(doc.trees, nIn)
	if err != nil {
		return nil, err
	}
	f := compileForest(nodes, roots, obj.outs, nIn+len(zeroCols))
	iters := nTrees / obj.outs
	boosting := doc.params["boosting"]
	if boosting == "" {
		boosting = "gbdt"
	}
	info := ModelInfo{
		Algorithm: "lightgbm",
		Params: Params{
			"objective":     strings.TrimSpace(objLine),
			"boosting":      boosting,
			"numClass":      numClass,
			"numTrees":      nTrees,
			"averageOutput": average,
			"version":       h["version"],
			"format":        "text",
		},
		Training: TrainingInfo{Iterations: iters},
	}
	return &LightGBMModel{
		objective: strings.TrimSpace(objLine), name: obj.name, sigmoid: obj.sigmoid, expOutput: obj.expOutput,
		average: average, numTrees: nTrees, iters: iters, sig: sig, info: info,
		outs: obj.outs, nIn: nIn, zeroCols: zeroCols, baseline: make([]float64, obj.outs), f: f,
	}, nil
}

// lgbSignature builds the default signature of a model.
func lgbSignature(names string, nIn int, obj lgbObjective) (Signature, error) {
	list := strings.Split(names, " ")
	if len(list) != nIn {
		return Signature{}, artifactErr("lightgbm: %d feature_names for max_feature_idx %d", len(list), nIn-1)
	}
	sig := Signature{Task: obj.task, Inputs: make([]Input, nIn)}
	seen := make(map[string]bool, nIn)
	for j, name := range list {
		if name == "" || seen[name] {
			return Signature{}, artifactErr("lightgbm: feature name %q is empty or repeated", name)
		}
		seen[name] = true
		sig.Inputs[j] = Input{Name: name, Type: Numeric}
	}
	if obj.task == Classification {
		sig.Classes = make([]string, max(obj.outs, 2))
		for c := range sig.Classes {
			sig.Classes[c] = strconv.Itoa(c)
		}
	}
	return sig, nil
}

// lgbFields returns the n space-separated values of a tree's key.
func lgbFields(t *lgbTree, key string, n int) ([]string, error) {
	s, ok := t.fields[key]
	if !ok {
		return nil, artifactErr("lightgbm: tree %d has no %s", t.index, key)
	}
	f := strings.Fields(s)
	if len(f) != n {
		return nil, artifactErr("lightgbm: tree %d: %s has %d values, %d expected", t.index, key, len(f), n)
	}
	return f, nil
}

// lgbFloats parses n space-separated float64 values.
func lgbFloats(t *lgbTree, key string, n int) ([]float64, error) {
	f, err := lgbFields(t, key, n)
	if err != nil {
		return nil, err
	}
	out := make([]float64, n)
	for i, v := range f {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(x) {
			return nil, artifactErr("lightgbm: tree %d: %s value %q is not a number", t.index, key, lgbClip(v))
		}
		out[i] = x
	}
	return out, nil
}

// lgbInts parses n space-separated integers.
func lgbInts(t *lgbTree, key string, n int) ([]int, error) {
	f, err := lgbFields(t, key, n)
	if err != nil {
		return nil, err
	}
	out := make([]int, n)
	for i, v := range f {
		x, err := strconv.Atoi(v)
		if err != nil {
			return nil, artifactErr("lightgbm: tree %d: %s value %q is not an integer", t.index, key, lgbClip(v))
		}
		out[i] = x
	}
	return out, nil
}

// lgbThreshold returns the T for which "right when x > T", on any float64
// x that is not NaN, takes LightGBM's branch for a numerical threshold
// thr of missing type None or NaN: LightGBM's dense predictor turns an x
// with |x| ≤ kZeroThreshold into 0, then goes left when x ≤ thr. Only a
// thr within that band moves: the band goes the way 0 does.
func lgbThreshold(thr float64) float64 {
	switch {
	case thr >= -lgbZero && thr < 0:
		return math.Nextafter(-lgbZero, math.Inf(-1)) // right from -kZeroThreshold up
	case thr >= 0 && thr < lgbZero:
		return lgbZero // left up to kZeroThreshold
	}
	return thr
}

// lgbTrees validates the trees and turns them into nodes (each tree's
// internal node i at the tree's base + i, its leaf l after them) and their
// roots, in file order. zeroCols lists the features that missing-type-Zero
// nodes read through a derived input (at nIn + k), see lgbNode.
func lgbTrees(trees []lgbTree, nIn int) (nodes []node, roots []int32, zeroCols []int32, err error) {
	zeroCol := map[int32]int32{} // feature -> derived input
	total := 0
	for t := range trees {
		tr := &trees[t]
		nl, err := lgbInt(fmt.Sprintf("tree %d: num_leaves", t), tr.fields["num_leaves"])
		if err != nil {
			return nil, nil, nil, err
		}
		if nl < 1 || nl > lgbMaxNodes/2 {
			return nil, nil, nil, artifactErr("lightgbm: tree %d: num_leaves %d", t, nl)
		}
		if total += 2*nl - 1; total > lgbMaxNodes {
			return nil, nil, nil, artifactErr("lightgbm: more than %d nodes", lgbMaxNodes)
		}
		if s := tr.fields["num_cat"]; s != "" {
			nc, err := lgbInt(fmt.Sprintf("tree %d: num_cat", t), s)
			if err != nil {
				return nil, nil, nil, err
			}
			if nc != 0 {
				return nil, nil, nil, lgbUnsupported("categorical splits (tree %d: num_cat %d)", t, nc)
			}
		}
		if s := tr.fields["is_linear"]; s != "" && s != "0" {
			return nil, nil, nil, lgbUnsupported("linear trees (tree %d: is_linear %s)", t, s)
		}
	}
	// No preallocation from num_leaves: a damaged file could claim any
	// number; each tree's arrays are checked against it before they grow
	// nodes.
	var stack []int32
	var seen []bool
	for t := range trees {
		tr := &trees[t]
		fail := func(format string, args ...any) error {
			return artifactErr("lightgbm: tree %d: %s", t, fmt.Sprintf(format, args...))
		}
		nl, _ := strconv.Atoi(strings.TrimSpace(tr.fields["num_leaves"]))
		leaves, err := lgbFloats(tr, "leaf_value", nl)
		if err != nil {
			return nil, nil, nil, err
		}
		for l, v := range leaves {
			if math.IsInf(v, 0) {
				return nil, nil, nil, fail("leaf %d: value %v is not finite", l, v)
			}
		}
		base := int32(len(nodes))
		roots = append(roots, base)
		if nl == 1 {
			// Tree::Predict of a single leaf: its value.
			nodes = append(nodes, node{feature: -1, value: leaves[0]})
			continue
		}
		ni := nl - 1
		feat, err := lgbInts(tr, "split_feature", ni)
		if err != nil {
			return nil, nil, nil, err
		}
		thr, err := lgbFloats(tr, "threshold", ni)
		if err != nil {
			return nil, nil, nil, err
		}
		lc, err := lgbInts(tr, "left_child", ni)
		if err != nil {
			return nil, nil, nil, err
		}
		rc, err := lgbInts(tr, "right_child", ni)
		if err != nil {
			return nil, nil, nil, err
		}
		dt := make([]int, ni) // Tree: decision_type defaults to 0
		if _, ok := tr.fields["decision_type"]; ok {
			if dt, err = lgbInts(tr, "decision_type", ni); err != nil {
				return nil, nil, nil, err
			}
		}
		for range ni {
			nodes = append(nodes, node{})
		}
		for _, v := range leaves {
			nodes = append(nodes, node{feature: -1, value: v})
		}
		// Every internal node and leaf is reached exactly once from the root.
		seen = append(seen[:0], make([]bool, ni+nl)...)
		stack = append(stack[:0], 0)
		seen[0] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			var kids [2]int32
			for s, c := range []int{lc[i], rc[i]} {
				k := c // internal node c, or leaf ^c after the internal nodes
				if c < 0 {
					k = ni + ^c
				}
				if c >= ni || c < -nl || c == 0 || seen[k] {
					return nil, nil, nil, fail("node %d: child %d is out of range or reached twice", i, c)
				}
				seen[k] = true
				kids[s] = int32(k)
				if c > 0 {
					stack = append(stack, int32(c))
				}
			}
			nd, zf, err := lgbNode(feat[i], thr[i], dt[i], nIn)
			if err != nil {
				return nil, nil, nil, fail("node %d: %v", i, err)
			}
			if zf >= 0 {
				col, ok := zeroCol[zf]
				if !ok {
					col = int32(nIn + len(zeroCols))
					zeroCol[zf] = col
					zeroCols = append(zeroCols, zf)
				}
				nd.feature = col
			}
			nd.left, nd.right = base+kids[0], base+kids[1]
			nodes[base+i] = nd
		}
		for k, ok := range seen {
			if !ok {
				return nil, nil, nil, fail("node %d is not reached from the root", k)
			}
		}
	}
	return nodes, roots, zeroCols, nil
}

// lgbNode maps one numerical split onto a node (children not set): go
// left when x ≤ threshold, NaN left when missLeft. zf is the feature whose
// derived input (zeros made NaN) the node reads instead, or -1.
func lgbNode(feat int, thr float64, dt int, nIn int) (nd node, zf int32, err error) {
	if feat < 0 || feat >= nIn {
		return node{}, -1, fmt.Errorf("splits on feature %d of %d", feat, nIn)
	}
	if dt < 0 || dt > 15 {
		return node{}, -1, fmt.Errorf("decision_type %d is not a LightGBM decision type", dt)
	}
	if dt&1 != 0 {
		return node{}, -1, lgbUnsupported("categorical splits (decision_type %d on feature %d)", dt, feat)
	}
	defaultLeft := dt&2 != 0
	nd = node{feature: int32(feat)}
	switch dt >> 2 {
	case lgbMissingNone:
		// NaN is taken as 0: it goes where 0 goes.
		nd.threshold, nd.missLeft = lgbThreshold(thr), 0 <= thr
	case lgbMissingNaN:
		nd.threshold, nd.missLeft = lgbThreshold(thr), defaultLeft
	case lgbMissingZero:
		// Zeros (the band) and NaN go to the default side.
		nd.threshold, nd.missLeft = thr, defaultLeft
		if defaultLeft && thr >= lgbZero || !defaultLeft && thr < -lgbZero {
			return nd, -1, nil // the default side holds the band already
		}
		return nd, int32(feat), nil
	default:
		return node{}, -1, fmt.Errorf("decision_type %d has missing type 3, which LightGBM does not define", dt)
	}
	return nd, -1, nil
}
