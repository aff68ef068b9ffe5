package ml

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures under testdata/xgboost were written by
// scripts/xgboost_fixtures.py with Debian's python3-xgboost 1.7.4: models
// saved as .json and .ubj, and what XGBoost predicts for held-back rows
// (with NaNs) and for rows on and around split conditions. The runtime must
// match them to 1e-6; TestXGBoostLiveReference reruns the script where
// XGBoost is installed.

const xgbFixtures = "testdata/xgboost"

var xgbCases = []string{"binary", "multiclass", "regression", "lossguide"}

// xgbTolerance is the largest absolute difference from XGBoost allowed.
const xgbTolerance = 1e-6

// xgbExpect is a NAME.expect.json file.
type xgbExpect struct {
	XGBoost    string       `json:"xgboost"`
	Objective  string       `json:"objective"`
	NumFeature int          `json:"num_feature"`
	NumOutput  int          `json:"num_output"`
	Rows       [][]*float64 `json:"rows"`
	Margin     [][]float64  `json:"margin"`
	Output     [][]float64  `json:"output"`
}

func readXGBExpect(t testing.TB, path string) (*xgbExpect, [][]float64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var e xgbExpect
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	rows := make([][]float64, len(e.Rows))
	for i, r := range e.Rows {
		rows[i] = make([]float64, len(r))
		for j, v := range r {
			rows[i][j] = math.NaN()
			if v != nil {
				rows[i][j] = *v
			}
		}
	}
	if len(e.Margin) != len(rows) || len(e.Output) != len(rows) {
		t.Fatalf("%s: %d rows, %d margins, %d outputs", path, len(rows), len(e.Margin), len(e.Output))
	}
	return &e, rows
}

// xgbDiff is how far a model is from XGBoost's predictions.
type xgbDiff struct {
	margin, output float64
	exact, values  int // margins bit-identical as float32 / compared
}

