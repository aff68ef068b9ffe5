// Command mlbench measures libs/ml models on one train/test split: fit time,
// test accuracy and ROC AUC, and prediction throughput. It is the Gyre side
// of `make bench-ml`: scripts/bench_ml.py runs it next to scikit-learn and
// XGBoost on the same CSV files and prints the comparison table.
//
// Timing follows the Python side exactly: reading the CSV files is not
// timed; fit time is ml.Train alone (binning, standardisation and solver
// included, as they are in scikit-learn's fit) on the in-memory dataset;
// prediction throughput is measured on the model in memory, on rows already
// laid out as Model.Predict takes them.
//
// Alone, it fits --runs times, scores the last model and prints one JSON
// line with every fit time, the best and the median:
//
//	go run ./libs/cmd/mlbench --train train.csv --test test.csv --label y \
//	    --algorithm gbdt --params '{"trees":100,"maxLeaves":31}' --runs 3
//
// With --serve it loads the data once and then answers JSON requests, one per
// line on stdin, with one JSON line each on stdout, so that the driver can
// alternate fits of Gyre and of its peers and a burst of load on a shared
// machine hits every library alike:
//
//	{"op":"fit","name":"gbdt","algorithm":"gbdt","params":{...}} → {"fit_s":1.9}
//	{"op":"score","name":"gbdt"}                                 → {"accuracy":…,"auc":…,"trees":100,…}
//	{"op":"throughput","name":"gbdt","rows":1000000}             → {"proba_rows_per_s":…,"predict_rows_per_s":…}
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/gyrehq/gyre/libs/ml"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mlbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	var (
		trainPath, testPath, label, algorithm, params, cpuProfile string
		runs, threads, predictRows                                int
		minTime                                                   time.Duration
		seed                                                      int64
		serve                                                     bool
	)
	fs := flag.NewFlagSet("mlbench", flag.ContinueOnError)
	fs.StringVar(&trainPath, "train", "", "training CSV with a header row (required)")
	fs.StringVar(&testPath, "test", "", "test CSV with the same columns (required)")
	fs.StringVar(&label, "label", "y", "label column")
	fs.IntVar(&threads, "threads", runtime.NumCPU(), "GOMAXPROCS: the cores training and prediction may use")
	fs.Int64Var(&seed, "seed", 1, "training seed")
	fs.BoolVar(&serve, "serve", false, "answer JSON requests on stdin (see the package doc) instead of one measurement")
	fs.StringVar(&algorithm, "algorithm", "gbdt", "ml algorithm (without --serve)")
	fs.StringVar(&params, "params", "{}", "params as a JSON object (without --serve)")
	fs.IntVar(&runs, "runs", 3, "fits and throughput measurements (without --serve)")
	fs.IntVar(&predictRows, "predict-rows", 0, "rows per prediction call: the test rows replicated (copied) to this many; 0 = the test rows as they are")
	fs.DurationVar(&minTime, "predict-min-time", 300*time.Millisecond, "repeat prediction calls for at least this long per measurement")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if trainPath == "" || testPath == "" {
		return errors.New("--train and --test are required")
	}
	if runs < 1 || threads < 1 || predictRows < 0 {
		return errors.New("--runs and --threads must be ≥ 1, --predict-rows ≥ 0")
	}
	runtime.GOMAXPROCS(threads)
	s, err := newSession(trainPath, testPath, label, seed)
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if serve {
		return s.serve(ctx, in, out)
	}

	p, err := decodeParams([]byte(params))
	if err != nil {
		return fmt.Errorf("--params: %w", err)
	}
	var fits []float64
	for range runs {
		f, err := s.fit(ctx, "model", algorithm, p)
		if err != nil {
			return err
		}
		fits = append(fits, f)
	}
	sc, err := s.score("model")
	if err != nil {
		return err
	}
	var proba, pred []float64
	batch := 0
	for range runs {
		tp, err := s.throughput("model", predictRows, minTime)
		if err != nil {
			return err
		}
		proba, pred, batch = append(proba, tp.ProbaRowsPerS), append(pred, tp.PredictRowsPerS), tp.Rows
	}
	return writeJSON(out, struct {
		FitS       []float64 `json:"fit_s"`
		FitBestS   float64   `json:"fit_best_s"`
		FitMedianS float64   `json:"fit_median_s"`
		scoreResponse
		throughputResponse
	}{fits, slices.Min(fits), median(fits), sc,
		throughputResponse{Rows: batch, ProbaRowsPerS: slices.Max(proba), PredictRowsPerS: slices.Max(pred)}})
}

