// Command servebench measures the deployer's Open Inference Protocol
// /infer route against a bare net/http handler calling the same model, in
// one run on one machine.
//
// It trains a GBDT (100 trees, depth 6, 8 numeric features, binary
// classification), deploys it with the real deployer service on an
// embedded JetStream server twice — pipeline "bench" with adaptive batching
// (spec.deployment.batching defaults: 64 rows, 1 ms) and "bench-nobatch"
// with batching off (maxBatchSize 1) — and serves, in the same process, a
// bare handler that decodes {"rows": [[...], ...]} with encoding/json and
// calls the model's PredictProba. wrk drives each target with single-row and
// 100-row POSTs at several connection counts (closed loop: each connection
// sends its next request when the last is answered) and reports
// requests/s, p50 and p99. Then wrk sends single-row requests at about half
// of each target's peak rate — connections that pause 5 to 15 ms between
// requests, as many as the rate needs — and reports p50 and p99 there.
// Every measurement runs --repeat times (3), the latency runs at half of
// the peak --half-repeat times (5), the targets taking turns, and the
// table gives the medians with their spread: a virtual machine's speed
// wanders, and one run can be off by a fifth. --half-rate sends the
// latency runs of every target at one rate instead, to compare them like
// for like.
//
// The servers run on CPUs of their own (--server-cpus, by default the
// upper half of the machine's), wrk and the JetStream process on the
// others (--load-cpus), as a load generator on another machine would:
// sharing cores with wrk, the servers would spend half as much CPU again
// per request and be measured with the kernel's sharing of the cores.
// --server-cpus none shares them.
//
// Then it compares the protocols for single-row requests to the same
// model (pipeline "bench"): REST with JSON, REST with the binary tensor
// data extension, and the Open Inference Protocol's gRPC service with
// typed and with raw contents, each driven by a Go client in a process of
// its own on the load's CPUs (closed loop, every latency recorded; see
// protocols.go), at --protocol-connections, and reports requests/s, p50,
// p90 and p99 and the server's CPU per request. --only-protocols runs that
// comparison alone (no wrk needed).
//
//	go run ./services/deployer/cmd/servebench                 # the table
//	go run ./services/deployer/cmd/servebench --only-protocols       # gRPC against REST only
//	go run ./services/deployer/cmd/servebench --cpuprofile cpu.out   # profile the Gyre single-row runs
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
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/embednats"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/deployer/internal/barehttp"
)