// compareXGBoost loads dir/name.ext and compares it with dir/name.expect.json.
func compareXGBoost(t *testing.T, dir, name, ext string) xgbDiff {
	t.Helper()
	e, rows := readXGBExpect(t, filepath.Join(dir, name+".expect.json"))
	data, err := os.ReadFile(filepath.Join(dir, name+ext))
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadXGBoost(data)
	if err != nil {
		t.Fatalf("LoadXGBoost(%s%s): %v", name, ext, err)
	}
	if m.Objective() != e.Objective {
		t.Errorf("objective %q, want %q", m.Objective(), e.Objective)
	}
	sig := m.Signature()
	if len(sig.Inputs) != e.NumFeature {
		t.Fatalf("%d inputs, want %d", len(sig.Inputs), e.NumFeature)
	}
	var d xgbDiff
	raw := m.PredictRaw(rows)
	for i := range rows {
		if len(raw[i]) != e.NumOutput || len(e.Margin[i]) != e.NumOutput {
			t.Fatalf("row %d: %d margins, want %d (expected file has %d)", i, len(raw[i]), e.NumOutput, len(e.Margin[i]))
		}
		for k, got := range raw[i] {
			want := e.Margin[i][k]
			d.margin = max(d.margin, math.Abs(got-want))
			d.values++
			if float32(got) == float32(want) && got == float64(float32(got)) {
				d.exact++
			}
			if !(math.Abs(got-want) <= xgbTolerance) {
				t.Errorf("%s%s row %d output %d: margin %v, XGBoost %v (row %v)", name, ext, i, k, got, want, rows[i])
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
	// Outputs: probabilities ([1-p, p] against XGBoost's p for binary) or
	// values.
	var got [][]float64
	switch e.Objective {
	case XGBoostRegSquaredError:
		if m.PredictProba(rows) != nil {
			t.Error("PredictProba of a regression model is not nil")
		}
		for _, v := range m.Predict(rows) {
			got = append(got, []float64{v})
		}
	case XGBoostBinaryLogistic:
		for _, p := range m.PredictProba(rows) {
			if math.Abs(p[0]+p[1]-1) > 1e-12 {
				t.Fatalf("probabilities %v do not add up to 1", p)
			}
			got = append(got, []float64{p[1]})
		}
	default:
		got = m.PredictProba(rows)
	}
	for i := range rows {
		for k, v := range got[i] {
			want := e.Output[i][k]
			d.output = max(d.output, math.Abs(v-want))
			if !(math.Abs(v-want) <= xgbTolerance) {
				t.Errorf("%s%s row %d output %d: %v, XGBoost %v", name, ext, i, k, v, want)
			}
		}
	}
	// Predict gives the class of the largest probability.
	if sig.Task == Classification {
		pred := m.Predict(rows)
		proba := m.PredictProba(rows)
		for i, c := range pred {
			if int(c) != argmax(proba[i]) {
				t.Fatalf("row %d: Predict %v, PredictProba %v", i, c, proba[i])
			}
		}
	}
	return d
}

func TestXGBoostMatchesReference(t *testing.T) {
	t.Parallel()
	for _, name := range xgbCases {
		for _, ext := range []string{".json", ".ubj"} {
			t.Run(name+ext, func(t *testing.T) {
				t.Parallel()
				d := compareXGBoost(t, xgbFixtures, name, ext)
				t.Logf("max |Δ| margin %.3g, output %.3g; %d of %d margins bit-identical to XGBoost's float32",
					d.margin, d.output, d.exact, d.values)
			})
		}
	}
}

// TestXGBoostJSONAndUBJSONAgree: both files of a model give the same
// signature and bit-identical margins.
func TestXGBoostJSONAndUBJSONAgree(t *testing.T) {
	t.Parallel()
	for _, name := range xgbCases {
		_, rows := readXGBExpect(t, filepath.Join(xgbFixtures, name+".expect.json"))
		var models []*XGBoostModel
		for _, ext := range []string{".json", ".ubj"} {
			data, err := os.ReadFile(filepath.Join(xgbFixtures, name+ext))
			if err != nil {
				t.Fatal(err)
			}
			m, err := LoadXGBoost(data)
			if err != nil {
				t.Fatal(err)
			}
			models = append(models, m)
		}
		a, b := models[0], models[1]
		if fmt.Sprint(a.Signature()) != fmt.Sprint(b.Signature()) || a.NumTrees() != b.NumTrees() {
			t.Errorf("%s: json %v (%d trees), ubj %v (%d trees)", name, a.Signature(), a.NumTrees(), b.Signature(), b.NumTrees())
		}
		if a.Info().Params["format"] != "json" || b.Info().Params["format"] != "ubjson" {
			t.Errorf("%s: formats %v, %v", name, a.Info().Params["format"], b.Info().Params["format"])
		}
		ra, rb := a.PredictRaw(rows), b.PredictRaw(rows)
		for i := range ra {
			for k := range ra[i] {
				if math.Float64bits(ra[i][k]) != math.Float64bits(rb[i][k]) {
					t.Fatalf("%s row %d: json %v, ubj %v", name, i, ra[i][k], rb[i][k])
				}
			}
		}
	}
}

// xgboostPython returns /usr/bin/python3 when it can import xgboost and
// sklearn (Debian's python3-xgboost and python3-sklearn). Without them the
// test is skipped, or fails when CI is set: CI installs them
// (scripts/install-bench-deps.sh).
func xgboostPython(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	out, err := exec.Command(py, "-c", "import xgboost, sklearn; print(xgboost.__version__)").CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("%s cannot import xgboost and sklearn (%v: %s); install python3-xgboost and python3-sklearn (scripts/install-bench-deps.sh)", py, err, bytes.TrimSpace(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return py
}

// TestXGBoostLiveReference reruns scripts/xgboost_fixtures.py with the
// installed XGBoost and compares the runtime with what it predicts now.
// With the same XGBoost version as the checked-in fixtures, the script must
// also reproduce them byte for byte (they are seeded and single-threaded),
// so fixtures cannot drift from the script that documents them.
func TestXGBoostLiveReference(t *testing.T) {
	py := xgboostPython(t)
	dir := t.TempDir()
	cmd := exec.Command(py, filepath.Join("..", "..", "scripts", "xgboost_fixtures.py"), "--out", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xgboost_fixtures.py: %v\n%s", err, out)
	}
	for _, name := range xgbCases {
		for _, ext := range []string{".json", ".ubj"} {
			t.Run(name+ext, func(t *testing.T) {
				d := compareXGBoost(t, dir, name, ext)
				t.Logf("max |Δ| margin %.3g, output %.3g", d.margin, d.output)
			})
		}
	}
	live, _ := readXGBExpect(t, filepath.Join(dir, "binary.expect.json"))
	fixed, _ := readXGBExpect(t, filepath.Join(xgbFixtures, "binary.expect.json"))
	if live.XGBoost != fixed.XGBoost {
		t.Logf("installed XGBoost %s, fixtures written by %s: not comparing bytes", live.XGBoost, fixed.XGBoost)
		return
	}
	for _, name := range xgbCases {
		for _, ext := range []string{".json", ".ubj", ".expect.json"} {
			a, err := os.ReadFile(filepath.Join(dir, name+ext))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(xgbFixtures, name+ext))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s%s differs from what scripts/xgboost_fixtures.py writes now: regenerate the fixtures", name, ext)
			}
		}
	}
}

// TestXGBThreshold: "right when x > xgbThreshold(c)" is XGBoost's
// "right unless float32(x) < c" for float64 inputs on and around every
// boundary, for conditions of every kind of float32.
func TestXGBThreshold(t *testing.T) {
	t.Parallel()
	conds := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.1, -0.1, 1.5, 3, 1e-40, -1e-40,
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32,
		16777216, 16777217, -0.12172499, 0.5641791}
	r := newRand(7)
	for range 2000 {
		conds = append(conds, float32(r.NormFloat64()*math.Pow(10, float64(r.IntN(20)-10))))
		conds = append(conds, math.Float32frombits(r.Uint32()))
	}
	inf := math.Inf(1)
	for _, c := range conds {
		if math.IsNaN(float64(c)) || math.IsInf(float64(c), 0) {
			continue
		}
		thr := xgbThreshold(c)
		below := float64(math.Nextafter32(c, float32(math.Inf(-1))))
		above := float64(math.Nextafter32(c, float32(inf)))
		var xs []float64
		for _, v := range []float64{float64(c), below, above, (below + float64(c)) / 2, (above + float64(c)) / 2, thr} {
			xs = append(xs, v, math.Nextafter(v, -inf), math.Nextafter(v, inf))
		}
		xs = append(xs, inf, -inf, math.MaxFloat64, -math.MaxFloat64, 0, math.Copysign(0, -1))
		for _, x := range xs {
			if math.IsNaN(x) {
				continue
			}
			want := !(float32(x) < c)
			if got := x > thr; got != want {
				t.Fatalf("c=%v (%#x) x=%v: x > %v is %v, XGBoost goes right: %v", c, math.Float32bits(c), x, thr, got, want)
			}
		}
	}
}

// xgbDoc returns the JSON of a fixture model as a generic document.
func xgbFixtureDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(xgbFixtures, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// at walks a generic document: keys of objects, indices of arrays.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			v = v.(map[string]any)[k]
		case int:
			v = v.([]any)[k]
		}
	}
	return v
}

