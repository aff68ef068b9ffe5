package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gyrehq/gyre/services/deployer/oipgrpc"
)

// The protocols compared: the same single-row request to the same model
// ("bench"), over REST with a JSON body, over REST with the binary tensor
// data extension (binary in and out), and over gRPC with typed contents and
// with raw contents. The load is a Go client of each — net/http, and the
// client generated from the upstream proto — in a process of its own on
// the load's CPUs, as wrk is: each connection sends its next request when
// the last is answered, and every latency is recorded.
var protocolNames = []string{"rest-json", "rest-binary", "grpc-typed", "grpc-raw"}

// protocolClientArg runs servebench as the load of one protocol run.
const protocolClientArg = "-protocol-client"

// protoResult is what a protocol client reports.
type protoResult struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
	// Latencies in milliseconds.
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	// FirstError is the first failure, if any.
	FirstError string `json:"firstError,omitempty"`
	// cpuUs is the servers' CPU per request (this process's), in µs.
	cpuUs float64
}

func (r protoResult) rps() float64 {
	if r.Seconds == 0 {
		return 0
	}
	return float64(r.Requests) / r.Seconds
}

// protoCaller sends single-row requests of one protocol over one
// connection.
type protoCaller interface {
	call(ctx context.Context, row int) error
	close()
}

// benchRow is the i-th request's row: one of 64, the same for every
// protocol.
func benchRow(i int) []float64 { return benchRows[i%len(benchRows)] }

var benchRows = rowsOf(64, 42)

func newCaller(kind, httpURL, grpcAddr, model string) (protoCaller, error) {
	switch kind {
	case "rest-json", "rest-binary":
		return &restCaller{binary: kind == "rest-binary", url: httpURL + "/v2/models/" + model + "/infer",
			client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}}, nil
	case "grpc-typed", "grpc-raw":
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return &grpcCaller{raw: kind == "grpc-raw", conn: conn, client: oipgrpc.NewGRPCInferenceServiceClient(conn), model: model}, nil
	}
	return nil, fmt.Errorf("unknown protocol %q (want %s)", kind, strings.Join(protocolNames, ", "))
}

type restCaller struct {
	binary bool
	url    string
	client *http.Client
	buf    bytes.Buffer
}

// restBinaryHeader is the JSON of a binary request of one row, its 64
// bytes of FP64 following; outputs come back in binary too.
const restBinaryHeader = `{"id":"bench","inputs":[{"name":"input","shape":[1,8],"datatype":"FP64","parameters":{"binary_data_size":64}}],"parameters":{"binary_data_output":true}}`

func (c *restCaller) call(ctx context.Context, i int) error {
	row := benchRow(i)
	c.buf.Reset()
	if c.binary {
		c.buf.WriteString(restBinaryHeader)
		for _, v := range row {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
			c.buf.Write(b[:])
		}
	} else {
		c.buf.WriteString(`{"id":"bench","inputs":[{"name":"input","shape":[1,8],"datatype":"FP64","data":[`)
		for k, v := range row {
			if k > 0 {
				c.buf.WriteByte(',')
			}
			c.buf.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		}
		c.buf.WriteString(`]}]}`)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.buf.Bytes()))
	if err != nil {
		return err
	}
	if c.binary {
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(len(restBinaryHeader)))
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%d %s", resp.StatusCode, body)
	}
	if c.binary && resp.Header.Get("Inference-Header-Content-Length") == "" {
		return errors.New("binary outputs asked, none answered")
	}
	return nil
}

func (c *restCaller) close() { c.client.CloseIdleConnections() }

type grpcCaller struct {
	raw    bool
	conn   *grpc.ClientConn
	client oipgrpc.GRPCInferenceServiceClient
	model  string
}

func (c *grpcCaller) call(ctx context.Context, i int) error {
	row := benchRow(i)
	in := &oipgrpc.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP64", Shape: []int64{1, features8}}
	req := &oipgrpc.ModelInferRequest{ModelName: c.model, Id: "bench", Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{in}}
	if c.raw {
		raw := make([]byte, 0, 8*len(row))
		for _, v := range row {
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(v))
		}
		req.RawInputContents = [][]byte{raw}
	} else {
		in.Contents = &oipgrpc.InferTensorContents{Fp64Contents: row}
	}
	res, err := c.client.ModelInfer(ctx, req)
	if err != nil {
		return err
	}
	if len(res.GetOutputs()) == 0 || c.raw != (len(res.GetRawOutputContents()) > 0) {
		return fmt.Errorf("unexpected answer %v", res)
	}
	return nil
}

func (c *grpcCaller) close() { _ = c.conn.Close() }