type config struct {
	duration    time.Duration
	halfFor     time.Duration
	conns       []int
	rows        []int
	sampleRate  float64
	wrk         string
	cpuProfile  string
	halfProfile string
	halfTrace   string
	profiled    string
	trainRows   int
	repeat      int
	threads     int
	keepScripts bool
	queueDelay  float64
	halfRate    float64
	halfRepeat  int
	// cpus keeps the servers apart from wrk and the JetStream process.
	cpus placement
	// protocols are compared for single-row requests (protocols.go), at
	// protocolConns connections, protocolFor per run; onlyProtocols skips
	// the wrk runs.
	protocols     []string
	protocolConns []int
	protocolFor   time.Duration
	onlyProtocols bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == protocolClientArg {
		if err := protocolClient(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "servebench protocol client:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == natsChildArg {
		if err := natsChild(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "servebench nats:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "servebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("servebench", flag.ContinueOnError)
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each wrk run")
	fs.DurationVar(&cfg.halfFor, "half-for", 5*time.Second, "length of each run at half of the peak rate")
	conns := fs.String("connections", "1,8,64", "wrk connection counts, comma-separated")
	rows := fs.String("rows", "1,100", "rows per request, comma-separated")
	fs.Float64Var(&cfg.sampleRate, "sample-rate", 1, "spec.deployment.sampleRate of the bench pipelines: the share of requests logged as prediction.logged")
	fs.StringVar(&cfg.wrk, "wrk", "wrk", "the wrk binary")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the first single-row run of --profile-target to this file")
	fs.StringVar(&cfg.halfProfile, "half-cpuprofile", "", "write a CPU profile of the first run at half of the peak rate of --profile-target to this file")
	fs.StringVar(&cfg.halfTrace, "half-trace", "", "write a 1 s execution trace from the middle of the first run at half of the peak rate of --profile-target to this file (go tool trace -pprof=sched FILE: where goroutines waited for a processor)")
	fs.StringVar(&cfg.profiled, "profile-target", "gyre", "the target the CPU profiles are of: bare, gyre or gyre-nobatch")
	fs.IntVar(&cfg.trainRows, "train-rows", 20000, "rows the GBDT is trained on")
	fs.IntVar(&cfg.repeat, "repeat", 3, "runs of every measurement, the targets taking turns; the table gives their medians")
	fs.IntVar(&cfg.threads, "threads", 0, "wrk threads (at most the connections); 0: one per --load-cpus CPU, or 2 when nothing is pinned")
	serverCPUs := fs.String("server-cpus", "auto", "CPUs the servers (the deployer and the bare handler) run on, as taskset -c takes them (0-3,6); auto: the upper half of this process's CPUs; none: no pinning, wrk and the JetStream process share the servers' CPUs")
	loadCPUs := fs.String("load-cpus", "auto", "CPUs wrk and the JetStream process run on; auto: those --server-cpus leaves")
	fs.BoolVar(&cfg.keepScripts, "keep-scripts", false, "keep the generated wrk Lua scripts")
	fs.IntVar(&cfg.halfRepeat, "half-repeat", 5, "runs of each latency measurement at half of the peak rate (the noisiest figure); the table gives their median")
	fs.Float64Var(&cfg.halfRate, "half-rate", 0, "send the latency runs at this rate (requests/s) for every target, instead of half of each one's peak")
	fs.Float64Var(&cfg.queueDelay, "queue-delay-ms", pipeline.DefaultMaxQueueDelayMs, "spec.deployment.batching.maxQueueDelayMs of the batched pipeline")
	protocols := fs.String("protocols", strings.Join(protocolNames, ","), "protocols compared for single-row requests after the wrk runs, comma-separated ("+strings.Join(protocolNames, ", ")+"); none: no comparison")
	protocolConns := fs.String("protocol-connections", "1,8", "connection counts of the protocol comparison, comma-separated")
	fs.DurationVar(&cfg.protocolFor, "protocol-for", 5*time.Second, "length of each run of the protocol comparison (after a 1 s warm-up)")
	fs.BoolVar(&cfg.onlyProtocols, "only-protocols", false, "run the protocol comparison alone, not the wrk runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *protocols != "" && *protocols != "none" {
		for p := range strings.SplitSeq(*protocols, ",") {
			if p = strings.TrimSpace(p); !slices.Contains(protocolNames, p) {
				return fmt.Errorf("--protocols: %q is not one of %s", p, strings.Join(protocolNames, ", "))
			}
			cfg.protocols = append(cfg.protocols, strings.TrimSpace(p))
		}
	}
	if cfg.onlyProtocols && len(cfg.protocols) == 0 {
		return errors.New("--only-protocols with --protocols none: nothing to run")
	}
	var err error
	if cfg.repeat < 1 {
		return fmt.Errorf("--repeat %d: want at least 1", cfg.repeat)
	}
	if cfg.halfRepeat < 1 {
		return fmt.Errorf("--half-repeat %d: want at least 1", cfg.halfRepeat)
	}
	if !slices.Contains([]string{"bare", "gyre", "gyre-nobatch"}, cfg.profiled) {
		return fmt.Errorf("--profile-target %q: want bare, gyre or gyre-nobatch", cfg.profiled)
	}
	if cfg.cpus, err = resolvePlacement(*serverCPUs, *loadCPUs); err != nil {
		return err
	}
	if cfg.cpus.pinned() {
		// Returns only when this process runs on the servers' CPUs already.
		if err := pinSelf(cfg.cpus, args); err != nil {
			return err
		}
	}
	if cfg.threads == 0 {
		cfg.threads = 2
		if cfg.cpus.pinned() {
			cfg.threads = len(cfg.cpus.load)
		}
	}
	if cfg.conns, err = ints(*conns); err != nil {
		return fmt.Errorf("--connections: %w", err)
	}
	if cfg.protocolConns, err = ints(*protocolConns); err != nil {
		return fmt.Errorf("--protocol-connections: %w", err)
	}
	if cfg.rows, err = ints(*rows); err != nil {
		return fmt.Errorf("--rows: %w", err)
	}
	if _, err := exec.LookPath(cfg.wrk); err != nil && !cfg.onlyProtocols {
		return fmt.Errorf("wrk not found (apt-get install wrk, or scripts/bench-serving.sh installs it): %w", err)
	}
	dir, err := os.MkdirTemp("", "servebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(out, "training a GBDT (100 trees, depth 6) on %d rows...\n", cfg.trainRows)
	b, err := trainModel(ctx, cfg.trainRows)
	if err != nil {
		return err
	}
	env, err := startDeployer(ctx, dir, b, cfg)
	if err != nil {
		return err
	}
	defer env.close()
	bare, err := serve(bareHandler(b.Model))
	if err != nil {
		return err
	}
	defer bare.close()

	targets := []target{
		{name: "bare", url: bare.url + "/predict", body: bareBody},
		{name: "gyre", url: env.url + "/v2/models/bench/infer", body: oipBody, model: "bench"},
		{name: "gyre-nobatch", url: env.url + "/v2/models/bench-nobatch/infer", body: oipBody, model: "bench-nobatch"},
	}
	// Every target answers before the clock starts.
	for _, t := range targets {
		if err := check(t, 3); err != nil {
			return err
		}
	}
	if err := checkProtocols(env, cfg.protocols); err != nil {
		return err
	}
	if cfg.onlyProtocols {
		placementNote(out, cfg)
		return compareProtocols(ctx, cfg, env, out)
	}
	fmt.Fprintf(out, "wrk: %s per run, %d threads; prediction.logged sample rate %g\n", cfg.duration, cfg.threads, cfg.sampleRate)
	placementNote(out, cfg)

	var prof *os.File
	// Every cell is measured cfg.repeat times, the targets taking turns, and
	// its median reported: on a shared machine one run can be off by 20%.
	runs := map[string][]result{}
	key := func(name string, rows, conns int) string { return fmt.Sprint(name, "/", rows, "/", conns) }
	for _, rows := range cfg.rows {
		for _, c := range cfg.conns {
			for rep := range cfg.repeat {
				for _, t := range targets {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					profiled := cfg.cpuProfile != "" && t.name == cfg.profiled && rows == 1
					if profiled && prof == nil {
						if prof, err = os.Create(cfg.cpuProfile); err != nil {
							return err
						}
						defer prof.Close()
					}
					if profiled {
						if err := pprof.StartCPUProfile(prof); err != nil {
							return err
						}
					}
					r, err := measure(ctx, env, t, func() (result, error) { return runWrk(ctx, cfg, dir, t, rows, c) })
					if profiled {
						pprof.StopCPUProfile()
						// One profile: the first single-row run only.
						cfg.cpuProfile = ""
					}
					if err != nil {
						return fmt.Errorf("%s, %d rows, %d connections: %w", t.name, rows, c, err)
					}
					k := key(t.name, rows, c)
					runs[k] = append(runs[k], r)
					fmt.Fprintf(out, "  %-13s rows %-4d conns %-3d run %d  %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  server CPU %6.1f µs/req  non-2xx %d%s%s\n",
						t.name, rows, c, rep+1, r.rps, r.p50, r.p99, r.cpuUs, r.errors, r.batchNote(), r.dropNote())
				}
			}
		}
	}
	results := map[string]result{}
	for k, rs := range runs {
		results[k] = median(rs)
	}

	// Half of the median peak single-row rate of each target, the targets
	// taking turns.
	halfRuns := map[string][]result{}
	peaks := map[string]float64{}
	for _, t := range targets {
		for _, c := range cfg.conns {
			peaks[t.name] = max(peaks[t.name], results[key(t.name, 1, c)].rps)
		}
		if cfg.halfRate > 0 {
			peaks[t.name] = 2 * cfg.halfRate
		}
	}
	for rep := range cfg.halfRepeat {
		for _, t := range targets {
			if peaks[t.name] == 0 {
				continue
			}
			var stop func()
			if t.name == cfg.profiled {
				if stop, err = profileHalf(cfg.halfProfile, cfg.halfTrace, cfg.halfFor); err != nil {
					return err
				}
				// One profile and trace: the first run's.
				cfg.halfProfile, cfg.halfTrace = "", ""
			}
			r, err := measure(ctx, env, t, func() (result, error) { return halfPeak(ctx, cfg, dir, t, peaks[t.name]/2) })
			if stop != nil {
				stop()
			}
			if err != nil {
				return fmt.Errorf("%s at half of the peak: %w", t.name, err)
			}
			halfRuns[t.name] = append(halfRuns[t.name], r)
			fmt.Fprintf(out, "  %-13s rows 1    run %d  rate %7.0f/s (half of peak %.0f, %d connections)  p50 %6.2f ms  p99 %6.2f ms  server CPU %6.1f µs/req  non-2xx %d%s%s\n",
				t.name, rep+1, r.rps, peaks[t.name], r.conns, r.p50, r.p99, r.cpuUs, r.errors, r.batchNote(), r.dropNote())
		}
	}
	half := map[string]result{}
	for name, rs := range halfRuns {
		half[name] = median(rs)
	}

	fmt.Fprintln(out)
	fmt.Fprintf(out, "medians of %d runs each:\n", cfg.repeat)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rows\tconns\tbare req/s\tp50 ms\tp99 ms\tgyre req/s\tp50 ms\tp99 ms\tgyre/bare\tno-batch req/s\tp50 ms\tp99 ms\tbatching gain\tspread\t")
	for _, rows := range cfg.rows {
		for _, c := range cfg.conns {
			b, g, n := results[key("bare", rows, c)], results[key("gyre", rows, c)], results[key("gyre-nobatch", rows, c)]
			fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f%%\t%.0f\t%.2f\t%.2f\t%+.1f%%\t%.0f%%\t\n",
				rows, c, b.rps, b.p50, b.p99, g.rps, g.p50, g.p99, pct(g.rps, b.rps), n.rps, n.p50, n.p99, pct(g.rps, n.rps)-100,
				max(spread(runs[key("gyre", rows, c)]), spread(runs[key("gyre-nobatch", rows, c)])))
		}
	}
	tw.Flush()
	fmt.Fprintln(out, "(spread: the larger of gyre's and no-batch's (max - min) / median throughput over the runs)")
	fmt.Fprintln(out)
	if cfg.halfRate > 0 {
		fmt.Fprintf(out, "at %.0f single-row requests/s for every target (--half-rate; wrk, connections sending one request per 5-15 ms each), medians of %d runs:\n", cfg.halfRate, cfg.halfRepeat)
	} else {
		fmt.Fprintf(out, "at half of each target's peak single-row rate (wrk, connections sending one request per 5-15 ms each), medians of %d runs:\n", cfg.halfRepeat)
	}
	for _, name := range []string{"bare", "gyre", "gyre-nobatch"} {
		if r, ok := half[name]; ok {
			fmt.Fprintf(out, "  %-13s %7.0f req/s  p50 %.2f ms  p99 %.2f ms  (p99 of each run: %s)\n", name, r.rps, r.p50, r.p99, p99s(halfRuns[name]))
		}
	}
	fmt.Fprintln(out)
	// The verdicts the issue asks for.
	bestC := slices.Max(cfg.conns)
	for _, c := range cfg.conns {
		b, g := results[key("bare", 1, c)], results[key("gyre", 1, c)]
		fmt.Fprintf(out, "single-row /infer at %d connections: %.0f%% of the bare handler's throughput (target >= 60%%)\n", c, pct(g.rps, b.rps))
	}
	if r, ok := half["gyre"]; ok && cfg.halfRate == 0 {
		fmt.Fprintf(out, "single-row /infer p99 at half of its peak rate (%.0f req/s): %.2f ms (target < 5 ms)\n", r.rps, r.p99)
	}
	for _, rows := range cfg.rows {
		g, n := results[key("gyre", rows, bestC)], results[key("gyre-nobatch", rows, bestC)]
		note := ""
		if rows >= pipeline.DefaultMaxBatchSize {
			note = fmt.Sprintf(" (requests of %d rows or more are a batch already and skip the queue: this difference is run-to-run noise)", pipeline.DefaultMaxBatchSize)
		}
		fmt.Fprintf(out, "adaptive batching at %d connections, %d-row requests: %.0f vs %.0f req/s unbatched: %+.1f%% throughput, p99 %.2f vs %.2f ms, server CPU %.1f vs %.1f µs/req, %.1f rows per model call%s\n",
			bestC, rows, g.rps, n.rps, pct(g.rps, n.rps)-100, g.p99, n.p99, g.cpuUs, n.cpuUs, g.rowsPerCall, note)
	}
	if m, err := env.metrics(); err == nil {
		fmt.Fprintf(out, "prediction.logged, requests: %.0f published, %.0f dropped (queue full), %.0f failed\n",
			m[`gyre_deployer_prediction_logs_total{outcome="published"}`], m[metricDropped], m[`gyre_deployer_prediction_logs_total{outcome="failed"}`])
	}
	if len(cfg.protocols) > 0 {
		return compareProtocols(ctx, cfg, env, out)
	}
	return nil
}

// placementNote says where the servers and the load run.
func placementNote(out io.Writer, cfg config) {
	if cfg.cpus.pinned() {
		fmt.Fprintf(out, "servers on CPUs %s (GOMAXPROCS %d); the load (wrk, the protocol clients) and the JetStream process on CPUs %s\n\n", cfg.cpus.server, runtime.GOMAXPROCS(0), cfg.cpus.load)
	} else {
		fmt.Fprintf(out, "servers, the load and the JetStream process share %d CPUs (GOMAXPROCS %d)\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0))
	}
}

// measure runs one measurement of t and waits for the prediction log to
// settle after it, counting the predictions it dropped and, for a Gyre
// target, the rows its model calls scored on average.
func measure(ctx context.Context, env *deployerEnv, t target, run func() (result, error)) (result, error) {
	before, err := env.metrics()
	if err != nil {
		return result{}, err
	}
	var calls0, rows0 float64
	if t.model != "" {
		if calls0, rows0, err = env.batchStats(t.model); err != nil {
			return result{}, err
		}
	}
	r, err := run()
	if err != nil {
		return r, err
	}
	if t.model != "" {
		calls, rows, err := env.batchStats(t.model)
		if err != nil {
			return r, err
		}
		if calls > calls0 {
			r.rowsPerCall = (rows - rows0) / (calls - calls0)
		}
	}
	if err := env.settle(ctx); err != nil {
		return r, err
	}
	after, err := env.metrics()
	if err != nil {
		return r, err
	}
	r.dropped = int64(after[metricDropped] - before[metricDropped])
	return r, nil
}

// median returns the run of median throughput, with the median p50 and
// p99 of the runs (each taken on its own).
func median(rs []result) result {
	mid := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := rs[0]
	out.rps = mid(func(r result) float64 { return r.rps })
	out.p50 = mid(func(r result) float64 { return r.p50 })
	out.p99 = mid(func(r result) float64 { return r.p99 })
	out.cpuUs = mid(func(r result) float64 { return r.cpuUs })
	out.rowsPerCall = mid(func(r result) float64 { return r.rowsPerCall })
	out.errors, out.dropped = 0, 0
	for _, r := range rs {
		out.errors += r.errors
		out.dropped += r.dropped
	}
	return out
}

// spread is (max - min) / median of the runs' throughput, in percent.
func spread(rs []result) float64 {
	if len(rs) == 0 {
		return math.NaN()
	}
	lo, hi := rs[0].rps, rs[0].rps
	for _, r := range rs {
		lo, hi = min(lo, r.rps), max(hi, r.rps)
	}
	return pct(hi-lo, median(rs).rps)
}

func p99s(rs []result) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%.2f", r.p99))
	}
	return strings.Join(parts, ", ")
}

func pct(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return 100 * a / b
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// Model

const features8 = 8

// trainModel fits the bench bundle: 8 numeric features, class 1 when a
// noisy nonlinear score is positive.
func trainModel(ctx context.Context, n int) (*bundle.Bundle, error) {
	p, err := pipeline.Parse([]byte(benchSpec("bench", 1, 64, 1)))
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(1, 2))
	var csv bytes.Buffer
	for k := range features8 {
		fmt.Fprintf(&csv, "f%d,", k)
	}
	csv.WriteString("y\n")
	for range n {
		x := make([]float64, features8)
		for k := range x {
			x[k] = r.NormFloat64()
			fmt.Fprintf(&csv, "%.5f,", x[k])
		}
		score := x[0]*x[1] + math.Sin(x[2]) + 0.5*x[3] - x[4]*x[4]/2 + 0.3*x[5] + r.NormFloat64()*0.3
		fmt.Fprintf(&csv, "%d\n", map[bool]int{true: 1, false: 0}[score > 0])
	}
	tab, err := table.Read(table.FormatCSV, csv.Bytes())
	if err != nil {
		return nil, err
	}
	set, err := features.Fit(p, tab)
	if err != nil {
		return nil, err
	}
	ds, err := set.Dataset(tab, true)
	if err != nil {
		return nil, err
	}
	m, err := ml.Train(ctx, p.Spec.Model.Algorithm, p.Spec.Model.Params, ds, ml.TrainOptions{Seed: 1})
	if err != nil {
		return nil, err
	}
	return &bundle.Bundle{Pipeline: "bench", RequestID: "bench-1", Features: set, Model: m}, nil
}

func benchSpec(name string, sampleRate float64, maxBatch int, queueDelayMs float64) string {
	var schema strings.Builder
	for k := range features8 {
		fmt.Fprintf(&schema, "      - {name: f%d, type: float}\n", k)
	}
	return fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: y
    schema:
%s      - {name: y, type: category}
  model: {algorithm: gbdt, params: {trees: 100, maxDepth: 6, maxLeaves: 64}}
  deployment: {strategy: immediate, sampleRate: %g, batching: {maxBatchSize: %d, maxQueueDelayMs: %g}}
`, name, schema.String(), sampleRate, maxBatch, queueDelayMs)
}

// Gyre

// deployerEnv is an embedded JetStream server with Gyre's topology and the
// deployer serving the bench pipelines over HTTP.
type deployerEnv struct {
	url string
	// grpcAddr is where the deployer serves gRPC.
	grpcAddr string
	close    func()
	// metrics returns the deployer's prediction log series, by name and
	// labels as exposed ("gyre_deployer_prediction_logs_total{outcome=\"dropped\"}").
	metrics func() (map[string]float64, error)
	// batchStats returns the model calls a model has made and the rows
	// they scored, from its OIP metadata.
	batchStats func(model string) (calls, rows float64, err error)
}

const (
	metricQueued  = "gyre_deployer_prediction_log_queued"
	metricDropped = `gyre_deployer_prediction_logs_total{outcome="dropped"}`
)

// settle waits until the deployer's prediction log has published what it
// was given (its queue empty, its counters still), so that one run's
// backlog does not weigh on the next; at most a minute.
func (e *deployerEnv) settle(ctx context.Context) error {
	var last map[string]float64
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		m, err := e.metrics()
		if err != nil {
			return err
		}
		if m[metricQueued] == 0 && last != nil && maps.Equal(m, last) {
			return nil
		}
		last = m
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("the prediction log did not settle in a minute")
}

// natsChildArg runs servebench as the JetStream server the deployer
// publishes to: a process of its own, as in production, so that the
// server's heap and goroutines do not share the deployer's runtime.
const natsChildArg = "-nats-child"

// natsChild runs a JetStream server storing in dir, prints its client URL
// and serves until its standard input closes.
func natsChild(dir string) error {
	ns, err := embednats.Run(embednats.Options{StoreDir: dir})
	if err != nil {
		return err
	}
	fmt.Println(ns.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ns.Shutdown()
	ns.WaitForShutdown()
	return nil
}

// startNATS starts natsChild in a process of its own, on the load's CPUs,
// and returns its URL.
func startNATS(ctx context.Context, dir string, cpus placement) (string, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	name, args := loadCommand(cpus, exe, natsChildArg, dir)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = stdin.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("nats server process: %w", err)
	}
	return strings.TrimSpace(line), stop, nil
}

func startDeployer(ctx context.Context, dir string, b *bundle.Bundle, bc config) (*deployerEnv, error) {
	natsURL, stopNATS, err := startNATS(ctx, filepath.Join(dir, "nats"), bc.cpus)
	if err != nil {
		return nil, err
	}
	var closers []func()
	env := &deployerEnv{close: func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}}
	closers = append(closers, stopNATS)
	fail := func(err error) (*deployerEnv, error) { env.close(); return nil, err }

	// The registry signs what the deployer serves: a key pair of the
	// bench's own plays the registry's.
	keysDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		return fail(err)
	}
	if _, err := signing.Generate(keysDir); err != nil {
		return fail(err)
	}
	signKey, err := signing.LoadPrivateKey(filepath.Join(keysDir, signing.PrivateKeyFile))
	if err != nil {
		return fail(err)
	}
	cfg := deployer.DefaultConfig()
	cfg.NATSURL = natsURL
	cfg.LogLevel = "warn"
	cfg.VerifyKeys = filepath.Join(keysDir, signing.PublicKeyFile)
	// The bench measures serving, not authentication.
	cfg.HTTPAuth = service.HTTPAuthNone
	cfg.GRPCAddr = "127.0.0.1:0"
	proc, err := service.Connect(ctx, cfg.Config, "servebench", service.WithLogOutput(io.Discard), service.WithTraceOutput(io.Discard))
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = proc.Close(cctx)
	})
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := bus.Provision(pctx, proc.JS, bus.FullTopology()); err != nil {
		return fail(fmt.Errorf("provision: %w", err))
	}
	buckets, err := store.Open(pctx, proc.JS)
	if err != nil {
		return fail(err)
	}
	svc, err := deployer.New(cfg, proc.Deps)
	if err != nil {
		return fail(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	closers = append(closers, func() { stop(); <-done })
	for !svc.Readiness().Ready {
		select {
		case err := <-done:
			return fail(fmt.Errorf("deployer stopped: %v", err))
		case <-pctx.Done():
			return fail(errors.New("deployer not ready after a minute"))
		case <-time.After(20 * time.Millisecond):
		}
	}
	env.grpcAddr = svc.GRPCAddr()
	data, err := bundle.Marshal(b)
	if err != nil {
		return fail(err)
	}
	for _, pl := range []struct {
		name     string
		maxBatch int
	}{{"bench", pipeline.DefaultMaxBatchSize}, {"bench-nobatch", 1}} {
		p, err := pipeline.Parse([]byte(benchSpec(pl.name, bc.sampleRate, pl.maxBatch, bc.queueDelay)))
		if err != nil {
			return fail(err)
		}
		if _, err := buckets.Pipelines.Put(pctx, p.Name(), p.Canonical()); err != nil {
			return fail(err)
		}
		ref, _, err := store.PutObject(pctx, buckets.Models, bundle.Key(pl.name, "bench-1"), bundle.MediaType, data)
		if err != nil {
			return fail(err)
		}
		// Version 1 champion in the registry's record, signed, as the
		// registry leaves it: the deployer follows the record.
		if _, err := store.UpdateJSON(pctx, buckets.Registry, pl.name, func(rec *models.Registry, _ bool) error {
			rec.Pipeline = pl.name
			v := models.Version{Version: 1, RequestID: "bench-1", Verdict: models.VerdictBlessed,
				Artifact: models.ObjectFromProto(ref), Metrics: map[string]float64{"accuracy": 0.9}}
			sig, err := signing.NewSigner(signKey).Sign(v.Subject(pl.name))
			if err != nil {
				return err
			}
			v.Signature = sig
			rec.Versions = []models.Version{v}
			rec.PromoteTo(1, models.ReasonManual, time.Now().UTC())
			return nil
		}); err != nil {
			return fail(err)
		}
	}
	srv, err := serve(svc.Handler())
	if err != nil {
		return fail(err)
	}
	closers = append(closers, srv.close)
	env.url = srv.url
	for _, name := range []string{"bench", "bench-nobatch"} {
		for {
			resp, err := http.Get(srv.url + "/v2/models/" + name + "/ready")
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-pctx.Done():
				return fail(fmt.Errorf("model %s not deployed after a minute", name))
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	env.batchStats = func(model string) (float64, float64, error) {
		resp, err := http.Get(srv.url + "/v2/models/" + model)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		var md struct {
			Parameters struct {
				Batching struct {
					Calls float64 `json:"model_calls"`
					Rows  float64 `json:"rows_scored"`
				} `json:"batching"`
			} `json:"parameters"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
			return 0, 0, fmt.Errorf("metadata of model %s: %w", model, err)
		}
		return md.Parameters.Batching.Calls, md.Parameters.Batching.Rows, nil
	}
	env.metrics = func() (map[string]float64, error) {
		resp, err := http.Get(srv.url + "/metrics")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		out := map[string]float64{}
		for _, l := range strings.Split(string(raw), "\n") {
			if !strings.HasPrefix(l, "gyre_deployer_prediction_log") {
				continue
			}
			name, value, ok := strings.Cut(l, " ")
			if !ok {
				continue
			}
			if v, err := strconv.ParseFloat(value, 64); err == nil {
				out[name] = v
			}
		}
		return out, nil
	}
	return env, nil
}

