package ml

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"testing"
)

func TestGBDTLearnsThresholdExactly(t *testing.T) {
	t.Parallel()
	// x0 takes the 101 values 0, 0.01, ..., 1, so every value has its own
	// bin and the boundary is learnable exactly: the threshold must land
	// between 0.30 and 0.31.
	r := newRand(1)
	rows := uniformRows(r, 2000, 3)
	y := make([]float64, len(rows))
	for i, x := range rows {
		x[0] = math.Round(x[0]*100) / 100
		if x[0] > 0.3 {
			y[i] = 1
		}
	}
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "gbdt", Params{"trees": 20}, d, TrainOptions{Seed: 1})
	metrics, err := Evaluate(m, d)
	if err != nil {
		t.Fatal(err)
	}
	if metrics["accuracy"] != 1 {
		t.Fatalf("training accuracy %v, want 1", metrics["accuracy"])
	}
	// The root of the first tree must split on x0 near 0.3, and all the
	// gain is on x0.
	g := m.(*GBDT)
	root := g.nodes[g.roots[0]]
	if root.feature != 0 || root.threshold != 0.305 {
		t.Fatalf("root split x%d <= %v, want x0 <= 0.305", root.feature, root.threshold)
	}
	imp := g.FeatureImportance()
	if imp[0] <= 0 || imp[1] > imp[0]*1e-3 || imp[2] > imp[0]*1e-3 {
		t.Fatalf("importance %v should be (almost) all on x0", imp)
	}
	// Fresh points, including ones close to the boundary.
	test := [][]float64{{0.30, 0.5, 0.5}, {0.31, 0.5, 0.5}, {0.3049, 0.9, 0.1}, {0, 0, 0}, {1, 1, 1}}
	want := []float64{0, 1, 0, 0, 1}
	for i, p := range m.Predict(test) {
		if p != want[i] {
			t.Errorf("Predict(%v) = %v, want %v", test[i], p, want[i])
		}
	}
}

func TestGBDTMissingValueRouting(t *testing.T) {
	t.Parallel()
	// y = 1 exactly when x0 is missing or x0 > 0.7: the trees must learn to
	// send NaN to the same side as large values.
	r := newRand(2)
	n := 3000
	rows := uniformRows(r, n, 2)
	y := make([]float64, n)
	for i, x := range rows {
		x[0] = math.Round(x[0]*100) / 100 // one bin per value: exact boundary
		if i%4 == 0 {
			x[0] = math.NaN()
		}
		if math.IsNaN(x[0]) || x[0] > 0.7 {
			y[i] = 1
		}
	}
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "gbdt", Params{"trees": 30}, d, TrainOptions{})
	pred := m.Predict([][]float64{{math.NaN(), 0.5}, {0.1, 0.5}, {0.9, 0.5}})
	if pred[0] != 1 || pred[1] != 0 || pred[2] != 1 {
		t.Fatalf("predictions %v, want [1 0 1]", pred)
	}
	metrics, _ := Evaluate(m, d)
	if metrics["accuracy"] != 1 {
		t.Fatalf("accuracy %v, want 1", metrics["accuracy"])
	}

	// The mirror case: NaN behaves like small values.
	for i := range y {
		y[i] = 0
		if !math.IsNaN(rows[i][0]) && rows[i][0] > 0.7 {
			y[i] = 1
		}
	}
	d = mustMatrix(t, rows, y, Classification)
	m = mustTrain(t, "gbdt", Params{"trees": 30}, d, TrainOptions{})
	if p := m.Predict([][]float64{{math.NaN(), 0.5}}); p[0] != 0 {
		t.Fatalf("NaN predicted %v, want 0", p[0])
	}

	// No missing values in training: NaN at prediction time must still
	// give a valid prediction.
	clean := uniformRows(r, 500, 2)
	cy := make([]float64, len(clean))
	for i, x := range clean {
		if x[0] > 0.5 {
			cy[i] = 1
		}
	}
	m = mustTrain(t, "gbdt", Params{"trees": 5}, mustMatrix(t, clean, cy, Classification), TrainOptions{})
	for _, p := range m.PredictProba([][]float64{{math.NaN(), math.NaN()}})[0] {
		if math.IsNaN(p) || p < 0 || p > 1 {
			t.Fatalf("bad probability %v for an all-missing row", p)
		}
	}
}

