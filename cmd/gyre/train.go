package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/libs/ml"
)

// The offline model commands (train, predict, evaluate) work on CSV files and
// model artifacts on disk, with no NATS and no running Gyre: the same
// libs/ml code the trainer, evaluator and deployer services run, for trying
// an algorithm or its params on a file before putting it in a pipeline spec.

// trainOptions are the flags of gyre train.
type trainOptions struct {
	data, validation, label, algorithm, out, task string
	features, categorical, params                 []string
	seed                                          int64
	listParams, quiet                             bool
}

func newTrainCmd() *cobra.Command {
	var o trainOptions
	cmd := &cobra.Command{
		Use:   "train --data FILE --label COL --out PATH",
		Short: "Train a model on a CSV file and save it as an artifact",
		Long: `Train a model on a CSV file (with a header row) and write it as a gyre.model/v1
artifact, the format the trainer service registers and the deployer serves.

Every column other than the label is a numeric feature unless --features selects
columns or --categorical marks some as categorical. Empty cells and NA, N/A, NaN,
null, none and ? are missing values; a missing label is an error.

While it trains, a line on stderr each second says how far it has come
(trees, epochs or iterations, and the loss it watches); --quiet turns it off.
Prints one JSON line: the algorithm, the number of rows and features, train_ms
(the time spent fitting, without reading the CSV), the solver's iterations and
why it stopped, and the metrics on the training data (and on --validation):
accuracy, logloss, auc and f1 for classification; rmse and mae for regression.
With --validation, GBDT early stopping (--param earlyStopping=true) watches that
file instead of a seeded split of the training rows.

The same data, params and --seed give the same artifact bytes on any machine of
the same architecture and with any number of cores. An --out path ending in .gz
is gzip-compressed; every command that loads a model detects it.

Params (--param NAME=VALUE, repeatable; list values are comma-separated):

` + paramsHelp(),
		Example: `  # a gradient-boosted tree classifier on the first rows of Elec2
  gyre train --data examples/elec2/elec2.csv --label class --algorithm gbdt \
      --param trees=200 --param learningRate=0.05 --out elec2.model

  # logistic regression with a weaker penalty, then score held-out data
  gyre train --data train.csv --label class --algorithm logreg --param l2=0.1 --out lr.model
  gyre evaluate --model lr.model --data test.csv

  # regression with a categorical input
  gyre train --data houses.csv --label price --task regression --categorical city --out price.model

  # the params of one algorithm, with types, defaults and what they do
  gyre train --algorithm gbdt --list-params`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.listParams {
				return listParams(cmd.OutOrStdout(), o.algorithm, cmd.Flags().Changed("algorithm"))
			}
			return runTrain(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.data, "data", "", "training data: a CSV file with a header row (required)")
	f.StringVar(&o.label, "label", "", "the label (target) column (required)")
	f.StringVarP(&o.algorithm, "algorithm", "a", "gbdt", "algorithm: "+strings.Join(ml.Algorithms(), ", "))
	f.StringArrayVarP(&o.params, "param", "p", nil, "hyper-parameter NAME=VALUE, repeatable (see --list-params)")
	f.Int64Var(&o.seed, "seed", 1, "seed for every random choice; the same seed gives the same model")
	f.StringVar(&o.validation, "validation", "", "held-out CSV with the same columns: scored, and used for GBDT early stopping")
	f.StringVarP(&o.out, "out", "o", "", "where to write the model artifact; .gz compresses (required)")
	f.StringVar(&o.task, "task", string(ml.Classification), "classification or regression")
	f.StringSliceVar(&o.features, "features", nil, "feature columns, comma-separated (default: every column but the label)")
	f.StringSliceVar(&o.categorical, "categorical", nil, "feature columns to treat as categories, comma-separated")
	f.BoolVar(&o.listParams, "list-params", false, "print the params of --algorithm (or of every algorithm) and exit")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print no progress on stderr while training")
	return cmd
}

// trainResult is the JSON line gyre train prints.
type trainResult struct {
	Algorithm  string             `json:"algorithm"`
	Task       ml.Task            `json:"task"`
	Rows       int                `json:"rows"`
	Features   int                `json:"features"`
	Classes    []string           `json:"classes,omitempty"`
	TrainMS    float64            `json:"train_ms"`
	Iterations int                `json:"iterations"`
	Stop       string             `json:"stop"`
	Params     ml.Params          `json:"params"`
	Seed       int64              `json:"seed"`
	Metrics    map[string]float64 `json:"metrics"`
	Validation *scoreResult       `json:"validation,omitempty"`
	Out        string             `json:"out"`
}

// progressPrinter returns an ml.TrainOptions.Progress that writes a line
// to w at most once per every (the first after every has passed), so a
// quick training prints nothing and a long one shows that it moves:
//
//	gyre train: mlp epoch 12 of at most 200, loss 0.41230, 4.1s
func progressPrinter(w io.Writer, algorithm string, start time.Time, every time.Duration) func(ml.Progress) {
	return ml.EveryProgress(start, every, time.Now, func(p ml.Progress, elapsed time.Duration) {
		loss := ""
		if !math.IsNaN(p.Loss) {
			loss = fmt.Sprintf(", loss %.5f", p.Loss)
		}
		fmt.Fprintf(w, "gyre train: %s %s %d of at most %d%s, %.1fs\n", algorithm, p.Unit, p.Done, p.Total, loss, elapsed.Seconds())
	})
}

// scoreResult is the metrics of a model on one labelled file.
type scoreResult struct {
	Rows    int                `json:"rows"`
	Metrics map[string]float64 `json:"metrics"`
}

func runTrain(ctx context.Context, stdout, stderr io.Writer, o trainOptions) error {
	if o.data == "" {
		return fmt.Errorf("--data is required: the training CSV")
	}
	if o.label == "" {
		return fmt.Errorf("--label is required: the column to predict")
	}
	if o.out == "" {
		return fmt.Errorf("--out is required: where to write the model")
	}
	task := ml.Task(o.task)
	if task != ml.Classification && task != ml.Regression {
		return fmt.Errorf("--task %q: want %s or %s", o.task, ml.Classification, ml.Regression)
	}
	params, err := parseParamFlags(o.algorithm, o.params)
	if err != nil {
		return err
	}
	// Reject bad params before reading a possibly large file.
	if _, err := ml.ValidateParams(o.algorithm, params); err != nil {
		return err
	}
	if err := checkWritable(o.out); err != nil {
		return err
	}
	csvOpts := ml.CSVOptions{Label: o.label, Features: o.features, Categorical: o.categorical, Task: task}
	train, err := ml.ReadCSVFile(o.data, csvOpts)
	if err != nil {
		return err
	}
	var val *ml.Dataset
	if o.validation != "" {
		// The validation file is read with the training file's columns so
		// that its categorical columns are encoded the same way.
		csvOpts.Features = train.Features
		if val, err = ml.ReadCSVFile(o.validation, csvOpts); err != nil {
			return err
		}
	}
	start := time.Now()
	opts := ml.TrainOptions{Seed: o.seed, Validation: val}
	if !o.quiet {
		opts.Progress = progressPrinter(stderr, o.algorithm, start, time.Second)
	}
	m, err := ml.Train(ctx, o.algorithm, params, train, opts)
	elapsed := time.Since(start)
	if err != nil {
		if val != nil {
			return fmt.Errorf("training on %s (validation %s): %w", o.data, o.validation, err)
		}
		return fmt.Errorf("training on %s: %w", o.data, err)
	}
	metrics, err := ml.Evaluate(m, train)
	if err != nil {
		return fmt.Errorf("scoring %s: %w", o.data, err)
	}
	if err := saveModel(o.out, m); err != nil {
		return err
	}
	info := m.Info()
	sig := m.Signature()
	res := trainResult{
		Algorithm:  info.Algorithm,
		Task:       sig.Task,
		Rows:       info.Training.Rows,
		Features:   len(sig.Inputs),
		Classes:    sig.Classes,
		TrainMS:    math.Round(float64(elapsed.Microseconds())) / 1000,
		Iterations: info.Training.Iterations,
		Stop:       info.Training.Stop,
		Params:     info.Params,
		Seed:       info.Seed,
		Metrics:    metrics,
		Out:        o.out,
	}
	if val != nil {
		vm, err := ml.Evaluate(m, val)
		if err != nil {
			return fmt.Errorf("scoring %s: %w", o.validation, err)
		}
		res.Validation = &scoreResult{Rows: val.NumRows(), Metrics: vm}
	}
	return writeJSONLine(stdout, res)
}

// parseParamFlags turns NAME=VALUE flags into params, typed by the
// algorithm's param specification: a value is parsed as the param's type so
// that ml.ValidateParams sees what a pipeline spec would give it. A name the
// algorithm does not know is passed on as a string, for ValidateParams to
// reject with the list of known names.
func parseParamFlags(algorithm string, flags []string) (ml.Params, error) {
	known, err := ml.KnownParams(algorithm)
	if err != nil {
		return nil, fmt.Errorf("--algorithm %q: %w", algorithm, err)
	}
	types := make(map[string]string, len(known))
	for _, p := range known {
		types[p.Name] = p.Type
	}
	params := ml.Params{}
	for _, f := range flags {
		name, raw, ok := strings.Cut(f, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("--param %q: want NAME=VALUE, for example --param trees=200", f)
		}
		if _, dup := params[name]; dup {
			return nil, fmt.Errorf("--param %q: %s is given twice", f, name)
		}
		typ, isKnown := types[name]
		if !isKnown {
			params[name] = raw
			continue
		}
		v, err := parseParamValue(typ, strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("--param %q: %s param %q is %s: %w", f, algorithm, name, article(typ), err)
		}
		params[name] = v
	}
	return params, nil
}

// parseParamValue parses one flag value as a param of type typ (a ParamInfo
// type name). Numbers are passed as float64, as JSON gives them, so that
// ValidateParams reports a fractional int or an out-of-range value in its own
// words. Other types ("string", "ints", whose values ml parses from a
// comma-separated string such as 64,32) are passed on as the string.
func parseParamValue(typ, raw string) (any, error) {
	switch typ {
	case "int", "float":
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", raw)
		}
		return v, nil
	case "bool":
		v, err := strconv.ParseBool(raw)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", raw)
		}
		return v, nil
	default:
		return raw, nil
	}
}