// protocolClient is the load process: protocolClient(kind, httpURL,
// grpcAddr, model, duration, conns) runs conns closed-loop connections for
// duration after a warm-up of a second, and prints a protoResult as JSON.
func protocolClient(args []string) error {
	if len(args) != 6 {
		return fmt.Errorf("%s KIND HTTP-URL GRPC-ADDR MODEL DURATION CONNS", protocolClientArg)
	}
	d, err := time.ParseDuration(args[4])
	if err != nil {
		return err
	}
	conns, err := strconv.Atoi(args[5])
	if err != nil || conns < 1 {
		return fmt.Errorf("connections %q", args[5])
	}
	callers := make([]protoCaller, conns)
	for i := range callers {
		if callers[i], err = newCaller(args[0], args[1], args[2], args[3]); err != nil {
			return err
		}
		defer callers[i].close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	// Warm-up: connections made, code paths hot.
	warm := time.Now().Add(time.Second)
	start := warm
	end := warm.Add(d)
	var mu sync.Mutex
	var lat []time.Duration
	var res protoResult
	var wg sync.WaitGroup
	for c, caller := range callers {
		wg.Go(func() {
			mine := make([]time.Duration, 0, 1<<16)
			errs, first := 0, ""
			for i := c; ; i += conns {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				err := caller.call(ctx, i)
				dt := time.Since(t0)
				if t0.Before(start) {
					continue
				}
				if err != nil {
					errs++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				mine = append(mine, dt)
			}
			mu.Lock()
			lat = append(lat, mine...)
			res.Errors += errs
			if res.FirstError == "" {
				res.FirstError = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Requests = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		ms := func(q float64) float64 {
			return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1e3
		}
		res.P50, res.P90, res.P99 = ms(0.50), ms(0.90), ms(0.99)
		var sum time.Duration
		for _, l := range lat {
			sum += l
		}
		res.Mean = float64(sum.Microseconds()) / 1e3 / float64(len(lat))
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// runProtocol runs one protocol client on the load's CPUs and returns its
// figures, with the servers' CPU per request.
func runProtocol(ctx context.Context, cfg config, env *deployerEnv, kind string, conns int) (protoResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return protoResult{}, err
	}
	name, args := loadCommand(cfg.cpus, exe, protocolClientArg, kind, env.url, env.grpcAddr, "bench",
		cfg.protocolFor.String(), strconv.Itoa(conns))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	cpu0 := cpuTime()
	out, err := cmd.Output()
	cpu := cpuTime() - cpu0
	if err != nil {
		return protoResult{}, fmt.Errorf("%s client: %w", kind, err)
	}
	var r protoResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("%s client printed %q: %w", kind, out, err)
	}
	if r.Errors > 0 {
		return r, fmt.Errorf("%s: %d of %d requests failed, the first: %s", kind, r.Errors, r.Requests+r.Errors, r.FirstError)
	}
	if r.Requests > 0 {
		// The warm-up's CPU is counted too: a slight overestimate, the same
		// for every protocol.
		r.cpuUs = float64(cpu.Microseconds()) / float64(r.Requests)
	}
	return r, env.settle(ctx)
}

// compareProtocols measures every protocol of cfg.protocols at each of
// cfg.protocolConns connections, cfg.repeat times, the protocols taking
// turns, and prints each run and the medians.
func compareProtocols(ctx context.Context, cfg config, env *deployerEnv, out io.Writer) error {
	fmt.Fprintf(out, "\nsingle-row requests, REST against gRPC (model bench; Go clients on the load's CPUs, closed loop, %s per run after a 1 s warm-up):\n", cfg.protocolFor)
	runs := map[string][]protoResult{}
	key := func(kind string, conns int) string { return fmt.Sprint(kind, "/", conns) }
	for _, conns := range cfg.protocolConns {
		for rep := range cfg.repeat {
			for _, kind := range cfg.protocols {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r, err := runProtocol(ctx, cfg, env, kind, conns)
				if err != nil {
					return err
				}
				runs[key(kind, conns)] = append(runs[key(kind, conns)], r)
				fmt.Fprintf(out, "  %-11s conns %-3d run %d  %8.0f req/s  p50 %6.3f ms  p90 %6.3f ms  p99 %6.3f ms  mean %6.3f ms  server CPU %6.1f µs/req\n",
					kind, conns, rep+1, r.rps(), r.P50, r.P90, r.P99, r.Mean, r.cpuUs)
			}
		}
	}
	fmt.Fprintf(out, "\nmedians of %d runs each:\n", cfg.repeat)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\tconns\treq/s\tp50 ms\tp90 ms\tp99 ms\tserver CPU µs/req\tp50 vs rest-json\t")
	for _, conns := range cfg.protocolConns {
		base := medianProto(runs[key("rest-json", conns)])
		for _, kind := range cfg.protocols {
			m := medianProto(runs[key(kind, conns)])
			vs := ""
			if base.P50 > 0 {
				vs = fmt.Sprintf("%+.0f%%", (m.P50/base.P50-1)*100)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.1f\t%s\t\n", kind, conns, m.rps(), m.P50, m.P90, m.P99, m.cpuUs, vs)
		}
	}
	return tw.Flush()
}

// medianProto is the run of median throughput, with the medians of each
// latency figure.
func medianProto(rs []protoResult) protoResult {
	if len(rs) == 0 {
		return protoResult{}
	}
	med := func(f func(protoResult) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f(r)
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	out := slices.SortedFunc(slices.Values(rs), func(a, b protoResult) int {
		switch {
		case a.rps() < b.rps():
			return -1
		case a.rps() > b.rps():
			return 1
		}
		return 0
	})[len(rs)/2]
	out.P50 = med(func(r protoResult) float64 { return r.P50 })
	out.P90 = med(func(r protoResult) float64 { return r.P90 })
	out.P99 = med(func(r protoResult) float64 { return r.P99 })
	out.Mean = med(func(r protoResult) float64 { return r.Mean })
	out.cpuUs = med(func(r protoResult) float64 { return r.cpuUs })
	return out
}

// checkProtocols sends a request of each protocol before the clock starts.
func checkProtocols(env *deployerEnv, kinds []string) error {
	for _, kind := range kinds {
		c, err := newCaller(kind, env.url, env.grpcAddr, "bench")
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.call(ctx, 0)
		cancel()
		c.close()
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
	}
	return nil
}
