package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
)

func TestUpFlagValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"http not host:port", []string{"--http", "8080"}, "--http (env GYRE_HTTP_ADDR)"},
		{"nats scheme", []string{"--nats", "http://127.0.0.1:4222"}, "--nats (env GYRE_NATS_URL)"},
		{"nats and nats-listen", []string{"--nats", "nats://127.0.0.1:4222", "--nats-listen", "127.0.0.1:4333"}, "--nats-listen"},
		{"nats-listen not host:port", []string{"--nats-listen", "4222"}, "--nats-listen (env GYRE_NATS_LISTEN)"},
		{"empty data dir", []string{"--data-dir", ""}, "--data-dir"},
		{"log level", []string{"--log-level", "loud"}, "--log-level"},
		{"trace exporter", []string{"--trace-exporter", "jaeger"}, "--trace-exporter"},
		{"shutdown timeout", []string{"--shutdown-timeout", "0s"}, "--shutdown-timeout"},
		{"arguments", []string{"now"}, `unknown command "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"up", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0"}, tt.args...)
			_, _, err := execute(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("up %v: error %v, want it to contain %q", tt.args, err, tt.want)
			}
		})
	}
}

// runUpUntilReady starts `gyre up` against url and waits for it to say it
// is ready; stop it with the returned function, which checks a clean exit.
func runUpUntilReady(t *testing.T, url, dir string) (inv *invocation, state upState, stop func()) {
	t.Helper()
	return runUpWith(t, dir, "--nats", url)
}

// runUpWith starts `gyre up` with args and waits until it is ready (see
// runUpUntilReady).
func runUpWith(t *testing.T, dir string, args ...string) (inv *invocation, state upState, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inv = start(ctx, append([]string{"up", "--http", "127.0.0.1:0", "--data-dir", dir}, args...)...)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(inv.stdout.String(), "\nReady.") {
		select {
		case <-inv.done:
			cancel()
			t.Fatalf("up returned before it was ready: %v\nstdout:\n%s\nstderr:\n%s", inv.err, inv.stdout.String(), inv.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-inv.done
			t.Fatalf("up not ready after 30s\nstdout:\n%s\nstderr:\n%s", inv.stdout.String(), inv.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	state, err := readState(dir)
	if err != nil {
		cancel()
		<-inv.done
		t.Fatalf("state file: %v", err)
	}
	stop = func() {
		t.Helper()
		cancel()
		select {
		case <-inv.done:
		case <-time.After(30 * time.Second):
			t.Fatal("up did not stop within 30s of cancel")
		}
		if inv.err != nil {
			t.Fatalf("up exited with %v\nstderr:\n%s", inv.err, inv.stderr.String())
		}
		if !strings.HasSuffix(inv.stdout.String(), "Stopped.\n") {
			t.Errorf("up did not say it stopped:\n%s", inv.stdout.String())
		}
		if _, err := readState(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("state file after a clean exit: %v, want it removed", err)
		}
	}
	return inv, state, stop
}

// reportLines returns the provisioning report: the lines between
// "Provisioning" and the first blank line.
func reportLines(out string) []string {
	_, after, ok := strings.Cut(out, "Provisioning the topology on ")
	if !ok {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(after, "\n")[1:] {
		if strings.TrimSpace(l) == "" {
			break
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	return lines
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestUpProvisionsServesAndStopsCleanly(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	topology := bus.FullTopology()
	wantLines := len(topology.Streams) + len(events.DurableConsumers()) + len(topology.KeyValues) + len(topology.ObjectStores)

	inv, state, stop := runUpUntilReady(t, srv.URL, dir)
	if state.NATSURL != srv.URL || !strings.HasPrefix(state.HTTPURL, "http://127.0.0.1:") || state.StartedAt.IsZero() {
		t.Fatalf("state file %+v", state)
	}
	if got := len(reportLines(inv.stdout.String())); got != wantLines {
		t.Fatalf("report has %d lines, want %d:\n%s", got, wantLines, inv.stdout.String())
	}

	endpoints := []struct {
		path     string
		contains string
	}{
		{"/healthz", `"status":"ok"`},
		{"/readyz", `"status":"ready"`},
		{"/metrics", "go_goroutines"},
		{"/", `"/services/ingest/"`},
		{"/services/ingest/healthz", `"service":"ingest"`},
		{"/services/trainer/readyz", `"service":"trainer"`},
		{"/services/dashboard/metrics", "process_"},
	}
	for _, e := range endpoints {
		code, body := httpGet(t, state.HTTPURL+e.path)
		if code != http.StatusOK || !strings.Contains(body, e.contains) {
			t.Errorf("GET %s = %d, want 200 containing %q:\n%.300s", e.path, code, e.contains, body)
		}
	}
	// The APIs are authenticated: the registry's read API refuses a request
	// without a token, and takes the admin token up keeps for the CLI; the
	// dashboard's read token reads, and cannot promote.
	models := state.HTTPURL + "/services/registry/v1/pipelines/nope/models"
	if code, body := httpGet(t, models); code != http.StatusUnauthorized {
		t.Errorf("GET %s without a token = %d %s, want 401", models, code, body)
	}
	for _, tc := range []struct {
		file, method, path string
		want               int
	}{
		{adminTokenFile, http.MethodGet, models, http.StatusNotFound},
		{readTokenFile, http.MethodGet, models, http.StatusNotFound},
		{readTokenFile, http.MethodPost, state.HTTPURL + "/services/registry/v1/pipelines/nope/rollback", http.StatusForbidden},
	} {
		secret, err := os.ReadFile(filepath.Join(dir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(tc.method, tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(secret)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s with %s = %d, want %d", tc.method, tc.path, tc.file, resp.StatusCode, tc.want)
		}
	}
	var health struct{ Services []string }
	_, body := httpGet(t, state.HTTPURL+"/healthz")
	if err := json.Unmarshal([]byte(body), &health); err != nil || !slices.Equal(health.Services, events.ServiceNames()) {
		t.Errorf("/healthz services %v (%v), want every service %v", health.Services, err, events.ServiceNames())
	}
	stop()

	_, js := srv.Connect(t)
	ctx := context.Background()
	for _, s := range []string{events.StreamEvents, events.StreamDLQ, events.StreamJobs, events.StreamPredictions} {
		if _, err := js.Stream(ctx, s); err != nil {
			t.Errorf("stream %s: %v", s, err)
		}
	}
	for _, c := range events.DurableConsumers() {
		if _, err := js.Consumer(ctx, c.Stream, c.Durable()); err != nil {
			t.Errorf("consumer %s/%s: %v", c.Stream, c.Durable(), err)
		}
	}
	for _, kv := range events.KeyValues() {
		if _, err := js.KeyValue(ctx, kv.Bucket); err != nil {
			t.Errorf("kv %s: %v", kv.Bucket, err)
		}
	}
	for _, obj := range events.ObjectStores() {
		if _, err := js.ObjectStore(ctx, obj.Bucket); err != nil {
			t.Errorf("object store %s: %v", obj.Bucket, err)
		}
	}
	created := streamsCreated(t, js)

	// A second run changes nothing.
	inv, _, stop = runUpUntilReady(t, srv.URL, dir)
	lines := reportLines(inv.stdout.String())
	if len(lines) != wantLines {
		t.Fatalf("second report has %d lines, want %d:\n%s", len(lines), wantLines, inv.stdout.String())
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, " unchanged") {
			t.Errorf("second run: %q, want unchanged", l)
		}
	}
	stop()
	if again := streamsCreated(t, js); !maps.EqualFunc(created, again, time.Time.Equal) {
		t.Errorf("streams recreated: %v then %v", created, again)
	}
}

func streamsCreated(t *testing.T, js jetstream.JetStream) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, cfg := range events.Streams() {
		s, err := js.Stream(context.Background(), cfg.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", cfg.Name, err)
		}
		out[cfg.Name] = s.CachedInfo().Created
	}
	return out
}

// fakeRunner is a service whose readiness the test sets.
type fakeRunner struct {
	name  string
	ready bool
}

var _ service.Runner = (*fakeRunner)(nil)

func (f *fakeRunner) Name() string                  { return f.name }
func (f *fakeRunner) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeRunner) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		service.WriteJSON(w, http.StatusOK, map[string]string{"service": f.name, "path": r.URL.Path})
	})
}
func (f *fakeRunner) Readiness() service.Readiness {
	status := "ready"
	if !f.ready {
		status = "not ready"
	}
	return service.Readiness{Service: f.name, Status: status, Ready: f.ready}
}

func TestUpMuxAggregatesReadinessAndMountsServices(t *testing.T) {
	t.Parallel()
	svcs := []service.Runner{&fakeRunner{name: "alpha", ready: true}, &fakeRunner{name: "beta"}}
	deps := service.Deps{Registry: service.NewRegistry()}
	mux := upMux(svcs, deps, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	tests := []struct {
		path     string
		code     int
		contains string
	}{
		{"/readyz", http.StatusServiceUnavailable, `"notReady":["beta"]`},
		{"/healthz", http.StatusOK, `"services":["alpha","beta"]`},
		{"/services/alpha/readyz", http.StatusOK, `"path":"/readyz"`},
		{"/services/beta/anything/else", http.StatusOK, `"path":"/anything/else"`},
		{"/services/gamma/healthz", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.contains) {
			t.Errorf("GET %s = %d %s, want %d containing %q", tt.path, rec.Code, rec.Body.String(), tt.code, tt.contains)
		}
	}
}
