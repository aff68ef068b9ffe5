package monitor_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/monitor"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// harness runs the monitor on its own JetStream server and plays the rest
// of the loop: it applies specs, stores validated batches, publishes the
// events the monitor consumes and reads what it emits.
type harness struct {
	t   *testing.T
	js  jetstream.JetStream
	pub *bus.Publisher
	b   *store.Buckets
}

func start(t *testing.T) *harness {
	t.Helper()
	srv := natstest.Start(t)
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = proc.Close(cctx)
	})
	waitFor(t, "monitor ready", 15*time.Second, func() bool {
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code == http.StatusOK
	})
	b, err := store.Open(context.Background(), proc.JS)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, js: proc.JS, pub: bus.NewPublisher(proc.JS, "test"), b: b}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// apply stores a pipeline spec as `gyre apply` does.
func (h *harness) apply(spec string) *pipeline.Pipeline {
	h.t.Helper()
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.b.Pipelines.Put(context.Background(), p.Name(), p.Canonical()); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// addBatch stores a CSV batch and appends it to the validated-batch log, as
// ingest and validation do; it returns the stored object's key.
func (h *harness) addBatch(pipelineName, id string, csv []byte) string {
	h.t.Helper()
	ctx := context.Background()
	key := fmt.Sprintf("%s/%s.csv", pipelineName, id)
	if _, _, err := store.PutObject(ctx, h.b.Batches, key, "text/csv", csv); err != nil {
		h.t.Fatal(err)
	}
	if _, err := store.AppendValidated(ctx, h.b.State, pipelineName, store.ValidatedBatch{
		BatchID: id, ObjectKey: key, Format: "csv", Rows: int64(bytes.Count(csv, []byte("\n")) - 1),
	}); err != nil {
		h.t.Fatal(err)
	}
	return key
}

// publish sends msg as the named producer would, with the given id when
// not empty (a redelivery or a duplicate carries the same).
func (h *harness) publish(pipelineName string, msg proto.Message, id string) event.Event {
	h.t.Helper()
	ev, err := events.New("/gyre/test", pipelineName, msg)
	if err != nil {
		h.t.Fatal(err)
	}
	if id != "" {
		ev.SetID(id)
	}
	if err := h.pub.Publish(context.Background(), ev); err != nil {
		h.t.Fatal(err)
	}
	return ev
}

// materialize publishes the features.materialized of a stored batch.
func (h *harness) materialize(pipelineName, id, key string, rows int) event.Event {
	return h.publish(pipelineName, &gyrev1.FeaturesMaterialized{
		Pipeline: pipelineName, BatchId: id, FeatureSetVersion: "fs1", Rows: int64(rows),
		Source: &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: key, Uri: events.ObjectURI(events.ObjectBatches, key)},
	}, "")
}

// emitted returns every event of the name the pipeline has on its stream.
func (h *harness) emitted(pipelineName, name string) []event.Event {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject, err := events.Subject(pipelineName, name)
	if err != nil {
		h.t.Fatal(err)
	}
	spec, _ := events.Lookup(name)
	cons, err := h.js.OrderedConsumer(ctx, spec.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []event.Event
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(150*time.Millisecond))
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

// waitEmitted waits until the pipeline has n events of the name and returns them.
func (h *harness) waitEmitted(pipelineName, name string, n int) []event.Event {
	h.t.Helper()
	var evs []event.Event
	waitFor(h.t, fmt.Sprintf("%d %s", n, name), 20*time.Second, func() bool {
		evs = h.emitted(pipelineName, name)
		return len(evs) >= n
	})
	return evs
}

// state reads the monitor's state of a pipeline.
func (h *harness) state(pipelineName string) monitoring.State {
	h.t.Helper()
	st, _, _, err := store.GetJSON[monitoring.State](context.Background(), h.b.State, monitor.StateKey(pipelineName))
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func decodeAs[T proto.Message](t *testing.T, ev event.Event, msg T) T {
	t.Helper()
	if err := events.Decode(ev, msg); err != nil {
		t.Fatal(err)
	}
	return msg
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
