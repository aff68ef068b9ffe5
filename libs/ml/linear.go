package ml

import "fmt"

// NewLinear builds a logistic-regression classifier from coefficients in the
// original input space — what an external trainer (a pipeline's `command`
// algorithm, scikit-learn's LogisticRegression) produces — so that Gyre can
// store, version and serve it like a model it trained itself. It is the
// inverse of (*LogReg).Coefficients: weights has one row per output (one
// row, the score of classes[1], for a binary model; one per class
// otherwise), each with a weight per expanded input column, and intercepts
// one value per row.
//
// The model standardises nothing (mean 0, scale 1), so a missing numeric
// input counts as 0. rows is recorded as the number of training rows.
func NewLinear(sig Signature, weights [][]float64, intercepts []float64, seed int64, rows int) (*LogReg, error) {
	if sig.Task != Classification || len(sig.Classes) < 2 {
		return nil, &ParamError{Msg: "a linear model needs a classification signature with at least two classes"}
	}
	m := &LogReg{sig: sig.clone(), width: expandedWidth(sig), outs: sig.numOutputs()}
	if len(weights) != m.outs || len(intercepts) != m.outs {
		return nil, &ParamError{Msg: fmt.Sprintf("%d classes need %d weight rows and intercepts, got %d and %d", len(sig.Classes), m.outs, len(weights), len(intercepts))}
	}
	m.mean = make([]float64, m.width)
	m.scale = make([]float64, m.width)
	for j := range m.scale {
		m.scale[j] = 1
	}
	for o, row := range weights {
		if len(row) != m.width {
			return nil, &ParamError{Msg: fmt.Sprintf("weight row %d has %d values for %d input columns", o, len(row), m.width)}
		}
		for j, v := range row {
			if !finite(v) {
				return nil, &ParamError{Msg: fmt.Sprintf("weight row %d, column %d is not finite", o, j)}
			}
		}
		if !finite(intercepts[o]) {
			return nil, &ParamError{Msg: fmt.Sprintf("intercept %d is not finite", o)}
		}
		m.w = append(m.w, row...)
		m.w = append(m.w, intercepts[o])
	}
	params, err := ValidateParams("logreg", nil)
	if err != nil {
		return nil, err
	}
	m.info = ModelInfo{Algorithm: "logreg", Params: params, Seed: seed, Training: TrainingInfo{Rows: rows, Stop: "external"}}
	return m, nil
}