func TestGBDTMulticlass(t *testing.T) {
	t.Parallel()
	r := newRand(3)
	rows, y := threeClassData(r, 3000)
	train := mustMatrix(t, rows[:2000], y[:2000], Classification)
	test := mustMatrix(t, rows[2000:], y[2000:], Classification)
	m := mustTrain(t, "gbdt", Params{"trees": 50}, train, TrainOptions{Seed: 3})
	if got := m.(*GBDT).NumTrees(); got != 150 {
		t.Fatalf("%d trees, want 50 iterations × 3 classes", got)
	}
	metrics, err := Evaluate(m, test)
	if err != nil {
		t.Fatal(err)
	}
	if metrics["accuracy"] < 0.9 {
		t.Fatalf("multiclass accuracy %v < 0.9", metrics["accuracy"])
	}
	for _, k := range []string{"accuracy", "logloss", "auc", "f1"} {
		if _, ok := metrics[k]; !ok {
			t.Errorf("metric %q missing from %v", k, metrics)
		}
	}
	for _, p := range m.PredictProba(test.Rows()[:10]) {
		s := p[0] + p[1] + p[2]
		if math.Abs(s-1) > 1e-12 {
			t.Fatalf("probabilities %v sum to %v", p, s)
		}
	}
}

func TestGBDTRegression(t *testing.T) {
	t.Parallel()
	r := newRand(4)
	rows := uniformRows(r, 4000, 3)
	y := make([]float64, len(rows))
	for i, x := range rows {
		y[i] = math.Sin(6*x[0]) + 2*x[1] + 0.05*r.NormFloat64()
	}
	d := mustMatrix(t, rows, y, Regression)
	train, _ := d.Slice(0, 3000)
	test, _ := d.Slice(3000, 4000)
	m := mustTrain(t, "gbdt", Params{"trees": 200}, train, TrainOptions{})
	metrics, err := Evaluate(m, test)
	if err != nil {
		t.Fatal(err)
	}
	if metrics["rmse"] > 0.1 || metrics["mae"] > metrics["rmse"] {
		t.Fatalf("regression metrics %v, want rmse <= 0.1", metrics)
	}
	if m.PredictProba(test.Rows()) != nil {
		t.Fatal("PredictProba of a regressor should be nil")
	}
}

func TestGBDTEarlyStopping(t *testing.T) {
	t.Parallel()
	r := newRand(5)
	rows, y := logisticData(r, 3000, []float64{1, -1, 0}, 0)
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "gbdt", Params{"trees": 1000, "earlyStopping": true, "learningRate": 0.3}, d, TrainOptions{Seed: 5})
	info := m.Info().Training
	if info.Stop != "earlyStopping" || info.Iterations >= 1000 || info.Iterations < 10 {
		t.Fatalf("training info %+v: want an early stop", info)
	}
	if info.ValidationRows != 300 || info.Rows != 2700 || info.ValidationLoss == nil {
		t.Fatalf("training info %+v: want a 10%% validation split", info)
	}
	// An explicit validation set is used as given.
	val, _ := d.Slice(2500, 3000)
	train, _ := d.Slice(0, 2500)
	m = mustTrain(t, "gbdt", Params{"trees": 1000, "earlyStopping": true, "learningRate": 0.3}, train, TrainOptions{Validation: val})
	if got := m.Info().Training; got.ValidationRows != 500 || got.Rows != 2500 {
		t.Fatalf("training info %+v: want the given validation set", got)
	}
}

func TestGBDTRespectsTreeLimits(t *testing.T) {
	t.Parallel()
	r := newRand(6)
	rows, y := driftingStream(r, 5000)
	d := mustMatrix(t, rows, y, Classification)
	cases := []struct {
		name                         string
		params                       Params
		maxLeaves, maxDepth, minLeaf int
	}{
		{"defaults", Params{}, 31, 6, 20},
		{"stumps", Params{"maxDepth": 1}, 2, 1, 20},
		{"leaves", Params{"maxLeaves": 4, "maxDepth": 0}, 4, 0, 20},
		{"bigLeaves", Params{"minSamplesLeaf": 400, "maxLeaves": 0, "maxDepth": 0}, 0, 0, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.params["trees"] = 5
			m := mustTrain(t, "gbdt", c.params, d, TrainOptions{}).(*GBDT)
			x := d.Rows()
			for ti, root := range m.roots {
				end := int32(len(m.nodes))
				if ti+1 < len(m.roots) {
					end = m.roots[ti+1]
				}
				leaves, depth := 0, treeDepth(m.nodes, root)
				for i := root; i < end; i++ {
					if m.nodes[i].feature < 0 {
						leaves++
					}
				}
				if c.maxLeaves > 0 && leaves > c.maxLeaves {
					t.Errorf("tree %d has %d leaves > %d", ti, leaves, c.maxLeaves)
				}
				if c.maxDepth > 0 && depth > c.maxDepth {
					t.Errorf("tree %d has depth %d > %d", ti, depth, c.maxDepth)
				}
				// Count training rows per leaf.
				counts := map[int32]int{}
				for _, row := range x {
					i := root
					for m.nodes[i].feature >= 0 {
						nd := m.nodes[i]
						if row[nd.feature] <= nd.threshold {
							i = nd.left
						} else {
							i = nd.right
						}
					}
					counts[i]++
				}
				for leaf, cnt := range counts {
					if cnt < c.minLeaf {
						t.Errorf("tree %d leaf %d has %d rows < %d", ti, leaf, cnt, c.minLeaf)
					}
				}
			}
		})
	}
}