// Bare

// bareHandler serves the bare peer at POST /predict.
func bareHandler(m ml.Model) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /predict", barehttp.Handler(m))
	return mux
}

type server struct {
	url   string
	close func()
}

func serve(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &server{url: "http://" + ln.Addr().String(), close: func() { _ = srv.Close() }}, nil
}

// Load

type target struct {
	name string
	url  string
	body func(rows int, seed uint64) []byte
	// model is the deployer's model the target calls; empty for the bare
	// handler.
	model string
}

// rowsOf returns n rows of 8 values.
func rowsOf(n int, seed uint64) [][]float64 {
	r := rand.New(rand.NewPCG(seed, 3))
	out := make([][]float64, n)
	for i := range out {
		out[i] = make([]float64, features8)
		for k := range out[i] {
			out[i][k] = math.Round(r.NormFloat64()*1e4) / 1e4
		}
	}
	return out
}

func bareBody(n int, seed uint64) []byte {
	b, _ := json.Marshal(map[string]any{"rows": rowsOf(n, seed)})
	return b
}

// oipBody is an OIP request of one [n, 8] FP64 tensor, as KServe's and
// Triton's clients send tabular rows.
func oipBody(n int, seed uint64) []byte {
	var flat []float64
	for _, r := range rowsOf(n, seed) {
		flat = append(flat, r...)
	}
	b, _ := json.Marshal(map[string]any{
		"id":     "bench",
		"inputs": []any{map[string]any{"name": "input", "shape": []int{n, features8}, "datatype": "FP64", "data": flat}},
	})
	return b
}

