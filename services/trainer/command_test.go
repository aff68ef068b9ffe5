package trainer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// commandSpec is a pipeline whose model an external program trains: the
// example trainer shipped in examples/command.
func commandSpec(t *testing.T, argv string, features string) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.Parse([]byte(`
apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: ext}
spec:
  dataset: {label: class}
  features: ` + features + `
  model:
    algorithm: command
    command: ` + argv + `
    params: {iterations: 200}
`))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func python(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed to run the example external trainer: %v", err)
	}
	return py
}

func window(t *testing.T) []*table.Table {
	t.Helper()
	var out []*table.Table
	for i := range 2 {
		tb, err := table.Read(table.FormatCSV, looptest.CSV(uint64(i+1), 300, 0))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tb)
	}
	return out
}

func TestCommandAlgorithmTrainsWithAnExternalProgram(t *testing.T) {
	t.Parallel()
	script, err := filepath.Abs("../../examples/command/train_logreg.py")
	if err != nil {
		t.Fatal(err)
	}
	spec := commandSpec(t, `["`+python(t)+`", "`+script+`"]`, `[{name: x1}, {name: x2}, {name: color, transform: onehot}]`)
	trained, err := Train(context.Background(), TrainSpec{Pipeline: spec, Algorithm: pipeline.AlgorithmCommand, Params: spec.Spec.Model.Params, Seed: 1}, window(t))
	if err != nil {
		t.Fatal(err)
	}
	if acc := trained.Metrics["trainAccuracy"]; acc < 0.8 {
		t.Errorf("train accuracy %v, want ≥ 0.8 (metrics %v)", acc, trained.Metrics)
	}
	// The external model is a Gyre model: it bundles, loads and predicts.
	raw, err := bundle.Marshal(&bundle.Bundle{Pipeline: "ext", RequestID: "r1", Features: trained.Features, Model: trained.Model})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	holdout, err := table.Read(table.FormatCSV, looptest.CSV(9, 300, 0))
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := b.Evaluate(holdout)
	if err != nil || metrics["accuracy"] < 0.8 {
		t.Errorf("held-out metrics %v, %v", metrics, err)
	}
}

// TestCommandAlgorithmTakesAnArtifact: an external trainer may write a
// complete gyre.model/v1 artifact (the torch example does); Gyre checks
// that it models the training file and serves it.
func TestCommandAlgorithmTakesAnArtifact(t *testing.T) {
	t.Parallel()
	win := window(t)
	cols := `[{name: x1}, {name: x2}, {name: color, transform: onehot}]`
	// The artifact a GPU trainer would write, made here by Go's own mlp on
	// the transformed window.
	set, err := features.Fit(commandSpec(t, `["true"]`, cols), win...)
	if err != nil {
		t.Fatal(err)
	}
	var parts []*ml.Dataset
	for _, tb := range win {
		ds, err := set.Dataset(tb, true)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, ds)
	}
	ds, err := ml.Concat(parts...)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, ds *ml.Dataset) string {
		m, err := ml.Train(context.Background(), "mlp", ml.Params{"hidden": 8, "learningRate": 0.01, "epochs": 50}, ds, ml.TrainOptions{Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := ml.Save(f, m); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.json", ds)
	renamed := *ds
	renamed.Features = append([]string{"other"}, ds.Features[1:]...)
	wrongInputs := write("wrong.json", &renamed)
	cp := func(path string) string { return `["sh", "-c", "cp ` + path + ` \"$GYRE_MODEL_OUT\""]` }

	spec := commandSpec(t, cp(good), cols)
	trained, err := Train(context.Background(), TrainSpec{Pipeline: spec, Algorithm: pipeline.AlgorithmCommand, Seed: 1}, win)
	if err != nil {
		t.Fatal(err)
	}
	if trained.Model.Info().Algorithm != "mlp" || trained.Metrics["trainAccuracy"] < 0.8 {
		t.Fatalf("model %+v, metrics %v", trained.Model.Info(), trained.Metrics)
	}
	_, err = Train(context.Background(), TrainSpec{Pipeline: commandSpec(t, cp(wrongInputs), cols), Algorithm: pipeline.AlgorithmCommand, Seed: 1}, win)
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "inputs [other") {
		t.Fatalf("an artifact of other inputs: %v", err)
	}
	corrupt := filepath.Join(t.TempDir(), "corrupt.json")
	raw, _ := os.ReadFile(good)
	if err := os.WriteFile(corrupt, bytes.Replace(raw, []byte(`"epochs":50`), []byte(`"epochs":51`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Train(context.Background(), TrainSpec{Pipeline: commandSpec(t, cp(corrupt), cols), Algorithm: pipeline.AlgorithmCommand, Seed: 1}, win)
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("a corrupt artifact: %v", err)
	}
}

func TestCommandAlgorithmFailures(t *testing.T) {
	t.Parallel()
	py := python(t)
	cases := []struct {
		name, argv, features, want string
	}{
		{"program fails", `["` + py + `", "-c", "import sys; print('boom: no GPU'); sys.exit(3)"]`, `[{name: x1}, {name: x2}]`, "boom: no GPU"},
		{"no model written", `["` + py + `", "-c", "pass"]`, `[{name: x1}, {name: x2}]`, "wrote no model"},
		{"wrong format", `["` + py + `", "-c", "import os; open(os.environ['GYRE_MODEL_OUT'],'w').write('{\"format\":\"onnx\"}')"]`, `[{name: x1}, {name: x2}]`, `format "onnx"`},
		{"not on PATH", `["gyre-no-such-trainer"]`, `[{name: x1}, {name: x2}]`, "gyre-no-such-trainer"},
		{"text input", `["` + py + `", "-c", "pass"]`, `[{name: x1}, {name: color}]`, "onehot"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			spec := commandSpec(t, c.argv, c.features)
			_, err := Train(context.Background(), TrainSpec{Pipeline: spec, Algorithm: pipeline.AlgorithmCommand, Seed: 1}, window(t))
			var ce *CommandError
			if !errors.As(err, &ce) || !ce.Permanent() {
				t.Fatalf("error %v is not a permanent CommandError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}
