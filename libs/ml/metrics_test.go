package ml

import (
	"math"
	"testing"
)

func TestMetricsHandComputed(t *testing.T) {
	t.Parallel()
	nan := math.NaN()
	cases := []struct {
		name string
		got  float64
		want float64
	}{
		{"accuracy", Accuracy([]float64{0, 1, 1, 0}, []float64{0, 1, 0, 0}), 0.75},
		{"accuracy empty", Accuracy(nil, nil), nan},
		{"accuracy mismatched", Accuracy([]float64{1}, []float64{1, 0}), nan},
		// -(ln 0.8 + ln 0.6) / 2
		{"logloss", LogLoss([]float64{0, 1}, [][]float64{{0.8, 0.2}, {0.4, 0.6}}), -(math.Log(0.8) + math.Log(0.6)) / 2},
		{"logloss clipped", LogLoss([]float64{1}, [][]float64{{1, 0}}), -math.Log(1e-15)},
		{"logloss unknown class", LogLoss([]float64{-1}, [][]float64{{0.5, 0.5}}), -math.Log(1e-15)},
		// Positives score 0.8, 0.4, 0.4; negatives 0.4, 0.1. Pairs:
		// (0.8>0.4) (0.8>0.1) (0.4=0.4 → ½) (0.4>0.1) (0.4=0.4 → ½) (0.4>0.1)
		// = 5/6.
		{"auc with ties", ROCAUC([]float64{1, 1, 1, 0, 0}, []float64{0.8, 0.4, 0.4, 0.4, 0.1}), 5.0 / 6},
		{"auc perfect", ROCAUC([]float64{0, 0, 1, 1}, []float64{0.1, 0.2, 0.3, 0.9}), 1},
		{"auc inverted", ROCAUC([]float64{1, 1, 0, 0}, []float64{0.1, 0.2, 0.3, 0.9}), 0},
		{"auc all tied", ROCAUC([]float64{1, 0, 1, 0}, []float64{0.5, 0.5, 0.5, 0.5}), 0.5},
		{"auc one class", ROCAUC([]float64{1, 1}, []float64{0.1, 0.2}), nan},
		// tp=2 fp=1 fn=1 → 2·2/(4+1+1)
		{"f1", F1([]float64{1, 1, 1, 0, 0}, []float64{1, 1, 0, 1, 0}), 4.0 / 6},
		{"f1 no positives", F1([]float64{0, 0}, []float64{0, 0}), 0},
		// class 0: tp1 fp0 fn1 → 2/3; class 1: tp1 fp1 fn0 → 2/3; class 2:
		// tp1 fp0 fn0 → 1
		{"macro f1", MacroF1([]float64{0, 0, 1, 2}, []float64{0, 1, 1, 2}), (2.0/3 + 2.0/3 + 1) / 3},
		{"rmse", RMSE([]float64{1, 2, 3}, []float64{1, 4, 0}), math.Sqrt((0 + 4 + 9) / 3.0)},
		{"mae", MAE([]float64{1, 2, 3}, []float64{1, 4, 0}), 5.0 / 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if math.IsNaN(c.want) {
				if !math.IsNaN(c.got) {
					t.Fatalf("got %v, want NaN", c.got)
				}
				return
			}
			if !almostEqual(c.got, c.want, 1e-12) {
				t.Fatalf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func TestMacroROCAUC(t *testing.T) {
	t.Parallel()
	y := []float64{0, 1, 2, 0}
	p := [][]float64{{0.7, 0.2, 0.1}, {0.2, 0.5, 0.3}, {0.1, 0.3, 0.6}, {0.3, 0.4, 0.3}}
	// class 0 vs rest: positives 0.7, 0.3; negatives 0.2, 0.1 → 1.
	// class 1: positive 0.5; negatives 0.2, 0.3, 0.4 → 1.
	// class 2: positive 0.6; negatives 0.1, 0.3, 0.3 → 1.
	if got := MacroROCAUC(y, p); got != 1 {
		t.Fatalf("got %v, want 1", got)
	}
	p[3] = []float64{0.1, 0.6, 0.3} // class 0 now: 0.7 beats both, 0.1 ties 0.1 and loses to 0.2 → (2+0.5)/4
	want := (2.5/4 + 2.0/3 + 1) / 3
	if got := MacroROCAUC(y, p); !almostEqual(got, want, 1e-12) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