func treeDepth(nodes []node, i int32) int {
	if nodes[i].feature < 0 {
		return 0
	}
	return 1 + max(treeDepth(nodes, nodes[i].left), treeDepth(nodes, nodes[i].right))
}

func TestBinEdges(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		col     []float64
		maxBins int
		want    []float64
	}{
		{"few distinct: midpoints", []float64{3, 1, 2, 2, math.NaN()}, 255, []float64{1.5, 2.5}},
		{"constant", []float64{5, 5, 5}, 255, []float64{}},
		{"all missing", []float64{math.NaN(), math.NaN()}, 255, []float64{}},
		{"quantiles", []float64{0, 1, 2, 3, 4, 5, 6, 7}, 4, []float64{1.5, 3.5, 5.5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := binEdges(c.col, nil, c.maxBins)
			if len(got) != len(c.want) {
				t.Fatalf("edges %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("edges %v, want %v", got, c.want)
				}
			}
			// Binning agrees with the threshold rule x <= edge.
			bins := binColumn(c.col, got)
			for i, v := range c.col {
				if math.IsNaN(v) {
					if int(bins[i]) != len(got)+1 {
						t.Fatalf("NaN in bin %d, want missing bin %d", bins[i], len(got)+1)
					}
					continue
				}
				for b, e := range got {
					if (int(bins[i]) <= b) != (v <= e) {
						t.Fatalf("value %v in bin %d disagrees with edge %d = %v", v, bins[i], b, e)
					}
				}
			}
		})
	}
	// Many distinct values: at most maxBins bins.
	r := newRand(7)
	col := make([]float64, 10000)
	for i := range col {
		col[i] = r.NormFloat64()
	}
	if e := binEdges(col, nil, 255); len(e) != 254 {
		t.Fatalf("%d edges for 10000 distinct values, want 254", len(e))
	}
}

func TestGBDTDeterministic(t *testing.T) {
	// Not parallel: it changes GOMAXPROCS.
	r := newRand(8)
	rows, y := threeClassData(r, 6000)
	for i := range rows {
		if i%7 == 0 {
			rows[i][1] = math.NaN()
		}
	}
	d := mustMatrix(t, rows, y, Classification)
	params := Params{"trees": 20, "earlyStopping": true}
	ref := artifactBytes(t, mustTrain(t, "gbdt", params, d, TrainOptions{Seed: 9, Workers: 1}))
	for _, workers := range []int{2, 3, 8} {
		got := artifactBytes(t, mustTrain(t, "gbdt", params, d, TrainOptions{Seed: 9, Workers: workers}))
		if !bytes.Equal(ref, got) {
			t.Fatalf("Workers=%d gives a different artifact than Workers=1", workers)
		}
	}
	old := runtime.GOMAXPROCS(1)
	one := artifactBytes(t, mustTrain(t, "gbdt", params, d, TrainOptions{Seed: 9}))
	runtime.GOMAXPROCS(2)
	two := artifactBytes(t, mustTrain(t, "gbdt", params, d, TrainOptions{Seed: 9}))
	runtime.GOMAXPROCS(old)
	if !bytes.Equal(one, two) || !bytes.Equal(one, ref) {
		t.Fatal("GOMAXPROCS 1 and 2 give different artifacts")
	}
	// A different seed changes the validation split, hence the model.
	other := artifactBytes(t, mustTrain(t, "gbdt", params, d, TrainOptions{Seed: 10}))
	if bytes.Equal(ref, other) {
		t.Fatal("seed has no effect on a model with a seeded validation split")
	}
}

func TestLogRegDeterministic(t *testing.T) {
	t.Parallel()
	r := newRand(9)
	rows, y := logisticData(r, 9000, []float64{1, -2, 0.5}, 0.2)
	d := mustMatrix(t, rows, y, Classification)
	ref := artifactBytes(t, mustTrain(t, "logreg", nil, d, TrainOptions{Workers: 1}))
	got := artifactBytes(t, mustTrain(t, "logreg", nil, d, TrainOptions{Workers: 4}))
	if !bytes.Equal(ref, got) {
		t.Fatal("logreg artifacts differ between 1 and 4 workers")
	}
}

