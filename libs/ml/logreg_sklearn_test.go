package ml

import (
	"math"
	"testing"
)

// skX and the labels below are a fixed small problem; the expected
// probabilities come from scikit-learn 1.2.1:
//
//	make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="newton-cg", tol=1e-9, max_iter=10000))
//
// whose objective is the one logreg documents (l2 = 1/C). newton-cg is used
// for the reference because scikit-learn's lbfgs stops at scipy's default
// ftol (2.2e-9 relative), about 1e-6 away from the optimum on this problem,
// while the Newton solver converges fully.
var skX = [][]float64{{0.5, 1.0}, {1.5, -0.5}, {2.0, 0.3}, {-1.0, 2.0}, {0.0, 0.0}, {3.0, 1.0}, {-0.5, -1.5}, {1.0, 1.0}, {2.5, -1.0}, {-2.0, 0.5}, {0.7, 0.2}, {1.2, -2.0}}

var (
	skBinaryY = []float64{0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1}
	skMultiY  = []float64{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2}
)

func TestLogRegMatchesScikitLearn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		y    []float64
		l2   float64
		want [][]float64
	}{
		{"binary C=1", skBinaryY, 1, [][]float64{
			{0.686849602, 0.313150398},
			{0.2892644107, 0.7107355893},
			{0.2914749441, 0.7085250559},
			{0.9324014462, 0.0675985538},
			{0.660303996, 0.339696004},
			{0.2039119651, 0.7960880349},
			{0.5667811129, 0.4332188871},
			{0.5880575424, 0.4119424576},
			{0.1157735406, 0.8842264594},
			{0.9344869536, 0.0655130464},
			{0.5432459154, 0.4567540846},
			{0.187448571, 0.812551429},
		}},
		{"binary C=0.1", skBinaryY, 10, [][]float64{
			{0.5500772878, 0.4499227122},
			{0.4354449274, 0.5645550726},
			{0.439010167, 0.560989833},
			{0.6669738537, 0.3330261463},
			{0.5386488615, 0.4613511385},
			{0.4113584477, 0.5886415523},
			{0.5074627284, 0.4925372716},
			{0.5222642394, 0.4777357606},
			{0.3629977422, 0.6370022578},
			{0.664038956, 0.335961044},
			{0.5074693579, 0.4925306421},
			{0.394253431, 0.605746569},
		}},
		{"multinomial C=1", skMultiY, 1, [][]float64{
			{0.408792296, 0.4645946753, 0.1266130287},
			{0.1217668023, 0.3645385155, 0.5136946822},
			{0.0895074385, 0.3678363372, 0.5426562243},
			{0.7590366232, 0.2309571818, 0.010006195},
			{0.4786012055, 0.4049022641, 0.1164965304},
			{0.0320655996, 0.2736738219, 0.6942605785},
			{0.5197368486, 0.3454852414, 0.1347779101},
			{0.2919538776, 0.4966040379, 0.2114420845},
			{0.0254148222, 0.1798933975, 0.7946917803},
			{0.857819599, 0.1370281536, 0.0051522474},
			{0.3160683126, 0.4601990995, 0.2237325878},
			{0.0992365763, 0.2742872721, 0.6264761516},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := mustMatrix(t, skX, c.y, Classification)
			m := mustTrain(t, "logreg", Params{"l2": c.l2, "tol": 1e-10, "maxIter": 10000}, d, TrainOptions{})
			got := m.PredictProba(skX)
			for i := range got {
				for k := range got[i] {
					if math.Abs(got[i][k]-c.want[i][k]) > 1e-6 {
						t.Fatalf("row %d: proba %v, scikit-learn %v", i, got[i], c.want[i])
					}
				}
			}
		})
	}
}