// check sends a few requests and wants 200s.
func check(t target, n int) error {
	for i := range n {
		resp, err := http.Post(t.url, "application/json", bytes.NewReader(t.body(1+i, uint64(i))))
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %d %s", t.name, resp.StatusCode, raw)
		}
	}
	return nil
}

type result struct {
	rps, p50, p99 float64
	errors        int64
	conns         int
	// dropped counts the requests whose predictions the deployer's
	// prediction log dropped during the run (queue full).
	dropped int64
	// cpuUs is the CPU time this process (the deployer and the bare
	// handler; wrk and the NATS server run apart)
	// spent per request, in microseconds: on a shared machine a steadier
	// measure of cost than throughput.
	cpuUs float64
	// rowsPerCall is the rows a model call scored on average (Gyre
	// targets; 0 for the bare handler).
	rowsPerCall float64
}

func (r result) batchNote() string {
	if r.rowsPerCall == 0 {
		return ""
	}
	return fmt.Sprintf("  rows/call %.1f", r.rowsPerCall)
}

func (r result) dropNote() string {
	if r.dropped == 0 {
		return ""
	}
	return fmt.Sprintf("  (prediction log dropped %d)", r.dropped)
}

// cpuTime returns the user and system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// wrkScript is a Lua script that posts one body and prints, when done,
// the figures the bench reads (latencies in microseconds).
const wrkScript = `wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
%s
done = function(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("SERVEBENCH %%d %%d %%d %%d %%d\n", summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), errs))
end
`

