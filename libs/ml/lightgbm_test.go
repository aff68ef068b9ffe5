package ml

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The fixtures under testdata/lightgbm were written by
// scripts/lightgbm_fixtures.py with LightGBM 4.6.0.99 (the lightgbm Python
// package and its lib_lightgbm, built from LightGBM's sources: neither
// Debian nor any registry this project reaches has a LightGBM package):
// text models saved by Booster.save_model, and what LightGBM predicts for
// held-back rows (with NaNs) and for rows on and around split thresholds
// and LightGBM's zero band. The runtime must match them to 1e-6;
// TestLightGBMLiveReference reruns the script where lightgbm can be
// imported. The spec-built tests below (TestLightGBMSpecTrees) check every
// decision type against a straightforward walk written from LightGBM's
// Tree::NumericalDecision, independently of the fixtures.

const lgbFixtures = "testdata/lightgbm"

var lgbCases = []string{"binary", "multiclass", "regression", "zero", "nomissing", "rf", "dart", "deep", "quantile"}

// lgbTolerance is the largest absolute difference from LightGBM allowed.
const lgbTolerance = 1e-6

// lgbExpect is a NAME.expect.json file.
type lgbExpect struct {
	LightGBM   string      `json:"lightgbm"`
	Objective  string      `json:"objective"`
	NumFeature int         `json:"num_feature"`
	NumOutput  int         `json:"num_output"`
	Rows       [][]any     `json:"rows"`
	Raw        [][]float64 `json:"raw"`
	Output     [][]float64 `json:"output"`
}

func readLGBExpect(t testing.TB, path string) (*lgbExpect, [][]float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var e lgbExpect
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	rows := make([][]float64, len(e.Rows))
	for i, r := range e.Rows {
		rows[i] = make([]float64, len(r))
		for j, v := range r {
			switch v := v.(type) {
			case nil:
				rows[i][j] = math.NaN()
			case float64:
				rows[i][j] = v
			case string:
				if v != "inf" && v != "-inf" {
					t.Fatalf("%s: row %d: cell %q", path, i, v)
				}
				rows[i][j] = math.Inf(map[string]int{"inf": 1, "-inf": -1}[v])
			default:
				t.Fatalf("%s: row %d: cell %v", path, i, v)
			}
		}
	}
	if len(e.Raw) != len(rows) || len(e.Output) != len(rows) {
		t.Fatalf("%s: %d rows, %d raw scores, %d outputs", path, len(rows), len(e.Raw), len(e.Output))
	}
	return &e, rows
}

// lgbDiff is how far a model is from LightGBM's predictions.
type lgbDiff struct {
	raw, output   float64
	exact, values int // raw scores bit-identical / compared
	rows          int
}

func loadLGBFile(t testing.TB, path string) *LightGBMModel {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadLightGBM(data)
	if err != nil {
		t.Fatalf("LoadLightGBM(%s): %v", path, err)
	}
	return m
}

// compareLightGBM loads dir/name.txt and compares it with
// dir/name.expect.json.
func compareLightGBM(t *testing.T, dir, name string) lgbDiff {
	t.Helper()
	e, rows := readLGBExpect(t, filepath.Join(dir, name+".expect.json"))
	m := loadLGBFile(t, filepath.Join(dir, name+".txt"))
	if m.Objective() != e.Objective {
		t.Errorf("objective %q, want %q", m.Objective(), e.Objective)
	}
	sig := m.Signature()
	if len(sig.Inputs) != e.NumFeature {
		t.Fatalf("%d inputs, want %d", len(sig.Inputs), e.NumFeature)
	}
	d := lgbDiff{rows: len(rows)}
	raw := m.PredictRaw(rows)
	for i := range rows {
		if len(raw[i]) != e.NumOutput || len(e.Raw[i]) != e.NumOutput {
			t.Fatalf("row %d: %d raw scores, want %d (expected file has %d)", i, len(raw[i]), e.NumOutput, len(e.Raw[i]))
		}
		for k, got := range raw[i] {
			want := e.Raw[i][k]
			d.raw = max(d.raw, math.Abs(got-want))
			d.values++
			if got == want {
				d.exact++
			}
			if !(math.Abs(got-want) <= lgbTolerance) {
				t.Errorf("%s row %d output %d: raw score %v, LightGBM %v (row %v)", name, i, k, got, want, rows[i])
			}
		}
	}
	flat := make([]float64, 0, len(rows)*e.NumFeature)
	for _, r := range rows {
		flat = append(flat, r...)
	}
	rawFlat := m.PredictRawFlat(flat, len(rows))
	for i := range rows {
		for k := range raw[i] {
			if rawFlat[i*e.NumOutput+k] != raw[i][k] {
				t.Fatalf("PredictRawFlat row %d differs from PredictRaw", i)
			}
		}
	}
	var got [][]float64
	switch sig.Task {
	case Regression:
		if m.PredictProba(rows) != nil {
			t.Error("PredictProba of a regression model is not nil")
		}
		for _, v := range m.Predict(rows) {
			got = append(got, []float64{v})
		}
	default:
		proba := m.PredictProba(rows)
		pred := m.Predict(rows)
		for i, p := range proba {
			if s := floatsSum(p); math.Abs(s-1) > 1e-12 {
				t.Fatalf("row %d: probabilities %v add up to %v", i, p, s)
			}
			if int(pred[i]) != argmax(p) {
				t.Fatalf("row %d: Predict %v, PredictProba %v", i, pred[i], p)
			}
			if len(p) == 2 {
				p = p[1:] // LightGBM gives P(class 1)
			}
			got = append(got, p)
		}
	}
	for i := range rows {
		if len(got[i]) != len(e.Output[i]) {
			t.Fatalf("row %d: %d outputs, LightGBM %d", i, len(got[i]), len(e.Output[i]))
		}
		for k, v := range got[i] {
			want := e.Output[i][k]
			d.output = max(d.output, math.Abs(v-want))
			if !(math.Abs(v-want) <= lgbTolerance) {
				t.Errorf("%s row %d output %d: %v, LightGBM %v", name, i, k, v, want)
			}
		}
	}
	return d
}

