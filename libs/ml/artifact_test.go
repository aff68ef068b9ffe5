package ml

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
)

// testModels trains one model of each kind, once, for the artifact tests.
var testModels = sync.OnceValue(func() map[string]Model {
	r := newRand(40)
	rows, y := logisticData(r, 1500, []float64{1, -1, 0.5}, 0.1)
	for i := range rows {
		if i%9 == 0 {
			rows[i][2] = math.NaN()
		}
	}
	bin, _ := FromMatrix(featureNames(3), rows, y, Classification)
	mrows, my := threeClassData(r, 900)
	multi, _ := FromMatrix(featureNames(4), mrows, my, Classification)
	reg, _ := FromMatrix(featureNames(3), rows, rowsSum(rows), Regression)
	cat, _ := ReadCSV(strings.NewReader("c,v,y\nred,1,a\nblue,2,b\nred,3,a\ngreen,1,b\nblue,0,a\nred,2,b\n"), CSVOptions{Label: "y", Categorical: []string{"c"}})
	out := map[string]Model{}
	train := func(name, alg string, p Params, d *Dataset) {
		m, err := Train(context.Background(), alg, p, d, TrainOptions{Seed: 7})
		if err != nil {
			panic(name + ": " + err.Error())
		}
		out[name] = m
	}
	train("gbdt-binary", "gbdt", Params{"trees": 30}, bin)
	train("gbdt-multi", "gbdt", Params{"trees": 10, "earlyStopping": true}, multi)
	train("gbdt-regression", "gbdt", Params{"trees": 20, "maxLeaves": 0, "maxDepth": 3}, reg)
	train("gbdt-categorical", "gbdt", Params{"trees": 3, "minSamplesLeaf": 1}, cat)
	train("logreg-binary", "logreg", nil, bin)
	train("logreg-multi", "logreg", Params{"l2": 0.5}, multi)
	train("logreg-categorical", "logreg", nil, cat)
	train("mlp-binary", "mlp", Params{"hidden": "8,4", "epochs": 20}, bin)
	train("mlp-multi", "mlp", Params{"hidden": 6, "activation": "tanh", "epochs": 10, "earlyStopping": true}, multi)
	train("mlp-regression", "mlp", Params{"hidden": 5, "epochs": 10}, reg)
	train("mlp-categorical", "mlp", Params{"hidden": []any{}, "epochs": 5}, cat)
	return out
})

func rowsSum(rows [][]float64) []float64 {
	out := make([]float64, len(rows))
	for i, r := range rows {
		out[i] = r[0] + 2*r[1]
	}
	return out
}

func TestArtifactRoundTripBitExact(t *testing.T) {
	t.Parallel()
	for name, m := range testModels() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := len(m.Signature().Inputs)
			x := uniformRows(newRand(uint64(len(name))), 300, p) // own generator per parallel subtest
			for i := range x {
				x[i][i%p] = math.NaN()
				x[i][0] = x[i][0]*4 - 2
			}
			for _, compressed := range []bool{false, true} {
				var buf bytes.Buffer
				var err error
				if compressed {
					err = SaveCompressed(&buf, m)
				} else {
					err = Save(&buf, m)
				}
				if err != nil {
					t.Fatal(err)
				}
				saved := bytes.Clone(buf.Bytes())
				m2, err := Load(&buf)
				if err != nil {
					t.Fatal(err)
				}
				assertSamePredictions(t, m, m2, x)
				// Saving the loaded model reproduces the bytes.
				var again bytes.Buffer
				if compressed {
					err = SaveCompressed(&again, m2)
				} else {
					err = Save(&again, m2)
				}
				if err != nil || !bytes.Equal(saved, again.Bytes()) {
					t.Fatalf("re-saved artifact differs (err %v)", err)
				}
			}
		})
	}
}

func assertSamePredictions(t *testing.T, a, b Model, x [][]float64) {
	t.Helper()
	pa, pb := a.Predict(x), b.Predict(x)
	for i := range pa {
		if math.Float64bits(pa[i]) != math.Float64bits(pb[i]) {
			t.Fatalf("row %d: Predict %v vs %v", i, pa[i], pb[i])
		}
	}
	qa, qb := a.PredictProba(x), b.PredictProba(x)
	if (qa == nil) != (qb == nil) {
		t.Fatal("PredictProba nil-ness differs")
	}
	for i := range qa {
		for k := range qa[i] {
			if math.Float64bits(qa[i][k]) != math.Float64bits(qb[i][k]) {
				t.Fatalf("row %d class %d: %v vs %v", i, k, qa[i][k], qb[i][k])
			}
		}
	}
	if a.Info().Algorithm != b.Info().Algorithm || a.Info().Seed != b.Info().Seed {
		t.Fatal("info differs")
	}
}

