package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/libs/ml"
)

// predictOptions are the flags of gyre predict.
type predictOptions struct {
	model, data, out string
}

// predictionColumn and probaPrefix name the columns gyre predict adds.
const (
	predictionColumn = "prediction"
	probaPrefix      = "proba_"
)

func newPredictCmd() *cobra.Command {
	var o predictOptions
	cmd := &cobra.Command{
		Use:   "predict --model PATH --data FILE [--out FILE]",
		Short: "Predict every row of a CSV file with a saved model",
		Long: `Predict every row of a CSV file with a model artifact written by 'gyre train' or
the trainer service.

The output is the input CSV, every column and row unchanged and in order, plus a
'prediction' column (the class name for a classifier, the value for a regression)
and, for a classifier, one 'proba_<class>' column per class in the model's class
order. It goes to stdout, or to --out.

The model's input columns are matched by name: the file may have extra columns (an
id, the label) and columns in any order, but must have every input the model
takes. Missing cells are missing values; a category the model never saw is
treated as missing.`,
		Example: `  gyre train --data train.csv --label class --out m.model
  gyre predict --model m.model --data new.csv --out scored.csv

  # the first rows, on the terminal
  gyre predict --model m.model --data new.csv | head`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPredict(cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.model, "model", "m", "", "the model artifact (required)")
	f.StringVar(&o.data, "data", "", "the rows to predict: a CSV file with a header row (required)")
	f.StringVarP(&o.out, "out", "o", "", "write the CSV here instead of stdout")
	return cmd
}

func runPredict(stdout io.Writer, o predictOptions) error {
	if o.model == "" {
		return fmt.Errorf("--model is required: the model artifact")
	}
	if o.data == "" {
		return fmt.Errorf("--data is required: the CSV to predict")
	}
	m, err := loadModel(o.model)
	if err != nil {
		return err
	}
	sig := m.Signature()
	// The file is parsed twice, once typed for the model and once as raw
	// records to copy to the output, so it is read into memory once.
	raw, err := os.ReadFile(o.data)
	if err != nil {
		return err
	}
	ds, err := ml.ReadCSV(bytes.NewReader(raw), modelCSVOptions(sig, ""))
	if err != nil {
		return fmt.Errorf("%s: %w", o.data, err)
	}
	x, err := sig.Matrix(ds)
	if err != nil {
		return fmt.Errorf("%s: %w", o.data, err)
	}
	classifier := sig.Task == ml.Classification
	var proba [][]float64
	var pred []float64
	if classifier {
		proba = m.PredictProba(x)
	} else {
		pred = m.Predict(x)
	}

	cr := csv.NewReader(bytes.NewReader(raw))
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("%s: %w", o.data, err)
	}
	header = slices.Clone(header)
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	added := []string{predictionColumn}
	if classifier {
		for _, c := range sig.Classes {
			added = append(added, probaPrefix+c)
		}
	}
	for _, a := range added {
		for _, h := range header {
			if strings.TrimSpace(h) == a {
				return fmt.Errorf("%s: column %q already exists; the output adds it (rename the column)", o.data, a)
			}
		}
	}

	w := stdout
	var file *os.File
	if o.out != "" {
		if file, err = os.Create(o.out); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer file.Close() // closed explicitly below on success
		w = file
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	cw := csv.NewWriter(bw)
	if err := cw.Write(append(header, added...)); err != nil {
		return err
	}
	out := make([]string, 0, len(header)+len(added))
	for i := 0; ; i++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", o.data, err)
		}
		if i >= ds.NumRows() {
			return fmt.Errorf("%s: row %d: more records than the typed read found", o.data, i+1)
		}
		out = append(out[:0], rec...)
		if classifier {
			k := argmax(proba[i])
			out = append(out, sig.Classes[k])
			for _, p := range proba[i] {
				out = append(out, strconv.FormatFloat(p, 'g', -1, 64))
			}
		} else {
			out = append(out, strconv.FormatFloat(pred[i], 'g', -1, 64))
		}
		if err := cw.Write(out); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if file != nil {
		if err := file.Close(); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	return nil
}

// argmax returns the index of the largest probability, the lowest index on
// ties (the rule of Model.Predict).
func argmax(p []float64) int {
	best := 0
	for i := 1; i < len(p); i++ {
		if p[i] > p[best] {
			best = i
		}
	}
	return best
}
