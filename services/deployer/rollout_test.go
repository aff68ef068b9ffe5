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

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/services/deployer"
)

// TestSwapUnderLoad swaps the serving model 20 times while goroutines keep
// sending inference requests over HTTP: not one request may fail.
func TestSwapUnderLoad(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "swap"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate}", false))
	h.run(nil)
	arts := []*gyrev1.ObjectRef{h.storeBundle(name, "ra", false, false), h.storeBundle(name, "rbb", false, false)}
	h.promote(name, 1, arts[0], 0.9)
	h.waitServing(name, "1")

	l := h.load(name, 8, false)
	for v := int64(2); v <= 21; v++ {
		h.promote(name, v, arts[v%2], 0.9)
		h.waitServing(name, fmt.Sprint(v))
	}
	total, seen := l.stop()
	if seen < 5 {
		t.Errorf("requests saw %d versions over 20 swaps, want most of them", seen)
	}
	if n := len(h.waitEmitted(name, events.DeploymentCompleted, 21)); n != 21 {
		t.Errorf("%d deployment.completed, want 21", n)
	}
	t.Logf("%d requests, %d versions seen, 0 failed", total, seen)
}

// loadGen is steady inference traffic over HTTP from concurrent clients,
// each request's labels published after it when labelled; every request
// that does not come back 200 with a model version is a failure.
type loadGen struct {
	h        *harness
	stopped  chan struct{}
	wg       sync.WaitGroup
	total    atomic.Int64
	failed   atomic.Int64
	first    atomic.Value
	versions sync.Map
}

func (h *harness) load(name string, clients int, labelled bool) *loadGen {
	h.t.Helper()
	l := &loadGen{h: h, stopped: make(chan struct{})}
	h.mu.Lock()
	url := h.srv.URL + "/v2/models/" + name + "/infer"
	h.mu.Unlock()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 10 * time.Second}
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 99))
			for i := 0; ; i++ {
				select {
				case <-l.stopped:
					return
				default:
				}
				rows := randomRows(r, 4)
				body, _ := json.Marshal(inferBody(rows))
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(pipeline.DefaultRouteHeader, fmt.Sprintf("load-%d-%d", c, i))
				l.total.Add(1)
				resp, err := client.Do(req)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out map[string]any
				if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil || out["model_version"] == nil {
					l.fail(fmt.Sprintf("%d %s", resp.StatusCode, raw))
					continue
				}
				l.versions.Store(out["model_version"], true)
				if labelled {
					// Not Env.Emit: it would end the test from this goroutine.
					ev, err := events.New("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: labelsOf(rows, output(out, "prediction_id"))})
					if err == nil {
						err = h.env.Pub.Publish(h.env.Ctx(), ev)
					}
					if err != nil {
						h.t.Errorf("labels not published: %v", err)
					}
				}
			}
		}()
	}
	return l
}

func (l *loadGen) fail(what string) {
	l.failed.Add(1)
	l.first.CompareAndSwap(nil, what)
}

// stop ends the load and fails the test if a request failed; it returns
// the requests sent and the versions they saw.
func (l *loadGen) stop() (total int64, versions int) {
	l.h.t.Helper()
	close(l.stopped)
	l.wg.Wait()
	if n := l.failed.Load(); n > 0 {
		l.h.t.Fatalf("%d of %d requests failed; first: %v", n, l.total.Load(), l.first.Load())
	}
	l.versions.Range(func(_, _ any) bool { versions++; return true })
	return l.total.Load(), versions
}

func randomRows(r *rand.Rand, n int) []row {
	rows := make([]row, n)
	for k := range rows {
		rows[k] = row{x: r.Float64()*2 - 1, c: []string{"a", "b"}[r.IntN(2)]}
	}
	return rows
}

// labelsOf are the true labels of rows answered with prediction ids.
func labelsOf(rows []row, ids []any) []*gyrev1.Label {
	labels := make([]*gyrev1.Label, 0, len(ids))
	for k, id := range ids {
		labels = append(labels, &gyrev1.Label{PredictionId: fmt.Sprint(id), Value: truth(rows[k].x)})
	}
	return labels
}

