package ml

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

// xorData draws points in four quadrants labelled by XOR of the signs, with
// a margin around the axes: no linear model does better than chance.
func xorData(n int, seed uint64) ([][]float64, []float64) {
	r := newRand(seed)
	rows := make([][]float64, n)
	y := make([]float64, n)
	for i := range rows {
		a, b := 0.2+r.Float64(), 0.2+r.Float64()
		if i%2 == 0 {
			a = -a
		}
		if (i/2)%2 == 0 {
			b = -b
		}
		rows[i] = []float64{a, b}
		if (a > 0) != (b > 0) {
			y[i] = 1
		}
	}
	return rows, y
}

func TestMLPLearnsXOR(t *testing.T) {
	t.Parallel()
	rows, y := xorData(400, 1)
	d := mustMatrix(t, rows, y, Classification)
	test, ty := xorData(400, 2)
	for _, act := range []string{"relu", "tanh"} {
		t.Run(act, func(t *testing.T) {
			t.Parallel()
			m := mustTrain(t, "mlp", Params{"hidden": []any{16}, "activation": act, "learningRate": 0.01, "epochs": 300}, d, TrainOptions{Seed: 3})
			if acc := Accuracy(ty, m.Predict(test)); acc < 0.99 {
				t.Fatalf("XOR accuracy %.3f, want ≥ 0.99", acc)
			}
			lr := mustTrain(t, "logreg", nil, d, TrainOptions{})
			if acc := Accuracy(ty, lr.Predict(test)); acc > 0.7 {
				t.Fatalf("logreg should fail on XOR, got %.3f", acc)
			}
		})
	}
}

// TestMLPPlantedFunction: a smooth nonlinear target is learned to a small
// error, far below what a linear model manages.
func TestMLPPlantedFunction(t *testing.T) {
	t.Parallel()
	f := func(x []float64) float64 { return 3*math.Sin(2*x[0]) + x[1]*x[1] - 2*x[2] + 10 }
	gen := func(n int, seed uint64) ([][]float64, []float64) {
		r := newRand(seed)
		rows := make([][]float64, n)
		y := make([]float64, n)
		for i := range rows {
			rows[i] = []float64{2*r.Float64() - 1, 2*r.Float64() - 1, 2*r.Float64() - 1, r.NormFloat64()}
			y[i] = f(rows[i])
		}
		return rows, y
	}
	rows, y := gen(3000, 5)
	d := mustMatrix(t, rows, y, Regression)
	m := mustTrain(t, "mlp", Params{"hidden": "32,32", "activation": "tanh", "learningRate": 0.01, "epochs": 300, "tol": 1e-7}, d, TrainOptions{Seed: 1})
	test, ty := gen(1000, 6)
	rmse := RMSE(ty, m.Predict(test))
	var sd float64
	for _, v := range ty {
		sd += (v - 10) * (v - 10)
	}
	sd = math.Sqrt(sd / float64(len(ty)))
	t.Logf("rmse %.4f, target sd %.3f, stop %s after %d epochs", rmse, sd, m.Info().Training.Stop, m.Info().Training.Iterations)
	if rmse > 0.1 {
		t.Fatalf("RMSE %.4f on a noiseless planted function, want ≤ 0.1", rmse)
	}
}

// TestMLPRecoversLinearRegression: with no hidden layer and no penalty the
// network is a linear model, and Adam finds the planted coefficients.
func TestMLPRecoversLinearRegression(t *testing.T) {
	t.Parallel()
	r := newRand(7)
	w := []float64{2, -3, 0.5}
	rows := make([][]float64, 2000)
	y := make([]float64, len(rows))
	for i := range rows {
		rows[i] = []float64{r.NormFloat64(), 5 + 2*r.NormFloat64(), r.Float64()}
		y[i] = 4 + w[0]*rows[i][0] + w[1]*rows[i][1] + w[2]*rows[i][2] + 0.01*r.NormFloat64()
	}
	d := mustMatrix(t, rows, y, Regression)
	m := mustTrain(t, "mlp", Params{"hidden": []any{}, "l2": 0, "learningRate": 0.01, "epochs": 500, "tol": 0}, d, TrainOptions{Seed: 1}).(*MLP)
	// Unscale the single layer: y = tMean + tScale·(b + Σ v_j (x_j-mean_j)/scale_j).
	v, b := m.net.layer(m.theta, 0)
	icpt := b[0]
	for j := range w {
		got := m.targetScale * v[m.net.weightIndex(0, 0, j)] / m.scale[j]
		icpt -= v[j] * m.mean[j] / m.scale[j]
		if !almostEqual(got, w[j], 0.01) {
			t.Errorf("coefficient %d: %.4f, want %.4f", j, got, w[j])
		}
	}
	icpt = m.targetMean + m.targetScale*icpt
	if !almostEqual(icpt, 4, 0.02) {
		t.Errorf("intercept %.4f, want 4", icpt)
	}
}

