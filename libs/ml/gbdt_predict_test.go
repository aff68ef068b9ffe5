package ml

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

// TestCompiledForestMatchesWalk: the compiled, blocked, branch-free
// prediction gives bit-identical raw scores to walking the stored trees row
// by row, on rows full of edge cases: values equal to thresholds, NaN, ±Inf,
// -0, and rows of the wrong width.
func TestCompiledForestMatchesWalk(t *testing.T) {
	t.Parallel()
	models := map[string]*GBDT{}
	for name, m := range testModels() {
		if g, ok := m.(*GBDT); ok {
			models[name] = g
		}
	}
	// Trees deeper than maxFixedSteps take the walk-to-leaf path.
	r := newRand(50)
	rows, y := driftingStream(r, 3000)
	deep := mustTrain(t, "gbdt", Params{"trees": 5, "maxDepth": 0, "maxLeaves": 0, "minSamplesLeaf": 1}, mustMatrix(t, rows, y, Classification), TrainOptions{}).(*GBDT)
	if !hasDeepTree(deep) {
		t.Fatal("the deep model has no tree deeper than maxFixedSteps")
	}
	models["deep"] = deep
	models["handmade"] = handmadeGBDT(t)
	for name, m := range models {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := len(m.sig.Inputs)
			var thresholds []float64
			for _, nd := range m.nodes {
				if nd.feature >= 0 {
					thresholds = append(thresholds, nd.threshold)
				}
			}
			r := newRand(uint64(len(name)) + 60)
			specials := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, math.MaxFloat64, -math.MaxFloat64}
			x := make([][]float64, 1000)
			for i := range x {
				x[i] = make([]float64, p)
				for j := range x[i] {
					switch u := r.Float64(); {
					case u < 0.3 && len(thresholds) > 0:
						x[i][j] = thresholds[r.IntN(len(thresholds))]
					case u < 0.35:
						x[i][j] = specials[r.IntN(len(specials))]
					default:
						x[i][j] = 4*r.Float64() - 2
					}
				}
			}
			x[3] = x[3][:p-1]      // wrong width
			x[4] = append(x[4], 1) // wrong width
			flat := make([]float64, 0, len(x)*p)
			for _, row := range x {
				if len(row) != p {
					row = make([]float64, p) // PredictRawFlat has no ragged rows
				}
				flat = append(flat, row...)
			}
			got := m.PredictRaw(x)
			gotFlat := m.PredictRawFlat(flat, len(x))
			for i, row := range x {
				if len(row) != p {
					for _, v := range got[i] {
						if !math.IsNaN(v) {
							t.Fatalf("row %d of the wrong width scored %v", i, got[i])
						}
					}
					continue
				}
				want := refRaw(m, row)
				for k := range want {
					if math.Float64bits(got[i][k]) != math.Float64bits(want[k]) {
						t.Fatalf("row %d %v output %d: %v, walk gives %v", i, row, k, got[i][k], want[k])
					}
					if math.Float64bits(gotFlat[i*m.outs+k]) != math.Float64bits(want[k]) {
						t.Fatalf("row %d output %d: flat %v, walk gives %v", i, k, gotFlat[i*m.outs+k], want[k])
					}
				}
			}
			if m.PredictRawFlat(flat[1:], len(x)) != nil {
				t.Fatal("PredictRawFlat accepted a short slice")
			}
		})
	}
}

func hasDeepTree(m *GBDT) bool {
	for _, s := range m.forest.steps {
		if s < 0 {
			return true
		}
	}
	return false
}

// handmadeGBDT loads a forged regression artifact whose trees are stored in
// an order the trainer never writes (children far from their parent, the
// right child before the left) and with a -0 threshold.
func handmadeGBDT(t *testing.T) *GBDT {
	t.Helper()
	good := artifactBytes(t, testModels()["gbdt-regression"])
	var a artifact
	if err := json.Unmarshal(good, &a); err != nil {
		t.Fatal(err)
	}
	negZero := math.Copysign(0, -1)
	p := gbdtPayload{Baseline: []float64{0.5}, TreesPerIteration: 1, Importance: []float64{1, 1, 1}, Trees: []treePayload{
		{ // 0: x0 <= -0 ? 3 : 1;  1: x1 <= 0.25 ? 4 : 2;  2, 3, 4: leaves
			Feature:     []int32{0, 1, -1, -1, -1},
			Threshold:   []float64{negZero, 0.25, 0, 0, 0},
			Left:        []int32{3, 4, 0, 0, 0},
			Right:       []int32{1, 2, 0, 0, 0},
			MissingLeft: []bool{false, true, false, false, false},
			Value:       []float64{0, 0, 1.5, -2.25, 0.125},
		},
		{Feature: []int32{-1}, Threshold: []float64{0}, Left: []int32{0}, Right: []int32{0}, MissingLeft: []bool{false}, Value: []float64{0.1}},
	}}
	a.Training.Iterations = 2
	a.Model, _ = json.Marshal(p)
	a.Checksum, _ = checksum(a)
	b, _ := json.Marshal(a)
	m, err := Load(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	g := m.(*GBDT)
	if g.forest.nodes[0].threshold != 0 || math.Signbit(g.forest.nodes[0].threshold) {
		t.Fatal("a -0 threshold was not compiled to +0")
	}
	return g
}