func TestLoadXGBoostRefusesWhatItCannotServe(t *testing.T) {
	t.Parallel()
	gb := []any{"learner", "gradient_booster"}
	tree0 := []any{"learner", "gradient_booster", "model", "trees", 0}
	cases := []struct {
		name, model string
		edit        func(doc map[string]any)
		want        string
	}{
		{"dart", "binary", func(d map[string]any) { at(d, gb...).(map[string]any)["name"] = "dart" }, `booster "dart"`},
		{"gblinear", "binary", func(d map[string]any) {
			at(d, "learner").(map[string]any)["gradient_booster"] = map[string]any{"name": "gblinear", "model": map[string]any{"weights": []any{1.0}}}
		}, `booster "gblinear"`},
		{"objective", "binary", func(d map[string]any) { at(d, "learner", "objective").(map[string]any)["name"] = "reg:logistic" }, `objective "reg:logistic"`},
		{"rank objective", "binary", func(d map[string]any) { at(d, "learner", "objective").(map[string]any)["name"] = "rank:pairwise" }, `objective "rank:pairwise"`},
		{"categorical split", "binary", func(d map[string]any) { at(d, tree0...).(map[string]any)["split_type"].([]any)[0] = 1.0 }, "categorical splits"},
		{"categorical feature", "binary", func(d map[string]any) {
			types := make([]any, 30)
			for i := range types {
				types[i] = "q"
			}
			types[3] = "c"
			at(d, "learner").(map[string]any)["feature_types"] = types
		}, `categorical feature "f3"`},
		{"multi-target", "regression", func(d map[string]any) { at(d, "learner", "learner_model_param").(map[string]any)["num_target"] = "2" }, "multi-target"},
		{"vector base_score", "multiclass", func(d map[string]any) {
			at(d, "learner", "learner_model_param").(map[string]any)["base_score"] = "[5E-1,5E-1,5E-1]"
		}, "base_score given per output"},
		{"base_score outside (0,1)", "binary", func(d map[string]any) { at(d, "learner", "learner_model_param").(map[string]any)["base_score"] = "1.5" }, "must be in (0, 1)"},
		{"child out of range", "binary", func(d map[string]any) { at(d, tree0...).(map[string]any)["left_children"].([]any)[0] = 1000.0 }, "out of range"},
		{"cycle", "binary", func(d map[string]any) { at(d, tree0...).(map[string]any)["left_children"].([]any)[1] = 0.0 }, "reached twice"},
		{"feature out of range", "binary", func(d map[string]any) { at(d, tree0...).(map[string]any)["split_indices"].([]any)[0] = 30.0 }, "feature 30 of 30"},
		{"short arrays", "binary", func(d map[string]any) {
			tr := at(d, tree0...).(map[string]any)
			dl := tr["default_left"].([]any)
			tr["default_left"] = dl[:len(dl)-1]
		}, "different lengths"},
		{"tree_info", "multiclass", func(d map[string]any) { at(d, "learner", "gradient_booster", "model", "tree_info").([]any)[0] = 3.0 }, "output 3 of 3"},
		{"uneven classes", "multiclass", func(d map[string]any) { at(d, "learner", "gradient_booster", "model", "tree_info").([]any)[0] = 1.0 }, "class 0 19 trees but class 1 21"},
		{"too many features", "binary", func(d map[string]any) {
			at(d, "learner", "learner_model_param").(map[string]any)["num_feature"] = "100000"
			delete(at(d, "learner").(map[string]any), "feature_names")
		}, "more than 65536 features"},
		{"too many classes", "multiclass", func(d map[string]any) {
			at(d, "learner", "learner_model_param").(map[string]any)["num_class"] = "1000000000"
		}, "num_class 1000000000"},
		{"no version", "binary", func(d map[string]any) { delete(d, "version") }, "version"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			doc := xgbFixtureDoc(t, c.model)
			c.edit(doc)
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			_, err = LoadXGBoost(b)
			var ae *ArtifactError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("LoadXGBoost: %v, want an *ArtifactError containing %q", err, c.want)
			}
		})
	}
	for _, data := range [][]byte{nil, []byte("  \n"), []byte("binf\x00\x00\x00\x01"), []byte("[1,2]"), []byte("{}"), []byte(`{"learner": 3}`), []byte("{L\x00")} {
		if _, err := LoadXGBoost(data); err == nil {
			t.Errorf("LoadXGBoost(%q) gave no error", data)
		}
	}
}