// TestRetrainingBeatsStaticOnDrift is the loop in miniature: on a stream
// whose concept drifts, retraining on the newest window must beat a model
// trained once. It stands in for the Elec2 benchmark, which lives outside
// the repository.
func TestRetrainingBeatsStaticOnDrift(t *testing.T) {
	t.Parallel()
	r := newRand(10)
	rows, y := driftingStream(r, 20000)
	stream := mustMatrix(t, rows, y, Classification)
	const batch, window = 1000, 5
	params := Params{"trees": 50}
	first, _ := stream.Slice(0, 2*batch)
	static := mustTrain(t, "gbdt", params, first, TrainOptions{})
	champion := static
	var staticHits, retrainHits, total float64
	for start := 2 * batch; start < stream.NumRows(); start += batch {
		b, _ := stream.Slice(start, start+batch)
		ms, _ := Evaluate(static, b)
		mr, _ := Evaluate(champion, b)
		staticHits += ms["accuracy"] * batch
		retrainHits += mr["accuracy"] * batch
		total += batch
		lo := max(0, start+batch-window*batch)
		w, _ := stream.Slice(lo, start+batch)
		champion = mustTrain(t, "gbdt", params, w, TrainOptions{})
	}
	s, rr := staticHits/total, retrainHits/total
	t.Logf("static %.3f, retrained %.3f", s, rr)
	if rr < s+0.1 {
		t.Fatalf("retraining (%.3f) should clearly beat the static model (%.3f) on drifting data", rr, s)
	}
}

func BenchmarkGBDTTrain5k(b *testing.B) {
	r := newRand(11)
	rows, y := driftingStream(r, 5000)
	d := mustMatrix(b, rows, y, Classification)
	params := Params{"trees": 100, "maxDepth": 6, "learningRate": 0.1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Train(context.Background(), "gbdt", params, d, TrainOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// predictBenchData is the prediction benchmark of issue #4: 100 trees of
// depth 6 (maxLeaves 0, so every tree is full-depth where the data allows)
// on 10 features, scored on 100k rows.
func predictBenchData(b *testing.B) (*GBDT, [][]float64) {
	b.Helper()
	r := newRand(12)
	gen := func(n int) ([][]float64, []float64) {
		rows := uniformRows(r, n, 10)
		y := make([]float64, n)
		for i, x := range rows {
			z := math.Sin(6*x[0]) + x[1]*x[2] - x[3] + 0.5*x[4]*x[4] - 0.3*x[5] + 0.2*r.NormFloat64()
			if z > 0 {
				y[i] = 1
			}
		}
		return rows, y
	}
	rows, y := gen(20000)
	m := mustTrain(b, "gbdt", Params{"trees": 100, "maxDepth": 6, "maxLeaves": 0}, mustMatrix(b, rows, y, Classification), TrainOptions{}).(*GBDT)
	x, _ := gen(100000)
	return m, x
}

func BenchmarkGBDTPredict(b *testing.B) {
	m, x := predictBenchData(b)
	b.ReportAllocs()
	for b.Loop() {
		m.PredictProba(x)
	}
	b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkLogRegTrain5k(b *testing.B) {
	r := newRand(13)
	rows, y := logisticData(r, 5000, []float64{1, -1, 0.5, 0, 2, -0.5}, 0)
	d := mustMatrix(b, rows, y, Classification)
	for b.Loop() {
		if _, err := Train(context.Background(), "logreg", nil, d, TrainOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGBDTPredictBatch scores blocks of 1 to 64 rows, as serving's
// batcher hands them over: ns/row says what batching single-row requests
// can save on the model call (docs/serving.md).
func BenchmarkGBDTPredictBatch(b *testing.B) {
	m, x := predictBenchData(b)
	for _, n := range []int{1, 2, 4, 8, 16, 64} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			lo := 0
			for b.Loop() {
				m.PredictProba(x[lo : lo+n])
				if lo += n; lo+n > len(x) {
					lo = 0
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
		})
	}
}

// BenchmarkGBDTPredictFlat scores a serving-style flat row-major batch.
func BenchmarkGBDTPredictFlat(b *testing.B) {
	m, x := predictBenchData(b)
	flat := make([]float64, 0, len(x)*len(x[0]))
	for _, r := range x {
		flat = append(flat, r...)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.PredictRawFlat(flat, len(x))
	}
	b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "rows/s")
}

// refRaw is the row-at-a-time reference: the baseline plus each tree's
// leaf value in tree order, walking the uncompiled trees.
func refRaw(m *GBDT, x []float64) []float64 {
	dst := slices.Clone(m.baseline)
	k := 0
	for _, r := range m.roots {
		dst[k] += walk(m.nodes, r, x)
		if k++; k == m.outs {
			k = 0
		}
	}
	return dst
}

// BenchmarkGBDTPredictRowAtATime is the walk prediction used before the
// compiled forest, for comparison in the same run.
func BenchmarkGBDTPredictRowAtATime(b *testing.B) {
	m, x := predictBenchData(b)
	for b.Loop() {
		forChunks(len(x), predictChunk, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				refRaw(m, x[i])
			}
		})
	}
	b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "rows/s")
}
