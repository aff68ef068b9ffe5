package deployer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/deployer/internal/barehttp"
)

// benchSpec is an 8-feature GBDT pipeline (100 trees, depth 6) logging
// predictions at sampleRate.
func benchSpec(name string, sampleRate float64, maxBatch int) string {
	var schema strings.Builder
	for k := range 8 {
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
  deployment: {strategy: immediate, sampleRate: %g, batching: {maxBatchSize: %d}}
`, name, schema.String(), sampleRate, maxBatch)
}

func benchCSV(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	b.WriteString("f0,f1,f2,f3,f4,f5,f6,f7,y\n")
	for range n {
		var s float64
		for k := range 8 {
			x := r.NormFloat64()
			if k < 4 {
				s += x * float64(k-1)
			}
			fmt.Fprintf(&b, "%.4f,", x)
		}
		fmt.Fprintf(&b, "%d\n", map[bool]int{true: 1, false: 0}[s > 0])
	}
	return b.Bytes()
}

// BenchmarkInfer measures one /infer request through the deployer's
// handler (no network) against a bare handler that decodes a minimal JSON
// body with encoding/json and calls the same model: the serving overhead
// the deployer adds, per request and in allocations. Pipeline "bench" logs
// no prediction (sampleRate 0), so the publishing of prediction.logged
// does not run beside it; "logged" logs every one.
func BenchmarkInfer(b *testing.B) {
	env := looptest.NewFull(b)
	var model ml.Model
	for _, pl := range []struct {
		name     string
		rate     float64
		maxBatch int
	}{{"bench", 0, 64}, {"logged", 1, 64}, {"nobatch", 0, 1}} {
		ref := promoteBench(env, pl.name, pl.rate, pl.maxBatch)
		if model == nil {
			data, err := store.GetObject(env.Ctx(), env.Buckets.Models, ref.GetKey())
			if err != nil {
				b.Fatal(err)
			}
			bd, err := bundle.Unmarshal(data)
			if err != nil {
				b.Fatal(err)
			}
			model = bd.Model
		}
	}
	gyre := runBenchDeployer(b, env, "bench", "logged", "nobatch")
	bare := barehttp.Handler(model)
	for _, rows := range []int{1, 100} {
		flat := make([]float64, 0, rows*8)
		for i := range rows * 8 {
			flat = append(flat, float64(i%17)/7-1)
		}
		oip, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{
			"name": "input", "shape": []int{rows, 8}, "datatype": "FP64", "data": flat,
		}}})
		matrix := make([][]float64, rows)
		for i := range matrix {
			matrix[i] = flat[i*8 : (i+1)*8]
		}
		plain, _ := json.Marshal(map[string]any{"rows": matrix})
		for _, tc := range []struct {
			name string
			h    http.Handler
			path string
			body []byte
		}{
			{"bare", bare, "/predict", plain},
			{"gyre", gyre, "/v2/models/bench/infer", oip},
			{"gyre-logged", gyre, "/v2/models/logged/infer", oip},
		} {
			b.Run(fmt.Sprintf("%s/rows=%d", tc.name, rows), func(b *testing.B) {
				body := bytes.NewReader(tc.body)
				req := httptest.NewRequest(http.MethodPost, tc.path, body)
				rec := &discard{h: http.Header{}}
				b.ReportAllocs()
				for b.Loop() {
					body.Reset(tc.body)
					r := req.Clone(context.Background())
					r.Body = io.NopCloser(body)
					rec.code = 0
					tc.h.ServeHTTP(rec, r)
					if rec.code != http.StatusOK {
						b.Fatalf("%s: status %d", tc.path, rec.code)
					}
				}
			})
		}
	}
}

// BenchmarkInferParallel measures single-row requests from 64 goroutines
// per CPU, with adaptive batching and without.
func BenchmarkInferParallel(b *testing.B) {
	env := looptest.NewFull(b)
	for _, pl := range []struct {
		name     string
		maxBatch int
	}{{"batched", 64}, {"nobatch", 1}} {
		promoteBench(env, pl.name, 0, pl.maxBatch)
	}
	h := runBenchDeployer(b, env, "batched", "nobatch")
	flat := []float64{0.1, -0.2, 0.3, 1, -1, 0.5, 0, 2}
	body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{
		"name": "input", "shape": []int{1, 8}, "datatype": "FP64", "data": flat,
	}}})
	for _, name := range []string{"batched", "nobatch"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(64)
			b.RunParallel(func(pb *testing.PB) {
				rd := bytes.NewReader(body)
				req := httptest.NewRequest(http.MethodPost, "/v2/models/"+name+"/infer", nil)
				rec := &discard{h: http.Header{}}
				for pb.Next() {
					rd.Reset(body)
					r := req.Clone(context.Background())
					r.Body = io.NopCloser(rd)
					rec.code = 0
					h.ServeHTTP(rec, r)
					if rec.code != http.StatusOK {
						b.Errorf("status %d", rec.code)
						return
					}
				}
			})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/models/"+name, nil))
			var md struct {
				Parameters struct {
					Batching struct {
						Calls float64 `json:"model_calls"`
						Rows  float64 `json:"rows_scored"`
					} `json:"batching"`
				} `json:"parameters"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &md); err == nil && md.Parameters.Batching.Calls > 0 {
				b.ReportMetric(md.Parameters.Batching.Rows/md.Parameters.Batching.Calls, "rows/call")
			}
		})
	}
}

// discard is a ResponseWriter that keeps the status only.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header { return d.h }
func (d *discard) Write(p []byte) (int, error) {
	if d.code == 0 {
		d.code = http.StatusOK
	}
	return len(p), nil
}
func (d *discard) WriteHeader(code int) { d.code = code }

// promoteBench applies the bench pipeline name, stores a model trained for
// it and promotes it; it returns the model's artifact.
func promoteBench(env *looptest.Env, name string, sampleRate float64, maxBatch int) *gyrev1.ObjectRef {
	p := env.ApplyPipeline(benchSpec(name, sampleRate, maxBatch))
	ref := env.StoreBundle(p, "r1", benchCSV(5000))
	env.Promote(looptest.Promotion{Pipeline: name, Version: 1, Artifact: ref, Reason: "manual"})
	return ref
}

// runBenchDeployer runs a deployer on env and returns its handler once the
// models of the pipelines named serve.
func runBenchDeployer(b *testing.B, env *looptest.Env, names ...string) http.Handler {
	b.Helper()
	cfg := deployer.DefaultConfig()
	cfg.VerifyKeys = looptest.VerifyKeyFile(b)
	cfg.HTTPAuth = service.HTTPAuthNone
	cfg.NATSURL = env.Server.URL
	proc, err := service.Connect(context.Background(), cfg.Config, "deployer-bench", service.WithLogOutput(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = proc.Close(context.Background()) })
	svc, err := deployer.New(cfg, proc.Deps)
	if err != nil {
		b.Fatal(err)
	}
	env.Run(svc)
	h := svc.Handler()
	for _, name := range names {
		looptest.WaitFor(b, name+" deployed", 30*time.Second, func() bool {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/models/"+name+"/ready", nil))
			return rec.Code == http.StatusOK
		})
	}
	return h
}