func TestXGBoostSignature(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(xgbFixtures, "multiclass.ubj"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadXGBoost(data)
	if err != nil {
		t.Fatal(err)
	}
	sig := m.Signature()
	if sig.Task != Classification || strings.Join(sig.Classes, ",") != "0,1,2" || len(sig.Inputs) != 13 || sig.Inputs[12].Name != "f12" {
		t.Fatalf("signature %+v", sig)
	}
	info := m.Info()
	if info.Algorithm != "xgboost" || info.Params["version"] != "1.7.4" || info.Params["numParallelTree"] != 2 || m.NumTrees() != 60 || info.Training.Iterations != 10 {
		t.Fatalf("info %+v, %d trees", info, m.NumTrees())
	}
	// Names from the pipeline's schema.
	named := sig
	named.Inputs = make([]Input, 13)
	named.Classes = []string{"barolo", "grignolino", "barbera"}
	for j := range named.Inputs {
		named.Inputs[j] = Input{Name: fmt.Sprintf("c%d", j), Type: Numeric}
	}
	m2, err := m.WithSignature(named)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Signature().Classes[2] != "barbera" || m.Signature().Classes[2] != "2" {
		t.Fatal("WithSignature changed the wrong model")
	}
	for _, bad := range []Signature{
		{Task: Classification, Inputs: named.Inputs[:12], Classes: named.Classes},
		{Task: Regression, Inputs: named.Inputs},
		{Task: Classification, Inputs: named.Inputs, Classes: named.Classes[:2]},
	} {
		if _, err := m.WithSignature(bad); err == nil {
			t.Errorf("WithSignature(%+v) gave no error", bad)
		}
	}
	// A row of the wrong width gives NaN, as for every Model.
	x := [][]float64{make([]float64, 13), make([]float64, 12)}
	p := m.PredictProba(x)
	if math.IsNaN(p[0][0]) || !math.IsNaN(p[1][0]) || !math.IsNaN(m.Predict(x)[1]) {
		t.Fatalf("PredictProba %v", p)
	}
	if m.PredictRawFlat(make([]float64, 12), 1) != nil {
		t.Fatal("PredictRawFlat with a short batch")
	}
}

// ubj builds UBJSON bytes: strings are raw bytes, numbers are big-endian
// values of their Go type.
func ubj(parts ...any) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b.WriteString(v)
		default:
			_ = binary.Write(&b, binary.BigEndian, v)
		}
	}
	return b.Bytes()
}