func floatsSum(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}

func TestLightGBMMatchesReference(t *testing.T) {
	t.Parallel()
	for _, name := range lgbCases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := compareLightGBM(t, lgbFixtures, name)
			t.Logf("%s, %d rows: max |Δ| raw %.3g (%d of %d bit-identical), output %.3g", name, d.rows, d.raw, d.exact, d.values, d.output)
		})
	}
}

// TestLightGBMFixturesCoverTheFormat: the fixtures hold what the runtime
// must get right, so that TestLightGBMMatchesReference means something:
// every missing type with both default sides, thresholds at LightGBM's
// zero band, derived zero inputs, average_output, a multiclass model,
// deep trees, and edge rows with NaN, infinities and values in the band.
func TestLightGBMFixturesCoverTheFormat(t *testing.T) {
	t.Parallel()
	types := map[int]bool{}
	band := false
	for _, name := range lgbCases {
		b, err := os.ReadFile(filepath.Join(lgbFixtures, name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "decision_type="); ok {
				for _, f := range strings.Fields(v) {
					n, _ := strconv.Atoi(f)
					types[n] = true
				}
			}
			if v, ok := strings.CutPrefix(l, "threshold="); ok {
				for _, f := range strings.Fields(v) {
					x, _ := strconv.ParseFloat(f, 64)
					band = band || math.Abs(x) == lgbZero
				}
			}
		}
	}
	// None (0/2), Zero (4/6), NaN (8/10); default left is bit 1.
	for _, dt := range []int{2, 4, 6, 8, 10} {
		if !types[dt] {
			t.Errorf("no fixture has decision_type %d", dt)
		}
	}
	if !band {
		t.Error("no fixture has a threshold at ±kZeroThreshold")
	}
	zero := loadLGBFile(t, filepath.Join(lgbFixtures, "zero.txt"))
	if len(zero.zeroCols) == 0 {
		t.Error("the zero fixture needs no derived zero inputs")
	}
	if rf := loadLGBFile(t, filepath.Join(lgbFixtures, "rf.txt")); !rf.average {
		t.Error("the rf fixture has no average_output")
	}
	deep := loadLGBFile(t, filepath.Join(lgbFixtures, "deep.txt"))
	if !slices.Contains(deep.f.steps, -1) {
		t.Error("the deep fixture has no tree deeper than the fixed-step walk")
	}
	specials := map[string]bool{}
	for _, name := range lgbCases {
		_, rows := readLGBExpect(t, filepath.Join(lgbFixtures, name+".expect.json"))
		for _, r := range rows {
			for _, v := range r {
				switch {
				case math.IsNaN(v):
					specials["NaN"] = true
				case math.IsInf(v, 0):
					specials["Inf"] = true
				case v != 0 && math.Abs(v) < lgbZero:
					specials["in band"] = true
				case math.Abs(v) == lgbZero:
					specials["band edge"] = true
				case v == 0 && math.Signbit(v):
					specials["-0"] = true
				}
			}
		}
	}
	for _, s := range []string{"NaN", "Inf", "in band", "band edge", "-0"} {
		if !specials[s] {
			t.Errorf("no fixture row has a %s value", s)
		}
	}
}

