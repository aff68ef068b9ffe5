package ml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
)

func TestTrainInputErrors(t *testing.T) {
	t.Parallel()
	good := mustMatrix(t, [][]float64{{1}, {2}, {3}, {4}}, []float64{0, 1, 0, 1}, Classification)
	constant := mustMatrix(t, [][]float64{{1}, {2}, {3}}, []float64{1, 1, 1}, Classification)
	nanLabel := &Dataset{Features: []string{"x"}, X: [][]float64{{1, 2, 3}}, LabelName: "y", Task: Regression, Label: []float64{1, math.NaN(), 2}}
	unlabelled, _ := FromMatrix([]string{"x"}, [][]float64{{1}, {2}}, nil, "")
	ragged := &Dataset{Features: []string{"x", "z"}, X: [][]float64{{1, 2}, {1}}, Task: Regression, Label: []float64{1, 2}}
	missingCol := mustMatrix(t, [][]float64{{1, 2}}, []float64{0}, Classification)
	missingCol.Features = []string{"a", "b"}
	cases := []struct {
		name   string
		alg    string
		params Params
		data   *Dataset
		opts   TrainOptions
		want   string
	}{
		{"unknown algorithm", "svm", nil, good, TrainOptions{}, `unknown algorithm (known: gbdt, logreg, mlp)`},
		{"unknown param", "gbdt", Params{"depth": 3}, good, TrainOptions{}, `param "depth": unknown param (known: earlyStopping, l2, learningRate, maxBins, maxDepth, maxLeaves, minSamplesLeaf, nIterNoChange, trees, validationFraction)`},
		{"wrong type", "gbdt", Params{"trees": "many"}, good, TrainOptions{}, `param "trees": must be a int`},
		{"not integer", "gbdt", Params{"trees": 2.5}, good, TrainOptions{}, `param "trees": must be an integer, got 2.5`},
		{"out of range", "gbdt", Params{"learningRate": 0}, good, TrainOptions{}, `param "learningRate": must be in (0, 10], got 0`},
		{"bool type", "gbdt", Params{"earlyStopping": 1}, good, TrainOptions{}, `param "earlyStopping": must be a bool`},
		{"maxLeaves 1", "gbdt", Params{"maxLeaves": 1}, good, TrainOptions{}, `param "maxLeaves": must be 0 (unlimited) or at least 2`},
		{"logreg unknown", "logreg", Params{"C": 1}, good, TrainOptions{}, `logreg param "C": unknown param (known: l2, maxIter, tol)`},
		{"nil dataset", "gbdt", nil, nil, TrainOptions{}, "training dataset is empty"},
		{"empty dataset", "gbdt", nil, &Dataset{Features: []string{"x"}, X: [][]float64{{}}, Label: []float64{}}, TrainOptions{}, "training dataset is empty"},
		{"constant label", "gbdt", nil, constant, TrainOptions{}, `label is constant: every one of the 3 rows has class "1"`},
		{"constant label logreg", "logreg", nil, constant, TrainOptions{}, "label is constant"},
		{"NaN label", "gbdt", nil, nanLabel, TrainOptions{}, `row 2, column "y": label is missing (NaN)`},
		{"no label", "gbdt", nil, unlabelled, TrainOptions{}, "training dataset has no label"},
		{"ragged columns", "gbdt", nil, ragged, TrainOptions{}, `column "z": column has 1 rows, want 2`},
		{"constant label mlp", "mlp", nil, constant, TrainOptions{}, "label is constant"},
		{"NaN label mlp", "mlp", nil, nanLabel, TrainOptions{}, `row 2, column "y": label is missing (NaN)`},
		{"mlp unknown", "mlp", Params{"hidden_layer_sizes": 3}, good, TrainOptions{}, `mlp param "hidden_layer_sizes": unknown param (known: activation, batchSize, earlyStopping, epochs, hidden, l2, learningRate, nIterNoChange, tol, validationFraction)`},
		{"mlp hidden", "mlp", Params{"hidden": "64,,32"}, good, TrainOptions{}, `mlp param "hidden": must be a list of integers such as "64,32", got "64,,32"`},
		{"mlp activation", "mlp", Params{"activation": "gelu"}, good, TrainOptions{}, `mlp param "activation": must be one of relu, tanh, got string gelu`},
		{"mlp holdout too small", "mlp", Params{"earlyStopping": true, "validationFraction": 0.1}, good, TrainOptions{}, "leaves no validation or no training rows"},
		{"validation missing column", "gbdt", Params{"earlyStopping": true}, good, TrainOptions{Validation: missingCol}, `validation dataset: ml: column "x0"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Train(context.Background(), c.alg, c.params, c.data, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %v, want one containing %q", err, c.want)
			}
			var perm interface{ Permanent() bool }
			if !errors.As(err, &perm) || !perm.Permanent() {
				t.Fatalf("error %v should be permanent", err)
			}
		})
	}
}

func TestTrainCancelled(t *testing.T) {
	t.Parallel()
	r := newRand(30)
	rows, y := logisticData(r, 1000, []float64{1, 1}, 0)
	d := mustMatrix(t, rows, y, Classification)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, alg := range Algorithms() {
		if _, err := Train(ctx, alg, nil, d, TrainOptions{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: got %v, want context.Canceled", alg, err)
		}
	}
}

// TestTrainProgress: every algorithm reports its rounds in order, within
// their total, with the loss it watches, and reporting changes nothing in
// the model.
func TestTrainProgress(t *testing.T) {
	t.Parallel()
	r := newRand(31)
	rows, y := logisticData(r, 600, []float64{1, -1}, 0)
	d := mustMatrix(t, rows, y, Classification)
	for _, tc := range []struct {
		alg, unit string
		params    Params
		lossKnown bool
	}{
		{"gbdt", "tree", Params{"trees": 12}, false},
		{"gbdt", "tree", Params{"trees": 200, "earlyStopping": true}, true},
		{"mlp", "epoch", Params{"hidden": []int{8}, "epochs": 15}, true},
		{"logreg", "iteration", nil, true},
	} {
		t.Run(fmt.Sprint(tc.alg, tc.params), func(t *testing.T) {
			t.Parallel()
			var seen []Progress
			with := mustTrain(t, tc.alg, tc.params, d, TrainOptions{Seed: 3, Progress: func(p Progress) { seen = append(seen, p) }})
			without := mustTrain(t, tc.alg, tc.params, d, TrainOptions{Seed: 3})
			if !bytes.Equal(artifactBytes(t, with), artifactBytes(t, without)) {
				t.Error("the model trained with a progress callback differs")
			}
			if len(seen) == 0 {
				t.Fatal("no progress reported")
			}
			for i, p := range seen {
				if p.Unit != tc.unit || p.Done < 1 || p.Done > p.Total || (i > 0 && p.Done <= seen[i-1].Done) {
					t.Fatalf("progress %d = %+v after %+v", i, p, seen[max(i-1, 0)])
				}
				if known := !math.IsNaN(p.Loss); known != tc.lossKnown {
					t.Fatalf("progress %d loss %v, want known: %v", i, p.Loss, tc.lossKnown)
				}
			}
			if last, iters := seen[len(seen)-1], with.Info().Training.Iterations; tc.alg != "logreg" && last.Done != iters {
				t.Errorf("last progress %+v, the model reports %d iterations", last, iters)
			}
		})
	}
}

func TestParamsNormalised(t *testing.T) {
	t.Parallel()
	// JSON numbers arrive as float64, YAML integers as int: both work,
	// and the result has every param with its type.
	var fromJSON Params
	if err := json.Unmarshal([]byte(`{"trees": 50, "learningRate": 0.05, "earlyStopping": true}`), &fromJSON); err != nil {
		t.Fatal(err)
	}
	p, err := ValidateParams("gbdt", fromJSON)
	if err != nil {
		t.Fatal(err)
	}
	if p["trees"] != 50 || p["learningRate"] != 0.05 || p["earlyStopping"] != true || p["maxDepth"] != 6 || p["maxBins"] != 255 {
		t.Fatalf("normalised params %v", p)
	}
	if _, err := ValidateParams("gbdt", Params{"trees": int64(7), "l2": float32(0.5), "maxDepth": json.Number("3")}); err != nil {
		t.Fatal(err)
	}
	info, err := KnownParams("logreg")
	if err != nil || len(info) != 3 || info[0].Name != "l2" || info[0].Default != 1.0 {
		t.Fatalf("KnownParams: %v %v", info, err)
	}
}

func TestEvaluateMatchesByName(t *testing.T) {
	t.Parallel()
	r := newRand(31)
	rows, y := logisticData(r, 2000, []float64{2, -1}, 0)
	d := mustMatrix(t, rows, y, Classification)
	m := mustTrain(t, "gbdt", nil, d, TrainOptions{})
	want, err := Evaluate(m, d)
	if err != nil {
		t.Fatal(err)
	}
	// The same data with the columns swapped, an extra column and a batch
	// that holds only class "1".
	swapped := &Dataset{Features: []string{"extra", "x1", "x0"}, X: [][]float64{make([]float64, 2000), d.X[1], d.X[0]},
		LabelName: d.LabelName, Task: d.Task, Classes: d.Classes, Label: d.Label}
	got, err := Evaluate(m, swapped)
	if err != nil {
		t.Fatal(err)
	}
	if got["accuracy"] != want["accuracy"] || got["auc"] != want["auc"] {
		t.Fatalf("swapped columns: %v vs %v", got, want)
	}
	var ones []int
	for i, v := range y {
		if v == 1 {
			ones = append(ones, i)
		}
	}
	onlyOnes, _ := d.Subset(ones)
	onlyOnes, _ = FromMatrix([]string{"x0", "x1"}, onlyOnes.Rows(), onesOf(len(ones)), Classification)
	if len(onlyOnes.Classes) != 1 {
		t.Fatalf("classes %v", onlyOnes.Classes)
	}
	got, err = Evaluate(m, onlyOnes)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["auc"]; ok {
		t.Fatalf("AUC is undefined with one class and must be left out: %v", got)
	}
	if got["accuracy"] < 0.7 {
		t.Fatalf("single-class batch scored %v: classes were not matched by name", got)
	}
	nanLabel := &Dataset{Features: []string{"x0", "x1"}, X: [][]float64{{1, 2}, {3, 4}}, Task: Classification, Classes: []string{"0", "1"}, Label: []float64{0, math.NaN()}}
	if _, err := Evaluate(m, nanLabel); err == nil || !strings.Contains(err.Error(), "row 2") {
		t.Fatalf("NaN label: %v", err)
	}
	if _, err := Evaluate(m, &Dataset{Features: []string{"x0"}, X: [][]float64{{1}}, Task: Classification, Classes: []string{"0"}, Label: []float64{0}}); err == nil || !strings.Contains(err.Error(), `column "x1"`) {
		t.Fatalf("missing column: %v", err)
	}
}

func onesOf(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// TestDocsListEveryParam keeps docs/ml.md in step with the code: every
// parameter of every algorithm has a row with its type and default.
func TestDocsListEveryParam(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/ml.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range Algorithms() {
		if !strings.Contains(string(doc), "### `"+alg+"`") {
			t.Errorf("docs/ml.md has no section for %s", alg)
		}
		params, _ := KnownParams(alg)
		for _, p := range params {
			row := fmt.Sprintf("| `%s` | %s | `%v` |", p.Name, p.Type, p.Default)
			if !strings.Contains(string(doc), row) {
				t.Errorf("docs/ml.md lacks the row %q", row)
			}
		}
	}
}
