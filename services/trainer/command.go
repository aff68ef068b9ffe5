package trainer

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
)

// The contract of `algorithm: command` — an external training program, in
// any language, that Gyre runs in place of a built-in algorithm:
//
//   - Gyre writes the training window, already through the pipeline's feature
//     transforms, to a CSV file: a header of the model's input columns then
//     the label column, one row per training row, values as numbers (the
//     label as its class name, or its value for a regression target).
//   - It runs spec.model.command (argv, no shell) in the trainer's working
//     directory with these environment variables: GYRE_TRAIN_CSV (that file), GYRE_LABEL,
//     GYRE_TASK (classification or regression), GYRE_FEATURES and
//     GYRE_CLASSES (comma-separated, in order; no classes for regression),
//     GYRE_PARAMS (spec.model.params as JSON), GYRE_SEED, and GYRE_MODEL_OUT
//     (where to write the model).
//   - The program writes to GYRE_MODEL_OUT either a linear classifier,
//     {"format":"gyre.linear/v1","features":[…],"classes":[…],
//     "coefficients":[[…]],"intercepts":[…]} — one coefficient row (the
//     score of classes[1]) for two classes, one per class otherwise, in the
//     original (unscaled) feature space, as scikit-learn's
//     LogisticRegression.coef_ and intercept_ are — or a complete
//     gyre.model/v1 artifact (docs/ml.md), such as the mlp that
//     examples/torch/train.py trains on a GPU, whose signature has the
//     file's columns as numeric inputs, and its label, task and classes.
//
// Gyre then stores, evaluates, versions and serves it like any model it
// trained itself. examples/command/ and examples/torch/ have such programs.

// CommandModelFormat is the format tag of an external trainer's model.
const CommandModelFormat = "gyre.linear/v1"

// commandModel is what an external trainer writes.
type commandModel struct {
	Format       string      `json:"format"`
	Features     []string    `json:"features"`
	Classes      []string    `json:"classes"`
	Coefficients [][]float64 `json:"coefficients"`
	Intercepts   []float64   `json:"intercepts"`
}

// CommandError says an external trainer failed or wrote a model Gyre cannot
// use. The same data and program fail the same way: it is permanent.
type CommandError struct {
	Argv   []string
	Reason string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("external trainer %q: %s", strings.Join(e.Argv, " "), e.Reason)
}

// Permanent marks the error as not worth retrying.
func (e *CommandError) Permanent() bool { return true }

// maxCommandOutput bounds what is kept of the program's output for errors.
const maxCommandOutput = 4096