// deployment reads the deployment status: the record's status and
// version, and the labelled predictions the rollout counted (-1 when no
// rollout runs).
func (h *harness) deployment(name string) (status string, version int64, labelled int) {
	code, body := h.do(http.MethodGet, "/v1/deployments/"+name, nil)
	if code != http.StatusOK {
		return "", 0, -1
	}
	rec, _ := body["deployment"].(map[string]any)
	status, _ = rec["status"].(string)
	v, _ := rec["version"].(float64)
	c, ok := body["rollout"].(map[string]any)
	if !ok {
		return status, int64(v), -1
	}
	l, _ := c["labelled"].(float64)
	cl, _ := c["championLabelled"].(float64)
	return status, int64(v), int(l + cl)
}

// waitDecided waits until the deployment of version is in progress or
// decided, and returns its status.
func (h *harness) waitDecided(name string, version int64) string {
	h.t.Helper()
	var status string
	looptest.WaitFor(h.t, fmt.Sprintf("rollout of %s v%d", name, version), 20*time.Second, func() bool {
		var v int64
		status, v, _ = h.deployment(name)
		return v == version && status != ""
	})
	return status
}

// startRollout serves champion as version 1, promotes candidate as
// version 2 and waits until the deployer has decided how to roll it out;
// it returns the deployment's status.
func (h *harness) startRollout(name string, champion, candidate *gyrev1.ObjectRef) string {
	h.t.Helper()
	h.promote(name, 1, champion, 0.9)
	h.waitServing(name, "1")
	h.promote(name, 2, candidate, 0.9)
	return h.waitDecided(name, 2)
}

// driven is what drive saw.
type driven struct {
	status string
	// requests sent, failed (not 200), and the answers of those that did
	// not come from the version and variant expected.
	requests, failed int
	foreign          []string
}

// drive sends labelled traffic — four rows a request, each with its own
// route key, each request's labels published right after it — until the
// rollout is over. It waits for the labels of each request to be counted,
// so that a step is judged on every label sent before it. With answeredBy
// set ("1 champion"), every answer must come from that version and variant
// and give the predictions that version gives when asked by name.
func (h *harness) drive(name, answeredBy string) driven {
	h.t.Helper()
	r := rand.New(rand.NewPCG(11, 11))
	var d driven
	labelled := 0
	for i := 0; ; i++ {
		status, _, counted := h.deployment(name)
		if !serving(status) {
			d.status = status
			return d
		}
		if i > 2000 {
			h.t.Fatalf("rollout of %s still running after %d requests", name, i)
		}
		rows := randomRows(r, 4)
		d.requests++
		code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(rows), pipeline.DefaultRouteHeader, fmt.Sprint("client-", i))
		if code != http.StatusOK {
			d.failed++
			continue
		}
		if answeredBy != "" {
			params, _ := body["parameters"].(map[string]any)
			got := fmt.Sprint(body["model_version"], " ", params["variant"])
			if got != answeredBy {
				// The rollout may have ended between reading its status and
				// this request, and the new champion answered it.
				if status, _, _ := h.deployment(name); !serving(status) {
					continue
				}
				d.foreign = append(d.foreign, got)
			}
			version := strings.Fields(answeredBy)[0]
			code, pinned := h.do(http.MethodPost, "/v2/models/"+name+"/versions/"+version+"/infer", inferBody(rows))
			if code == http.StatusNotFound {
				// The rollout may have ended between the two requests, and
				// the version answering then with it.
				if status, _, _ := h.deployment(name); !serving(status) {
					continue
				}
			}
			if code != http.StatusOK || fmt.Sprint(output(pinned, "predict")) != fmt.Sprint(output(body, "predict")) {
				d.foreign = append(d.foreign, fmt.Sprintf("predictions %v, version %s gives %v", output(body, "predict"), version, output(pinned, "predict")))
			}
		}
		labels := labelsOf(rows, output(body, "prediction_id"))
		// Every label twice: the second copy counts for nothing.
		h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: labels})
		h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: labels})
		if counted < 0 {
			continue
		}
		labelled += len(labels)
		looptest.WaitFor(h.t, "labels counted", 10*time.Second, func() bool {
			s, _, c := h.deployment(name)
			return !serving(s) || c < 0 || c >= labelled
		})
	}
}

// serving reports whether a deployment status is a rollout in progress.
func serving(status string) bool {
	switch status {
	case "canary", "shadow", "blue-green":
		return true
	}
	return false
}