// lightgbmPython returns /usr/bin/python3 when it can import lightgbm and
// sklearn (on PYTHONPATH: LightGBM has no Debian package). Without it the
// test is skipped, even under CI, which cannot install it.
func lightgbmPython(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	out, err := exec.Command(py, "-c", "import lightgbm, sklearn; print(lightgbm.__version__)").CombinedOutput()
	if err != nil {
		t.Skipf("%s cannot import lightgbm and sklearn (%v: %s): LightGBM has no Debian package; put a lightgbm Python package on PYTHONPATH to rerun scripts/lightgbm_fixtures.py",
			py, err, bytes.TrimSpace(out))
	}
	return py
}

// TestLightGBMLiveReference reruns scripts/lightgbm_fixtures.py with the
// installed LightGBM and compares the runtime with what it predicts now.
// With the same LightGBM version as the checked-in fixtures, the script
// must also reproduce them byte for byte (seeded, one thread,
// deterministic), so fixtures cannot drift from the script that documents
// them.
func TestLightGBMLiveReference(t *testing.T) {
	py := lightgbmPython(t)
	dir := t.TempDir()
	cmd := exec.Command(py, filepath.Join("..", "..", "scripts", "lightgbm_fixtures.py"), "--out", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("lightgbm_fixtures.py: %v\n%s", err, out)
	}
	for _, name := range lgbCases {
		t.Run(name, func(t *testing.T) {
			d := compareLightGBM(t, dir, name)
			t.Logf("max |Δ| raw %.3g, output %.3g", d.raw, d.output)
		})
	}
	live, _ := readLGBExpect(t, filepath.Join(dir, "binary.expect.json"))
	fixed, _ := readLGBExpect(t, filepath.Join(lgbFixtures, "binary.expect.json"))
	if live.LightGBM != fixed.LightGBM {
		t.Logf("installed LightGBM %s, fixtures written by %s: not comparing bytes", live.LightGBM, fixed.LightGBM)
		return
	}
	files := []string{"categorical.txt", "linear.txt"}
	for _, name := range lgbCases {
		files = append(files, name+".txt", name+".expect.json")
	}
	for _, f := range files {
		a, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(lgbFixtures, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from what scripts/lightgbm_fixtures.py writes now: regenerate the fixtures", f)
		}
	}
}

// lgbRefTree is a tree as the text format states it, for the reference
// walk.
type lgbRefTree struct {
	feat        []int
	thr         []float64
	dt          []int
	left, right []int
	leaves      []float64
}

// lgbRefLeafValue is LightGBM's prediction for one tree, written
// straight from its sources, independently of the runtime: the dense
// predictor's zeroing of |x| ≤ kZeroThreshold (c_api.cpp,
// RowFunctionFromDenseMatric), then Tree::GetLeaf with
// Tree::NumericalDecision.
func lgbRefLeafValue(tr *lgbRefTree, x []float64) float64 {
	const kZeroThreshold = float64(float32(1e-35))
	if len(tr.leaves) == 1 {
		return tr.leaves[0]
	}
	node := 0
	for node >= 0 {
		fval := x[tr.feat[node]]
		if math.Abs(fval) <= kZeroThreshold { // the predictor keeps only |x| > kZero or NaN
			fval = 0
		}
		missingType := (tr.dt[node] >> 2) & 3
		defaultLeft := tr.dt[node]&2 != 0
		if math.IsNaN(fval) && missingType != 2 {
			fval = 0
		}
		isZero := fval >= -kZeroThreshold && fval <= kZeroThreshold
		switch {
		case missingType == 1 && isZero, missingType == 2 && math.IsNaN(fval):
			if defaultLeft {
				node = tr.left[node]
			} else {
				node = tr.right[node]
			}
		case fval <= tr.thr[node]:
			node = tr.left[node]
		default:
			node = tr.right[node]
		}
	}
	return tr.leaves[^node]
}

// lgbRefRaw is the raw score of a row (GBDT::PredictRaw): the sum of its
// trees' leaf values in tree order (per class for multiclass).
func lgbRefRaw(trees []lgbRefTree, outs int, x []float64) []float64 {
	raw := make([]float64, outs)
	for t := range trees {
		raw[t%outs] += lgbRefLeafValue(&trees[t], x)
	}
	return raw
}

// lgbNumbers formats values as the text format does (round-trip exact).
func lgbNumbers[T int | float64](v []T) string {
	s := make([]string, len(v))
	for i, x := range v {
		switch x := any(x).(type) {
		case int:
			s[i] = strconv.Itoa(x)
		case float64:
			s[i] = strconv.FormatFloat(x, 'g', 17, 64)
		}
	}
	return strings.Join(s, " ")
}