func trainCommand(ctx context.Context, spec TrainSpec, set *features.Set, train *ml.Dataset) (ml.Model, error) {
	argv := spec.Pipeline.Spec.Model.Command
	fail := func(format string, args ...any) error {
		return &CommandError{Argv: argv, Reason: fmt.Sprintf(format, args...)}
	}
	if len(argv) == 0 {
		return nil, fail("spec.model.command is empty")
	}
	for j, cats := range train.Categories {
		if cats != nil {
			return nil, fail("input %q is text; give it the onehot transform so that an external trainer gets numbers", train.Features[j])
		}
	}
	dir, err := os.MkdirTemp("", "gyre-command-")
	if err != nil {
		return nil, fmt.Errorf("external trainer: %w", err)
	}
	defer os.RemoveAll(dir)
	trainCSV := filepath.Join(dir, "train.csv")
	if err := writeTrainingCSV(trainCSV, train, set); err != nil {
		return nil, fmt.Errorf("external trainer: write %s: %w", trainCSV, err)
	}
	params, err := json.Marshal(spec.Params)
	if err != nil {
		return nil, fail("spec.model.params: %v", err)
	}
	modelOut := filepath.Join(dir, "model.json")
	// The program runs in the trainer's working directory, so that a spec
	// can name it by a path relative to where Gyre runs; its files are in
	// the environment.
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(),
		"GYRE_TRAIN_CSV="+trainCSV,
		"GYRE_LABEL="+set.Label,
		"GYRE_TASK="+string(set.Task),
		"GYRE_FEATURES="+strings.Join(train.Features, ","),
		"GYRE_CLASSES="+strings.Join(set.Classes, ","),
		"GYRE_PARAMS="+string(params),
		"GYRE_SEED="+strconv.FormatInt(spec.Seed, 10),
		"GYRE_MODEL_OUT="+modelOut,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("external trainer stopped: %w", ctx.Err())
		}
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) || errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, fail("%v; its output ends: %s", err, lastBytes(out.String(), maxCommandOutput))
		}
		return nil, fmt.Errorf("external trainer: %w", err)
	}
	raw, err := os.ReadFile(modelOut)
	if err != nil {
		return nil, fail("it exited 0 but wrote no model to GYRE_MODEL_OUT: %v", err)
	}
	var head struct {
		Format string `json:"format"`
	}
	_ = json.Unmarshal(raw, &head) // a bad document fails below, with its format's error
	if head.Format == ml.FormatV1 {
		return loadCommandArtifact(raw, set, train, fail)
	}
	if set.Task != ml.Classification {
		return nil, fail("label %q is a regression target: write a %s artifact, not %s", set.Label, ml.FormatV1, CommandModelFormat)
	}
	var cm commandModel
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cm); err != nil {
		return nil, fail("its model is not %s JSON: %v", CommandModelFormat, err)
	}
	if cm.Format != CommandModelFormat {
		return nil, fail("its model has format %q, want %q or %q", cm.Format, CommandModelFormat, ml.FormatV1)
	}
	if !slices.Equal(cm.Features, train.Features) {
		return nil, fail("its model's features %v are not the training file's %v", cm.Features, train.Features)
	}
	if !slices.Equal(cm.Classes, set.Classes) {
		return nil, fail("its model's classes %v are not the training file's %v", cm.Classes, set.Classes)
	}
	sig := ml.Signature{Task: ml.Classification, Label: set.Label, Classes: slices.Clone(set.Classes)}
	for _, f := range train.Features {
		sig.Inputs = append(sig.Inputs, ml.Input{Name: f, Type: ml.Numeric})
	}
	m, err := ml.NewLinear(sig, cm.Coefficients, cm.Intercepts, spec.Seed, train.NumRows())
	if err != nil {
		return nil, fail("its model: %v", err)
	}
	return m, nil
}

// loadCommandArtifact loads a gyre.model/v1 artifact written by an external
// trainer and checks that it is a model of the training file: the file's
// columns as numeric inputs in order, its label, task and classes.
func loadCommandArtifact(raw []byte, set *features.Set, train *ml.Dataset, fail func(string, ...any) error) (ml.Model, error) {
	m, err := ml.Load(bytes.NewReader(raw))
	if err != nil {
		return nil, fail("its model: %v", err)
	}
	sig := m.Signature()
	names := make([]string, len(sig.Inputs))
	for i, in := range sig.Inputs {
		names[i] = in.Name
		if in.Type != ml.Numeric {
			return nil, fail("its model's input %q is %s; the training file's columns are numeric", in.Name, in.Type)
		}
	}
	if !slices.Equal(names, train.Features) {
		return nil, fail("its model's inputs %v are not the training file's %v", names, train.Features)
	}
	if sig.Task != set.Task || sig.Label != set.Label {
		return nil, fail("its model predicts %s %q, the training file has %s %q", sig.Task, sig.Label, set.Task, set.Label)
	}
	if !slices.Equal(sig.Classes, set.Classes) {
		return nil, fail("its model's classes %v are not the training file's %v", sig.Classes, set.Classes)
	}
	return m, nil
}

// writeTrainingCSV writes the transformed window: inputs, then the label as
// its class name (classification) or its value (regression).
func writeTrainingCSV(path string, ds *ml.Dataset, set *features.Set) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	header := append(slices.Clone(ds.Features), set.Label)
	if err := w.Write(header); err != nil {
		f.Close()
		return err
	}
	row := make([]string, len(header))
	for i := 0; i < ds.NumRows(); i++ {
		for j := range ds.Features {
			row[j] = strconv.FormatFloat(ds.X[j][i], 'g', -1, 64)
		}
		if set.Task == ml.Regression {
			row[len(row)-1] = strconv.FormatFloat(ds.Label[i], 'g', -1, 64)
		} else {
			row[len(row)-1] = set.Classes[int(ds.Label[i])]
		}
		if err := w.Write(row); err != nil {
			f.Close()
			return err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func lastBytes(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