// TestRollout plants candidates — worse, failing, slow, drifting, better —
// behind each strategy, drives labelled traffic through the HTTP port, and
// checks the decision and the events that carry it.
func TestRollout(t *testing.T) {
	t.Parallel()
	type model struct {
		concept func(float64) string
		withZ   bool
	}
	good, worse := model{concept: truth}, model{concept: flippedTruth}
	failing, drifting := model{concept: truth, withZ: true}, model{concept: biasedTruth}
	const canary = "{strategy: canary, steps: [50, 100], stepRequests: 20, rollback: {maxErrorRate: 0.02, maxAccuracyDrop: 0.05, minLabels: 10"
	const shadow = "{strategy: shadow, stepRequests: 30, rollback: {maxErrorRate: 0.02, maxAccuracyDrop: 0.05, minLabels: 10"
	const blueGreen = "{strategy: blue-green, stepRequests: 30, rollback: {maxErrorRate: 0.02, maxAccuracyDrop: 0.05, minLabels: 10"
	for _, tc := range []struct {
		name string
		// deployment is the spec's deployment section.
		deployment          string
		champion, candidate model
		// slowMs plants a candidate that takes that long to answer.
		slowMs int
		// warm is how many requests are served before the promotion (a
		// blue-green candidate is verified on them).
		warm int
		// answeredBy, when set, is what must answer every request of the
		// rollout ("1 champion": a shadow never answers).
		answeredBy string
		// failures: requests may fail (the candidate answers some).
		failures       bool
		wantStatus     string
		wantProgressed []int32 // traffic percent of each deployment.progressed
		wantServing    string
		wantReason     []string
		wantFigures    []string
		// wantStep and wantPercent of the deployment.rolledback.
		wantStep, wantPercent int32
	}{
		{name: "canary worse candidate rolled back", deployment: canary + "}}", champion: good, candidate: worse,
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"accuracy", "version 1 keeps serving"},
			wantFigures: []string{"accuracy", "championAccuracy", "labelled", "errorRate", "p99LatencyMs"}, wantStep: 1, wantPercent: 50},
		{name: "canary failing candidate rolled back", deployment: canary + "}}", champion: good, candidate: failing, failures: true,
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"errorRate 1 > maxErrorRate 0.02"},
			wantFigures: []string{"errorRate", "requests"}, wantStep: 1, wantPercent: 50},
		{name: "canary better candidate promoted", deployment: "{strategy: canary, steps: [25, 50, 100], stepRequests: 10, rollback: {minLabels: 10}}",
			champion: worse, candidate: good, wantStatus: "completed", wantProgressed: []int32{50}, wantServing: "2",
			wantFigures: []string{"accuracy", "championAccuracy", "p99LatencyMs", "requests"}},
		{name: "canary slow candidate rolled back", deployment: canary + ", maxLatencyP99Ms: 10}}", champion: good, candidate: good, slowMs: 25,
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"p99LatencyMs", "> maxLatencyP99Ms 10"},
			wantFigures: []string{"p99LatencyMs", "championP99LatencyMs"}, wantStep: 1, wantPercent: 50},
		// minLabels out of reach: the drift alone decides, without labels.
		{name: "canary drifting candidate rolled back", deployment: "{strategy: canary, steps: [50, 100], stepRequests: 20, rollback: {minLabels: 100000, maxPredictionDrift: 0.25}}",
			champion: good, candidate: drifting, wantStatus: "rolledback", wantServing: "1", wantReason: []string{"predictionDrift", "> maxPredictionDrift 0.25"},
			wantFigures: []string{"predictionDrift", "driftRows", "championDriftRows"}, wantStep: 1, wantPercent: 50},

		{name: "shadow worse candidate rolled back", deployment: shadow + "}}", champion: good, candidate: worse, answeredBy: "1 champion",
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"accuracy", "version 1 keeps serving"},
			wantFigures: []string{"accuracy", "championAccuracy"}, wantStep: 1, wantPercent: 0},
		{name: "shadow failing candidate rolled back", deployment: shadow + "}}", champion: good, candidate: failing, answeredBy: "1 champion",
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"errorRate 1 > maxErrorRate 0.02"},
			wantFigures: []string{"errorRate"}, wantStep: 1, wantPercent: 0},
		{name: "shadow slow candidate rolled back", deployment: shadow + ", maxLatencyP99Ms: 10}}", champion: good, candidate: good, slowMs: 25, answeredBy: "1 champion",
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"p99LatencyMs", "> maxLatencyP99Ms 10"},
			wantFigures: []string{"p99LatencyMs"}, wantStep: 1, wantPercent: 0},
		{name: "shadow drifting candidate rolled back", deployment: "{strategy: shadow, stepRequests: 30, rollback: {minLabels: 100000, maxPredictionDrift: 0.25}}",
			champion: good, candidate: drifting, answeredBy: "1 champion", wantStatus: "rolledback", wantServing: "1",
			wantReason: []string{"predictionDrift"}, wantFigures: []string{"predictionDrift"}, wantStep: 1, wantPercent: 0},
		{name: "shadow better candidate promoted", deployment: shadow + "}}", champion: worse, candidate: good, answeredBy: "1 champion",
			wantStatus: "completed", wantServing: "2", wantFigures: []string{"accuracy", "championAccuracy", "requests"}},

		{name: "blue-green better candidate switched and kept", deployment: blueGreen + "}}", champion: worse, candidate: good, warm: 20,
			wantStatus: "completed", wantProgressed: []int32{100}, wantServing: "2", wantFigures: []string{"accuracy", "championAccuracy"}},
		{name: "blue-green worse candidate switched back", deployment: blueGreen + "}}", champion: good, candidate: worse, warm: 20,
			wantStatus: "rolledback", wantProgressed: []int32{100}, wantServing: "1",
			wantReason: []string{"accuracy", "all traffic switched back to version 1"}, wantFigures: []string{"accuracy", "championAccuracy"},
			wantStep: 1, wantPercent: 100},
		{name: "blue-green failing candidate never switched", deployment: blueGreen + "}}", champion: good, candidate: failing, warm: 20,
			wantStatus: "rolledback", wantServing: "1", wantReason: []string{"verification failed", "missing input", "version 1 keeps serving"},
			wantFigures: []string{"verifiedRequests"}, wantStep: 0, wantPercent: 0},
		{name: "blue-green drifting candidate never switched", deployment: "{strategy: blue-green, rollback: {maxPredictionDrift: 0.25}}",
			champion: good, candidate: drifting, warm: 20, wantStatus: "rolledback", wantServing: "1",
			wantReason: []string{"verification failed", "predictionDrift"}, wantFigures: []string{"verifyPredictionDrift", "verifiedRows"}, wantStep: 0, wantPercent: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			name := strings.ReplaceAll(tc.name, " ", "-")
			h.env.ApplyPipeline(spec(name, tc.deployment, false))
			h.run(nil)
			if tc.slowMs > 0 {
				deployer.InjectBeforePredict(h.svc, func(version int64) {
					if version == 2 {
						time.Sleep(time.Duration(tc.slowMs) * time.Millisecond)
					}
				})
			}
			// The first model goes live at once: nothing to compare it with.
			h.promote(name, 1, h.storeBundleOf(name, "champion", tc.champion.concept, tc.champion.withZ), 0.9)
			h.waitServing(name, "1")
			r := rand.New(rand.NewPCG(5, 5))
			for range tc.warm {
				if code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(randomRows(r, 4))); code != http.StatusOK {
					t.Fatalf("warm-up request: %d %v", code, body)
				}
			}
			promoted := h.promote(name, 2, h.storeBundleOf(name, "candidate", tc.candidate.concept, tc.candidate.withZ), 0.9)
			h.waitDecided(name, 2)
			d := h.drive(name, tc.answeredBy)
			if d.status != tc.wantStatus {
				t.Fatalf("rollout ended %s, want %s", d.status, tc.wantStatus)
			}
			// The record (what drive read) is written before its events are
			// published: wait for the last of them.
			if tc.wantStatus == "completed" {
				h.waitEmitted(name, events.DeploymentCompleted, 2)
			} else {
				h.waitEmitted(name, events.DeploymentRolledBack, 1)
			}
			if d.failed > 0 && !tc.failures {
				t.Errorf("%d of %d requests failed", d.failed, d.requests)
			}
			if len(d.foreign) > 0 {
				t.Errorf("%d of %d answers not from %s, e.g. %v", len(d.foreign), d.requests, tc.answeredBy, d.foreign[0])
			}
			if v := h.servingVersion(name); v != tc.wantServing {
				t.Errorf("serving version %s, want %s", v, tc.wantServing)
			}
			started := h.env.Events(name, events.DeploymentStarted)
			if len(started) != 2 {
				t.Fatalf("%d deployment.started, want 2", len(started))
			}
			strategy := strings.Fields(strings.Trim(tc.deployment, "{}"))[1]
			strategy = strings.TrimSuffix(strategy, ",")
			if s := looptest.Decode(t, started[1], &gyrev1.DeploymentStarted{}); s.Strategy != strategy || s.PreviousVersion != 1 || s.ModelVersion != 2 {
				t.Errorf("deployment.started = %v, want strategy %s", s, strategy)
			}
			progressed := h.env.Events(name, events.DeploymentProgressed)
			var percents []int32
			for _, ev := range progressed {
				p := looptest.Decode(t, ev, &gyrev1.DeploymentProgressed{})
				percents = append(percents, p.TrafficPercent)
				if p.Strategy != strategy || p.Step != int32(len(percents)+btoi(strategy == "canary")) || len(p.Figures) == 0 {
					t.Errorf("deployment.progressed = %v", p)
				}
			}
			if fmt.Sprint(percents) != fmt.Sprint(tc.wantProgressed) {
				t.Errorf("deployment.progressed at %v %%, want %v", percents, tc.wantProgressed)
			}
			var final []event.Event
			var figures map[string]float64
			if tc.wantStatus == "completed" {
				final = h.env.Events(name, events.DeploymentCompleted)[1:]
				c := looptest.Decode(t, final[0], &gyrev1.DeploymentCompleted{})
				if c.ModelVersion != 2 || c.PreviousVersion != 1 || c.TrafficPercent != 100 || c.Strategy != strategy {
					t.Errorf("deployment.completed = %v", c)
				}
				figures = c.Figures
			} else {
				final = h.env.Events(name, events.DeploymentRolledBack)
				rb := looptest.Decode(t, final[0], &gyrev1.DeploymentRolledBack{})
				if rb.ModelVersion != 2 || rb.PreviousVersion != 1 || rb.Step != tc.wantStep || rb.TrafficPercent != tc.wantPercent || rb.Strategy != strategy {
					t.Errorf("deployment.rolledback = %v, want step %d at %d %%", rb, tc.wantStep, tc.wantPercent)
				}
				for _, w := range tc.wantReason {
					if !strings.Contains(rb.Reason, w) {
						t.Errorf("rolledback reason %q does not name %q", rb.Reason, w)
					}
				}
				figures = rb.Figures
			}
			if len(final) != 1 {
				t.Fatalf("%d final events, want 1", len(final))
			}
			for _, f := range tc.wantFigures {
				if _, ok := figures[f]; !ok {
					t.Errorf("figures %v lack %s", figures, f)
				}
			}
			if tc.slowMs > 0 && figures["p99LatencyMs"] < float64(tc.slowMs) {
				t.Errorf("p99LatencyMs %v of a candidate that takes %d ms", figures["p99LatencyMs"], tc.slowMs)
			}
			// The rollout's events belong to the promotion's cascade.
			if got := bus.Ext(final[0], bus.ExtCausationID); got != promoted.ID() {
				t.Errorf("causationid %q, want the model.promoted %s", got, promoted.ID())
			}
			if got := bus.Ext(final[0], bus.ExtCorrelationID); got != bus.CauseOf(promoted).CorrelationID {
				t.Errorf("correlationid %q, want the promotion's", got)
			}
			// Each variant's traffic is logged as such.
			want := map[string]string{"canary": "canary", "shadow": "shadow", "blue-green": "canary"}[strategy]
			if tc.candidate.withZ || tc.wantStep == 0 && tc.wantStatus == "rolledback" {
				want = ""
			}
			if want != "" {
				looptest.WaitFor(t, "prediction.logged of the candidate", 10*time.Second, func() bool {
					for _, ev := range h.env.Events(name, events.PredictionLogged) {
						if looptest.Decode(t, ev, &gyrev1.PredictionLogged{}).Variant == want {
							return true
						}
					}
					return false
				})
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestShadowNeverDelaysAnswers stalls the shadow candidate completely: the
// champion still answers every request, and the shadow is judged once it
// is released.
func TestShadowNeverDelaysAnswers(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "stalled-shadow"
	h.env.ApplyPipeline(spec(name, "{strategy: shadow, stepRequests: 20, rollback: {minLabels: 100000}}", false))
	h.run(nil)
	release := make(chan struct{})
	var stalled atomic.Int64
	deployer.InjectBeforePredict(h.svc, func(version int64) {
		if version == 2 {
			stalled.Add(1)
			<-release
		}
	})
	h.startRollout(name, h.storeBundle(name, "champion", false, false), h.storeBundle(name, "candidate", false, false))
	r := rand.New(rand.NewPCG(1, 1))
	for i := range 200 {
		code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(randomRows(r, 4)))
		if code != http.StatusOK || body["model_version"] != "1" {
			close(release)
			t.Fatalf("request %d with the shadow stalled: %d %v", i, code, body)
		}
	}
	if stalled.Load() == 0 {
		t.Error("the shadow was never called")
	}
	status, _, _ := h.deployment(name)
	close(release)
	if status != "shadow" {
		t.Fatalf("status %s while the shadow was stalled, want shadow", status)
	}
	// Released, the shadow scores what it holds; more traffic reaches
	// the step.
	for range 40 {
		h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(randomRows(r, 4)))
	}
	evs := h.waitEmitted(name, events.DeploymentCompleted, 2)
	c := looptest.Decode(t, evs[1], &gyrev1.DeploymentCompleted{})
	if c.ModelVersion != 2 || c.Figures["mirrorSkipped"] == 0 {
		t.Errorf("deployment.completed = %v, want version 2 with the requests not mirrored counted", c)
	}
}

