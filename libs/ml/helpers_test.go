package ml

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// newRand returns a seeded generator so every synthetic dataset is fixed.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 42)) }

// featureNames returns x0..x{p-1}.
func featureNames(p int) []string {
	out := make([]string, p)
	for j := range out {
		out[j] = fmt.Sprintf("x%d", j)
	}
	return out
}

// mustMatrix builds a dataset or fails the test.
func mustMatrix(t testing.TB, rows [][]float64, y []float64, task Task) *Dataset {
	t.Helper()
	d, err := FromMatrix(featureNames(len(rows[0])), rows, y, task)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mustTrain trains or fails the test.
func mustTrain(t testing.TB, alg string, p Params, d *Dataset, opts TrainOptions) Model {
	t.Helper()
	m, err := Train(context.Background(), alg, p, d, opts)
	if err != nil {
		t.Fatalf("Train(%s): %v", alg, err)
	}
	return m
}

// artifactBytes saves a model or fails the test.
func artifactBytes(t testing.TB, m Model) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Save(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// uniformRows draws n rows of p features uniform in [0,1).
func uniformRows(r *rand.Rand, n, p int) [][]float64 {
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = make([]float64, p)
		for j := range rows[i] {
			rows[i][j] = r.Float64()
		}
	}
	return rows
}

// logisticData draws x ~ N(0,1)^p and y ~ Bernoulli(sigmoid(b + w·x)).
func logisticData(r *rand.Rand, n int, w []float64, b float64) ([][]float64, []float64) {
	rows := make([][]float64, n)
	y := make([]float64, n)
	for i := range rows {
		rows[i] = make([]float64, len(w))
		z := b
		for j := range w {
			rows[i][j] = r.NormFloat64()
			z += w[j] * rows[i][j]
		}
		if r.Float64() < sigmoid(z) {
			y[i] = 1
		}
	}
	return rows, y
}

// threeClassData draws points around three well-separated centres.
func threeClassData(r *rand.Rand, n int) ([][]float64, []float64) {
	centres := [][]float64{{0, 0, 0}, {3, 0, 1}, {0, 3, -1}}
	rows := make([][]float64, n)
	y := make([]float64, n)
	for i := range rows {
		c := i % 3
		rows[i] = []float64{
			centres[c][0] + r.NormFloat64(),
			centres[c][1] + r.NormFloat64(),
			centres[c][2] + r.NormFloat64(),
			r.NormFloat64(), // noise feature
		}
		y[i] = float64(c)
	}
	return rows, y
}

// driftingStream yields an Elec2-like stream of n rows: 6 features in [0,1]
// and a label whose decision boundary rotates slowly over time, so a model
// trained once goes stale and retraining on recent data pays off.
func driftingStream(r *rand.Rand, n int) ([][]float64, []float64) {
	rows := uniformRows(r, n, 6)
	y := make([]float64, n)
	for i, x := range rows {
		angle := math.Pi * float64(i) / float64(n) // half a turn over the stream
		z := math.Cos(angle)*(x[0]-0.5) + math.Sin(angle)*(x[1]-0.5) + 0.3*(x[2]-0.5)*(x[3]-0.5)
		if r.Float64() < 0.05 { // label noise
			z = -z
		}
		if z > 0 {
			y[i] = 1
		}
	}
	return rows, y
}

func almostEqual(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