func TestMLPMulticlassAndCategorical(t *testing.T) {
	t.Parallel()
	r := newRand(8)
	rows, y := threeClassData(r, 1500)
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "mlp", Params{"hidden": 16}, d, TrainOptions{Seed: 2})
	if acc := Accuracy(y, m.Predict(rows)); acc < 0.9 {
		t.Fatalf("multiclass accuracy %.3f", acc)
	}
	proba := m.PredictProba(rows[:5])
	for _, p := range proba {
		if len(p) != 3 || !almostEqual(p[0]+p[1]+p[2], 1, 1e-12) {
			t.Fatalf("probabilities %v", p)
		}
	}
	// A categorical input is one-hot inside the model; an unseen category
	// or a missing value predicts without error.
	var b strings.Builder
	b.WriteString("color,v,y\n")
	for i := 0; i < 300; i++ {
		c := []string{"red", "green", "blue"}[i%3]
		label := "no"
		if c == "red" {
			label = "yes"
		}
		b.WriteString(c + "," + formatFloat(float64(i%7)) + "," + label + "\n")
	}
	cat, err := ReadCSV(strings.NewReader(b.String()), CSVOptions{Label: "y", Categorical: []string{"color"}})
	if err != nil {
		t.Fatal(err)
	}
	cm := mustTrain(t, "mlp", Params{"hidden": 8, "learningRate": 0.01}, cat, TrainOptions{Seed: 1})
	x, err := cm.Signature().EncodeRecords([]map[string]string{{"color": "red", "v": "1"}, {"color": "blue", "v": "1"}, {"color": "purple", "v": "1"}, {"v": "NA"}})
	if err != nil {
		t.Fatal(err)
	}
	pred := cm.Predict(x)
	if pred[0] != 1 || pred[1] != 0 || math.IsNaN(pred[2]) || math.IsNaN(pred[3]) {
		t.Fatalf("predictions %v (classes %v)", pred, cm.Signature().Classes)
	}
}

// TestMLPDeterministic: the same seed gives the same artifact bytes with 1
// or 4 workers; another seed gives another model.
func TestMLPDeterministic(t *testing.T) {
	t.Parallel()
	r := newRand(9)
	rows, y := driftingStream(r, 3000)
	d := mustMatrix(t, rows, y, Classification)
	params := Params{"hidden": "24,12", "epochs": 5, "batchSize": 300, "earlyStopping": true}
	a := artifactBytes(t, mustTrain(t, "mlp", params, d, TrainOptions{Seed: 4, Workers: 1}))
	b := artifactBytes(t, mustTrain(t, "mlp", params, d, TrainOptions{Seed: 4, Workers: 4}))
	if !bytes.Equal(a, b) {
		t.Fatal("artifacts differ between 1 and 4 workers")
	}
	c := artifactBytes(t, mustTrain(t, "mlp", params, d, TrainOptions{Seed: 5, Workers: 4}))
	if bytes.Equal(a, c) {
		t.Fatal("different seeds gave the same model")
	}
}

func TestMLPStopping(t *testing.T) {
	t.Parallel()
	r := newRand(10)
	rows, y := logisticData(r, 2000, []float64{1, -2}, 0)
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "mlp", Params{"hidden": 4, "epochs": 1000, "learningRate": 0.01}, d, TrainOptions{Seed: 1})
	tr := m.Info().Training
	if tr.Stop != "converged" || tr.Iterations >= 1000 || tr.Iterations < 11 {
		t.Fatalf("training %+v, want convergence well before 1000 epochs", tr)
	}
	m = mustTrain(t, "mlp", Params{"hidden": 4, "epochs": 1000, "learningRate": 0.01, "earlyStopping": true, "nIterNoChange": 3}, d, TrainOptions{Seed: 1})
	tr = m.Info().Training
	if tr.Stop != "earlyStopping" || tr.ValidationRows != 200 || tr.Rows != 1800 || tr.ValidationLoss == nil {
		t.Fatalf("training %+v", tr)
	}
	m = mustTrain(t, "mlp", Params{"hidden": 4, "epochs": 3}, d, TrainOptions{Seed: 1})
	if tr := m.Info().Training; tr.Stop != "epochs" || tr.Iterations != 3 {
		t.Fatalf("training %+v", tr)
	}
}

