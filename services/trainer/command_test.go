package trainer

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/looptest"
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
