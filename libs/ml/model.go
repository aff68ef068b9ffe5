package ml

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Model is a trained model. Implementations are immutable and safe for
// concurrent use.
//
// Predict and PredictProba take rows in Signature().Inputs order (use
// Signature.Matrix or Signature.EncodeRecords to build them from a Dataset or
// raw records). Missing values are NaN. They do not return errors so that
// serving stays a tight loop; a row of the wrong width yields NaN outputs for
// that row (check with Signature.CheckRows first).
type Model interface {
	// Signature describes the inputs and outputs.
	Signature() Signature
	// PredictProba returns, per row, the probability of each class in
	// Signature().Classes order. It returns nil for regression models.
	PredictProba(x [][]float64) [][]float64
	// Predict returns, per row, the most probable class index
	// (classification; ties go to the lower index) or the predicted value
	// (regression).
	Predict(x [][]float64) []float64
	// Info returns the algorithm, normalised params, seed and training
	// metadata.
	Info() ModelInfo
}

// Signature describes a model's inputs and outputs.
type Signature struct {
	Task Task `json:"task"`
	// Inputs are the feature columns, in the order Predict expects.
	Inputs []Input `json:"inputs"`
	// Label is the name of the target column the model was trained on.
	Label string `json:"label,omitempty"`
	// Classes are the class names of a classifier, in output order.
	Classes []string `json:"classes,omitempty"`
}

// ModelInfo is the provenance of a model, stored in its artifact.
type ModelInfo struct {
	Algorithm string `json:"algorithm"`
	// Params is the complete, normalised parameter set (defaults filled in).
	Params Params `json:"params"`
	Seed   int64  `json:"seed"`
	// Training holds facts about the training run. It has no timestamps or
	// durations, so that the same inputs give the same artifact bytes.
	Training TrainingInfo `json:"training"`
}

// TrainingInfo is metadata about a training run.
type TrainingInfo struct {
	// Rows is the number of rows the model was fitted on (after any
	// validation split).
	Rows int `json:"rows"`
	// ValidationRows is the number of rows used for early stopping.
	ValidationRows int `json:"validationRows,omitempty"`
	// ClassCounts is the number of training rows per class.
	ClassCounts []int `json:"classCounts,omitempty"`
	// Iterations is the number of solver iterations (logreg) or boosting
	// iterations (gbdt) run.
	Iterations int `json:"iterations"`
	// Stop says why training stopped: "converged", "maxIter", "trees",
	// "earlyStopping", ...
	Stop string `json:"stop"`
	// TrainLoss is the final training objective: mean log-loss (plus the L2
	// term for logreg) or mean squared error / 2.
	TrainLoss float64 `json:"trainLoss"`
	// ValidationLoss is the final validation loss when early stopping ran.
	ValidationLoss *float64 `json:"validationLoss,omitempty"`
}

// TrainOptions are the options of Train that are not hyper-parameters.
type TrainOptions struct {
	// Seed drives every random choice (validation split, binning
	// subsample). The same seed, data and params give the same model.
	Seed int64
	// Validation, if set, is the held-out data for gbdt and mlp early
	// stopping (used only when earlyStopping is on) instead of a seeded split of the
	// training data; for a time-ordered stream, pass the newest batch. It is
	// matched to the training data by column and class name.
	Validation *Dataset
	// Workers caps the goroutines used; 0 means GOMAXPROCS. The result
	// does not depend on it.
	Workers int
	// Progress, if set, is called after every round of training, on the
	// training goroutine: keep it cheap. It does not change the result.
	Progress func(Progress)
}

// Progress is how far a training has come.
type Progress struct {
	// Unit names a round: "tree" (gbdt: one boosting round), "epoch"
	// (mlp) or "iteration" (logreg: one L-BFGS iteration).
	Unit string
	// Done rounds of at most Total; early stopping or convergence may end
	// the training before Total.
	Done, Total int
	// Loss is what the training watches: the validation loss under early
	// stopping, else the training objective; NaN when the round computed
	// none (gbdt without early stopping).
	Loss float64
}

// EveryProgress returns a Progress callback that hands a report to f at
// most once per every, the first once every has passed since start, with
// the time since start (now tells the time): a quick training reports
// nothing, a long one shows that it moves. gyre train and the trainer
// service pace their progress output with it.
func EveryProgress(start time.Time, every time.Duration, now func() time.Time, f func(p Progress, elapsed time.Duration)) func(Progress) {
	next := start.Add(every)
	return func(p Progress) {
		t := now()
		if t.Before(next) {
			return
		}
		next = t.Add(every)
		f(p, t.Sub(start))
	}
}

