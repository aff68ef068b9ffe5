package monitor_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/monitor"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// harness runs the monitor on its own JetStream server and plays the rest
// of the loop (env): it applies specs, stores validated batches, publishes
// the events the monitor consumes and reads what it emits.
type harness struct {
	t   *testing.T
	env *looptest.Env
	// mon is the monitor under test (the first, when a test runs several).
	mon *replica
}

// replica is one running monitor: its own connection, registry and
// service, as one process of a Deployment.
type replica struct {
	proc *service.Process
	svc  *monitor.Service
	// stop stops it (and is called at the test's end if not before).
	stop func()
}

func start(t *testing.T) *harness {
	t.Helper()
	srv := natstest.Start(t)
	mon := runMonitor(t, srv)
	// The monitor provisioned the topology: the env only opens it.
	return &harness{t: t, env: looptest.Attach(t, srv, mon.proc.JS), mon: mon}
}

// runMonitor runs a monitor on srv until the test ends or its stop is
// called; it returns when the monitor is ready.
func runMonitor(t *testing.T, srv *natstest.Server) *replica {
	t.Helper()
	cfg := monitor.DefaultConfig()
	cfg.NATSURL = srv.URL
	cfg.HTTPAddr = "127.0.0.1:0"
	proc, err := service.Connect(context.Background(), cfg.Config, "monitor-test", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := monitor.New(cfg, proc.Deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			_ = proc.Close(cctx)
		})
	}
	t.Cleanup(stop)
	looptest.WaitFor(t, "monitor ready", 15*time.Second, func() bool {
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code == http.StatusOK
	})
	return &replica{proc: proc, svc: svc, stop: stop}
}

// scrape returns the value of a series (name{labels}, labels in
// Prometheus' order, e.g. `gyre_stale_ignored_total{kind="model.promoted",service="monitor"}`)
// as the replica's /metrics serves it; 0 when it is not there.
func (r *replica) scrape(t *testing.T, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	r.svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// materialize publishes the features.materialized of a stored batch.
func (h *harness) materialize(pipelineName, id, key string, rows int) event.Event {
	return h.env.Emit("/gyre/test", pipelineName, &gyrev1.FeaturesMaterialized{
		Pipeline: pipelineName, BatchId: id, FeatureSetVersion: "fs1", Rows: int64(rows),
		Source: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: key, Uri: events.ObjectURI(events.ObjectBatches, key)},
	})
}

// waitEmitted waits up to 20s until the pipeline has n events of the name
// and returns them all.
func (h *harness) waitEmitted(pipelineName, name string, n int) []event.Event {
	h.t.Helper()
	return h.env.WaitEventsWithin(pipelineName, name, n, 20*time.Second)
}

// state reads the monitor's state of a pipeline.
func (h *harness) state(pipelineName string) monitoring.State {
	h.t.Helper()
	st, _, _, err := store.GetJSON[monitoring.State](context.Background(), h.env.Buckets.State, monitor.StateKey(pipelineName))
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// batchCSV draws rows of x ~ N(mean, 1), c from cats (uniformly) and a
// label y in {0, 1}.
func batchCSV(r *rand.Rand, rows int, mean float64, cats []string) []byte {
	var b strings.Builder
	b.WriteString("x,c,y\n")
	for range rows {
		fmt.Fprintf(&b, "%.6f,%s,%d\n", mean+r.NormFloat64(), cats[r.IntN(len(cats))], r.IntN(2))
	}
	return []byte(b.String())
}

// gauge returns the value of the monitor's gauge name with labels, and
// whether it is exported.
func (h *harness) gauge(name string, labels map[string]string) (float64, bool) {
	h.t.Helper()
	families, err := h.mon.proc.Deps.Registry.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue metric
				}
			}
			if len(m.GetLabel()) == len(labels) {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}
