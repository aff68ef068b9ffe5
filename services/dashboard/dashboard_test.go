package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gyrev1 "github.com/gyrehq/gyre/events/gyrev1"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/dashboard"
)

func build(keep int) servicetest.Build {
	return func(url string, deps service.Deps) (service.Runner, error) {
		cfg := dashboard.DefaultConfig()
		cfg.NATSURL = url
		cfg.KeepEvents = keep
		return dashboard.New(cfg, deps)
	}
}

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers (none: it reads with ordered consumers), turns ready,
// and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	servicetest.Check(t, build(dashboard.DefaultKeepEvents), events.ServiceConsumers()[dashboard.Name])
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cfg := dashboard.DefaultConfig()
	cfg.KeepEvents = 0
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "keep-events") || !strings.Contains(err.Error(), dashboard.EnvKeepEvents) {
		t.Errorf("Validate with keep-events 0 = %v, want an error naming the flag and %s", err, dashboard.EnvKeepEvents)
	}
}

// sse reads server-sent events from a live feed.
type sse struct {
	t    *testing.T
	body io.ReadCloser
	r    *bufio.Reader
}

type message struct {
	id, event, data string
}

func openFeed(t *testing.T, base string, lastID string) *sse {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/api/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /api/stream: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &sse{t: t, body: resp.Body, r: bufio.NewReader(resp.Body)}
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// next returns the next event, skipping comments and the retry field.
func (s *sse) next() message {
	s.t.Helper()
	var m message
	got := make(chan error, 1)
	go func() {
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				got <- err
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "" && m.event != "":
				got <- nil
				return
			case strings.HasPrefix(line, "id: "):
				m.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				m.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				m.data = line[6:]
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			s.t.Fatalf("read the feed: %v", err)
		}
	case <-time.After(10 * time.Second):
		s.body.Close()
		s.t.Fatal("no event on the feed within 10s")
	}
	return m
}

// until reads until an update whose entry has the given type and returns it.
func (s *sse) until(name string) dashboard.Update {
	s.t.Helper()
	for {
		m := s.next()
		if m.event != "update" {
			continue
		}
		var u dashboard.Update
		if err := json.Unmarshal([]byte(m.data), &u); err != nil {
			s.t.Fatalf("update %s: %v", m.data, err)
		}
		if fmt.Sprint(u.Entry.Seq) != m.id {
			s.t.Errorf("update id %s, entry seq %d", m.id, u.Entry.Seq)
		}
		if u.Entry.Type == name {
			return u
		}
	}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode
}