func TestIntListParam(t *testing.T) {
	t.Parallel()
	var fromJSON Params
	if err := json.Unmarshal([]byte(`{"hidden": [64, 32]}`), &fromJSON); err != nil {
		t.Fatal(err)
	}
	want := []any{64, 32}
	for _, raw := range []any{fromJSON["hidden"], "64,32", " [64, 32] ", []int{64, 32}, []int64{64, 32}, []any{int64(64), 32.0}} {
		p, err := ValidateParams("mlp", Params{"hidden": raw})
		if err != nil {
			t.Fatalf("%#v: %v", raw, err)
		}
		if !slices.Equal(p["hidden"].([]any), want) {
			t.Fatalf("%#v normalised to %#v", raw, p["hidden"])
		}
		// The normalised set must be encodable as a protobuf Struct: the
		// trainer puts it in training.completed.
		if _, err := structpb.NewStruct(p); err != nil {
			t.Fatalf("structpb: %v", err)
		}
	}
	for raw, want := range map[any]string{
		"64,x": `param "hidden": must be a list of integers`,
		"0":    `value 1: must be in [1, 65536]`,
		-3:     `value 1: must be in`,
		2.5:    `value 1: must be an integer`,
		"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17": "at most 16 values",
	} {
		if _, err := ValidateParams("mlp", Params{"hidden": raw}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%#v: got %v, want %q", raw, err, want)
		}
	}
	if p, err := ValidateParams("mlp", Params{"hidden": 7}); err != nil || !slices.Equal(p["hidden"].([]any), []any{7}) {
		t.Fatalf("single int: %v %v", p, err)
	}
	if p, err := ValidateParams("mlp", Params{"hidden": ""}); err != nil || len(p["hidden"].([]any)) != 0 {
		t.Fatalf("empty: %v %v", p, err)
	}
	if _, err := ValidateParams("mlp", Params{"activation": "sigmoid"}); err == nil || !strings.Contains(err.Error(), "must be one of relu, tanh") {
		t.Fatalf("activation: %v", err)
	}
	// Defaults are copies: changing one cannot change the next.
	p, _ := ValidateParams("mlp", nil)
	p["hidden"].([]any)[0] = 1
	if q, _ := ValidateParams("mlp", nil); q["hidden"].([]any)[0] != 100 {
		t.Fatal("the default list was shared")
	}
	info, _ := KnownParams("mlp")
	for _, pi := range info {
		if pi.Name == "activation" && (pi.Type != "string" || !slices.Equal(pi.Values, []string{"relu", "tanh"})) {
			t.Fatalf("activation info %+v", pi)
		}
		if pi.Name == "hidden" && pi.Type != "ints" {
			t.Fatalf("hidden info %+v", pi)
		}
	}
}

func TestMLPTooLarge(t *testing.T) {
	t.Parallel()
	d := mustMatrix(t, [][]float64{{1}, {2}, {3}, {4}}, []float64{0, 1, 0, 1}, Classification)
	_, err := Train(context.Background(), "mlp", Params{"hidden": "65536,65536"}, d, TrainOptions{})
	if err == nil || !strings.Contains(err.Error(), "parameters, more than") {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkMLPTrain(b *testing.B) {
	r := newRand(11)
	rows, y := driftingStream(r, 5000)
	d := mustMatrix(b, rows, y, Classification)
	params := Params{"hidden": 100, "epochs": 10, "tol": 0}
	for b.Loop() {
		if _, err := Train(context.Background(), "mlp", params, d, TrainOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMLPPredict(b *testing.B) {
	r := newRand(12)
	rows, y := driftingStream(r, 15000)
	d := mustMatrix(b, rows[:5000], y[:5000], Classification)
	m := mustTrain(b, "mlp", Params{"hidden": "64,32", "epochs": 2}, d, TrainOptions{})
	x := rows[5000:]
	b.ReportAllocs()
	for b.Loop() {
		m.PredictProba(x)
	}
	b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds(), "rows/s")
}