// TestStickyRouting: during a canary step, a request carrying the
// pipeline's route header always gets the same variant.
func TestStickyRouting(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "sticky"
	h.env.ApplyPipeline(spec(name, "{strategy: canary, steps: [50, 100], stepRequests: 100000, routeHeader: X-Tenant}", false))
	h.run(nil)
	h.startRollout(name, h.storeBundle(name, "champion", false, false), h.storeBundle(name, "candidate", false, false))
	r := rand.New(rand.NewPCG(2, 2))
	variants := map[string]string{}
	perVariant := map[string]int{}
	for round := range 3 {
		for k := range 60 {
			key := fmt.Sprint("tenant-", k)
			code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(randomRows(r, 1)), "X-Tenant", key)
			if code != http.StatusOK {
				t.Fatalf("%d %v", code, body)
			}
			params, _ := body["parameters"].(map[string]any)
			got := fmt.Sprint(body["model_version"], " ", params["variant"])
			if round == 0 {
				variants[key] = got
				perVariant[got]++
			} else if variants[key] != got {
				t.Errorf("key %s answered by %s, then by %s", key, variants[key], got)
			}
		}
	}
	// 60 keys at 50 %: both variants have some (30 ± 4 expected).
	if perVariant["1 champion"] < 15 || perVariant["2 canary"] < 15 {
		t.Errorf("keys per variant %v, want about half each", perVariant)
	}
}