// report calls o.Progress, if set.
func (o TrainOptions) report(unit string, done, total int, loss float64) {
	if o.Progress != nil {
		o.Progress(Progress{Unit: unit, Done: done, Total: total, Loss: loss})
	}
}

// algorithm is one trainable model family.
type algorithm struct {
	name   string
	params []paramSpec
	train  func(ctx context.Context, p Params, d *trainData, opts TrainOptions) (Model, error)
	// decode rebuilds a model from the "model" section of an artifact; the
	// header (signature, info) has already been validated.
	decode func(raw json.RawMessage, sig Signature, info ModelInfo) (Model, error)
}

// algorithms is the registry of model families; add new ones here.
var algorithms = []*algorithm{&logregAlgorithm, &gbdtAlgorithm, &mlpAlgorithm}

func lookupAlgorithm(name string) (*algorithm, error) {
	for _, a := range algorithms {
		if a.name == name {
			return a, nil
		}
	}
	return nil, &ParamError{Algorithm: name, Msg: "unknown algorithm (known: " + strings.Join(Algorithms(), ", ") + ")"}
}

// Algorithms lists the algorithm names Train accepts, sorted.
func Algorithms() []string {
	names := make([]string, len(algorithms))
	for i, a := range algorithms {
		names[i] = a.name
	}
	slices.Sort(names)
	return names
}