func TestFloatJSONRoundTrip(t *testing.T) {
	t.Parallel()
	// The artifact relies on encoding/json writing the shortest decimal
	// that parses back to the same float64.
	vals := []float64{0.1, 1.0 / 3, math.Pi, 5e-324, math.MaxFloat64, math.Copysign(0, -1), 1e21, 1e-7, 123456789.123456789, math.Nextafter(1, 2)}
	r := newRand(42)
	for range 10000 {
		vals = append(vals, math.Float64frombits(r.Uint64()&^(0x7ff<<52)|uint64(r.IntN(2046)+1)<<52))
	}
	b, err := json.Marshal(vals)
	if err != nil {
		t.Fatal(err)
	}
	var back []float64
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for i := range vals {
		if math.Float64bits(vals[i]) != math.Float64bits(back[i]) && !(vals[i] == 0 && back[i] == 0) {
			t.Fatalf("%v (%x) came back as %v (%x)", vals[i], math.Float64bits(vals[i]), back[i], math.Float64bits(back[i]))
		}
	}
}

func TestArtifactContents(t *testing.T) {
	t.Parallel()
	m := testModels()["gbdt-binary"]
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(artifactBytes(t, m), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"format", "algorithm", "params", "seed", "signature", "training", "model", "checksum"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("artifact lacks %q", k)
		}
	}
	if string(doc["format"]) != `"gyre.model/v1"` || string(doc["algorithm"]) != `"gbdt"` || string(doc["seed"]) != "7" {
		t.Fatalf("header %s %s %s", doc["format"], doc["algorithm"], doc["seed"])
	}
	if !strings.Contains(string(doc["signature"]), `"classes":["0","1"]`) {
		t.Fatalf("signature %s", doc["signature"])
	}
}

func TestLoadRejectsBadArtifacts(t *testing.T) {
	t.Parallel()
	good := artifactBytes(t, testModels()["gbdt-binary"])
	goodLR := artifactBytes(t, testModels()["logreg-binary"])
	goodMLP := artifactBytes(t, testModels()["mlp-binary"])
	replace := func(b []byte, old, new string) []byte {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("artifact does not contain %q", old)
		}
		return bytes.Replace(b, []byte(old), []byte(new), 1)
	}
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty input"},
		{"garbage", []byte("\x00\x01garbage"), "not a valid artifact"},
		{"not json object", []byte("[1,2,3]"), "not a valid artifact"},
		{"truncated", good[:len(good)/2], "not a valid artifact"},
		{"truncated gzip", gzipped(t, good)[:100], "artifact"},
		{"trailing data", append(bytes.Clone(good), []byte("{}")...), "unexpected data"},
		{"other format", replace(good, `"format":"gyre.model/v1"`, `"format":"gyre.model/v2"`), `unsupported format "gyre.model/v2"`},
		{"tampered leaf", replace(good, `"value":[0`, `"value":[1`), "checksum mismatch"},
		{"tampered param", replace(good, `"trees":30`, `"trees":31`), "checksum mismatch"},
		{"tampered logreg weight", replace(goodLR, `"weights":[[`, `"weights":[[1`), "checksum mismatch"},
		{"tampered mlp weight", replace(goodMLP, `"weights":[[`, `"weights":[[1,`), "checksum mismatch"},
		{"no checksum", replace(good, `,"checksum":"sha256:`, `,"x":"`), "unknown field"},
		{"unknown field", replace(good, `"format"`, `"extra":1,"format"`), "unknown field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(bytes.NewReader(c.in))
			var ae *ArtifactError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ArtifactError containing %q", err, c.want)
			}
		})
	}
}