// article returns "an int", "a float", ... for error messages.
func article(typ string) string {
	if typ != "" && strings.ContainsRune("aeiouAEIOU", rune(typ[0])) {
		return "an " + typ
	}
	return "a " + typ
}

// paramsHelp lists every algorithm's params for the help text.
func paramsHelp() string {
	var b bytes.Buffer
	for _, alg := range ml.Algorithms() {
		fmt.Fprintf(&b, "  --algorithm %s\n", alg)
		known, err := ml.KnownParams(alg)
		if err != nil {
			continue
		}
		writeParamTable(&b, known, "    ")
	}
	return strings.TrimRight(b.String(), "\n")
}

// writeParamTable writes one line per param: name, type, default and doc.
func writeParamTable(w io.Writer, known []ml.ParamInfo, indent string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range known {
		doc := p.Doc
		if len(p.Values) > 0 {
			doc += " (one of: " + strings.Join(p.Values, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s%s\t%s\tdefault %s\t%s\n", indent, p.Name, p.Type, formatDefault(p.Default), doc)
	}
	_ = tw.Flush() // the error is w's, reported by the caller's next write
}

// formatDefault writes a default the way --param takes it.
func formatDefault(v any) string {
	switch d := v.(type) {
	case []int:
		parts := make([]string, len(d))
		for i, x := range d {
			parts[i] = strconv.Itoa(x)
		}
		return strings.Join(parts, ",")
	case []any:
		if len(d) == 0 {
			return `""`
		}
		parts := make([]string, len(d))
		for i, x := range d {
			parts[i] = fmt.Sprint(x)
		}
		return strings.Join(parts, ",")
	case string:
		if d == "" {
			return `""`
		}
		return d
	default:
		return fmt.Sprint(v)
	}
}

// listParams prints the params of one algorithm, or of all when none was
// named on the command line.
func listParams(w io.Writer, algorithm string, named bool) error {
	algs := ml.Algorithms()
	if named {
		if _, err := ml.KnownParams(algorithm); err != nil {
			return fmt.Errorf("--algorithm %q: %w", algorithm, err)
		}
		algs = []string{algorithm}
	}
	for i, alg := range algs {
		known, err := ml.KnownParams(alg)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s params (--param NAME=VALUE):\n", alg)
		writeParamTable(w, known, "  ")
	}
	return nil
}

// checkWritable fails early when the artifact's directory does not exist,
// so a long training run is not wasted on a typo.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("--out %s: %s is not a directory", path, dir)
	}
	return nil
}

// saveModel writes the artifact through a temporary file and a rename, so a
// crash never leaves a truncated model under the final name.
func saveModel(path string, m ml.Model) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename there is nothing to remove
	save := ml.Save
	if strings.HasSuffix(path, ".gz") {
		save = ml.SaveCompressed
	}
	if err := save(tmp, m); err != nil {
		tmp.Close()
		return fmt.Errorf("--out %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--out %s: %w", path, err)
	}
	return nil
}

// loadModel reads an artifact written by gyre train or the trainer service.
func loadModel(path string) (ml.Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	defer f.Close()
	m, err := ml.Load(f)
	if err != nil {
		return nil, fmt.Errorf("--model %s: %w", path, err)
	}
	return m, nil
}

// modelCSVOptions reads data for a model: its input columns (others are
// ignored), its categorical columns, and label if set.
func modelCSVOptions(sig ml.Signature, label string) ml.CSVOptions {
	opts := ml.CSVOptions{Label: label, Task: sig.Task}
	for _, in := range sig.Inputs {
		opts.Features = append(opts.Features, in.Name)
		if in.Type == ml.Categorical {
			opts.Categorical = append(opts.Categorical, in.Name)
		}
	}
	return opts
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