// TestRollbackUnderLoad: under steady load from concurrent clients, with
// labels fed back, worse candidates are rolled back and good ones
// promoted, with each strategy, and not one request fails.
func TestRollbackUnderLoad(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{"canary", "shadow", "blue-green"} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			name := "load-" + strategy
			dep := "{strategy: " + strategy + ", stepRequests: 100, rollback: {minLabels: 20, maxAccuracyDrop: 0.05}}"
			if strategy == "canary" {
				dep = "{strategy: canary, steps: [30, 100], stepRequests: 60, rollback: {minLabels: 20, maxAccuracyDrop: 0.05}}"
			}
			h.env.ApplyPipeline(spec(name, dep, false))
			h.run(nil)
			goodArt := h.storeBundle(name, "good", false, false)
			worseArt := h.storeBundle(name, "worse", true, false)
			h.promote(name, 1, goodArt, 0.9)
			h.waitServing(name, "1")
			l := h.load(name, 8, true)
			wantBack, wantDone := 0, 1
			for v := int64(2); v <= 5; v++ {
				art := goodArt
				if v%2 == 0 {
					art, wantBack = worseArt, wantBack+1
				} else {
					wantDone++
				}
				h.promote(name, v, art, 0.9)
				h.waitEmitted(name, events.DeploymentRolledBack, wantBack)
				h.waitEmitted(name, events.DeploymentCompleted, wantDone)
			}
			total, _ := l.stop()
			for _, ev := range h.env.Events(name, events.DeploymentRolledBack) {
				if rb := looptest.Decode(t, ev, &gyrev1.DeploymentRolledBack{}); rb.ModelVersion%2 != 0 || !strings.Contains(rb.Reason, "accuracy") {
					t.Errorf("deployment.rolledback = %v, want the even (worse) versions, on accuracy", rb)
				}
			}
			if v := h.servingVersion(name); v != "5" {
				t.Errorf("serving %s after the rollouts, want 5", v)
			}
			t.Logf("%s: %d requests, 0 failed, 2 rolled back, 2 promoted", strategy, total)
		})
	}
}