// profileHalf starts what is asked for a run at half of the peak rate of
// length d: a CPU profile of the whole run into profile, and an execution
// trace of one second from its middle into tracePath. stop ends both.
func profileHalf(profile, tracePath string, d time.Duration) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if tracePath != "" {
		f, err := os.Create(tracePath)
		if err != nil {
			stop()
			return nil, err
		}
		done := make(chan struct{})
		cancel := make(chan struct{})
		go func() {
			defer close(done)
			defer f.Close()
			select {
			case <-time.After(max(d/2-500*time.Millisecond, 0)):
			case <-cancel:
				return
			}
			if trace.Start(f) != nil {
				return
			}
			select {
			case <-time.After(time.Second):
			case <-cancel:
			}
			trace.Stop()
		}()
		stops = append(stops, func() { close(cancel); <-done })
	}
	return stop, nil
}

// thinkTime makes each connection wait 5 to 15 ms (10 on average) before
// its next request: with C connections the rate is about C / (10 ms + the
// latency), whatever the server's capacity, as long as it keeps up.
const thinkTime = "math.randomseed(os.time())\ndelay = function() return math.random(5, 15) end"

// halfPeak runs wrk at about rate requests per second: connections that
// each pause between requests (thinkTime), their number set from the rate,
// then corrected once from the rate measured.
func halfPeak(ctx context.Context, cfg config, dir string, t target, rate float64) (result, error) {
	c := cfg
	c.duration = cfg.halfFor
	conns := max(1, int(math.Round(rate*0.0105)))
	var r result
	for range 2 {
		var err error
		if r, err = runWrkScript(ctx, c, dir, t, 1, conns, thinkTime); err != nil {
			return r, err
		}
		r.conns = conns
		if r.rps <= 0 || math.Abs(r.rps-rate)/rate < 0.05 {
			break
		}
		conns = max(1, int(math.Round(float64(conns)*rate/r.rps)))
	}
	return r, nil
}

