package ml

import (
	"cmp"
	"math"
	"slices"
)

// Metric functions take labels and predictions as float64 slices (class
// indices for classification). They return NaN when the metric is undefined
// for the input (empty or mismatched lengths, a single class for AUC) rather
// than panicking, so a serving or evaluation loop cannot be brought down by
// an odd batch.

// logLossEps clips probabilities away from 0 and 1 (scikit-learn's default).
const logLossEps = 1e-15

// Accuracy is the share of rows where yPred equals yTrue.
func Accuracy(yTrue, yPred []float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(yPred) {
		return math.NaN()
	}
	ok := 0
	for i, y := range yTrue {
		if y == yPred[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(yTrue))
}

// LogLoss is the mean negative log-probability of the true class, with
// probabilities clipped to [1e-15, 1-1e-15]. A label that is not a valid
// column of proba (for example -1, a class the model does not know) counts as
// probability 1e-15.
func LogLoss(yTrue []float64, proba [][]float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(proba) {
		return math.NaN()
	}
	var s float64
	for i, y := range yTrue {
		p := logLossEps
		if k := int(y); y == math.Trunc(y) && k >= 0 && k < len(proba[i]) {
			p = min(max(proba[i][k], logLossEps), 1-logLossEps)
		}
		if math.IsNaN(p) {
			return math.NaN()
		}
		s -= math.Log(p)
	}
	return s / float64(len(yTrue))
}

// ROCAUC is the area under the ROC curve of a binary problem: rows with
// yTrue == 1 are positive, all others negative; score is the positive-class
// score. Tied scores count one half (the Mann-Whitney statistic), as in
// scikit-learn's roc_auc_score. NaN when only one class is present.
func ROCAUC(yTrue, score []float64) float64 {
	n := len(yTrue)
	if n == 0 || n != len(score) {
		return math.NaN()
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
		if math.IsNaN(score[i]) {
			return math.NaN()
		}
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(score[a], score[b]) })
	// Sum of the (tie-averaged, 1-based) ranks of the positives.
	var rankSum float64
	pos := 0
	for lo := 0; lo < n; {
		hi := lo + 1
		for hi < n && score[idx[hi]] == score[idx[lo]] {
			hi++
		}
		avg := float64(lo+1+hi) / 2 // mean of ranks lo+1 .. hi
		for _, i := range idx[lo:hi] {
			if yTrue[i] == 1 {
				rankSum += avg
				pos++
			}
		}
		lo = hi
	}
	neg := n - pos
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - float64(pos)*float64(pos+1)/2) / (float64(pos) * float64(neg))
}

// MacroROCAUC is the unweighted mean of one-vs-rest ROC AUCs over the
// classes (columns of proba) that occur in yTrue, skipping classes whose AUC
// is undefined. NaN when none is defined.
func MacroROCAUC(yTrue []float64, proba [][]float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(proba) {
		return math.NaN()
	}
	k := len(proba[0])
	var sum float64
	cnt := 0
	bin := make([]float64, len(yTrue))
	sc := make([]float64, len(yTrue))
	for c := 0; c < k; c++ {
		for i, y := range yTrue {
			bin[i] = 0
			if y == float64(c) {
				bin[i] = 1
			}
			if len(proba[i]) != k {
				return math.NaN()
			}
			sc[i] = proba[i][c]
		}
		if a := ROCAUC(bin, sc); !math.IsNaN(a) {
			sum += a
			cnt++
		}
	}
	if cnt == 0 {
		return math.NaN()
	}
	return sum / float64(cnt)
}

// F1 is the F1 score of class 1 (binary). It is 0 when there are no true
// and no predicted positives (scikit-learn's zero_division=0).
func F1(yTrue, yPred []float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(yPred) {
		return math.NaN()
	}
	return f1Of(yTrue, yPred, 1)
}

func f1Of(yTrue, yPred []float64, c float64) float64 {
	var tp, fp, fn float64
	for i, y := range yTrue {
		p := yPred[i]
		switch {
		case y == c && p == c:
			tp++
		case y != c && p == c:
			fp++
		case y == c && p != c:
			fn++
		}
	}
	if tp == 0 {
		return 0
	}
	return 2 * tp / (2*tp + fp + fn)
}

// MacroF1 is the unweighted mean of per-class F1 over the classes that occur
// in yTrue or yPred (scikit-learn's f1_score(average="macro")).
func MacroF1(yTrue, yPred []float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(yPred) {
		return math.NaN()
	}
	labels := slices.Concat(yTrue, yPred)
	slices.Sort(labels)
	labels = slices.Compact(labels)
	var s float64
	for _, c := range labels {
		s += f1Of(yTrue, yPred, c)
	}
	return s / float64(len(labels))
}

// RMSE is the root mean squared error.
func RMSE(yTrue, yPred []float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(yPred) {
		return math.NaN()
	}
	var s float64
	for i, y := range yTrue {
		d := y - yPred[i]
		s += d * d
	}
	return math.Sqrt(s / float64(len(yTrue)))
}

// MAE is the mean absolute error.
func MAE(yTrue, yPred []float64) float64 {
	if len(yTrue) == 0 || len(yTrue) != len(yPred) {
		return math.NaN()
	}
	var s float64
	for i, y := range yTrue {
		s += math.Abs(y - yPred[i])
	}
	return s / float64(len(yTrue))
}

// Evaluate scores m on a labelled dataset, matching columns and classes by
// name (see Signature.Matrix and Signature.Targets). Classification gives
// "accuracy", "logloss", "auc" (binary; macro one-vs-rest for multiclass) and
// "f1" (binary: class Classes[1]; macro for multiclass); regression gives
// "rmse" and "mae". A metric that is undefined on this data (AUC when only
// one class occurs) is left out rather than reported as NaN, which JSON
// cannot carry. Rows whose class the model does not know count as wrong.
func Evaluate(m Model, ds *Dataset) (map[string]float64, error) {
	if ds == nil || ds.NumRows() == 0 {
		return nil, dataErr(0, "", "evaluation dataset is empty")
	}
	if ds.Label == nil {
		return nil, dataErr(0, ds.LabelName, "evaluation dataset has no label")
	}
	// A NaN label or an out-of-range code would otherwise be silently
	// scored as a miss.
	if err := ds.Validate(); err != nil {
		return nil, err
	}
	sig := m.Signature()
	x, err := sig.Matrix(ds)
	if err != nil {
		return nil, err
	}
	y, err := sig.Targets(ds)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	put := func(name string, v float64) {
		if !math.IsNaN(v) {
			out[name] = v
		}
	}
	if sig.Task == Regression {
		pred := m.Predict(x)
		put("rmse", RMSE(y, pred))
		put("mae", MAE(y, pred))
		return out, nil
	}
	proba := m.PredictProba(x)
	pred := make([]float64, len(proba))
	for i, p := range proba {
		pred[i] = float64(argmax(p))
	}
	put("accuracy", Accuracy(y, pred))
	put("logloss", LogLoss(y, proba))
	if len(sig.Classes) == 2 {
		score := make([]float64, len(proba))
		for i, p := range proba {
			score[i] = p[1]
		}
		put("auc", ROCAUC(y, score))
		put("f1", F1(y, pred))
	} else {
		put("auc", MacroROCAUC(y, proba))
		put("f1", MacroF1(y, pred))
	}
	return out, nil
}