// session holds the data and the fitted models by name.
type session struct {
	train, test *ml.Dataset
	testRows    [][]float64 // test features in the models' input order
	seed        int64
	models      map[string]ml.Model
	// replicated caches the last batch built for a throughput request.
	replicated [][]float64
}

func newSession(trainPath, testPath, label string, seed int64) (*session, error) {
	opts := ml.CSVOptions{Label: label}
	train, err := ml.ReadCSVFile(trainPath, opts)
	if err != nil {
		return nil, err
	}
	opts.Features = train.Features
	test, err := ml.ReadCSVFile(testPath, opts)
	if err != nil {
		return nil, err
	}
	// Every model takes the features in the training file's order.
	sig := ml.Signature{Inputs: train.Inputs()}
	rows, err := sig.Matrix(test)
	if err != nil {
		return nil, err
	}
	return &session{train: train, test: test, testRows: rows, seed: seed, models: map[string]ml.Model{}}, nil
}

// request is one line of the --serve protocol.
type request struct {
	Op        string          `json:"op"`
	Name      string          `json:"name"`
	Algorithm string          `json:"algorithm"`
	Params    json.RawMessage `json:"params"`
	// Rows is the batch size of a throughput request (0 = the test rows).
	Rows int `json:"rows"`
	// MinTimeS is how long a throughput request repeats prediction.
	MinTimeS float64 `json:"min_time_s"`
}

type fitResponse struct {
	FitS float64 `json:"fit_s"`
}

type scoreResponse struct {
	Algorithm  string    `json:"algorithm"`
	Params     ml.Params `json:"params"`
	TrainRows  int       `json:"train_rows"`
	TestRows   int       `json:"test_rows"`
	Iterations int       `json:"iterations"`
	Stop       string    `json:"stop"`
	Accuracy   float64   `json:"accuracy"`
	// AUC is null when the test data cannot define it (one class).
	AUC     *float64 `json:"auc"`
	LogLoss float64  `json:"logloss"`
	// Trees, LeavesPerTree and MaxDepth describe a GBDT (read from its
	// artifact).
	Trees         int     `json:"trees,omitempty"`
	LeavesPerTree float64 `json:"leaves_per_tree,omitempty"`
	MaxDepth      int     `json:"max_depth,omitempty"`
}

type throughputResponse struct {
	Rows            int     `json:"predict_rows"`
	ProbaRowsPerS   float64 `json:"proba_rows_per_s"`
	PredictRowsPerS float64 `json:"predict_rows_per_s"`
}

func (s *session) serve(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("request %q: %w", sc.Text(), err)
		}
		var resp any
		var err error
		switch req.Op {
		case "fit":
			var p ml.Params
			if p, err = decodeParams(req.Params); err == nil {
				var f float64
				f, err = s.fit(ctx, req.Name, req.Algorithm, p)
				resp = fitResponse{f}
			}
		case "score":
			resp, err = s.score(req.Name)
		case "throughput":
			minTime := time.Duration(req.MinTimeS * float64(time.Second))
			resp, err = s.throughput(req.Name, req.Rows, minTime)
		default:
			err = fmt.Errorf("unknown op %q (want fit, score or throughput)", req.Op)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", req.Op, req.Name, err)
		}
		if err := writeJSON(out, resp); err != nil {
			return err
		}
	}
	return sc.Err()
}

// fit trains a model under name and returns the seconds ml.Train took.
func (s *session) fit(ctx context.Context, name, algorithm string, p ml.Params) (float64, error) {
	delete(s.models, name)
	runtime.GC() // no garbage of an earlier fit is collected on this one's clock
	start := time.Now()
	m, err := ml.Train(ctx, algorithm, p, s.train, ml.TrainOptions{Seed: s.seed})
	el := time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	s.models[name] = m
	return el, nil
}

func (s *session) model(name string) (ml.Model, error) {
	m, ok := s.models[name]
	if !ok {
		return nil, fmt.Errorf("no model %q has been fitted", name)
	}
	return m, nil
}