// TestRestoreAfterRestart: a new deployer serves what the last one served,
// a rollout in progress included, without any new event.
func TestRestoreAfterRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		strategy, deployment, versions string
	}{
		{"canary", "{strategy: canary, steps: [30, 100], stepRequests: 1000}", "[1 2]"},
		{"shadow", "{strategy: shadow, stepRequests: 1000}", "[1 2]"},
		{"blue-green", "{strategy: blue-green, stepRequests: 1000}", "[2 1]"},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			name := "restore-" + tc.strategy
			h.env.ApplyPipeline(spec(name, tc.deployment, false))
			stop := h.run(nil)
			if s := h.startRollout(name, h.storeBundle(name, "r1", false, false), h.storeBundle(name, "r2", false, false)); s != tc.strategy {
				t.Fatalf("status %s, want the rollout in progress", s)
			}
			stop()

			h.run(nil)
			code, body := h.do(http.MethodGet, "/v2/models/"+name, nil)
			if code != http.StatusOK || fmt.Sprint(body["versions"]) != tc.versions {
				t.Fatalf("after restart: metadata %d %v, want versions %s", code, body["versions"], tc.versions)
			}
			status, _, labelled := h.deployment(name)
			if status != tc.strategy || labelled != 0 {
				t.Errorf("after restart: %s with %d labelled, want the rollout resumed", status, labelled)
			}
			code, body = h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody([]row{{0.5, "a"}}))
			if code != http.StatusOK {
				t.Fatalf("infer after restart = %d %v", code, body)
			}
			if n := len(h.env.Events(name, events.DeploymentStarted)); n != 2 {
				t.Errorf("%d deployment.started after restart, want 2", n)
			}
		})
	}
}

