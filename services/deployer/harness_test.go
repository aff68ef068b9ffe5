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
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer"
)

// harness gives a test its own JetStream server with Gyre's topology, and
// runs deployers on it; it plays the rest of the loop (env): applies specs,
// stores bundles, publishes promotions and labels, reads what the deployer
// emits.
type harness struct {
	t   *testing.T
	env *looptest.Env

	mu  sync.Mutex
	svc *deployer.Service
	srv *httptest.Server
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, env: looptest.NewFull(t)}
}

// run starts a deployer and serves its handler over HTTP; stop stops both.
// cfg adjusts the configuration.
func (h *harness) run(cfg func(*deployer.Config)) (stop func()) {
	h.t.Helper()
	c := deployer.DefaultConfig()
	c.VerifyKeys = looptest.VerifyKeyFile(h.t)
	c.HTTPAuth = service.HTTPAuthNone
	c.NATSURL = h.env.Server.URL
	c.HTTPAddr = "127.0.0.1:0"
	if lvl := os.Getenv("GYRE_TEST_LOGS"); lvl != "" {
		c.LogLevel = lvl
	}
	if cfg != nil {
		cfg(&c)
	}
	proc, err := service.Connect(context.Background(), c.Config, "deployer-test", service.WithLogOutput(testLogOut()))
	if err != nil {
		h.t.Fatal(err)
	}
	svc, err := deployer.New(c, proc.Deps)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	srv := httptest.NewServer(svc.Handler())
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close()
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("Run: %v", err)
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			_ = proc.Close(cctx)
		})
	}
	h.t.Cleanup(stop)
	looptest.WaitFor(h.t, "deployer ready", 15*time.Second, func() bool { return svc.Readiness().Ready })
	h.mu.Lock()
	h.svc, h.srv = svc, srv
	h.mu.Unlock()
	return stop
}

// spec is a pipeline with a numeric feature x, a categorical c and, when
// withZ, a numeric z; deployment is the spec's deployment section.
func spec(name, deployment string, withZ bool) string {
	z := ""
	if withZ {
		z = "\n      - {name: z, type: float}"
	}
	return fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: y
    schema:
      - {name: x, type: float}
      - {name: c, type: category}%s
      - {name: y, type: category}
  model: {algorithm: logreg}
  deployment: %s
`, name, z, deployment)
}

// truth is the concept every test model learns: y = 1 when x > 0.
func truth(x float64) string {
	if x > 0 {
		return "1"
	}
	return "0"
}

// flippedTruth is the opposite of the truth: a model learning it is wrong
// almost always.
func flippedTruth(x float64) string { return truth(-x) }

// biasedTruth moves the truth's boundary to x = -0.8: a model learning it
// predicts 1 for nine rows in ten of the traffic, where the truth's has
// half — its predictions drift from the champion's.
func biasedTruth(x float64) string { return truth(x + 0.8) }

// storeBundle trains a bundle on 300 rows — learning the truth, or its
// opposite when flipped — stores it in gyre-models and returns its ref.
// With withZ the bundle takes a third input, z.
func (h *harness) storeBundle(name, requestID string, flipped, withZ bool) *gyrev1.ObjectRef {
	h.t.Helper()
	concept := truth
	if flipped {
		concept = flippedTruth
	}
	return h.storeBundleOf(name, requestID, concept, withZ)
}

// storeBundleOf trains a bundle on 300 rows labelled by concept, stores it
// in gyre-models and returns its ref. With withZ the bundle takes a third
// input, z.
func (h *harness) storeBundleOf(name, requestID string, concept func(x float64) string, withZ bool) *gyrev1.ObjectRef {
	h.t.Helper()
	p, err := pipeline.Parse([]byte(spec(name, "{strategy: immediate}", withZ)))
	if err != nil {
		h.t.Fatal(err)
	}
	// Every test bundle is trained with seed 1.
	p.Spec.Model.Seed = 1
	r := rand.New(rand.NewPCG(7, uint64(len(requestID))))
	var csv strings.Builder
	csv.WriteString("x,c,")
	if withZ {
		csv.WriteString("z,")
	}
	csv.WriteString("y\n")
	for range 300 {
		x := r.Float64()*2 - 1
		y := concept(x)
		fmt.Fprintf(&csv, "%.4f,%s,", x, []string{"a", "b"}[r.IntN(2)])
		if withZ {
			fmt.Fprintf(&csv, "%.4f,", r.Float64())
		}
		fmt.Fprintf(&csv, "%s\n", y)
	}
	return h.env.StoreBundle(p, requestID, []byte(csv.String()))
}

// promote makes a version champion in the registry's record, as the
// registry does, and publishes its model.promoted.
func (h *harness) promote(name string, version int64, art *gyrev1.ObjectRef, accuracy float64) event.Event {
	h.t.Helper()
	ev, _ := h.env.Promote(looptest.Promotion{Pipeline: name, Version: version, Artifact: art,
		Metrics: map[string]float64{"accuracy": accuracy}})
	return ev
}

// waitEmitted waits up to 30s until the pipeline has n events of the name
// and returns them all.
func (h *harness) waitEmitted(name, eventName string, n int) []event.Event {
	h.t.Helper()
	return h.env.WaitEventsWithin(name, eventName, n, 30*time.Second)
}

// do sends an HTTP request to the running deployer and returns the status
// and the decoded JSON body.
func (h *harness) do(method, path string, body any, header ...string) (int, map[string]any) {
	h.t.Helper()
	h.mu.Lock()
	base := h.srv.URL
	h.mu.Unlock()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		h.t.Fatalf("%s %s: %d, body not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// httpClient gives up on a request after 30 s: a request that hangs fails
// its test instead of stalling the whole run.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// servingVersion returns the version the model's metadata lists first (the
// champion), or "" when none serves.
func (h *harness) servingVersion(name string) string {
	code, body := h.do(http.MethodGet, "/v2/models/"+name, nil)
	if code != http.StatusOK {
		return ""
	}
	vs, _ := body["versions"].([]any)
	if len(vs) == 0 {
		return ""
	}
	return fmt.Sprint(vs[0])
}

func (h *harness) waitServing(name, version string) {
	h.t.Helper()
	looptest.WaitFor(h.t, name+" serving version "+version, 30*time.Second, func() bool { return h.servingVersion(name) == version })
}

// row is one request row: x and c.
type row struct {
	x float64
	c string
}

// inferBody is the OIP request of rows.
func inferBody(rows []row) map[string]any {
	xs, cs := make([]any, len(rows)), make([]any, len(rows))
	for i, r := range rows {
		xs[i], cs[i] = r.x, r.c
	}
	return map[string]any{"inputs": []map[string]any{
		{"name": "x", "datatype": "FP64", "shape": []int{len(rows)}, "data": xs},
		{"name": "c", "datatype": "BYTES", "shape": []int{len(rows)}, "data": cs},
	}}
}

// output returns the data of a response's output tensor.
func output(body map[string]any, name string) []any {
	outs, _ := body["outputs"].([]any)
	for _, o := range outs {
		m := o.(map[string]any)
		if m["name"] == name {
			d, _ := m["data"].([]any)
			return d
		}
	}
	return nil
}

// scrape returns the deployer's /metrics in the Prometheus text format.
func (h *harness) scrape() string {
	h.t.Helper()
	h.mu.Lock()
	base := h.srv.URL
	h.mu.Unlock()
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		h.t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

func testLogOut() io.Writer {
	if os.Getenv("GYRE_TEST_LOGS") != "" {
		return os.Stderr
	}
	return io.Discard
}
