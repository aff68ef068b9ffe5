package trainer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"

	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// UnsupportedError says the spec asks for an algorithm Gyre cannot train
// yet. Retrying cannot help: it is permanent.
type UnsupportedError struct {
	Algorithm string
	Reason    string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("algorithm %q cannot be trained: %s", e.Algorithm, e.Reason)
}

// Permanent marks the error as not worth retrying.
func (e *UnsupportedError) Permanent() bool { return true }

// supported rejects the algorithms of the spec that libs/ml does not train
// yet, with the reason, rather than training something else in their place.
func supported(algorithm string) error {
	switch algorithm {
	case pipeline.AlgorithmMLP:
		return &UnsupportedError{Algorithm: algorithm, Reason: "mlp arrives with issue #4"}
	case pipeline.AlgorithmCommand:
		return &UnsupportedError{Algorithm: algorithm, Reason: "command (an external training program) arrives with issue #4"}
	}
	return nil
}

// TrainSpec is what one training run needs besides its data.
type TrainSpec struct {
	// Pipeline is the spec: label and feature transforms.
	Pipeline  *pipeline.Pipeline
	Algorithm string
	Params    ml.Params
	Seed      int64
}

// Trained is the outcome of a training run.
type Trained struct {
	Features *features.Set
	Model    ml.Model
	// Metrics are the hold-out metrics (accuracy, logloss, auc, f1 or rmse,
	// mae) and, prefixed "train", the same on the rows trained on.
	Metrics   map[string]float64
	TrainRows int
	TestRows  int
}

// Hold-out split of a training run: HoldoutShare of the window's rows, drawn
// with the spec's seed, when the window has at least MinHoldoutRows rows.
const (
	HoldoutShare   = 0.2
	MinHoldoutRows = 50
)

// Train fits the pipeline's feature set on the window, and the model on the
// set's outputs minus a seeded hold-out split, which gives the training
// metrics. The same window, spec and seed give the same bundle, byte for
// byte: a job trained again after a crash stores the same artifact.
func Train(ctx context.Context, spec TrainSpec, window []*table.Table) (*Trained, error) {
	if err := supported(spec.Algorithm); err != nil {
		return nil, err
	}
	set, err := features.Fit(spec.Pipeline, window...)
	if err != nil {
		return nil, err
	}
	parts := make([]*ml.Dataset, 0, len(window))
	for i, t := range window {
		ds, err := set.Dataset(t, true)
		if err != nil {
			return nil, fmt.Errorf("window batch %d: %w", i+1, err)
		}
		parts = append(parts, ds)
	}
	all, err := ml.Concat(parts...)
	if err != nil {
		return nil, err
	}
	train, test, err := holdout(all, spec.Seed)
	if err != nil {
		return nil, err
	}
	model, err := ml.Train(ctx, spec.Algorithm, spec.Params, train, ml.TrainOptions{Seed: spec.Seed})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("training stopped: %w", err)
		}
		return nil, err
	}
	out := &Trained{Features: set, Model: model, Metrics: map[string]float64{}, TrainRows: train.NumRows()}
	trainMetrics, err := ml.Evaluate(model, train)
	if err != nil {
		return nil, fmt.Errorf("training metrics: %w", err)
	}
	for k, v := range trainMetrics {
		out.Metrics["train"+strings.ToUpper(k[:1])+k[1:]] = v
	}
	if test != nil {
		out.TestRows = test.NumRows()
		testMetrics, err := ml.Evaluate(model, test)
		if err != nil {
			return nil, fmt.Errorf("hold-out metrics: %w", err)
		}
		maps.Copy(out.Metrics, testMetrics)
	}
	return out, nil
}

// holdout splits a dataset into training rows and a seeded hold-out share;
// a small dataset is not split (test is nil).
func holdout(ds *ml.Dataset, seed int64) (train, test *ml.Dataset, err error) {
	n := ds.NumRows()
	k := int(float64(n) * HoldoutShare)
	if n < MinHoldoutRows || k < 1 {
		return ds, nil, nil
	}
	perm := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15)).Perm(n)
	held := make([]bool, n)
	for _, i := range perm[:k] {
		held[i] = true
	}
	trainRows, testRows := make([]int, 0, n-k), make([]int, 0, k)
	for i := range n {
		if held[i] {
			testRows = append(testRows, i)
		} else {
			trainRows = append(trainRows, i)
		}
	}
	if train, err = ds.Subset(trainRows); err != nil {
		return nil, nil, err
	}
	if test, err = ds.Subset(testRows); err != nil {
		return nil, nil, err
	}
	return train, test, nil
}
