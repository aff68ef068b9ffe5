package deployer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/services/deployer"
)

// TestPredictionsAreLogged: an inference request's predictions are
// published as one prediction.logged, on the predictions stream, with the
// ids the client got.
func TestPredictionsAreLogged(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "logged"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate, sampleRate: 1}", false))
	h.run(nil)
	h.promote(name, 1, h.storeBundle(name, "r1", false, false), 0.9)
	h.waitServing(name, "1")
	code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody([]row{{-0.5, "a"}, {0.5, "b"}}))
	if code != http.StatusOK {
		t.Fatalf("infer = %d %v", code, body)
	}
	ev := h.waitEmitted(name, events.PredictionLogged, 1)[0]
	if spec, _ := events.Lookup(events.PredictionLogged); !strings.HasPrefix(spec.Stream, "GYRE_PRED") {
		t.Fatalf("prediction.logged lives in %s", spec.Stream)
	}
	m := looptest.Decode(t, ev, &gyrev1.PredictionLogged{})
	ids := output(body, "prediction_id")
	if m.ModelVersion != 1 || m.Variant != "champion" || m.DeploymentId == "" || m.SampleRate != 1 ||
		fmt.Sprint(m.Features) != "[x]" || len(m.Rows) != 2 || m.LatencyMs <= 0 {
		t.Fatalf("prediction.logged = %v", m)
	}
	for i, r := range m.Rows {
		if r.PredictionId != ids[i] || r.Output != truth([]float64{-0.5, 0.5}[i]) || len(r.Values) != 1 ||
			r.TextInputs["c"] == "" || len(r.Probabilities) != 2 {
			t.Errorf("row %d = %v, want id %v", i, r, ids[i])
		}
	}
}

// TestPredictionLogQueueIsBounded: with a queue of one, a burst of requests
// all succeed; every logged request is published or counted as dropped.
func TestPredictionLogQueueIsBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "burst"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate, sampleRate: 1}", false))
	h.run(func(c *deployer.Config) { c.PredictionQueue = 1 })
	h.promote(name, 1, h.storeBundle(name, "r1", false, false), 0.9)
	h.waitServing(name, "1")
	body, _ := json.Marshal(inferBody([]row{{0.1, "a"}}))
	const requests = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < requests; i += 16 {
				resp, err := http.Post(h.srv.URL+"/v2/models/"+name+"/infer", "application/json", bytes.NewReader(body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		t.Fatalf("%d requests failed", failed)
	}
	var published, dropped float64
	looptest.WaitFor(t, "every logged request accounted for", 20*time.Second, func() bool {
		published, dropped = h.predictionLogs("published"), h.predictionLogs("dropped")
		return published+dropped == requests
	})
	// Queued requests' predictions share events: one row each here.
	rows := 0
	for _, ev := range h.env.Events(name, events.PredictionLogged) {
		rows += len(looptest.Decode(t, ev, &gyrev1.PredictionLogged{}).Rows)
	}
	if float64(rows) != published {
		t.Errorf("%d predictions logged on the stream, %v requests counted published", rows, published)
	}
	if q, ok := h.metric("gyre_deployer_prediction_log_queued"); !ok || q != 0 {
		t.Errorf("gyre_deployer_prediction_log_queued = %v (exported: %v), want 0 once all is published", q, ok)
	}
	t.Logf("%v published, %v dropped", published, dropped)
}

// predictionLogs reads gyre_deployer_prediction_logs_total of an outcome.
func (h *harness) predictionLogs(outcome string) float64 {
	h.t.Helper()
	v, _ := h.metric(`gyre_deployer_prediction_logs_total{outcome="` + outcome + `"}`)
	return v
}

// metric reads a series of the deployer's /metrics by name and labels, and
// whether it is there.
func (h *harness) metric(series string) (float64, bool) {
	h.t.Helper()
	resp, err := http.Get(h.srv.URL + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return f, true
		}
	}
	return 0, false
}
