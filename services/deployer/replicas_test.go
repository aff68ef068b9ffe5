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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer"
)

// replica is one deployer replica of a test: its own connection, its own
// HTTP server.
type replica struct {
	id   string
	svc  *deployer.Service
	url  string
	stop func()
}

// startReplica runs a deployer replica named id on the harness's server.
func (h *harness) startReplica(id string) *replica {
	h.t.Helper()
	c := deployer.DefaultConfig()
	c.VerifyKeys = looptest.VerifyKeyFile(h.t)
	c.HTTPAuth = service.HTTPAuthNone
	c.NATSURL, c.HTTPAddr, c.ReplicaID = h.env.Server.URL, "127.0.0.1:0", id
	proc, err := service.Connect(context.Background(), c.Config, "deployer-"+id, service.WithLogOutput(testLogOut()))
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
	stop := func() {
		once.Do(func() {
			srv.Close()
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("replica %s Run: %v", id, err)
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			_ = proc.Close(cctx)
		})
	}
	h.t.Cleanup(stop)
	looptest.WaitFor(h.t, "replica "+id+" ready", 15*time.Second, func() bool { return svc.Readiness().Ready })
	return &replica{id: id, svc: svc, url: srv.URL, stop: stop}
}

// serving returns the version a replica serves a pipeline with ("" when
// none).
func (r *replica) serving(name string) string {
	resp, err := httpClient.Get(r.url + "/v2/models/" + name)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var body struct {
		Versions []string `json:"versions"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &body) != nil || len(body.Versions) == 0 {
		return ""
	}
	return body.Versions[0]
}

// controller returns the readiness detail of the replica's controller check.
func (r *replica) controller() string {
	for _, c := range r.svc.Readiness().Checks {
		if c.Name == "controller" {
			return c.Detail
		}
	}
	return ""
}

func leaders(rs ...*replica) []string {
	var out []string
	for _, r := range rs {
		if strings.HasPrefix(r.controller(), "controlling") {
			out = append(out, r.id)
		}
	}
	return out
}

// TestReplicasServeEachPromotion: two replicas watch the desired state;
// exactly one controls the rollouts; each of 20 promotions is served by
// both within 2 s (p95, measured from the registry's write); when the
// controller stops, the other takes over and serves the next promotion.
func TestReplicasServeEachPromotion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "replicas"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate}", false))
	a, b := h.startReplica("a"), h.startReplica("b")
	looptest.WaitFor(t, "one controller", 10*time.Second, func() bool { return len(leaders(a, b)) == 1 })

	refs := []*gyrev1.ObjectRef{h.storeBundle(name, "r-even", false, false), h.storeBundle(name, "r-odd", true, false)}
	var lags []time.Duration
	for v := int64(1); v <= 20; v++ {
		start := time.Now()
		h.promote(name, v, refs[v%2], 0.9)
		want := fmt.Sprint(v)
		looptest.WaitFor(t, fmt.Sprintf("both replicas serving v%d", v), 10*time.Second, func() bool {
			return a.serving(name) == want && b.serving(name) == want
		})
		lags = append(lags, time.Since(start))
		if got := leaders(a, b); len(got) != 1 {
			t.Fatalf("controllers %v, want exactly one", got)
		}
	}
	slices.Sort(lags)
	p95 := lags[int(0.95*float64(len(lags)))-1]
	t.Logf("promotion served by both replicas: p50 %s, p95 %s, max %s over %d promotions",
		lags[len(lags)/2].Round(time.Millisecond), p95.Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond), len(lags))
	if p95 > 2*time.Second {
		t.Errorf("p95 %s to serve a promotion on both replicas, want under 2s", p95)
	}

	// The controller stops: the other replica takes over (the lease is
	// given back), and a promotion is served again.
	first, other := a, b
	if leaders(a, b)[0] == "b" {
		first, other = b, a
	}
	first.stop()
	looptest.WaitFor(t, "the other replica controlling", 10*time.Second, func() bool { return len(leaders(other)) == 1 })
	h.promote(name, 21, refs[1], 0.9)
	looptest.WaitFor(t, "v21 served after the handover", 10*time.Second, func() bool { return other.serving(name) == "21" })
}

// TestStepsAreJudgedOnEveryReplicasTraffic: a canary step is judged on the
// traffic of all replicas: requests sent only to the replica that does not
// control the rollouts still roll a failing candidate back.
func TestStepsAreJudgedOnEveryReplicasTraffic(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "tallied"
	h.env.ApplyPipeline(spec(name, "{strategy: canary, steps: [50, 100], stepRequests: 20, rollback: {maxErrorRate: 0.1}}", false))
	a, b := h.startReplica("a"), h.startReplica("b")
	looptest.WaitFor(t, "one controller", 10*time.Second, func() bool { return len(leaders(a, b)) == 1 })
	standby := a
	if leaders(a, b)[0] == "a" {
		standby = b
	}
	h.promote(name, 1, h.storeBundle(name, "good", false, false), 0.9)
	looptest.WaitFor(t, "v1 on both", 10*time.Second, func() bool { return a.serving(name) == "1" && b.serving(name) == "1" })
	// The candidate takes an input z the traffic lacks: every request it
	// answers fails.
	h.promote(name, 2, h.storeBundle(name, "needs-z", false, true), 0.9)
	looptest.WaitFor(t, "the canary on the standby", 10*time.Second, func() bool {
		resp, err := httpClient.Get(standby.url + "/v1/deployments/" + name)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Deployment struct{ Status string } `json:"deployment"`
		}
		return json.NewDecoder(resp.Body).Decode(&body) == nil && body.Deployment.Status == "canary"
	})
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; len(h.env.Events(name, events.DeploymentRolledBack)) == 0; i++ {
		if i > 2000 {
			t.Fatal("no rollback after 2000 requests to the standby")
		}
		body, _ := json.Marshal(inferBody(randomRows(r, 2)))
		resp, err := httpClient.Post(standby.url+"/v2/models/"+name+"/infer", "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
		}
	}
	rb := looptest.Decode(t, h.env.Events(name, events.DeploymentRolledBack)[0], &gyrev1.DeploymentRolledBack{})
	if rb.GetModelVersion() != 2 || rb.GetFigures()["requests"] < 20 || !strings.Contains(rb.GetReason(), "errorRate") {
		t.Fatalf("deployment.rolledback %+v, want v2 rolled back on the standby's %s requests", rb, "20+")
	}
	t.Logf("rolled back on the standby's traffic: %s", rb.GetReason())
}