// TestLoadStructuralChecks feeds structurally broken models past the
// checksum (as a forged artifact with a recomputed checksum would be) and
// checks that each is caught.
func TestLoadStructuralChecks(t *testing.T) {
	t.Parallel()
	good := artifactBytes(t, testModels()["gbdt-regression"])
	var a artifact
	if err := json.Unmarshal(good, &a); err != nil {
		t.Fatal(err)
	}
	var p gbdtPayload
	if err := json.Unmarshal(a.Model, &p); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		mutate func(p *gbdtPayload, a *artifact)
		want   string
	}{
		{"cycle", func(p *gbdtPayload, _ *artifact) { p.Trees[0].Left[1] = 0 }, "bad children"},
		{"self loop", func(p *gbdtPayload, _ *artifact) { p.Trees[0].Right[0] = 0 }, "bad children"},
		{"child out of range", func(p *gbdtPayload, _ *artifact) { p.Trees[0].Left[0] = 1000 }, "bad children"},
		{"shared child", func(p *gbdtPayload, _ *artifact) {
			tr := &p.Trees[0]
			tr.Right[0] = tr.Left[0] + 1
			tr.Left[tr.Left[0]] = tr.Right[0]
		}, "parents"},
		{"feature out of range", func(p *gbdtPayload, _ *artifact) { p.Trees[1].Feature[0] = 3 }, "feature 3 out of range"},
		{"negative feature", func(p *gbdtPayload, _ *artifact) { p.Trees[1].Feature[0] = -2 }, "out of range"},
		{"short arrays", func(p *gbdtPayload, _ *artifact) { p.Trees[2].Value = p.Trees[2].Value[:1] }, "differ in length"},
		{"empty tree", func(p *gbdtPayload, _ *artifact) { p.Trees[2] = treePayload{} }, "no nodes"},
		{"missing tree", func(p *gbdtPayload, _ *artifact) { p.Trees = p.Trees[1:] }, "do not match"},
		{"baseline length", func(p *gbdtPayload, _ *artifact) { p.Baseline = nil }, "baseline"},
		{"importance length", func(p *gbdtPayload, _ *artifact) { p.Importance = p.Importance[:1] }, "importance"},
		{"trees per iteration", func(p *gbdtPayload, _ *artifact) { p.TreesPerIteration = 2 }, "trees per iteration"},
		{"unknown algorithm", func(_ *gbdtPayload, a *artifact) { a.Algorithm = "svm" }, "unknown algorithm"},
		{"bad param", func(_ *gbdtPayload, a *artifact) { a.Params["trees"] = -1.0 }, `param "trees"`},
		{"no inputs", func(_ *gbdtPayload, a *artifact) { a.Signature.Inputs = nil }, "no inputs"},
		{"duplicate input", func(_ *gbdtPayload, a *artifact) { a.Signature.Inputs[1].Name = "x0" }, "duplicate input"},
		{"bad task", func(_ *gbdtPayload, a *artifact) { a.Signature.Task = "ranking" }, "unknown task"},
		{"regression with classes", func(_ *gbdtPayload, a *artifact) { a.Signature.Classes = []string{"a", "b"} }, "regression model has classes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var a2 artifact
			var p2 gbdtPayload
			_ = json.Unmarshal(good, &a2)
			_ = json.Unmarshal(a.Model, &p2)
			c.mutate(&p2, &a2)
			a2.Model, _ = json.Marshal(p2)
			a2.Checksum, _ = checksum(a2)
			b, _ := json.Marshal(a2)
			_, err := Load(bytes.NewReader(b))
			var ae *ArtifactError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ArtifactError containing %q", err, c.want)
			}
		})
	}
}

// TestLoadMLPStructuralChecks does the same for mlp artifacts.
func TestLoadMLPStructuralChecks(t *testing.T) {
	t.Parallel()
	good := artifactBytes(t, testModels()["mlp-binary"])
	goodReg := artifactBytes(t, testModels()["mlp-regression"])
	cases := []struct {
		name   string
		base   []byte
		mutate func(p *mlpPayload, a *artifact)
		want   string
	}{
		{"unchanged", good, func(*mlpPayload, *artifact) {}, ""},
		{"missing layer", good, func(p *mlpPayload, _ *artifact) { p.Layers = p.Layers[1:] }, "2 layers, want 3"},
		{"params disagree", good, func(_ *mlpPayload, a *artifact) { a.Params["hidden"] = []any{8.0, 5.0} }, "weight rows"},
		{"short weight row", good, func(p *mlpPayload, _ *artifact) { p.Layers[1].Weights[2] = p.Layers[1].Weights[2][1:] }, "weight row 2 has 7 values, want 8"},
		{"extra weight row", good, func(p *mlpPayload, _ *artifact) {
			p.Layers[2].Weights = append(p.Layers[2].Weights, p.Layers[2].Weights[0])
		}, "2 weight rows"},
		{"short bias", good, func(p *mlpPayload, _ *artifact) { p.Layers[0].Bias = p.Layers[0].Bias[1:] }, "biases"},
		{"hidden activation", good, func(p *mlpPayload, _ *artifact) { p.Layers[0].Activation = "tanh" }, `activation "tanh", want "relu"`},
		{"output activation", good, func(p *mlpPayload, _ *artifact) { p.Layers[2].Activation = "softmax" }, `want "sigmoid"`},
		{"scaler width", good, func(p *mlpPayload, _ *artifact) { p.Scaler.Mean = p.Scaler.Mean[1:] }, "scaler"},
		{"zero scale", good, func(p *mlpPayload, _ *artifact) { p.Scaler.Scale[0] = 0 }, "bad standardisation"},
		{"target on classifier", good, func(p *mlpPayload, _ *artifact) { p.Target = &targetPayload{Mean: 1, Scale: 1} }, "no target scaling"},
		{"bad target scale", goodReg, func(p *mlpPayload, _ *artifact) { p.Target.Scale = -1 }, "bad target scaling"},
		{"bad activation param", good, func(_ *mlpPayload, a *artifact) { a.Params["activation"] = "softmax" }, `param "activation"`},
		{"huge", good, func(_ *mlpPayload, a *artifact) { a.Params["hidden"] = []any{65536.0, 65536.0} }, "parameters, more than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var a artifact
			var p mlpPayload
			if err := json.Unmarshal(c.base, &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(a.Model, &p); err != nil {
				t.Fatal(err)
			}
			c.mutate(&p, &a)
			a.Model, _ = json.Marshal(p)
			a.Checksum, _ = checksum(a)
			b, _ := json.Marshal(a)
			_, err := Load(bytes.NewReader(b))
			if c.want == "" {
				if err != nil {
					t.Fatalf("re-encoded artifact: %v", err)
				}
				return
			}
			var ae *ArtifactError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ArtifactError containing %q", err, c.want)
			}
		})
	}
	// A non-finite weight cannot be written as JSON at all; spell it as a
	// number too large for a float64.
	bad := bytes.Replace(good, []byte(`"weights":[[`), []byte(`"weights":[[1e999,`), 1)
	if _, err := load(bytes.NewReader(bad), false); err == nil {
		t.Fatal("an out-of-range weight loaded")
	}
}