// score evaluates a model on the test set.
func (s *session) score(name string) (scoreResponse, error) {
	m, err := s.model(name)
	if err != nil {
		return scoreResponse{}, err
	}
	scores, err := ml.Evaluate(m, s.test)
	if err != nil {
		return scoreResponse{}, err
	}
	info := m.Info()
	r := scoreResponse{Algorithm: info.Algorithm, Params: info.Params, TrainRows: s.train.NumRows(),
		TestRows: s.test.NumRows(), Iterations: info.Training.Iterations, Stop: info.Training.Stop,
		Accuracy: scores["accuracy"], LogLoss: scores["logloss"]}
	if auc, ok := scores["auc"]; ok {
		r.AUC = &auc
	}
	if info.Algorithm == "gbdt" {
		if r.Trees, r.LeavesPerTree, r.MaxDepth, err = treeShape(m); err != nil {
			return scoreResponse{}, err
		}
	}
	return r, nil
}

// throughput measures PredictProba and Predict once each on rows rows.
func (s *session) throughput(name string, rows int, minTime time.Duration) (throughputResponse, error) {
	m, err := s.model(name)
	if err != nil {
		return throughputResponse{}, err
	}
	x := s.testRows
	if rows > 0 {
		if len(s.replicated) != rows {
			s.replicated = nil
			runtime.GC()
			s.replicated = replicate(s.testRows, rows)
		}
		x = s.replicated
	}
	runtime.GC()
	proba := rate(len(x), minTime, func() { m.PredictProba(x) })
	runtime.GC()
	pred := rate(len(x), minTime, func() { m.Predict(x) })
	return throughputResponse{Rows: len(x), ProbaRowsPerS: proba, PredictRowsPerS: pred}, nil
}

func decodeParams(raw []byte) (ml.Params, error) {
	p := ml.Params{}
	if len(raw) == 0 {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	return p, nil
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// replicate copies rows cyclically into n new rows backed by one new array,
// so that a large batch really occupies n rows of memory (as numpy's tile
// does on the Python side) instead of revisiting a few cached rows.
func replicate(x [][]float64, n int) [][]float64 {
	p := len(x[0])
	flat := make([]float64, n*p)
	rows := make([][]float64, n)
	for i := range rows {
		r := flat[i*p : (i+1)*p : (i+1)*p]
		copy(r, x[i%len(x)])
		rows[i] = r
	}
	return rows
}

// rate calls fn (which predicts rows rows) until minTime has passed and
// returns rows per second.
func rate(rows int, minTime time.Duration, fn func()) float64 {
	calls := 0
	start := time.Now()
	for {
		fn()
		calls++
		if el := time.Since(start); el >= minTime {
			return float64(rows*calls) / el.Seconds()
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// treeShape reads the number of trees, their mean leaf count and the
// deepest leaf from the model's artifact (the public gyre.model/v1 JSON: a
// tree is parallel node arrays where a leaf has feature -1).
func treeShape(m ml.Model) (trees int, leavesPerTree float64, maxDepth int, err error) {
	var buf bytes.Buffer
	if err := ml.Save(&buf, m); err != nil {
		return 0, 0, 0, err
	}
	var art struct {
		Model struct {
			Trees []struct {
				Feature []int32 `json:"feature"`
				Left    []int32 `json:"left"`
				Right   []int32 `json:"right"`
			} `json:"trees"`
		} `json:"model"`
	}
	if err := json.Unmarshal(buf.Bytes(), &art); err != nil {
		return 0, 0, 0, fmt.Errorf("reading the tree shape from the artifact: %w", err)
	}
	leaves := 0
	for _, t := range art.Model.Trees {
		depth := make([]int, len(t.Feature))
		for i, f := range t.Feature {
			if f < 0 {
				leaves++
				maxDepth = max(maxDepth, depth[i])
				continue
			}
			// Children come after their parent, so depth[i] is final here.
			if l, r := int(t.Left[i]), int(t.Right[i]); l < len(depth) && r < len(depth) {
				depth[l], depth[r] = depth[i]+1, depth[i]+1
			}
		}
	}
	trees = len(art.Model.Trees)
	if trees > 0 {
		leavesPerTree = float64(leaves) / float64(trees)
	}
	return trees, leavesPerTree, maxDepth, nil
}
