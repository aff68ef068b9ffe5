package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/libs/ml"
)

// evaluateOptions are the flags of gyre evaluate.
type evaluateOptions struct {
	model, data, label string
}

// evaluateResult is the JSON line gyre evaluate prints.
type evaluateResult struct {
	Model     string             `json:"model"`
	Algorithm string             `json:"algorithm"`
	Task      string             `json:"task"`
	Data      string             `json:"data"`
	Rows      int                `json:"rows"`
	Metrics   map[string]float64 `json:"metrics"`
}

func newEvaluateCmd() *cobra.Command {
	var o evaluateOptions
	cmd := &cobra.Command{
		Use:   "evaluate --model PATH --data FILE [--label COL]",
		Short: "Score a saved model on a labelled CSV file",
		Long: `Score a model artifact on a labelled CSV file and print one JSON line of metrics:
accuracy, logloss, auc and f1 for a classifier (auc is one-vs-rest and f1 macro-
averaged over the classes when there are more than two; f1 of a binary model is
that of its second class), rmse and mae for a regression. A metric the data
cannot define (auc when only one class occurs) is left out.

The label column defaults to the one the model was trained on. Inputs are matched
by name, extra columns are ignored, and rows of a class the model does not know
count as wrong.`,
		Example: `  gyre train --data train.csv --label class --out m.model
  gyre evaluate --model m.model --data test.csv
  gyre evaluate --model m.model --data test.csv --label outcome`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEvaluate(cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.model, "model", "m", "", "the model artifact (required)")
	f.StringVar(&o.data, "data", "", "labelled data: a CSV file with a header row (required)")
	f.StringVar(&o.label, "label", "", "the label column (default: the model's)")
	return cmd
}

func runEvaluate(stdout io.Writer, o evaluateOptions) error {
	if o.model == "" {
		return fmt.Errorf("--model is required: the model artifact")
	}
	if o.data == "" {
		return fmt.Errorf("--data is required: the labelled CSV")
	}
	m, err := loadModel(o.model)
	if err != nil {
		return err
	}
	sig := m.Signature()
	label := o.label
	if label == "" {
		label = sig.Label
	}
	if label == "" {
		return fmt.Errorf("--label is required: the model %s does not name its label column", o.model)
	}
	ds, err := ml.ReadCSVFile(o.data, modelCSVOptions(sig, label))
	if err != nil {
		return err
	}
	metrics, err := ml.Evaluate(m, ds)
	if err != nil {
		return fmt.Errorf("%s: %w", o.data, err)
	}
	return writeJSONLine(stdout, evaluateResult{
		Model:     o.model,
		Algorithm: m.Info().Algorithm,
		Task:      string(sig.Task),
		Data:      o.data,
		Rows:      ds.NumRows(),
		Metrics:   metrics,
	})
}