func TestSaveRejectsForeignModel(t *testing.T) {
	t.Parallel()
	if err := Save(&bytes.Buffer{}, fakeModel{}); err == nil {
		t.Fatal("saving a foreign model type should fail")
	}
}

type fakeModel struct{}

func (fakeModel) Signature() Signature                   { return Signature{} }
func (fakeModel) PredictProba(x [][]float64) [][]float64 { return nil }
func (fakeModel) Predict(x [][]float64) []float64        { return nil }
func (fakeModel) Info() ModelInfo                        { return ModelInfo{} }

// FuzzLoad checks that no input makes Load panic, and that whatever it
// accepts can predict without panicking. The checksum would reject almost
// every mutation before the structural checks, so the fuzzer also drives
// the loader with the checksum check off. The seeds are small models: the
// fuzzing engine slows to a crawl on inputs of tens of kilobytes.
func FuzzLoad(f *testing.F) {
	r := newRand(43)
	rows, y := threeClassData(r, 300)
	multi := mustMatrix(f, rows, y, Classification)
	for i := range y {
		y[i] = float64(int(y[i]) % 2)
		if i%5 == 0 {
			rows[i][1] = math.NaN()
		}
	}
	binary := mustMatrix(f, rows, y, Classification)
	cat, _ := ReadCSV(strings.NewReader("c,v,y\nred,1,a\nblue,2,b\nred,3,a\ngreen,1,b\n"), CSVOptions{Label: "y", Categorical: []string{"c"}})
	seeds := []Model{
		mustTrain(f, "gbdt", Params{"trees": 2, "maxLeaves": 4}, binary, TrainOptions{}),
		mustTrain(f, "gbdt", Params{"trees": 1, "maxLeaves": 3}, multi, TrainOptions{}),
		mustTrain(f, "gbdt", Params{"trees": 2, "minSamplesLeaf": 1}, cat, TrainOptions{}),
		mustTrain(f, "logreg", nil, multi, TrainOptions{}),
		mustTrain(f, "logreg", nil, cat, TrainOptions{}),
		mustTrain(f, "mlp", Params{"hidden": 2, "epochs": 1}, binary, TrainOptions{}),
		mustTrain(f, "mlp", Params{"hidden": "2,2", "epochs": 1}, cat, TrainOptions{}),
	}
	for _, m := range seeds {
		b := artifactBytes(f, m)
		f.Add(b)
		f.Add(b[:len(b)/3])
		f.Add(bytes.Replace(b, []byte(`"left":[1`), []byte(`"left":[0`), 1))
		f.Add(bytes.Replace(b, []byte(`"feature":[`), []byte(`"feature":[9`), 1))
		f.Add(bytes.Replace(b, []byte(`"weights":[[`), []byte(`"weights":[[1,`), 1))
		f.Add(bytes.Replace(b, []byte(`"hidden":[2`), []byte(`"hidden":[3`), 1))
		f.Add(gzipped(f, b))
	}
	f.Add([]byte(`{"format":"gyre.model/v1"}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, verify := range []bool{true, false} {
			m, err := load(bytes.NewReader(data), verify)
			if err != nil {
				if m != nil {
					t.Fatal("model returned with an error")
				}
				continue
			}
			p := len(m.Signature().Inputs)
			rows := [][]float64{make([]float64, p), make([]float64, p), make([]float64, max(p-1, 0))}
			for j := range rows[1] {
				rows[1][j] = math.NaN()
			}
			m.Predict(rows)
			m.PredictProba(rows)
		}
	})
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