func TestUBJSONToJSON(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   []byte
		want string
	}{
		{ubj("Z"), "null"},
		{ubj("T"), "true"},
		{ubj("NNF"), "false"},
		{ubj("i", int8(-5)), "-5"},
		{ubj("U", uint8(200)), "200"},
		{ubj("I", int16(-300)), "-300"},
		{ubj("l", int32(-70000)), "-70000"},
		{ubj("L", int64(1)<<40), "1099511627776"},
		{ubj("d", float32(0.1)), "0.1"},
		{ubj("d", float32(-1.25e-30)), "-1.25e-30"},
		{ubj("D", 0.1), "0.1"},
		{ubj("d", float32(math.NaN())), `"NaN"`},
		{ubj("D", math.Inf(-1)), `"-Infinity"`},
		{ubj("H", "i", int8(5), "1.5e3"), "1.5e3"},
		{ubj("C", "x"), `"x"`},
		{ubj("S", "i", int8(5), `a"b\c`), `"a\"b\\c"`},
		{ubj("[", "i", int8(1), "N", "S", "U", uint8(1), "x", "]"), `[1,"x"]`},
		{ubj("[", "]"), `[]`},
		{ubj("[", "#", "i", int8(2), "T", "Z"), `[true,null]`},
		{ubj("[", "$", "d", "#", "i", int8(3), float32(1), float32(-0.5), float32(3e-8)), `[1,-0.5,3e-08]`},
		{ubj("[", "$", "U", "#", "L", int64(3), uint8(0), uint8(1), uint8(255)), `[0,1,255]`},
		{ubj("[", "$", "l", "#", "i", int8(0)), `[]`},
		{ubj("{", "i", int8(1), "a", "i", int8(1), "i", int8(1), "b", "[", "]", "}"), `{"a":1,"b":[]}`},
		{ubj("{", "#", "i", int8(1), "L", int64(3), "key", "S", "i", int8(1), "v"), `{"key":"v"}`},
		{ubj("{", "$", "d", "#", "i", int8(2), "i", int8(1), "x", float32(2), "i", int8(1), "y", float32(0.25)), `{"x":2,"y":0.25}`},
		{ubj("[", "[", "[", "]", "]", "]"), `[[[]]]`},
	}
	for _, c := range good {
		got, err := ubjsonToJSON(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("ubjsonToJSON(%q) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	deep := bytes.Repeat([]byte("["), ubjMaxDepth+2)
	bad := [][]byte{
		nil, ubj("X"), ubj("i"), ubj("I", int8(1)), ubj("S", "i", int8(5), "ab"), ubj("S", "i", int8(-1)),
		ubj("S", "d", float32(1), "a"), ubj("[", "i", int8(1)), ubj("[", "$", "d", "i", int8(1)),
		ubj("[", "#", "L", int64(1)<<40), ubj("{", "i", int8(1), "a"), ubj("H", "i", int8(3), "abc"),
		ubj("T", "T"), deep, ubj("{", "S", "i", int8(1), "a", "T", "}"),
	}
	for _, in := range bad {
		if got, err := ubjsonToJSON(in); err == nil {
			t.Errorf("ubjsonToJSON(%q) = %s, want an error", in, got)
		}
	}
	// Every fixture: the UBJSON file decodes to the JSON file's document.
	for _, name := range xgbCases {
		ub, err := os.ReadFile(filepath.Join(xgbFixtures, name+".ubj"))
		if err != nil {
			t.Fatal(err)
		}
		js, err := ubjsonToJSON(ub)
		if err != nil {
			t.Fatalf("%s.ubj: %v", name, err)
		}
		var a, b any
		if err := json.Unmarshal(js, &a); err != nil {
			t.Fatalf("%s.ubj: %v", name, err)
		}
		jb, err := os.ReadFile(filepath.Join(xgbFixtures, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(jb, &b); err != nil {
			t.Fatal(err)
		}
		ja, _ := json.Marshal(a)
		jbb, _ := json.Marshal(b)
		if !bytes.Equal(ja, jbb) {
			t.Errorf("%s: the .ubj and .json documents differ", name)
		}
	}
}

// synthXGBoostJSON writes an XGBoost JSON model of full trees of the given
// depth on p features: random features, thresholds uniform in [0, 1), leaf
// values small, default directions alternating.
func synthXGBoostJSON(seed uint64, trees, depth, p int) []byte {
	r := newRand(seed)
	var ts []map[string]any
	n := 1<<(depth+1) - 1
	for t := range trees {
		left, right := make([]int, n), make([]int, n)
		feat, dl := make([]int, n), make([]int, n)
		cond := make([]float32, n)
		parents, stat := make([]int, n), make([]float32, n)
		for i := range n {
			parents[i] = (i - 1) / 2
			stat[i] = 0.5 // XGBoost reads these as floats: not integral
			if i == 0 {
				parents[i] = math.MaxInt32
			}
			if i < n/2 {
				left[i], right[i] = 2*i+1, 2*i+2
				feat[i] = r.IntN(p)
				cond[i] = float32(r.Float64())
				dl[i] = i % 2
			} else {
				left[i], right[i] = -1, -1
				cond[i] = float32(r.NormFloat64() * 0.1)
			}
		}
		ts = append(ts, map[string]any{
			"id": t, "left_children": left, "right_children": right, "split_indices": feat,
			"split_conditions": cond, "default_left": dl, "split_type": make([]int, n), "categories": []int{},
			"categories_nodes": []int{}, "categories_segments": []int{}, "categories_sizes": []int{},
			"parents": parents, "base_weights": stat, "loss_changes": stat, "sum_hessian": stat,
			"tree_param": map[string]string{"num_nodes": fmt.Sprint(n), "num_feature": fmt.Sprint(p), "size_leaf_vector": "0"},
		})
	}
	doc := map[string]any{
		"version": []int{1, 7, 4},
		"learner": map[string]any{
			"feature_names": []string{}, "feature_types": []string{},
			"learner_model_param": map[string]string{"base_score": "5E-1", "num_class": "0", "num_feature": fmt.Sprint(p), "num_target": "1"},
			"objective":           map[string]any{"name": "binary:logistic", "reg_loss_param": map[string]string{"scale_pos_weight": "1"}},
			"attributes":          map[string]string{},
			"gradient_booster": map[string]any{"name": "gbtree", "model": map[string]any{
				"gbtree_model_param": map[string]string{"num_trees": fmt.Sprint(trees), "num_parallel_tree": "1", "size_leaf_vector": "0"},
				"tree_info":          make([]int, trees),
				"trees":              ts,
			}},
		},
	}
	b, _ := json.Marshal(doc)
	return b
}

// BenchmarkXGBoostPredict scores 100k rows with an XGBoost model of 100
// full trees of depth 6 on 10 features (the shape of BenchmarkGBDTPredict),
// through PredictProba: batch rows/s.
func BenchmarkXGBoostPredict(b *testing.B) {
	m, err := LoadXGBoost(synthXGBoostJSON(3, 100, 6, 10))
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

// FuzzLoadXGBoost: no model file, however damaged, makes LoadXGBoost or
// the predictions of what it loads panic.
func FuzzLoadXGBoost(f *testing.F) {
	for _, name := range []string{"binary.json", "binary.ubj", "multiclass.ubj"} {
		b, err := os.ReadFile(filepath.Join(xgbFixtures, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(synthXGBoostJSON(1, 2, 2, 3))
	f.Add(ubj("{", "#", "i", int8(1), "i", int8(7), "learner", "{", "}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := LoadXGBoost(data)
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
