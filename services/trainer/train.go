package trainer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// TrainSpec is what one training run needs besides its data.
type TrainSpec struct {
	// Pipeline is the spec: label and feature transforms.
	Pipeline  *pipeline.Pipeline
	Algorithm string
	Params    ml.Params
	Seed      int64
	// Progress, if set, hears of every round of training (built-in
	// algorithms only).
	Progress func(ml.Progress)
}

// Trained is the outcome of a training run.
type Trained struct {
	Features *features.Set
	Model    ml.Model
	// Metrics are the fit metrics on the window's rows, prefixed "train"
	// (trainAccuracy, trainLogloss, …). How well the model does on data it
	// has not seen is the evaluator's to measure, on the newest batch.
	Metrics   map[string]float64
	TrainRows int
}

// Train fits the pipeline's feature set and the model on every row of the
// window: on a drifting stream the newest rows are the most valuable, and
// the evaluator, not a hold-out of the window, judges the model on unseen
// data. The same window, spec and seed give the same bundle, byte for byte:
// a job trained again after a crash stores the same artifact.
func Train(ctx context.Context, spec TrainSpec, window []*table.Table) (*Trained, error) {
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
	train, err := ml.Concat(parts...)
	if err != nil {
		return nil, err
	}
	var model ml.Model
	if spec.Algorithm == pipeline.AlgorithmCommand {
		model, err = trainCommand(ctx, spec, set, train)
	} else {
		model, err = ml.Train(ctx, spec.Algorithm, spec.Params, train, ml.TrainOptions{Seed: spec.Seed, Progress: spec.Progress})
	}
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
	return out, nil
}
