package ml

import (
	"bytes"
	"math"
	"testing"
)

func TestNewLinearRoundTripsCoefficients(t *testing.T) {
	t.Parallel()
	sig := Signature{Task: Classification, Classes: []string{"0", "1"},
		Inputs: []Input{{Name: "a", Type: Numeric}, {Name: "b", Type: Numeric}}}
	m, err := NewLinear(sig, [][]float64{{2, -1}}, []float64{0.5}, 7, 100)
	if err != nil {
		t.Fatal(err)
	}
	names, w, b := m.Coefficients()
	if len(names) != 2 || w[0][0] != 2 || w[0][1] != -1 || b[0] != 0.5 {
		t.Fatalf("coefficients %v %v %v", names, w, b)
	}
	// p(class 1) = sigmoid(0.5 + 2·1 − 1·3) = sigmoid(−0.5)
	p := m.PredictProba([][]float64{{1, 3}})[0][1]
	if want := 1 / (1 + math.Exp(0.5)); math.Abs(p-want) > 1e-12 {
		t.Errorf("p = %v, want %v", p, want)
	}
	var buf bytes.Buffer
	if err := Save(&buf, m); err != nil {
		t.Fatal(err)
	}
	back, err := Load(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if q := back.PredictProba([][]float64{{1, 3}})[0][1]; q != p {
		t.Errorf("after a round trip p = %v, want %v", q, p)
	}
}

func TestNewLinearRejectsBadShapes(t *testing.T) {
	t.Parallel()
	sig := Signature{Task: Classification, Classes: []string{"x", "y", "z"}, Inputs: []Input{{Name: "a", Type: Numeric}}}
	for _, c := range []struct {
		w [][]float64
		b []float64
	}{
		{[][]float64{{1}}, []float64{0}},                           // 3 classes need 3 rows
		{[][]float64{{1}, {2}, {3, 4}}, []float64{0, 0, 0}},        // wrong width
		{[][]float64{{1}, {2}, {math.NaN()}}, []float64{0, 0, 0}},  // not finite
		{[][]float64{{1}, {2}, {3}}, []float64{0, math.Inf(1), 0}}, // not finite
	} {
		if _, err := NewLinear(sig, c.w, c.b, 1, 1); err == nil {
			t.Errorf("accepted %v %v", c.w, c.b)
		}
	}
}
