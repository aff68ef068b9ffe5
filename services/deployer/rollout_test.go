package deployer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/services/deployer"
)

// TestSwapUnderLoad swaps the serving model 20 times while goroutines keep
// sending inference requests: not one request may fail.
func TestSwapUnderLoad(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "swap"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate}", false))
	h.run(nil)
	arts := []*gyrev1.ObjectRef{h.storeBundle(name, "ra", false, false), h.storeBundle(name, "rbb", false, false)}
	h.promote(name, 1, arts[0], 0.9)
	h.waitServing(name, "1")

	body, err := json.Marshal(inferBody([]row{{-0.4, "a"}, {0.3, "b"}, {0.8, "a"}, {-0.9, "b"}}))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
	url := h.srv.URL + "/v2/models/" + name + "/infer"
	var total, failed atomic.Int64
	var versions sync.Map
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				total.Add(1)
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out struct {
					ModelVersion string `json:"model_version"`
				}
				if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, raw))
					continue
				}
				versions.Store(out.ModelVersion, true)
			}
		}()
	}
	for v := int64(2); v <= 21; v++ {
		h.promote(name, v, arts[v%2], 0.9)
		h.waitServing(name, fmt.Sprint(v))
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during 20 swaps; first: %v", n, total.Load(), firstFailure.Load())
	}
	seen := 0
	versions.Range(func(_, _ any) bool { seen++; return true })
	if seen < 5 {
		t.Errorf("requests saw %d versions over 20 swaps, want most of them", seen)
	}
	if n := len(h.waitEmitted(name, events.DeploymentCompleted, 21)); n != 21 {
		t.Errorf("%d deployment.completed, want 21", n)
	}
	t.Logf("%d requests, %d versions seen, 0 failed", total.Load(), seen)
}

// canaryStatus reads the deployment status: its status, and the labelled
// predictions the canary counted (-1 when no canary runs).
func (h *harness) canaryStatus(name string) (status string, labelled int) {
	code, body := h.do(http.MethodGet, "/v1/deployments/"+name, nil)
	if code != http.StatusOK {
		return "", -1
	}
	rec, _ := body["deployment"].(map[string]any)
	status, _ = rec["status"].(string)
	c, ok := body["canary"].(map[string]any)
	if !ok {
		return status, -1
	}
	l, _ := c["labelled"].(float64)
	cl, _ := c["championLabelled"].(float64)
	return status, int(l + cl)
}

// drive sends labelled traffic — four rows a request, each request's labels
// published right after it — until the canary is over, and returns the
// status it ended with. It waits for the labels of each request to be
// counted, so that a step is judged on every label sent before it.
func (h *harness) drive(name string) string {
	h.t.Helper()
	r := rand.New(rand.NewPCG(11, 11))
	labelled := 0
	for i := 0; ; i++ {
		status, counted := h.canaryStatus(name)
		if status != "canary" {
			return status
		}
		if i > 2000 {
			h.t.Fatalf("canary of %s still running after %d requests", name, i)
		}
		rows := make([]row, 4)
		for k := range rows {
			rows[k] = row{x: r.Float64()*2 - 1, c: []string{"a", "b"}[r.IntN(2)]}
		}
		code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(rows), deployer.RoutingKeyHeader, fmt.Sprint("client-", i))
		if code != http.StatusOK {
			continue
		}
		ids := output(body, "prediction_id")
		labels := make([]*gyrev1.Label, len(ids))
		for k, id := range ids {
			labels[k] = &gyrev1.Label{PredictionId: id.(string), Value: truth(rows[k].x)}
		}
		// Every label twice: the second copy counts for nothing.
		h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: labels})
		h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: labels})
		if counted < 0 {
			continue
		}
		labelled += len(labels)
		looptest.WaitFor(h.t, "labels counted", 10*time.Second, func() bool {
			s, c := h.canaryStatus(name)
			return s != "canary" || c < 0 || c >= labelled
		})
	}
}

