package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/ml"
)

// writeFile writes content to name in dir and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// splitCSV is a labelled table with a known rule: class is "up" exactly when
// x > 0.5, whatever the noise column and the colour say; the colour is a
// categorical column the model must carry through.
func splitCSV(rows int) string {
	var b strings.Builder
	b.WriteString("id,x,noise,colour,class\n")
	colours := []string{"red", "green", "blue"}
	for i := range rows {
		x := float64(i%100) / 100
		class := "down"
		if x > 0.5 {
			class = "up"
		}
		fmt.Fprintf(&b, "r%d,%g,%g,%s,%s\n", i, x, float64((i*37)%11)/11, colours[i%3], class)
	}
	return b.String()
}

// regressionCSV is y = 3x + 1 on a grid.
func regressionCSV(rows int) string {
	var b strings.Builder
	b.WriteString("x,y\n")
	for i := range rows {
		x := float64(i) / float64(rows)
		fmt.Fprintf(&b, "%g,%g\n", x, 3*x+1)
	}
	return b.String()
}

// decodeLine parses the single JSON line a command printed.
func decodeLine(t *testing.T, out string, v any) {
	t.Helper()
	if n := strings.Count(out, "\n"); n != 1 {
		t.Fatalf("want one JSON line, got %d lines:\n%s", n, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
}

func TestTrainPredictEvaluate(t *testing.T) {
	t.Parallel()
	for _, alg := range ml.Algorithms() {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			data := writeFile(t, dir, "train.csv", splitCSV(400))
			model := filepath.Join(dir, "m.model")
			// id is a string column: select the features, mark colour
			// categorical.
			out, _, err := execute(t, "train", "--data", data, "--label", "class", "--algorithm", alg,
				"--features", "x,noise,colour", "--categorical", "colour", "--out", model)
			if err != nil {
				t.Fatalf("train: %v", err)
			}
			var tr trainResult
			decodeLine(t, out, &tr)
			if tr.Algorithm != alg || tr.Rows != 400 || tr.Features != 3 || tr.Out != model {
				t.Errorf("train result = %+v", tr)
			}
			if tr.TrainMS <= 0 {
				t.Errorf("train_ms = %v, want > 0", tr.TrainMS)
			}
			for _, k := range []string{"accuracy", "logloss", "auc", "f1"} {
				if _, ok := tr.Metrics[k]; !ok {
					t.Errorf("training metrics lack %q: %v", k, tr.Metrics)
				}
			}
			if tr.Metrics["accuracy"] < 0.97 {
				t.Errorf("training accuracy %v on a separable rule", tr.Metrics["accuracy"])
			}

			out, _, err = execute(t, "evaluate", "--model", model, "--data", data)
			if err != nil {
				t.Fatalf("evaluate: %v", err)
			}
			var ev evaluateResult
			decodeLine(t, out, &ev)
			if ev.Rows != 400 || ev.Metrics["accuracy"] != tr.Metrics["accuracy"] {
				t.Errorf("evaluate = %+v, want the training metrics %v", ev, tr.Metrics)
			}

			scored := filepath.Join(dir, "scored.csv")
			if _, _, err := execute(t, "predict", "--model", model, "--data", data, "--out", scored); err != nil {
				t.Fatalf("predict: %v", err)
			}
			stdout, _, err := execute(t, "predict", "--model", model, "--data", data)
			if err != nil {
				t.Fatalf("predict to stdout: %v", err)
			}
			fileOut, err := os.ReadFile(scored)
			if err != nil {
				t.Fatal(err)
			}
			if stdout != string(fileOut) {
				t.Errorf("stdout and --out differ")
			}
			recs, err := csv.NewReader(bytes.NewReader(fileOut)).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			wantHeader := "id,x,noise,colour,class,prediction,proba_down,proba_up"
			if got := strings.Join(recs[0], ","); got != wantHeader {
				t.Fatalf("header = %s, want %s", got, wantHeader)
			}
			if len(recs) != 401 {
				t.Fatalf("%d records, want 401", len(recs))
			}
			correct := 0
			for i, r := range recs[1:] {
				if r[0] != "r"+strconv.Itoa(i) {
					t.Fatalf("row %d: id %s, rows must keep their order", i+1, r[0])
				}
				pDown, _ := strconv.ParseFloat(r[6], 64)
				pUp, _ := strconv.ParseFloat(r[7], 64)
				if math.Abs(pDown+pUp-1) > 1e-12 {
					t.Errorf("row %d: probabilities %v + %v != 1", i+1, pDown, pUp)
				}
				if want := map[bool]string{true: "up", false: "down"}[pUp > pDown]; r[5] != want {
					t.Errorf("row %d: prediction %s disagrees with probabilities %v/%v", i+1, r[5], pDown, pUp)
				}
				if r[5] == r[4] {
					correct++
				}
			}
			if acc := float64(correct) / 400; acc != tr.Metrics["accuracy"] {
				t.Errorf("accuracy of predict's output %v != train's %v", acc, tr.Metrics["accuracy"])
			}
		})
	}
}

func TestTrainRegressionAndValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := writeFile(t, dir, "train.csv", regressionCSV(300))
	val := writeFile(t, dir, "val.csv", regressionCSV(77))
	model := filepath.Join(dir, "reg.model.gz")
	out, _, err := execute(t, "train", "--data", data, "--label", "y", "--task", "regression",
		"--validation", val, "--param", "earlyStopping=true", "--param", "trees=50", "--out", model)
	if err != nil {
		t.Fatalf("train: %v", err)
	}
	var tr trainResult
	decodeLine(t, out, &tr)
	if tr.Task != ml.Regression || tr.Validation == nil || tr.Validation.Rows != 77 {
		t.Fatalf("train result = %+v", tr)
	}
	for _, k := range []string{"rmse", "mae"} {
		if _, ok := tr.Metrics[k]; !ok {
			t.Errorf("metrics lack %q: %v", k, tr.Metrics)
		}
		if v, ok := tr.Validation.Metrics[k]; !ok || v > 0.2 {
			t.Errorf("validation %s = %v (present %v), want ≤ 0.2 on y = 3x+1", k, v, ok)
		}
	}
	if tr.Params["trees"] != float64(50) || tr.Params["earlyStopping"] != true {
		t.Errorf("params = %v, want trees 50 and earlyStopping", tr.Params)
	}
	stdout, _, err := execute(t, "predict", "--model", model, "--data", val)
	if err != nil {
		t.Fatalf("predict: %v", err)
	}
	if first := strings.SplitN(stdout, "\n", 2)[0]; first != "x,y,prediction" {
		t.Errorf("regression header = %q, want x,y,prediction", first)
	}
}

// TestTrainListAndStringParams passes an int list and a string choice the
// way a shell gives them.
func TestTrainListAndStringParams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := writeFile(t, dir, "train.csv", splitCSV(200))
	out, _, err := execute(t, "train", "--data", data, "--label", "class", "--features", "x,noise", "-a", "mlp",
		"-p", "hidden=8,4", "-p", "activation=tanh", "-p", "epochs=5", "--out", filepath.Join(dir, "mlp.model"))
	if err != nil {
		t.Fatalf("train: %v", err)
	}
	var tr trainResult
	decodeLine(t, out, &tr)
	if got := fmt.Sprint(tr.Params["hidden"], " ", tr.Params["activation"]); got != "[8 4] tanh" {
		t.Errorf("hidden, activation = %s, want [8 4] tanh", got)
	}
}

func TestTrainDeterministic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := writeFile(t, dir, "train.csv", splitCSV(200))
	var artifacts [2][]byte
	for i := range artifacts {
		model := filepath.Join(dir, fmt.Sprintf("m%d.model", i))
		if _, _, err := execute(t, "train", "--data", data, "--label", "class", "--features", "x,noise", "--seed", "7", "--out", model); err != nil {
			t.Fatalf("train: %v", err)
		}
		var err error
		if artifacts[i], err = os.ReadFile(model); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(artifacts[0], artifacts[1]) {
		t.Error("the same data, params and seed gave different artifacts")
	}
}

func TestTrainErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeFile(t, dir, "good.csv", "a,b,class\n1,2,x\n2,3,y\n3,1,x\n4,0,y\n")
	empty := writeFile(t, dir, "empty.csv", "")
	headerOnly := writeFile(t, dir, "header.csv", "a,class\n")
	constant := writeFile(t, dir, "constant.csv", "a,class\n1,x\n2,x\n3,x\n")
	nanLabel := writeFile(t, dir, "nan.csv", "a,class\n1,x\n2,NaN\n3,y\n")
	badCell := writeFile(t, dir, "bad.csv", "a,class\n1,x\n2,y\nseven,x\n")
	out := filepath.Join(dir, "m.model")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown label", []string{"--data", good, "--label", "klass"}, []string{good, `column "klass"`, "label column not found", "a, b, class"}},
		{"empty file", []string{"--data", empty, "--label", "class"}, []string{empty, "empty input"}},
		{"no data rows", []string{"--data", headerOnly, "--label", "class"}, []string{headerOnly, "no data rows"}},
		{"constant label", []string{"--data", constant, "--label", "class"}, []string{constant, `column "class"`, "label is constant", `"x"`}},
		{"NaN label", []string{"--data", nanLabel, "--label", "class"}, []string{nanLabel, `row 2, column "class"`, "label is missing"}},
		{"bad cell", []string{"--data", badCell, "--label", "class"}, []string{badCell, `row 3, column "a"`, `"seven" is not a number`}},
		{"missing file", []string{"--data", filepath.Join(dir, "nope.csv"), "--label", "class"}, []string{"nope.csv", "no such file"}},
		{"param without =", []string{"--data", good, "--label", "class", "--param", "trees"}, []string{`--param "trees"`, "NAME=VALUE"}},
		{"param without name", []string{"--data", good, "--label", "class", "--param", "=3"}, []string{`--param "=3"`, "NAME=VALUE"}},
		{"unknown param", []string{"--data", good, "--label", "class", "--param", "depth=3"}, []string{`gbdt param "depth"`, "unknown param", "maxDepth"}},
		{"param of the other algorithm", []string{"--data", good, "--label", "class", "-a", "logreg", "--param", "trees=3"}, []string{`logreg param "trees"`, "unknown param"}},
		{"param not a number", []string{"--data", good, "--label", "class", "--param", "trees=many"}, []string{`--param "trees=many"`, `gbdt param "trees" is an int`, `"many" is not a number`}},
		{"int param fractional", []string{"--data", good, "--label", "class", "--param", "trees=2.5"}, []string{`param "trees"`, "integer"}},
		{"param out of range", []string{"--data", good, "--label", "class", "--param", "learningRate=0"}, []string{`param "learningRate"`, "must be in"}},
		{"bool param", []string{"--data", good, "--label", "class", "--param", "earlyStopping=maybe"}, []string{`param "earlyStopping" is a bool`, "true or false"}},
		{"param twice", []string{"--data", good, "--label", "class", "-p", "trees=3", "-p", "trees=4"}, []string{"trees is given twice"}},
		{"bad int list", []string{"--data", good, "--label", "class", "-a", "mlp", "--param", "hidden=16,x"}, []string{`mlp param "hidden"`, `"16,x"`}},
		{"string param not a choice", []string{"--data", good, "--label", "class", "-a", "mlp", "--param", "activation=sigmoid"}, []string{`mlp param "activation"`, "relu, tanh", "sigmoid"}},
		{"unknown algorithm", []string{"--data", good, "--label", "class", "-a", "forest"}, []string{`"forest"`, "unknown algorithm", "gbdt"}},
		{"unknown task", []string{"--data", good, "--label", "class", "--task", "ranking"}, []string{`--task "ranking"`}},
		{"no data flag", []string{"--label", "class"}, []string{"--data is required"}},
		{"no label flag", []string{"--data", good}, []string{"--label is required"}},
		{"unknown feature", []string{"--data", good, "--label", "class", "--features", "a,z"}, []string{`column "z"`, "unknown feature column"}},
		{"out dir missing", []string{"--data", good, "--label", "class", "--out", filepath.Join(dir, "no", "m.model")}, []string{"--out", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"train"}, tt.args...)
			if !hasFlag(args, "--out") {
				args = append(args, "--out", out)
			}
			_, _, err := execute(t, args...)
			if err == nil {
				t.Fatalf("gyre %v succeeded, want an error", args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed train left %s behind (stat: %v)", out, err)
	}
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

func TestPredictEvaluateErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := writeFile(t, dir, "train.csv", "a,b,class\n1,2,x\n2,3,y\n3,1,x\n4,0,y\n5,1,x\n6,2,y\n")
	model := filepath.Join(dir, "m.model")
	if _, _, err := execute(t, "train", "--data", data, "--label", "class", "-a", "logreg", "--out", model); err != nil {
		t.Fatalf("train: %v", err)
	}
	noB := writeFile(t, dir, "nob.csv", "a,class\n1,x\n")
	badCell := writeFile(t, dir, "bad.csv", "a,b,class\n1,2,x\n1,?,y\n1,two,x\n")
	hasPrediction := writeFile(t, dir, "pred.csv", "a,b,prediction\n1,2,x\n")
	nanLabel := writeFile(t, dir, "nan.csv", "a,b,class\n1,2,x\n1,2,\n")
	corrupt := writeFile(t, dir, "corrupt.model", `{"format":"gyre.model/v1"`)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"predict: missing input column", []string{"predict", "-m", model, "--data", noB}, []string{noB, `column "b"`}},
		{"predict: bad cell", []string{"predict", "-m", model, "--data", badCell}, []string{badCell, `row 3, column "b"`, `"two"`}},
		{"predict: prediction column taken", []string{"predict", "-m", model, "--data", hasPrediction}, []string{hasPrediction, `"prediction" already exists`}},
		{"predict: no model", []string{"predict", "-m", filepath.Join(dir, "none.model"), "--data", data}, []string{"--model", "none.model"}},
		{"predict: corrupt model", []string{"predict", "-m", corrupt, "--data", data}, []string{"--model " + corrupt, "artifact"}},
		{"predict: no data flag", []string{"predict", "-m", model}, []string{"--data is required"}},
		{"evaluate: unknown label", []string{"evaluate", "-m", model, "--data", data, "--label", "klass"}, []string{data, `column "klass"`, "label column not found"}},
		{"evaluate: no label column in data", []string{"evaluate", "-m", model, "--data", hasPrediction}, []string{hasPrediction, `column "class"`}},
		{"evaluate: missing label", []string{"evaluate", "-m", model, "--data", nanLabel}, []string{nanLabel, `row 2, column "class"`, "label is missing"}},
		{"evaluate: no model flag", []string{"evaluate", "--data", data}, []string{"--model is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := execute(t, tt.args...)
			if err == nil {
				t.Fatalf("gyre %v succeeded, want an error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestTrainHelpListsParams(t *testing.T) {
	t.Parallel()
	help, _, err := execute(t, "train", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Examples:", "--list-params", "--param", "train_ms", "gyre evaluate"} {
		if !strings.Contains(help, w) {
			t.Errorf("train --help lacks %q", w)
		}
	}
	for _, alg := range ml.Algorithms() {
		known, err := ml.KnownParams(alg)
		if err != nil {
			t.Fatal(err)
		}
		list, _, err := execute(t, "train", "--algorithm", alg, "--list-params")
		if err != nil {
			t.Fatalf("--list-params: %v", err)
		}
		for _, p := range known {
			line := fmt.Sprintf("%s .* default %s .*%s", p.Name, formatDefault(p.Default), p.Doc)
			for name, text := range map[string]string{"--help": help, "--list-params": list} {
				if !containsLine(text, p.Name, "default "+formatDefault(p.Default), p.Doc) {
					t.Errorf("%s of %s lacks a line like %q", name, alg, line)
				}
			}
		}
	}
	for _, args := range [][]string{{"predict", "--help"}, {"evaluate", "--help"}} {
		out, _, err := execute(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"Examples:", "--model", "--data"} {
			if !strings.Contains(out, w) {
				t.Errorf("%v lacks %q", args, w)
			}
		}
	}
	if _, _, err := execute(t, "train", "--algorithm", "forest", "--list-params"); err == nil || !strings.Contains(err.Error(), "unknown algorithm") {
		t.Errorf("--list-params of an unknown algorithm: %v", err)
	}
}

// containsLine reports whether one line of text contains every part, in
// order.
func containsLine(text string, parts ...string) bool {
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := line, true
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok {
			return true
		}
	}
	return false
}

func TestParseParamValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ, raw string
		want     any
		wantErr  string
	}{
		{"int", "64", float64(64), ""},
		{"float", "1e-3", 1e-3, ""},
		{"bool", "true", true, ""},
		{"bool", "no", nil, "not true or false"},
		{"ints", "64,32", "64,32", ""},
		{"string", "relu", "relu", ""},
		{"int", "", nil, "not a number"},
	}
	for _, tt := range tests {
		got, err := parseParamValue(tt.typ, tt.raw)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseParamValue(%q, %q) error = %v, want %q", tt.typ, tt.raw, err, tt.wantErr)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) || fmt.Sprintf("%T", got) != fmt.Sprintf("%T", tt.want) {
			t.Errorf("parseParamValue(%q, %q) = %T %v, %v; want %T %v", tt.typ, tt.raw, got, got, err, tt.want, tt.want)
		}
	}
}

// TestTrainProgressLines: the progress printer writes a line per round
// once its interval has passed (here none), and nothing before it (an
// hour); a round without a loss says none.
func TestTrainProgressLines(t *testing.T) {
	t.Parallel()
	var every, never strings.Builder
	start := time.Now()
	p := progressPrinter(&every, "mlp", start.Add(-time.Second), 0)
	q := progressPrinter(&never, "mlp", start, time.Hour)
	for _, pr := range []ml.Progress{{Unit: "epoch", Done: 1, Total: 200, Loss: 0.5}, {Unit: "tree", Done: 2, Total: 100, Loss: math.NaN()}} {
		p(pr)
		q(pr)
	}
	lines := strings.Split(strings.TrimSpace(every.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "gyre train: mlp epoch 1 of at most 200, loss 0.50000, ") ||
		!strings.HasPrefix(lines[1], "gyre train: mlp tree 2 of at most 100, ") || strings.Contains(lines[1], "loss") {
		t.Errorf("progress lines:\n%s", every.String())
	}
	if never.Len() != 0 {
		t.Errorf("printed before its interval: %q", never.String())
	}
}
