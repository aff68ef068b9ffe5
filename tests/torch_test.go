package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/ml"
)

// The PyTorch trainer (examples/torch/train.py) writes mlp artifacts that
// Go must load and serve with the same predictions. These tests run it on
// the CPU; it picks CUDA by itself on a GPU machine.

// torchPython returns a Python that can import torch. Without one the test
// is skipped with a hint, except in CI (CI set), where it fails: CI must
// exercise the GPU trainer path.
func torchPython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("GYRE_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	out, err := exec.Command(py, "-c", "import torch; print(torch.__version__)").CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("PyTorch is not importable by %s (%v: %s); install it with scripts/install-bench-deps.sh (Debian python3-torch) or set GYRE_PYTHON", py, err, bytes.TrimSpace(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return py
}

// torchData writes a CSV of n rows: three numeric features (some missing),
// a noise feature, and a label from a planted nonlinear rule: the class of
// a three-way split, its parity, or a value.
func torchData(t *testing.T, path, task string, n int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	b.WriteString("a,b,c,noise,y\n")
	for i := 0; i < n; i++ {
		a, bb, c := 4*r.Float64()-2, 4*r.Float64()-2, r.NormFloat64()
		z := math.Sin(2*a) + bb*bb/2 - c
		var label string
		switch task {
		case "binary":
			label = strconv.Itoa(map[bool]int{false: 0, true: 1}[z > 0.5])
		case "multiclass":
			label = []string{"low", "mid", "high"}[min(2, max(0, int(math.Floor(z+1))))]
		default:
			label = strconv.FormatFloat(10*z+3, 'g', -1, 64)
		}
		cell := func(v float64) string {
			if r.Float64() < 0.05 {
				return "NA"
			}
			return strconv.FormatFloat(v, 'g', -1, 64)
		}
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s\n", cell(a), cell(bb), cell(c), cell(r.NormFloat64()), label)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTorchTrainerArtifactServesInGo(t *testing.T) {
	t.Parallel()
	py := torchPython(t)
	script, err := filepath.Abs("../examples/torch/train.py")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		task   string
		params []string
	}{
		{"binary", []string{"hidden=16,8", "epochs=40", "learningRate=0.01"}},
		{"multiclass", []string{"hidden=[12]", "activation=tanh", "epochs=30", "learningRate=0.01", "earlyStopping=true", "nIterNoChange=3"}},
		{"regression", []string{"hidden=16", "epochs=30", "learningRate=0.01", "l2=0"}},
	}
	for _, c := range cases {
		t.Run(c.task, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			train, test := filepath.Join(dir, "train.csv"), filepath.Join(dir, "test.csv")
			torchData(t, train, c.task, 800, 1)
			torchData(t, test, c.task, 300, 2)
			modelPath, predsPath := filepath.Join(dir, "model.json"), filepath.Join(dir, "preds.json")
			task := "classification"
			if c.task == "regression" {
				task = "regression"
			}
			args := []string{script, "--data", train, "--label", "y", "--task", task, "--seed", "5",
				"--out", modelPath, "--predict", test, "--predict-out", predsPath, "--device", "cpu"}
			for _, p := range c.params {
				args = append(args, "--param", p)
			}
			if out, err := exec.Command(py, args...).CombinedOutput(); err != nil {
				t.Fatalf("train.py: %v\n%s", err, out)
			}
			f, err := os.Open(modelPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, err := ml.Load(f)
			if err != nil {
				t.Fatalf("Go cannot load the torch artifact: %v", err)
			}
			if m.Info().Algorithm != "mlp" || m.Info().Seed != 5 {
				t.Fatalf("info %+v", m.Info())
			}
			tf, err := os.Open(test)
			if err != nil {
				t.Fatal(err)
			}
			defer tf.Close()
			opts := ml.CSVOptions{Label: "y", Task: ml.Task(task)}
			ds, err := ml.ReadCSV(tf, opts)
			if err != nil {
				t.Fatal(err)
			}
			x, err := m.Signature().Matrix(ds)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(predsPath)
			if err != nil {
				t.Fatal(err)
			}
			var maxDiff float64
			if task == "regression" {
				var want []float64
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatal(err)
				}
				got := m.Predict(x)
				for i := range want {
					maxDiff = math.Max(maxDiff, math.Abs(got[i]-want[i]))
				}
			} else {
				var want [][]float64
				if err := json.Unmarshal(raw, &want); err != nil {
					t.Fatal(err)
				}
				got := m.PredictProba(x)
				if len(got) != len(want) {
					t.Fatalf("%d predictions, torch made %d", len(got), len(want))
				}
				for i := range want {
					for k := range want[i] {
						maxDiff = math.Max(maxDiff, math.Abs(got[i][k]-want[i][k]))
					}
				}
			}
			t.Logf("largest difference between Go and torch: %.3g", maxDiff)
			if !(maxDiff <= 1e-6) {
				t.Fatalf("Go and torch predictions differ by %g", maxDiff)
			}
			// The model learned something: the artifact is not just well formed.
			scores, err := ml.Evaluate(m, ds)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("held-out %v (training %+v)", scores, m.Info().Training)
			if task == "classification" {
				counts := map[float64]int{}
				for _, v := range ds.Label {
					counts[v]++
				}
				majority := 0
				for _, c := range counts {
					majority = max(majority, c)
				}
				if base := float64(majority) / float64(len(ds.Label)); scores["accuracy"] < base+0.15 {
					t.Fatalf("held-out accuracy %.3f, the majority class alone gets %.3f", scores["accuracy"], base)
				}
			} else {
				var mean, ss float64
				for _, v := range ds.Label {
					mean += v / float64(len(ds.Label))
				}
				for _, v := range ds.Label {
					ss += (v - mean) * (v - mean)
				}
				if sd := math.Sqrt(ss / float64(len(ds.Label))); scores["rmse"] > 0.6*sd {
					t.Fatalf("held-out RMSE %.3f, target sd %.3f", scores["rmse"], sd)
				}
			}
		})
	}
}

// TestTorchTrainerCommandProtocol runs the script as a pipeline's external
// trainer would (GYRE_* environment) and loads what it writes.
func TestTorchTrainerCommandProtocol(t *testing.T) {
	t.Parallel()
	py := torchPython(t)
	script, err := filepath.Abs("../examples/torch/train.py")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	train := filepath.Join(dir, "train.csv")
	torchData(t, train, "multiclass", 600, 3)
	out := filepath.Join(dir, "model.json")
	cmd := exec.Command(py, script, "--device", "cpu")
	cmd.Env = append(os.Environ(),
		"GYRE_TRAIN_CSV="+train, "GYRE_LABEL=y", "GYRE_FEATURES=noise,a,b,c", "GYRE_CLASSES=high,low,mid",
		`GYRE_PARAMS={"hidden":[8],"epochs":5}`, "GYRE_SEED=9", "GYRE_MODEL_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("train.py: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ml.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	sig := m.Signature()
	if sig.Inputs[0].Name != "noise" || len(sig.Inputs) != 4 || strings.Join(sig.Classes, ",") != "high,low,mid" || sig.Label != "y" || m.Info().Seed != 9 {
		t.Fatalf("signature %+v, info %+v", sig, m.Info())
	}
	if m.Info().Params["epochs"] != 5 || m.Info().Training.Iterations != 5 {
		t.Fatalf("info %+v", m.Info())
	}
}