func runWrk(ctx context.Context, cfg config, dir string, t target, rows, conns int) (result, error) {
	return runWrkScript(ctx, cfg, dir, t, rows, conns, "")
}

func runWrkScript(ctx context.Context, cfg config, dir string, t target, rows, conns int, extra string) (result, error) {
	script := filepath.Join(dir, fmt.Sprintf("%s-%d.lua", t.name, rows))
	if err := os.WriteFile(script, fmt.Appendf(nil, wrkScript, t.body(rows, 7), extra), 0o644); err != nil {
		return result{}, err
	}
	if cfg.keepScripts {
		fmt.Println("script:", script)
	}
	threads := min(cfg.threads, conns)
	name, args := loadCommand(cfg.cpus, cfg.wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%.0fs", cfg.duration.Seconds()), "--timeout", "10s", "-s", script, t.url)
	cmd := exec.CommandContext(ctx, name, args...)
	cpu0 := cpuTime()
	outb, err := cmd.CombinedOutput()
	cpu := cpuTime() - cpu0
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, outb)
	}
	for _, l := range strings.Split(string(outb), "\n") {
		var reqs, durUs, p50, p99, errs int64
		if _, err := fmt.Sscanf(l, "SERVEBENCH %d %d %d %d %d", &reqs, &durUs, &p50, &p99, &errs); err == nil {
			r := result{rps: float64(reqs) / (float64(durUs) / 1e6), p50: float64(p50) / 1e3, p99: float64(p99) / 1e3, errors: errs}
			if reqs > 0 {
				r.cpuUs = float64(cpu.Microseconds()) / float64(reqs)
			}
			return r, nil
		}
	}
	return result{}, fmt.Errorf("wrk printed no figures: %s", outb)
}