func TestCanary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// steps is the spec's canary steps.
		steps string
		// championFlipped plants a bad champion, candidateFlipped a bad
		// candidate; candidateZ a candidate that needs an input the
		// traffic does not have.
		championFlipped, candidateFlipped, candidateZ bool
		wantStatus                                    string
		wantProgressed                                int
		wantServing                                   string
		wantReason                                    string
	}{
		{name: "worse candidate rolled back", steps: "[50, 100]", candidateFlipped: true,
			wantStatus: "rolledback", wantServing: "1", wantReason: "accuracy"},
		{name: "failing candidate rolled back", steps: "[50, 100]", candidateZ: true,
			wantStatus: "rolledback", wantServing: "1", wantReason: "errorRate 1 > maxErrorRate 0.02"},
		{name: "better candidate promoted", steps: "[25, 50, 100]", championFlipped: true,
			wantStatus: "completed", wantProgressed: 1, wantServing: "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			name := strings.ReplaceAll(tc.name, " ", "-")
			h.env.ApplyPipeline(spec(name, "{strategy: canary, steps: "+tc.steps+", stepRequests: 10, rollback: {maxErrorRate: 0.02, maxAccuracyDrop: 0.05}}", false))
			h.run(func(c *deployer.Config) { c.CanaryMinLabels = 10 })
			// The first model goes live at once: nothing to compare it with.
			h.promote(name, 1, h.storeBundle(name, "champion", tc.championFlipped, false), 0.9)
			h.waitServing(name, "1")
			promoted := h.promote(name, 2, h.storeBundle(name, "candidate", tc.candidateFlipped, tc.candidateZ), 0.9)
			looptest.WaitFor(t, "canary running", 20*time.Second, func() bool {
				s, c := h.canaryStatus(name)
				return s == "canary" && c >= 0
			})
			if got := h.drive(name); got != tc.wantStatus {
				t.Fatalf("canary ended %s, want %s", got, tc.wantStatus)
			}
			if v := h.servingVersion(name); v != tc.wantServing {
				t.Errorf("serving version %s, want %s", v, tc.wantServing)
			}
			if n := len(h.env.Events(name, events.DeploymentProgressed)); n != tc.wantProgressed {
				t.Errorf("%d deployment.progressed, want %d", n, tc.wantProgressed)
			}
			started := h.env.Events(name, events.DeploymentStarted)
			if len(started) != 2 {
				t.Fatalf("%d deployment.started, want 2", len(started))
			}
			s := looptest.Decode(t, started[1], &gyrev1.DeploymentStarted{})
			if s.Strategy != "canary" || s.PreviousVersion != 1 || s.ModelVersion != 2 {
				t.Errorf("deployment.started = %v", s)
			}
			var final = h.env.Events(name, events.DeploymentRolledBack)
			if tc.wantStatus == "completed" {
				final = h.env.Events(name, events.DeploymentCompleted)[1:]
				c := looptest.Decode(t, final[0], &gyrev1.DeploymentCompleted{})
				if c.ModelVersion != 2 || c.PreviousVersion != 1 || c.TrafficPercent != 100 || c.Figures["requests"] < 10 {
					t.Errorf("deployment.completed = %v", c)
				}
				p := looptest.Decode(t, h.env.Events(name, events.DeploymentProgressed)[0], &gyrev1.DeploymentProgressed{})
				if p.Step != 2 || p.TrafficPercent != 50 || p.Figures["accuracy"] < 0.9 {
					t.Errorf("deployment.progressed = %v", p)
				}
			} else {
				rb := looptest.Decode(t, final[0], &gyrev1.DeploymentRolledBack{})
				if rb.ModelVersion != 2 || rb.PreviousVersion != 1 || rb.Step != 1 || rb.TrafficPercent != 50 ||
					!strings.Contains(rb.Reason, tc.wantReason) || !strings.Contains(rb.Reason, "version 1 keeps serving") {
					t.Errorf("deployment.rolledback = %v, want its reason to name %q", rb, tc.wantReason)
				}
			}
			if len(final) != 1 {
				t.Fatalf("%d final events, want 1", len(final))
			}
			// The step's events belong to the promotion's cascade.
			if got := bus.Ext(final[0], bus.ExtCausationID); got != promoted.ID() {
				t.Errorf("causationid %q, want the model.promoted %s", got, promoted.ID())
			}
			if got := bus.Ext(final[0], bus.ExtCorrelationID); got != bus.CauseOf(promoted).CorrelationID {
				t.Errorf("correlationid %q, want the promotion's", got)
			}
			// Canary traffic is logged as such.
			variants := map[string]bool{}
			for _, ev := range h.env.Events(name, events.PredictionLogged) {
				variants[looptest.Decode(t, ev, &gyrev1.PredictionLogged{}).Variant] = true
			}
			if !variants["champion"] || !variants["canary"] && !tc.candidateZ {
				t.Errorf("prediction.logged variants %v, want champion and canary", variants)
			}
		})
	}
}

// TestRestoreAfterRestart: a new deployer serves what the last one served,
// a canary in progress included, without any new event.
func TestRestoreAfterRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "restore"
	h.env.ApplyPipeline(spec(name, "{strategy: canary, steps: [30, 100], stepRequests: 1000}", false))
	stop := h.run(nil)
	h.promote(name, 1, h.storeBundle(name, "r1", false, false), 0.9)
	h.waitServing(name, "1")
	h.promote(name, 2, h.storeBundle(name, "r2", false, false), 0.9)
	looptest.WaitFor(t, "canary running", 20*time.Second, func() bool { s, _ := h.canaryStatus(name); return s == "canary" })
	stop()

	h.run(nil)
	code, body := h.do(http.MethodGet, "/v2/models/"+name, nil)
	if code != http.StatusOK || fmt.Sprint(body["versions"]) != "[1 2]" {
		t.Fatalf("after restart: metadata %d %v, want versions [1 2]", code, body["versions"])
	}
	status, labelled := h.canaryStatus(name)
	if status != "canary" || labelled != 0 {
		t.Errorf("after restart: %s with %d labelled, want the canary resumed", status, labelled)
	}
	code, body = h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody([]row{{0.5, "a"}}))
	if code != http.StatusOK {
		t.Fatalf("infer after restart = %d %v", code, body)
	}
	if n := len(h.env.Events(name, events.DeploymentStarted)); n != 2 {
		t.Errorf("%d deployment.started after restart, want 2", n)
	}
}