// TestRolloutMetrics scrapes /metrics during a canary and after an
// immediate deployment: the champion's version per pipeline, and the
// candidate's version and traffic share only while a rollout is in progress.
func TestRolloutMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env.ApplyPipeline(spec("metrics-canary", "{strategy: canary, steps: [50, 100], stepRequests: 100000}", false))
	h.env.ApplyPipeline(spec("metrics-immediate", "{strategy: immediate}", false))
	h.run(nil)
	h.startRollout("metrics-canary", h.storeBundle("metrics-canary", "champion", false, false), h.storeBundle("metrics-canary", "candidate", false, false))
	h.promote("metrics-immediate", 1, h.storeBundle("metrics-immediate", "champion", false, false), 0.9)
	h.waitServing("metrics-immediate", "1")

	text := h.scrape()
	for _, tc := range []struct {
		series string
		want   bool
	}{
		{`gyre_deployer_champion_version{pipeline="metrics-canary"} 1`, true},
		{`gyre_deployer_candidate_version{pipeline="metrics-canary",strategy="canary"} 2`, true},
		{`gyre_deployer_candidate_traffic_percent{pipeline="metrics-canary",strategy="canary"} 50`, true},
		{`gyre_deployer_champion_version{pipeline="metrics-immediate"} 1`, true},
		{`gyre_deployer_candidate_version{pipeline="metrics-immediate"`, false},
	} {
		if got := strings.Contains(text, tc.series); got != tc.want {
			t.Errorf("/metrics has %s: %v, want %v", tc.series, got, tc.want)
		}
	}
}