// lgbModelText writes a model file in LightGBM's text format (version v4,
// as GBDT::SaveModelToString and Tree::ToString write it).
func lgbModelText(objective string, numClass, nIn int, average bool, trees []lgbRefTree) string {
	var b strings.Builder
	perIter := 1
	if strings.HasPrefix(objective, "multiclass") {
		perIter = numClass
	}
	names := make([]string, nIn)
	infos := make([]string, nIn)
	for j := range names {
		names[j] = fmt.Sprintf("Column_%d", j)
		infos[j] = "[-3:3]"
	}
	fmt.Fprintf(&b, "tree\nversion=v4\nnum_class=%d\nnum_tree_per_iteration=%d\nlabel_index=0\nmax_feature_idx=%d\nobjective=%s\n",
		numClass, perIter, nIn-1, objective)
	if average {
		b.WriteString("average_output\n")
	}
	fmt.Fprintf(&b, "feature_names=%s\nfeature_infos=%s\n\n", strings.Join(names, " "), strings.Join(infos, " "))
	for i, tr := range trees {
		fmt.Fprintf(&b, "Tree=%d\nnum_leaves=%d\nnum_cat=0\n", i, len(tr.leaves))
		if len(tr.leaves) > 1 {
			fmt.Fprintf(&b, "split_feature=%s\nthreshold=%s\ndecision_type=%s\nleft_child=%s\nright_child=%s\n",
				lgbNumbers(tr.feat), lgbNumbers(tr.thr), lgbNumbers(tr.dt), lgbNumbers(tr.left), lgbNumbers(tr.right))
		}
		fmt.Fprintf(&b, "leaf_value=%s\nis_linear=0\nshrinkage=0.1\n\n\n", lgbNumbers(tr.leaves))
	}
	b.WriteString("end of trees\n\nfeature_importances:\n\nparameters:\n[boosting: gbdt]\nend of parameters\n\npandas_categorical:null\n")
	return b.String()
}

// lgbSpecThresholds are thresholds around LightGBM's zero band and
// ordinary ones.
var lgbSpecThresholds = []float64{
	0, math.Copysign(0, -1), lgbZero, -lgbZero, lgbZero / 2, -lgbZero / 2,
	math.Nextafter(lgbZero, 1), math.Nextafter(-lgbZero, -1), math.Nextafter(lgbZero, 0), math.Nextafter(-lgbZero, 0),
	5e-324, -5e-324, 1e-300, -1e-300, 0.5, -0.5, 1, -1, 1.5, 2.25, -0.75,
}

// lgbSpecValues are inputs on and around those thresholds, and the
// special ones.
func lgbSpecValues() []float64 {
	var xs []float64
	for _, v := range lgbSpecThresholds {
		xs = append(xs, v, math.Nextafter(v, math.Inf(1)), math.Nextafter(v, math.Inf(-1)))
	}
	return append(xs, math.NaN(), math.Inf(1), math.Inf(-1), 3, -3, 0.1, -0.1)
}

// lgbRandomTree grows a random tree as LightGBM numbers them: internal
// nodes in split order, leaves ^l. Decision types are any numerical one.
func lgbRandomTree(r interface {
	IntN(int) int
	NormFloat64() float64
}, leaves, nIn int) lgbRefTree {
	tr := lgbRefTree{leaves: make([]float64, 1)}
	tr.leaves[0] = r.NormFloat64()
	// Split a random leaf num_leaves-1 times, as leaf-wise growth does.
	parentOf := []int{-1} // per leaf: the internal node pointing at it (-1: root)
	sideOf := []int{0}
	for len(tr.leaves) < leaves {
		l := r.IntN(len(tr.leaves))
		n := len(tr.feat)
		tr.feat = append(tr.feat, r.IntN(nIn))
		th := lgbSpecThresholds[r.IntN(len(lgbSpecThresholds))]
		if r.IntN(3) == 0 {
			th = r.NormFloat64()
		}
		tr.thr = append(tr.thr, th)
		tr.dt = append(tr.dt, []int{0, 2, 4, 6, 8, 10}[r.IntN(6)])
		// The split node takes leaf l's place; l becomes its left child,
		// a new leaf its right.
		if p := parentOf[l]; p >= 0 {
			if sideOf[l] == 0 {
				tr.left[p] = n
			} else {
				tr.right[p] = n
			}
		}
		nl := len(tr.leaves)
		tr.left = append(tr.left, ^l)
		tr.right = append(tr.right, ^nl)
		tr.leaves = append(tr.leaves, r.NormFloat64())
		parentOf[l], sideOf[l] = n, 0
		parentOf = append(parentOf, n)
		sideOf = append(sideOf, 1)
	}
	return tr
}

