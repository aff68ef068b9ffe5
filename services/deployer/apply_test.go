package deployer_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
)

// TestSpecChangeReachesServing: a pipeline.applied that changes
// spec.deployment.batching and sampleRate takes effect on the model
// serving, without a promotion: the model's metadata shows the new
// batching, and with sampleRate 0 answered requests are no longer logged.
func TestSpecChangeReachesServing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "live-settings"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate, sampleRate: 1}", false))
	h.run(nil)
	h.promote(name, 1, h.storeBundle(name, "r1", false, false), 0.9)
	h.waitServing(name, "1")

	batching := func() (maxRows, delayMs float64) {
		code, body := h.do(http.MethodGet, "/v2/models/"+name, nil)
		if code != http.StatusOK {
			t.Fatalf("metadata = %d %v", code, body)
		}
		b, _ := body["parameters"].(map[string]any)["batching"].(map[string]any)
		maxRows, _ = b["max_batch_size"].(float64)
		delayMs, _ = b["max_queue_delay_ms"].(float64)
		return maxRows, delayMs
	}
	if rows, delay := batching(); rows != pipeline.DefaultMaxBatchSize || delay != pipeline.DefaultMaxQueueDelayMs {
		t.Fatalf("batching before = %v rows, %v ms; want the defaults", rows, delay)
	}
	infer := func() {
		t.Helper()
		if code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody([]row{{0.5, "a"}})); code != http.StatusOK {
			t.Fatalf("infer = %d %v", code, body)
		}
	}
	infer()
	h.waitEmitted(name, events.PredictionLogged, 1)

	p, err := pipeline.Parse([]byte(spec(name, "{strategy: immediate, sampleRate: 0, batching: {maxBatchSize: 8, maxQueueDelayMs: 0}}", false)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ApplyPipeline(h.env.Ctx(), h.env.JS, h.env.Pub, p, "test"); err != nil {
		t.Fatal(err)
	}
	looptest.WaitFor(t, "new batching served", 15*time.Second, func() bool {
		rows, delay := batching()
		return rows == 8 && delay == 0
	})
	for range 5 {
		infer()
	}
	// The one logged request before the change, and none after it.
	time.Sleep(300 * time.Millisecond)
	if n := h.predictionLogs("published") + h.predictionLogs("dropped"); n != 1 {
		t.Errorf("%v requests logged, want only the one before sampleRate became 0", n)
	}
	if h.servingVersion(name) != "1" {
		t.Errorf("serving %q after the spec change, want version 1 still", h.servingVersion(name))
	}
}
