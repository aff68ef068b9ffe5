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
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/deployer"
)

// harness gives a test its own JetStream server with Gyre's topology, and
// runs deployers on it; it plays the rest of the loop: applies specs,
// stores bundles, publishes promotions and labels, reads what the deployer
// emits.
type harness struct {
	t   *testing.T
	url string
	js  jetstream.JetStream
	pub *bus.Publisher
	b   *store.Buckets

	mu  sync.Mutex
	svc *deployer.Service
	srv *httptest.Server
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.Provision(ctx, js, bus.FullTopology()); err != nil {
		t.Fatal(err)
	}
	b, err := store.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, url: srv.URL, js: js, pub: bus.NewPublisher(js, "test"), b: b}
}

// run starts a deployer and serves its handler over HTTP; stop stops both.
// cfg adjusts the configuration.
func (h *harness) run(cfg func(*deployer.Config)) (stop func()) {
	h.t.Helper()
	c := deployer.DefaultConfig()
	c.NATSURL = h.url
	c.HTTPAddr = "127.0.0.1:0"
	if cfg != nil {
		cfg(&c)
	}
	proc, err := service.Connect(context.Background(), c.Config, "deployer-test", service.WithLogOutput(io.Discard))
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
	waitFor(h.t, "deployer ready", 15*time.Second, func() bool { return svc.Readiness().Ready })
	h.mu.Lock()
	h.svc, h.srv = svc, srv
	h.mu.Unlock()
	return stop
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

func (h *harness) apply(text string) *pipeline.Pipeline {
	h.t.Helper()
	p, err := pipeline.Parse([]byte(text))
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.b.Pipelines.Put(context.Background(), p.Name(), p.Canonical()); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// truth is the concept every test model learns: y = 1 when x > 0.
func truth(x float64) string {
	if x > 0 {
		return "1"
	}
	return "0"
}

// storeBundle trains a bundle on 300 rows — learning the truth, or its
// opposite when flipped — stores it in gyre-models and returns its ref.
// With withZ the bundle takes a third input, z.
func (h *harness) storeBundle(name, requestID string, flipped, withZ bool) *gyrev1.ObjectRef {
	h.t.Helper()
	p, err := pipeline.Parse([]byte(spec(name, "{strategy: immediate}", withZ)))
	if err != nil {
		h.t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, uint64(len(requestID))))
	var csv strings.Builder
	csv.WriteString("x,c,")
	if withZ {
		csv.WriteString("z,")
	}
	csv.WriteString("y\n")
	for range 300 {
		x := r.Float64()*2 - 1
		y := truth(x)
		if flipped {
			y = map[string]string{"0": "1", "1": "0"}[y]
		}
		fmt.Fprintf(&csv, "%.4f,%s,", x, []string{"a", "b"}[r.IntN(2)])
		if withZ {
			fmt.Fprintf(&csv, "%.4f,", r.Float64())
		}
		fmt.Fprintf(&csv, "%s\n", y)
	}
	tab, err := table.Read(table.FormatCSV, []byte(csv.String()))
	if err != nil {
		h.t.Fatal(err)
	}
	set, err := features.Fit(p, tab)
	if err != nil {
		h.t.Fatal(err)
	}
	ds, err := set.Dataset(tab, true)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := ml.Train(context.Background(), "logreg", nil, ds, ml.TrainOptions{Seed: 1})
	if err != nil {
		h.t.Fatal(err)
	}
	data, err := bundle.Marshal(&bundle.Bundle{Pipeline: name, RequestID: requestID, Features: set, Model: m})
	if err != nil {
		h.t.Fatal(err)
	}
	ref, _, err := store.PutObject(context.Background(), h.b.Models, bundle.Key(name, requestID), bundle.MediaType, data)
	if err != nil {
		h.t.Fatal(err)
	}
	return ref
}

// promote publishes the model.promoted of a version.
func (h *harness) promote(name string, version int64, art *gyrev1.ObjectRef, accuracy float64) event.Event {
	h.t.Helper()
	return h.publish(name, &gyrev1.ModelPromoted{
		Pipeline: name, ModelVersion: version, Alias: "champion", Reason: "blessed", Artifact: art,
		Metrics: map[string]float64{"accuracy": accuracy},
	})
}

func (h *harness) publish(name string, msg proto.Message) event.Event {
	h.t.Helper()
	ev, err := events.New("/gyre/test", name, msg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.pub.Publish(context.Background(), ev); err != nil {
		h.t.Fatal(err)
	}
	return ev
}

// emitted returns every event of the name the pipeline has on its stream.
func (h *harness) emitted(name, eventName string) []event.Event {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject, err := events.Subject(name, eventName)
	if err != nil {
		h.t.Fatal(err)
	}
	spec, _ := events.Lookup(eventName)
	cons, err := h.js.OrderedConsumer(ctx, spec.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []event.Event
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(150*time.Millisecond))
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := bus.Decode(m.Headers(), m.Data())
			if err != nil {
				h.t.Fatal(err)
			}
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}

func (h *harness) waitEmitted(name, eventName string, n int) []event.Event {
	h.t.Helper()
	var evs []event.Event
	waitFor(h.t, fmt.Sprintf("%d %s", n, eventName), 30*time.Second, func() bool {
		evs = h.emitted(name, eventName)
		return len(evs) >= n
	})
	return evs
}

func decodeAs[T proto.Message](t *testing.T, ev event.Event, msg T) T {
	t.Helper()
	if err := events.Decode(ev, msg); err != nil {
		t.Fatal(err)
	}
	return msg
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
	resp, err := http.DefaultClient.Do(req)
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
	waitFor(h.t, name+" serving version "+version, 30*time.Second, func() bool { return h.servingVersion(name) == version })
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