// TestLightGBMSpecTrees builds model files from the text format's spec
// (random trees with every numerical decision type, thresholds around
// LightGBM's zero band) and checks the runtime bit for bit against the
// reference walk, on rows of values around every threshold, NaN and
// infinities: a check of the format's semantics that does not rest on the
// fixtures.
func TestLightGBMSpecTrees(t *testing.T) {
	t.Parallel()
	r := newRand(16)
	xs := lgbSpecValues()
	const nIn = 4
	rows := make([][]float64, 3000)
	for i := range rows {
		rows[i] = make([]float64, nIn)
		for j := range rows[i] {
			rows[i][j] = xs[r.IntN(len(xs))]
		}
	}
	cases := []struct {
		objective string
		numClass  int
		average   bool
	}{
		{"binary sigmoid:1", 1, false},
		{"binary sigmoid:0.25", 1, false},
		{"multiclass num_class:3", 3, false},
		{"regression", 1, false},
		{"regression", 1, true},
		{"poisson", 1, false},
	}
	for ci, c := range cases {
		var trees []lgbRefTree
		outs := max(c.numClass, 1)
		for range 12 * outs {
			trees = append(trees, lgbRandomTree(r, 1+r.IntN(40), nIn))
		}
		text := lgbModelText(c.objective, c.numClass, nIn, c.average, trees)
		m, err := LoadLightGBM([]byte(text))
		if err != nil {
			t.Fatalf("case %d (%s): %v", ci, c.objective, err)
		}
		raw := m.PredictRaw(rows)
		var proba [][]float64
		if c.numClass > 1 || strings.HasPrefix(c.objective, "binary") {
			proba = m.PredictProba(rows)
		}
		pred := m.Predict(rows)
		for i, x := range rows {
			want := lgbRefRaw(trees, outs, x)
			if !slices.Equal(raw[i], want) {
				t.Fatalf("case %d (%s) row %v: raw %v, reference %v", ci, c.objective, x, raw[i], want)
			}
			if c.average { // GBDT::Predict: output[k] /= num_iteration_for_pred_
				for k := range want {
					want[k] /= float64(len(trees) / outs)
				}
			}
			switch {
			case c.numClass > 1:
				p := slices.Clone(want)
				softmaxInPlace(p)
				if !slices.Equal(proba[i], p) {
					t.Fatalf("case %d row %d: proba %v, softmax %v", ci, i, proba[i], p)
				}
			case proba != nil:
				s, _ := strconv.ParseFloat(strings.TrimPrefix(c.objective, "binary sigmoid:"), 64)
				p := 1 / (1 + math.Exp(-s*want[0]))
				if proba[i][1] != p || proba[i][0] != 1-p {
					t.Fatalf("case %d row %d: proba %v, p %v", ci, i, proba[i], p)
				}
			case c.objective == "poisson":
				if pred[i] != math.Exp(want[0]) {
					t.Fatalf("case %d row %d: %v, exp(raw) %v", ci, i, pred[i], math.Exp(want[0]))
				}
			default:
				if pred[i] != want[0] {
					t.Fatalf("case %d row %d: %v, raw %v", ci, i, pred[i], want[0])
				}
			}
		}
	}
}

// TestLGBThreshold: "right when x > lgbThreshold(thr)" is LightGBM's
// "left when zeroed(x) ≤ thr" for every x around every threshold.
func TestLGBThreshold(t *testing.T) {
	t.Parallel()
	xs := lgbSpecValues()
	for _, thr := range lgbSpecThresholds {
		T := lgbThreshold(thr)
		for _, x := range xs {
			if math.IsNaN(x) {
				continue
			}
			z := x
			if math.Abs(z) <= lgbZero {
				z = 0
			}
			if got, want := x > T, !(z <= thr); got != want {
				t.Errorf("thr %v x %v: x > %v is %v, LightGBM goes right: %v", thr, x, T, got, want)
			}
		}
	}
}

