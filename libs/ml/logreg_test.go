package ml

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestLogRegRecoversPlantedCoefficients(t *testing.T) {
	t.Parallel()
	w := []float64{1.5, -2, 0.5, 0}
	b := -0.3
	r := newRand(20)
	rows, y := logisticData(r, 20000, w, b)
	// Shift and scale the inputs so that standardisation inside the model
	// matters; the coefficients in the original space are then w/s and
	// b - Σ w·m/s.
	shift := []float64{10, -3, 0, 100}
	scale := []float64{2, 0.5, 1, 10}
	wantW := make([]float64, len(w))
	wantB := b
	for i := range rows {
		for j := range w {
			rows[i][j] = rows[i][j]*scale[j] + shift[j]
		}
	}
	for j := range w {
		wantW[j] = w[j] / scale[j]
		wantB -= w[j] * shift[j] / scale[j]
	}
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "logreg", Params{"tol": 1e-8}, d, TrainOptions{}).(*LogReg)
	names, gotW, gotB := m.Coefficients()
	if len(names) != 4 || names[0] != "x0" || len(gotW) != 1 {
		t.Fatalf("coefficients %v %v", names, gotW)
	}
	// Sampling error of the MLE on 20k rows is about 0.02 per standardised
	// coefficient.
	for j := range w {
		if tol := 0.06 / scale[j]; math.Abs(gotW[0][j]-wantW[j]) > tol {
			t.Errorf("w[%d] = %v, want %v ± %v", j, gotW[0][j], wantW[j], tol)
		}
	}
	if math.Abs(gotB[0]-wantB) > 0.5 { // the intercept absorbs 100·w3 noise
		t.Errorf("intercept %v, want %v", gotB[0], wantB)
	}
	if st := m.Info().Training.Stop; st != "converged" {
		t.Errorf("solver stopped with %q", st)
	}
}

func TestLogRegClosedForm(t *testing.T) {
	t.Parallel()
	// One binary feature, no penalty: the MLE is the empirical log-odds.
	// x=0: 10 of 30 positive -> intercept log(1/2); x=1: 20 of 30 positive
	// -> slope log(2) - log(1/2) = 2 log 2.
	var rows [][]float64
	var y []float64
	for i := 0; i < 30; i++ {
		rows = append(rows, []float64{0}, []float64{1})
		y = append(y, b2f(i < 10), b2f(i < 20))
	}
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "logreg", Params{"l2": 0, "tol": 1e-12, "maxIter": 1000}, d, TrainOptions{}).(*LogReg)
	_, w, b := m.Coefficients()
	if !almostEqual(b[0], -math.Ln2, 1e-7) || !almostEqual(w[0][0], 2*math.Ln2, 1e-7) {
		t.Fatalf("got w=%v b=%v, want w=%v b=%v", w[0][0], b[0], 2*math.Ln2, -math.Ln2)
	}
	p := m.PredictProba([][]float64{{0}, {1}})
	if !almostEqual(p[0][1], 1.0/3, 1e-9) || !almostEqual(p[1][1], 2.0/3, 1e-9) {
		t.Fatalf("probabilities %v, want 1/3 and 2/3", p)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func TestLogRegMultinomial(t *testing.T) {
	t.Parallel()
	r := newRand(21)
	rows, y := threeClassData(r, 3000)
	train := mustMatrix(t, rows[:2000], y[:2000], Classification)
	test := mustMatrix(t, rows[2000:], y[2000:], Classification)
	m := mustTrain(t, "logreg", nil, train, TrainOptions{})
	metrics, err := Evaluate(m, test)
	if err != nil {
		t.Fatal(err)
	}
	if metrics["accuracy"] < 0.9 || metrics["auc"] < 0.95 {
		t.Fatalf("multinomial metrics %v", metrics)
	}
}

func TestLogRegMissingAndCategorical(t *testing.T) {
	t.Parallel()
	// y depends on a categorical column (colour) and a numeric one with
	// missing values.
	csv := "colour,size,label\n"
	r := newRand(22)
	colours := []string{"red", "green", "blue"}
	for i := 0; i < 3000; i++ {
		c := colours[i%3]
		size := r.NormFloat64()
		z := size
		if c == "red" {
			z += 2
		} else if c == "blue" {
			z -= 2
		}
		label := "no"
		if r.Float64() < sigmoid(2*z) {
			label = "yes"
		}
		sz := formatFloat(size)
		if i%10 == 0 {
			sz = ""
		}
		csv += c + "," + sz + "," + label + "\n"
	}
	d, err := ReadCSV(strings.NewReader(csv), CSVOptions{Label: "label", Categorical: []string{"colour"}})
	if err != nil {
		t.Fatal(err)
	}
	m := mustTrain(t, "logreg", nil, d, TrainOptions{}).(*LogReg)
	names, w, _ := m.Coefficients()
	want := []string{"colour=blue", "colour=green", "colour=red", "size"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("expanded names %v, want %v", names, want)
	}
	if !(w[0][2] > w[0][1] && w[0][1] > w[0][0] && w[0][3] > 0) {
		t.Fatalf("weights %v do not follow red > green > blue and size > 0", w[0])
	}
	sig := m.Signature()
	x, err := sig.EncodeRecords([]map[string]string{
		{"colour": "red", "size": "0"},
		{"colour": "purple", "size": "0"}, // unseen: all-zero one-hot
		{"size": "NA"},                    // everything missing
	})
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(x[1][0]) || !math.IsNaN(x[2][0]) || !math.IsNaN(x[2][1]) {
		t.Fatalf("unseen/missing should encode as NaN: %v", x)
	}
	p := m.PredictProba(x)
	for _, row := range p {
		if math.IsNaN(row[0]) || math.IsNaN(row[1]) {
			t.Fatalf("NaN probability: %v", p)
		}
	}
	if p[0][1] <= p[1][1] {
		t.Fatalf("red (%v) should be more likely yes than an unseen colour (%v)", p[0][1], p[1][1])
	}
	if _, err := sig.EncodeRecords([]map[string]string{{"colour": "red", "size": "big"}}); err == nil || !strings.Contains(err.Error(), `row 1, column "size"`) {
		t.Fatalf("want an error naming row 1, column size; got %v", err)
	}
}

func TestLogRegRejectsRegression(t *testing.T) {
	t.Parallel()
	d := mustMatrix(t, [][]float64{{1}, {2}, {3}}, []float64{1, 2, 3}, Regression)
	_, err := Train(t.Context(), "logreg", nil, d, TrainOptions{})
	var pe *ParamError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "classification only") {
		t.Fatalf("want a ParamError about classification; got %v", err)
	}
}

func TestWrongWidthRowsGiveNaN(t *testing.T) {
	t.Parallel()
	r := newRand(23)
	rows, y := logisticData(r, 500, []float64{1, -1}, 0)
	d := mustMatrix(t, rows, y, Classification)
	for _, alg := range []string{"logreg", "gbdt"} {
		m := mustTrain(t, alg, Params{}, d, TrainOptions{})
		bad := [][]float64{{1}, {1, 2}, {1, 2, 3}}
		if err := m.Signature().CheckRows(bad); err == nil || !strings.Contains(err.Error(), "row 1") {
			t.Fatalf("%s: CheckRows: %v", alg, err)
		}
		pred := m.Predict(bad)
		proba := m.PredictProba(bad)
		if !math.IsNaN(pred[0]) || math.IsNaN(pred[1]) || !math.IsNaN(pred[2]) || !math.IsNaN(proba[0][0]) {
			t.Fatalf("%s: predictions %v %v", alg, pred, proba)
		}
	}
}