// TestLiveFeed drives the dashboard with real events on a JetStream server:
// the live feed carries each event and its pipeline's new state, a browser
// that reconnects gets what it missed, a message that is no CloudEvent is
// skipped and counted, and a restarted dashboard shows the same state from
// the stream's history.
func TestLiveFeed(t *testing.T) {
	r := servicetest.Start(t, build(100))
	svc := r.Services[0].(*dashboard.Service)
	web := httptest.NewServer(svc.Handler())
	// Cleanups run last first: the feeds opened below close before this.
	t.Cleanup(web.Close)

	// The page itself.
	resp, err := http.Get(web.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "new EventSource(") {
		t.Fatalf("GET /: %s, %d bytes", resp.Status, len(page))
	}

	feed := openFeed(t, web.URL, "")
	if m := feed.next(); m.event != "snapshot" {
		t.Fatalf("first event %q, want snapshot", m.event)
	}

	r.Publish(t, "elec2", &gyrev1.ModelPromoted{Pipeline: "elec2", ModelVersion: 1, Alias: "champion", Reason: "first model", Algorithm: "gbdt"})
	started := r.Publish(t, "elec2", &gyrev1.DeploymentStarted{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 1, Strategy: "canary", Steps: []int32{25, 100}})
	u := feed.until(events.DeploymentStarted)
	if u.Entry.ID != started.ID() || u.Entry.Pipeline != "elec2" || u.Pipeline.Rollout == nil || u.Pipeline.Rollout.State != dashboard.RolloutInProgress {
		t.Fatalf("update = %+v", u)
	}
	if u.Pipeline.Champion == nil || u.Pipeline.Champion.Version != 1 {
		t.Errorf("champion = %+v", u.Pipeline.Champion)
	}
	if !strings.Contains(u.Entry.Summary, "canary rollout of model 1 started") || !strings.Contains(string(u.Entry.Data), `"deploymentId":"d1"`) {
		t.Errorf("entry = %+v", u.Entry)
	}
	lastSeen := fmt.Sprint(u.Entry.Seq)
	// The browser goes away; two events pass.
	feed.body.Close()
	r.Publish(t, "elec2", &gyrev1.DeploymentProgressed{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 1, Strategy: "canary", Step: 1, TrafficPercent: 25})
	r.Publish(t, "elec2", &gyrev1.DeploymentCompleted{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 1, Strategy: "canary", TrafficPercent: 100, DurationMs: 1200})

	// A message on the lifecycle subjects that is no CloudEvent.
	subject, err := events.Subject("elec2", events.DataBatchArrived)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.JS.Publish(context.Background(), subject, []byte("not an event")); err != nil {
		t.Fatal(err)
	}

	// It reconnects with the last id it saw: no reset, the two it missed.
	again := openFeed(t, web.URL, lastSeen)
	snap := again.next()
	var s struct {
		Reset bool `json:"reset"`
	}
	if err := json.Unmarshal([]byte(snap.data), &s); snap.event != "snapshot" || err != nil || s.Reset {
		t.Fatalf("first event on resuming: %+v (%v)", snap, err)
	}
	var missed []string
	for len(missed) < 2 {
		// As missed entries, or as updates when the dashboard had not
		// read them yet.
		m := again.next()
		var u dashboard.Update
		var err error
		switch m.event {
		case "entry":
			err = json.Unmarshal([]byte(m.data), &u.Entry)
		case "update":
			err = json.Unmarshal([]byte(m.data), &u)
		default:
			err = fmt.Errorf("unexpected event")
		}
		if err != nil {
			t.Fatalf("on resuming: %+v (%v)", m, err)
		}
		missed = append(missed, u.Entry.Type)
	}
	if strings.Join(missed, ",") != "deployment.progressed,deployment.completed" {
		t.Errorf("missed = %v", missed)
	}

	// The state, and the skipped message counted.
	waitFor(t, func() bool { return metric(t, svc.Handler(), `gyre_dashboard_events_total{outcome="skipped"}`) == "1" })
	var state struct {
		CaughtUp  bool                 `json:"caughtUp"`
		Pipelines []dashboard.Pipeline `json:"pipelines"`
	}
	getJSON(t, web.URL+"/api/pipelines", &state)
	want := func(state []dashboard.Pipeline) {
		t.Helper()
		if len(state) != 1 || state[0].Serving == nil || state[0].Serving.Version != 1 || state[0].Rollout.State != dashboard.RolloutCompleted ||
			len(state[0].Rollout.Steps) != 2 || state[0].Events != 4 {
			t.Errorf("pipelines = %+v", state)
		}
	}
	if !state.CaughtUp {
		t.Error("caughtUp = false")
	}
	want(state.Pipelines)

	// Filters, and a bad one named.
	var got struct {
		Entries []dashboard.Entry `json:"entries"`
	}
	getJSON(t, web.URL+"/api/events?pipeline=elec2&type=deployment.progressed", &got)
	if len(got.Entries) != 1 || got.Entries[0].Type != events.DeploymentProgressed {
		t.Errorf("filtered entries = %+v", got.Entries)
	}
	for query, param := range map[string]string{"limit=-1": "limit", "type=model.exploded": "type", "pipeline=Bad_Name": "pipeline", "after=x": "after"} {
		var e struct {
			Error string `json:"error"`
		}
		if code := getJSON(t, web.URL+"/api/events?"+query, &e); code != http.StatusBadRequest || !strings.HasPrefix(e.Error, param+":") {
			t.Errorf("GET /api/events?%s: %d %q, want 400 naming %s", query, code, e.Error, param)
		}
	}

	// A second dashboard, as after a restart, reads the same state from the
	// stream's history.
	cfg := service.Defaults("127.0.0.1:0")
	cfg.NATSURL = r.URL
	proc, err := service.Connect(context.Background(), cfg, "restarted", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close(context.Background())
	svc2, err := build(100)(r.URL, proc.Deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc2.Run(ctx) }()
	board := svc2.(*dashboard.Service).Board()
	waitFor(t, func() bool { return board.Count() >= 4 })
	want(board.Snapshot().Pipelines)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric returns a sample's value from the handler's /metrics.
func metric(t *testing.T, h http.Handler, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}