func TestLightGBMSignatureAndInfo(t *testing.T) {
	t.Parallel()
	m := loadLGBFile(t, filepath.Join(lgbFixtures, "regression.txt"))
	sig := m.Signature()
	if sig.Task != Regression || len(sig.Inputs) != 10 || sig.Inputs[0].Name != "d0" || sig.Inputs[9].Name != "d9" || sig.Classes != nil {
		t.Fatalf("signature %+v", sig)
	}
	info := m.Info()
	if info.Algorithm != "lightgbm" || info.Params["objective"] != "regression" || info.Params["numTrees"] != m.NumTrees() ||
		info.Training.Iterations != 80 || info.Params["version"] != "v4" {
		t.Fatalf("info %+v", info)
	}
	mc := loadLGBFile(t, filepath.Join(lgbFixtures, "multiclass.txt"))
	if s := mc.Signature(); s.Task != Classification || !slices.Equal(s.Classes, []string{"0", "1", "2"}) || s.Inputs[0].Name != "Column_0" {
		t.Fatalf("multiclass signature %+v", s)
	}
	if mc.Info().Training.Iterations != 40 || mc.NumTrees() != 120 {
		t.Fatalf("multiclass: %d iterations, %d trees", mc.Info().Training.Iterations, mc.NumTrees())
	}
	b := loadLGBFile(t, filepath.Join(lgbFixtures, "binary.txt"))
	if s := b.Signature(); !slices.Equal(s.Classes, []string{"0", "1"}) {
		t.Fatalf("binary classes %v", s.Classes)
	}
	if rf := loadLGBFile(t, filepath.Join(lgbFixtures, "rf.txt")); rf.Info().Params["boosting"] != "rf" || rf.Info().Params["averageOutput"] != true {
		t.Fatalf("rf info %+v", rf.Info())
	}

	// WithSignature renames, keeps predictions, and checks counts.
	own := b.Signature()
	renamed := own.clone()
	for j := range renamed.Inputs {
		renamed.Inputs[j].Name = fmt.Sprintf("x%d", j)
	}
	renamed.Classes = []string{"no", "yes"}
	b2, err := b.WithSignature(renamed)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Signature().Inputs[3].Name != "x3" || b.Signature().Inputs[3].Name != "Column_3" {
		t.Fatal("WithSignature did not rename, or changed the original")
	}
	_, rows := readLGBExpect(t, filepath.Join(lgbFixtures, "binary.expect.json"))
	if !slices.EqualFunc(b.PredictProba(rows), b2.PredictProba(rows), slices.Equal[[]float64]) {
		t.Fatal("WithSignature changed predictions")
	}
	bad := []Signature{
		{Task: Classification, Inputs: renamed.Inputs[1:], Classes: renamed.Classes},
		{Task: Regression, Inputs: renamed.Inputs},
		{Task: Classification, Inputs: renamed.Inputs, Classes: []string{"a", "b", "c"}},
		{Task: Classification, Inputs: append(slices.Clone(renamed.Inputs[1:]), renamed.Inputs[0]), Classes: renamed.Classes},
	}
	bad[3].Inputs[0].Name = bad[3].Inputs[1].Name
	for i, s := range bad {
		if _, err := b.WithSignature(s); err == nil {
			t.Errorf("bad signature %d accepted", i)
		}
	}

	// Rows of the wrong width give NaN, others are unaffected.
	p := len(own.Inputs)
	x := [][]float64{rows[0], rows[0][:p-1], rows[1]}
	pred := b.Predict(x)
	proba := b.PredictProba(x)
	if !math.IsNaN(pred[1]) || !math.IsNaN(proba[1][1]) || math.IsNaN(pred[0]) || math.IsNaN(proba[2][0]) {
		t.Fatalf("wrong-width row: Predict %v, PredictProba %v", pred, proba)
	}
	if b.PredictRawFlat(make([]float64, p+1), 1) != nil {
		t.Error("PredictRawFlat accepted a slice of the wrong length")
	}
	// The same holds for a model that widens its rows (derived zero inputs).
	z := loadLGBFile(t, filepath.Join(lgbFixtures, "zero.txt"))
	_, zrows := readLGBExpect(t, filepath.Join(lgbFixtures, "zero.expect.json"))
	zr := z.PredictRaw([][]float64{zrows[0], zrows[0][:2], zrows[1]})
	if !math.IsNaN(zr[1][0]) || math.IsNaN(zr[0][0]) || math.IsNaN(zr[2][0]) {
		t.Fatalf("zero model, wrong-width row: %v", zr)
	}
	if len(z.PredictRaw(nil)) != 0 || len(z.Predict(nil)) != 0 || len(b.PredictProba(nil)) != 0 || len(z.PredictRawFlat(nil, 0)) != 0 {
		t.Fatal("an empty batch does not give empty results")
	}
}

// lgbEdit returns the text of a fixture with old replaced by new (once,
// which must be there).
func lgbEdit(t *testing.T, name, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(lgbFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, old) {
		t.Fatalf("%s has no %q", name, old)
	}
	return strings.Replace(s, old, new, 1)
}