// KnownParams describes the parameters of an algorithm, sorted by name.
func KnownParams(algorithm string) ([]ParamInfo, error) {
	a, err := lookupAlgorithm(algorithm)
	if err != nil {
		return nil, err
	}
	out := make([]ParamInfo, len(a.params))
	for i, s := range a.params {
		out[i] = ParamInfo{Name: s.name, Type: s.kind.String(), Default: cloneParam(s.def), Values: slices.Clone(s.choices), Doc: s.doc}
	}
	slices.SortFunc(out, func(a, b ParamInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ValidateParams checks params for an algorithm without training and returns
// the complete normalised set (defaults filled in). Use it to reject a bad
// pipeline spec when it is applied rather than when training runs.
func ValidateParams(algorithm string, params Params) (Params, error) {
	a, err := lookupAlgorithm(algorithm)
	if err != nil {
		return nil, err
	}
	return parseParams(a.name, a.params, params)
}

// trainData is a validated training set in the form the trainers use.
type trainData struct {
	sig Signature
	// x is column-major, aligned with sig.Inputs.
	x [][]float64
	y []float64
	n int
	// classCounts counts rows per class (classification).
	classCounts []int
	// valX, valY hold the aligned validation set, if one was given.
	valX [][]float64
	valY []float64
}

// Train fits a model. algorithm is "logreg", "gbdt" or "mlp" (see Algorithms);
// params are validated against KnownParams. The training data must be
// labelled; classification needs at least two classes among its rows.
// Training stops early with ctx's error when ctx is cancelled.
func Train(ctx context.Context, algorithm string, params Params, train *Dataset, opts TrainOptions) (Model, error) {
	a, err := lookupAlgorithm(algorithm)
	if err != nil {
		return nil, err
	}
	p, err := parseParams(a.name, a.params, params)
	if err != nil {
		return nil, err
	}
	d, err := prepareTrainData(train, opts.Validation)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return a.train(ctx, p, d, opts)
}

func prepareTrainData(train, val *Dataset) (*trainData, error) {
	if train == nil || train.NumRows() == 0 {
		return nil, dataErr(0, "", "training dataset is empty")
	}
	if train.NumFeatures() == 0 {
		return nil, dataErr(0, "", "training dataset has no feature columns")
	}
	if train.Label == nil {
		return nil, dataErr(0, train.LabelName, "training dataset has no label")
	}
	if err := train.Validate(); err != nil {
		return nil, err
	}
	sig := Signature{Task: train.Task, Inputs: train.Inputs(), Label: train.LabelName, Classes: slices.Clone(train.Classes)}
	d := &trainData{sig: sig, x: train.X, y: train.Label, n: train.NumRows()}
	if sig.Task == Classification {
		d.classCounts = make([]int, len(sig.Classes))
		for _, v := range train.Label {
			d.classCounts[int(v)]++
		}
		present := 0
		for _, c := range d.classCounts {
			if c > 0 {
				present++
			}
		}
		if present < 2 {
			return nil, dataErr(0, train.LabelName, "label is constant: every one of the %d rows has class %q; a classifier needs at least two classes", d.n, sig.Classes[int(train.Label[0])])
		}
	}
	if val != nil {
		if val.Label == nil {
			return nil, dataErr(0, val.LabelName, "validation dataset has no label")
		}
		if err := val.Validate(); err != nil {
			return nil, fmt.Errorf("validation dataset: %w", err)
		}
		if val.NumRows() == 0 {
			return nil, dataErr(0, "", "validation dataset is empty")
		}
		rows, err := sig.Matrix(val)
		if err != nil {
			return nil, fmt.Errorf("validation dataset: %w", err)
		}
		y, err := sig.Targets(val)
		if err != nil {
			return nil, fmt.Errorf("validation dataset: %w", err)
		}
		for i, v := range y {
			if v < 0 {
				return nil, dataErr(i+1, val.LabelName, "validation class %q is not among the training classes %v", val.Classes[int(val.Label[i])], sig.Classes)
			}
		}
		d.valX = transpose(rows, len(sig.Inputs))
		d.valY = y
	}
	return d, nil
}

// transpose turns rows into columns.
func transpose(rows [][]float64, p int) [][]float64 {
	cols := make([][]float64, p)
	for j := range cols {
		cols[j] = make([]float64, len(rows))
		for i, r := range rows {
			cols[j][i] = r[j]
		}
	}
	return cols
}

// CheckRows reports the first row whose width differs from the number of
// inputs.
func (s Signature) CheckRows(x [][]float64) error {
	for i, r := range x {
		if len(r) != len(s.Inputs) {
			return dataErr(i+1, "", "row has %d values, the model takes %d (%s)", len(r), len(s.Inputs), s.inputNames())
		}
	}
	return nil
}

func (s Signature) inputNames() string {
	names := make([]string, len(s.Inputs))
	for i, in := range s.Inputs {
		names[i] = in.Name
	}
	return strings.Join(names, ", ")
}

// Matrix returns ds's features as rows in the model's input order. Columns
// are matched by name (extra columns in ds are ignored); categorical codes
// are re-encoded from ds's vocabulary to the model's by category name, and a
// category the model never saw becomes missing (NaN).
func (s Signature) Matrix(ds *Dataset) ([][]float64, error) {
	if ds == nil {
		return nil, dataErr(0, "", "dataset is nil")
	}
	if len(ds.X) != len(ds.Features) {
		return nil, dataErr(0, "", "%d feature names but %d columns", len(ds.Features), len(ds.X))
	}
	pos := make(map[string]int, len(ds.Features))
	for j, f := range ds.Features {
		pos[f] = j
	}
	n := ds.NumRows()
	p := len(s.Inputs)
	flat := make([]float64, n*p)
	for k, in := range s.Inputs {
		j, ok := pos[in.Name]
		if !ok {
			return nil, dataErr(0, in.Name, "input column missing from the data (data has: %s)", strings.Join(ds.Features, ", "))
		}
		col := ds.X[j]
		if len(col) != n {
			return nil, dataErr(0, in.Name, "column has %d rows, want %d", len(col), n)
		}
		if (in.Type == Categorical) != (ds.FeatureType(j) == Categorical) {
			return nil, dataErr(0, in.Name, "column is %s in the data but %s in the model", ds.FeatureType(j), in.Type)
		}
		if in.Type == Categorical {
			col = remapCodes(col, ds.Categories[j], in.Categories, math.NaN())
		}
		for i, v := range col {
			flat[i*p+k] = v
		}
	}
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = flat[i*p : (i+1)*p : (i+1)*p]
	}
	return rows, nil
}

// Targets returns ds's labels in the model's encoding: class indices matched
// by class name (-1 for a class the model does not know) or regression
// values.
func (s Signature) Targets(ds *Dataset) ([]float64, error) {
	if ds == nil || ds.Label == nil {
		return nil, dataErr(0, "", "dataset has no label")
	}
	if ds.Task != s.Task {
		return nil, dataErr(0, ds.LabelName, "dataset task %q differs from the model's %q", ds.Task, s.Task)
	}
	if s.Task == Regression {
		return slices.Clone(ds.Label), nil
	}
	return remapCodes(ds.Label, ds.Classes, s.Classes, -1), nil
}

// EncodeRecords turns raw records (column → string, as in a serving request
// or an event) into rows for Predict, using the model's vocabularies: a
// missing or unparsable-as-missing cell is NaN, an unseen category is NaN.
// A numeric cell that is not a number is an error naming the 1-based record
// and the column.
func (s Signature) EncodeRecords(records []map[string]string) ([][]float64, error) {
	p := len(s.Inputs)
	vocab := make([]map[string]int, p)
	for k, in := range s.Inputs {
		if in.Type == Categorical {
			vocab[k] = make(map[string]int, len(in.Categories))
			for i, c := range in.Categories {
				vocab[k][c] = i
			}
		}
	}
	flat := make([]float64, len(records)*p)
	rows := make([][]float64, len(records))
	for i, rec := range records {
		row := flat[i*p : (i+1)*p : (i+1)*p]
		for k, in := range s.Inputs {
			raw, ok := rec[in.Name]
			row[k] = math.NaN()
			if !ok || isMissing(raw) {
				continue
			}
			if in.Type == Categorical {
				if c, ok := vocab[k][strings.TrimSpace(raw)]; ok {
					row[k] = float64(c)
				}
				continue
			}
			v, err := parseNumber(raw)
			if err != nil {
				return nil, dataErr(i+1, in.Name, "%v", err)
			}
			row[k] = v
		}
		rows[i] = row
	}
	return rows, nil
}

// validate checks a signature read from an artifact.
func (s Signature) validate() error {
	switch s.Task {
	case Classification:
		if len(s.Classes) < 2 {
			return fmt.Errorf("classifier has %d classes, need at least 2", len(s.Classes))
		}
		if err := checkUnique("class", s.Classes); err != nil {
			return err
		}
	case Regression:
		if len(s.Classes) != 0 {
			return fmt.Errorf("regression model has classes")
		}
	default:
		return fmt.Errorf("unknown task %q", s.Task)
	}
	if len(s.Inputs) == 0 {
		return fmt.Errorf("no inputs")
	}
	names := make([]string, len(s.Inputs))
	for i, in := range s.Inputs {
		if in.Name == "" {
			return fmt.Errorf("input %d has no name", i+1)
		}
		names[i] = in.Name
		switch in.Type {
		case Numeric:
			if len(in.Categories) != 0 {
				return fmt.Errorf("numeric input %q has categories", in.Name)
			}
		case Categorical:
			if err := checkUnique("category of "+in.Name, in.Categories); err != nil {
				return err
			}
		default:
			return fmt.Errorf("input %q has unknown type %q", in.Name, in.Type)
		}
	}
	return checkUnique("input", names)
}

func checkUnique(what string, vals []string) error {
	seen := make(map[string]bool, len(vals))
	for _, v := range vals {
		if seen[v] {
			return fmt.Errorf("duplicate %s %q", what, v)
		}
		seen[v] = true
	}
	return nil
}

// numOutputs is the number of raw scores per row: 1 for regression and
// binary classification, the number of classes otherwise.
func (s Signature) numOutputs() int {
	if s.Task == Classification && len(s.Classes) > 2 {
		return len(s.Classes)
	}
	return 1
}

// workers returns the number of goroutines to use.
func (o TrainOptions) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// argmax returns the index of the largest value, the lowest index on ties.
func argmax(v []float64) int {
	best := 0
	for i := 1; i < len(v); i++ {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}

// sigmoid is the logistic function, written to avoid overflow.
func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// softmaxInPlace turns raw scores into probabilities (max-shifted for
// stability).
func softmaxInPlace(z []float64) {
	m := z[0]
	for _, v := range z[1:] {
		if v > m {
			m = v
		}
	}
	var s float64
	for i, v := range z {
		e := math.Exp(v - m)
		z[i] = e
		s += e
	}
	for i := range z {
		z[i] /= s
	}
}

// probaFromRaw converts raw scores of a classifier into class probabilities.
func probaFromRaw(raw []float64, k int) []float64 {
	if k == 2 {
		p := sigmoid(raw[0])
		return []float64{1 - p, p}
	}
	out := slices.Clone(raw)
	softmaxInPlace(out)
	return out
}

// predictFromRaw maps raw scores to Predict's output.
func predictFromRaw(task Task, raw []float64) float64 {
	if task == Regression {
		return raw[0]
	}
	if len(raw) == 1 {
		// Same rule as argmax over PredictProba's [1-p, p], so Predict and
		// PredictProba never disagree, even for p within rounding of 0.5.
		if sigmoid(raw[0]) > 0.5 {
			return 1
		}
		return 0
	}
	return float64(argmax(raw))
}

func parseNumber(raw string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
	if err != nil {
		return 0, fmt.Errorf("value %q is not a number", raw)
	}
	if math.IsInf(v, 0) {
		return 0, fmt.Errorf("value %q is not finite", raw)
	}
	return v, nil
}

// clone returns a deep copy, so callers cannot change a model through the
// slices of its signature.
func (s Signature) clone() Signature {
	out := s
	out.Classes = slices.Clone(s.Classes)
	out.Inputs = make([]Input, len(s.Inputs))
	for i, in := range s.Inputs {
		in.Categories = slices.Clone(in.Categories)
		out.Inputs[i] = in
	}
	return out
}

// clone returns a deep copy of the info.
func (i ModelInfo) clone() ModelInfo {
	out := i
	out.Params = maps.Clone(i.Params)
	out.Training.ClassCounts = slices.Clone(i.Training.ClassCounts)
	if i.Training.ValidationLoss != nil {
		v := *i.Training.ValidationLoss
		out.Training.ValidationLoss = &v
	}
	return out
}
