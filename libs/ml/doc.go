// Package ml is Gyre's machine-learning core: tabular datasets, model
// training (logistic regression, histogram gradient-boosted trees and
// multi-layer perceptrons), metrics and a versioned, self-checking artifact
// format. docs/ml.md documents the artifact format, the signature and every
// algorithm's parameters.
//
// It exists so that the trainer, evaluator and deployer services can share
// one small, fast and deterministic implementation written in Go, without a
// Python runtime in the loop. Its design goals, in order:
//
//   - Correct: the algorithms follow scikit-learn's LogisticRegression (lbfgs),
//     HistGradientBoosting and MLPClassifier/MLPRegressor (adam) closely
//     enough that their documented behaviour (defaults, missing-value
//     handling, early stopping) carries over.
//   - Deterministic: the same data, parameters and seed give bit-identical
//     models and artifacts on every run and with any number of cores. No
//     result depends on map iteration order or goroutine scheduling: parallel
//     work is split so that every floating-point sum is computed by one
//     goroutine in a fixed order, and partial results are combined in a fixed
//     order. (Across CPU architectures the last bits may differ: the Go
//     compiler fuses multiply-adds on arm64 but not on amd64, and math.Exp
//     has per-architecture implementations.)
//   - Safe at the edges: bad input (CSV, parameters, artifacts) gives an error
//     that names the row, column or parameter at fault, and never a panic.
//     Errors caused by input are marked permanent (they have a
//     Permanent() bool method), so the bus sends such messages to the
//     dead-letter stream instead of retrying them.
//
// # Data layout
//
// A Dataset stores features column-major (X[feature][row]) because training
// scans one feature at a time: the GBDT bins and builds histograms per
// feature, and standardisation is per feature. Models predict from row-major
// [][]float64 (one slice per row, in Signature().Inputs order) because that is
// what a serving request carries; GBDT.PredictRawFlat also takes one flat
// row-major slice, a serving batch without a slice per row. Missing values
// are NaN everywhere.
//
// Categorical columns are ordinal-encoded against a sorted vocabulary stored
// with the data and in the model signature: the value is the index of the
// category, and a category unknown to the vocabulary is NaN (missing). The
// logistic regression and the MLP standardise numeric inputs and expand such
// a column to one-hot inputs internally (scaler.go; a missing or unseen
// category gives all zeros, a missing number the training mean); the GBDT
// splits on the code as an ordered value, with missing values routed as
// learned.
//
// # Use
//
//	d, err := ml.ReadCSV(f, ml.CSVOptions{Label: "class"})
//	window, err := ml.Concat(batches...)          // newest N batches
//	m, err := ml.Train(ctx, "gbdt", ml.Params{"trees": 100}, window, ml.TrainOptions{Seed: 1})
//	scores, err := ml.Evaluate(m, newest)        // accuracy, logloss, auc, f1
//	err = ml.Save(w, m)                          // gyre.model/v1 JSON
//	m, err = ml.Load(r)
//	x, err := m.Signature().EncodeRecords(rows)  // serving: raw strings → rows
//	proba := m.PredictProba(x)
//
// # Algorithms
//
//   - logreg (logreg.go): binary or multinomial logistic regression, L2,
//     gonum's L-BFGS over chunked, ordered gradient sums.
//   - gbdt (gbdt.go, gbdt_train.go, gbdt_predict.go): histogram boosting with
//     best-first trees; prediction compiles the trees into 16-byte nodes and
//     scores blocks of rows tree by tree with a branch-free step,
//     bit-identical to walking each tree per row.
//   - mlp (mlp.go, mlp_train.go): dense ReLU/tanh layers with a sigmoid,
//     softmax or identity output, Adam on minibatches whose gradients are
//     summed over fixed row chunks in order; matrix products by gonum's
//     BLAS. Its payload is plain JSON ([out][in] weights per layer, the input
//     scaler) so that another trainer — examples/torch/train.py, on a GPU —
//     can write models Go serves.
//
// # Extending
//
// Algorithms register themselves in a small table (algorithms in model.go)
// with a parameter specification (params.go: int, float, bool, string and
// int-list kinds), a trainer and an artifact decoder, so a new model is one
// new file plus one table entry.
package ml