// lgbLine returns the first line of a fixture that starts with prefix.
func lgbLine(t *testing.T, name, prefix string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(lgbFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("%s has no line %q", name, prefix)
	return ""
}

// lgbFirst returns a key=values line with its first value replaced by v.
func lgbFirst(line, v string) string {
	k, vals, _ := strings.Cut(line, "=")
	f := strings.Fields(vals)
	f[0] = v
	return k + "=" + strings.Join(f, " ")
}

func TestLoadLightGBMRefusesWhatItCannotServe(t *testing.T) {
	t.Parallel()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(lgbFixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dt0 := lgbLine(t, "binary.txt", "decision_type=")
	lc0 := lgbLine(t, "binary.txt", "left_child=")
	th0 := lgbLine(t, "binary.txt", "threshold=")
	lv0 := lgbLine(t, "binary.txt", "leaf_value=")
	cases := []struct {
		name, text, want string
	}{
		{"categorical", read("categorical.txt"), "not supported: categorical splits"},
		{"linear", read("linear.txt"), "not supported: linear trees"},
		{"multiclassova", lgbEdit(t, "multiclass.txt", "objective=multiclass num_class:3", "objective=multiclassova num_class:3 sigmoid:1"), `objective "multiclassova`},
		{"lambdarank", lgbEdit(t, "regression.txt", "objective=regression", "objective=lambdarank"), `objective "lambdarank"`},
		{"cross_entropy", lgbEdit(t, "binary.txt", "objective=binary sigmoid:1", "objective=cross_entropy"), `objective "cross_entropy"`},
		{"sqrt", lgbEdit(t, "regression.txt", "objective=regression", "objective=regression sqrt"), "reg_sqrt"},
		{"custom objective", lgbEdit(t, "regression.txt", "objective=regression\n", ""), "custom objective"},
		{"categorical bit", lgbEdit(t, "binary.txt", dt0, strings.Replace(dt0, "decision_type=10", "decision_type=11", 1)), "categorical splits"},
		{"missing type 3", lgbEdit(t, "binary.txt", dt0, strings.Replace(dt0, "decision_type=10", "decision_type=14", 1)), "missing type 3"},
		{"num_cat", lgbEdit(t, "binary.txt", "num_cat=0", "num_cat=1"), "categorical splits"},
		{"is_linear", lgbEdit(t, "binary.txt", "is_linear=0", "is_linear=1"), "linear trees"},
		{"child twice", lgbEdit(t, "binary.txt", lc0, "left_child=0"+lc0[len("left_child=")+1:]), "out of range or reached twice"},
		{"leaf count", lgbEdit(t, "binary.txt", "num_leaves=", "num_leaves=9"), "values"},
		{"feature out of range", lgbEdit(t, "binary.txt", "split_feature=", "split_feature=30"), "feature"},
		{"cut short", read("binary.txt")[:5000], "end of trees"},
		{"json dump", `{"name":"tree","version":"v4"}`, "not a LightGBM text model"},
		{"empty", "", "empty"},
		{"num_class", lgbEdit(t, "binary.txt", "num_class=1", "num_class=2"), "num_class"},
		{"trees per iteration", lgbEdit(t, "multiclass.txt", "num_tree_per_iteration=3", "num_tree_per_iteration=2"), "num_tree_per_iteration"},
		{"feature names", lgbEdit(t, "binary.txt", "feature_names=Column_0 ", "feature_names="), "feature_names"},
		{"repeated names", lgbEdit(t, "binary.txt", "Column_1 ", "Column_0 "), "repeated"},
		{"tree order", lgbEdit(t, "binary.txt", "Tree=1\n", "Tree=7\n"), "Tree=1"},
		{"threshold nan", lgbEdit(t, "binary.txt", th0, lgbFirst(th0, "nan")), "threshold value \"nan\""},
		{"leaf inf", lgbEdit(t, "binary.txt", lv0, lgbFirst(lv0, "inf")), "not finite"},
		{"sigmoid", lgbEdit(t, "binary.txt", "sigmoid:1", "sigmoid:-1"), "sigmoid"},
		{"tree_sizes", lgbEdit(t, "binary.txt", "tree_sizes=", "tree_sizes=1 "), "tree_sizes"},
	}
	for _, c := range cases {
		m, err := LoadLightGBM([]byte(c.text))
		if err == nil {
			t.Errorf("%s: loaded (%d trees), want an error", c.name, m.NumTrees())
			continue
		}
		var ae *ArtifactError
		if !errors.As(err, &ae) {
			t.Errorf("%s: %T %v, want an *ArtifactError", c.name, err, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

// TestLightGBMFormatVariants: what LightGBM itself accepts loads too —
// CRLF line ends, files without tree_sizes or decision_type (older
// writers: LightGBM takes decision_type 0), single-leaf trees.
func TestLightGBMFormatVariants(t *testing.T) {
	t.Parallel()
	_, rows := readLGBExpect(t, filepath.Join(lgbFixtures, "binary.expect.json"))
	base := loadLGBFile(t, filepath.Join(lgbFixtures, "binary.txt")).PredictRaw(rows)
	crlf := strings.ReplaceAll(lgbEdit(t, "binary.txt", "tree_sizes=", "tree_sizes="), "\n", "\r\n")
	noSizes := lgbEdit(t, "binary.txt", lgbLine(t, "binary.txt", "tree_sizes=")+"\n", "")
	for name, text := range map[string]string{"crlf": crlf, "no tree_sizes": noSizes} {
		m, err := LoadLightGBM([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.EqualFunc(m.PredictRaw(rows), base, slices.Equal[[]float64]) {
			t.Errorf("%s: predictions differ", name)
		}
	}
	// No decision_type: missing type None, NaN as 0; a single-leaf tree.
	trees := []lgbRefTree{
		{feat: []int{0, 1}, thr: []float64{0.5, -1}, dt: []int{0, 0}, left: []int{1, ^0}, right: []int{^2, ^1}, leaves: []float64{1, 2, 3}},
		{leaves: []float64{0.25}},
	}
	text := lgbModelText("regression", 1, 2, false, trees)
	text = strings.Replace(text, "decision_type=0 0\n", "", 1)
	m, err := LoadLightGBM([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	x := [][]float64{{0, 0}, {0, -2}, {1, 0}, {math.NaN(), math.NaN()}, {math.NaN(), -1.5}}
	got := m.Predict(x)
	for i, r := range x {
		if want := lgbRefRaw(trees, 1, r)[0]; got[i] != want {
			t.Errorf("row %v: %v, want %v", r, got[i], want)
		}
	}
	if !slices.Equal(got, []float64{2.25, 1.25, 3.25, 2.25, 1.25}) {
		t.Errorf("predictions %v", got)
	}
}

// BenchmarkLightGBMPredict scores 100k rows with a LightGBM model of 100
// full trees of depth 6 on 10 features (missing type NaN, default sides
// alternating: the shape of BenchmarkXGBoostPredict), through
// PredictProba: batch rows/s.
func BenchmarkLightGBMPredict(b *testing.B) {
	r := newRand(3)
	const depth = 6
	ni := 1<<depth - 1
	var trees []lgbRefTree
	for range 100 {
		tr := lgbRefTree{leaves: make([]float64, ni+1)}
		for i := range ni {
			tr.feat = append(tr.feat, r.IntN(10))
			tr.thr = append(tr.thr, r.Float64())
			tr.dt = append(tr.dt, 8+2*(i%2))
			for _, c := range []int{2*i + 1, 2*i + 2} {
				if c >= ni {
					c = ^(c - ni) // a leaf
				}
				if len(tr.left) == i {
					tr.left = append(tr.left, c)
				} else {
					tr.right = append(tr.right, c)
				}
			}
		}
		for l := range tr.leaves {
			tr.leaves[l] = r.NormFloat64() * 0.1
		}
		trees = append(trees, tr)
	}
	m, err := LoadLightGBM([]byte(lgbModelText("binary sigmoid:1", 1, 10, false, trees)))
	if err != nil {
		b.Fatal(err)
	}
	x := uniformRows(newRand(4), 100000, 10)
	b.ReportAllocs()
	for b.Loop() {
		m.PredictProba(x)
	}
	b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "rows/s")
}

// FuzzLoadLightGBM: no model file, however damaged, makes LoadLightGBM or
// the predictions of what it loads panic.
func FuzzLoadLightGBM(f *testing.F) {
	// Small seeds: the fuzzer crawls on the 100 KB fixtures.
	b, err := os.ReadFile(filepath.Join(lgbFixtures, "rf.txt"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	r := newRand(5)
	f.Add([]byte(lgbModelText("multiclass num_class:2", 2, 3, false,
		[]lgbRefTree{lgbRandomTree(r, 4, 3), lgbRandomTree(r, 3, 3)})))
	f.Add([]byte(lgbModelText("binary sigmoid:1", 1, 4, false,
		[]lgbRefTree{lgbRandomTree(r, 12, 4), lgbRandomTree(r, 1, 4), lgbRandomTree(r, 9, 4)})))
	f.Add([]byte(lgbModelText("regression", 1, 2, true, []lgbRefTree{lgbRandomTree(r, 5, 2)})))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := LoadLightGBM(data)
		if err != nil {
			return
		}
		p := len(m.Signature().Inputs)
		row, nan := make([]float64, p), make([]float64, p)
		for j := range nan {
			nan[j] = math.NaN()
		}
		m.PredictProba([][]float64{row, nan})
		m.Predict([][]float64{row, nan})
	})
}
