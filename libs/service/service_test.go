package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
)

// connect returns process deps for srv, closed at cleanup.
func connect(t *testing.T, url string) service.Deps {
	t.Helper()
	cfg := service.Defaults("127.0.0.1:0")
	cfg.NATSURL = url
	p, err := service.Connect(context.Background(), cfg, "test", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p.Deps
}

type running struct {
	rt     *service.Runtime
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, then err is set
	err    error
}

// wait returns Run's error, or fails the test if Run does not return within d.
func (r *running) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s of cancel", d)
		return nil
	}
}

// start runs a runtime of the named service until the test ends.
func start(t *testing.T, name string, deps service.Deps) *running {
	t.Helper()
	rt, err := service.New(name, service.Defaults("127.0.0.1:0"), deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{rt: rt, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = rt.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func waitReady(t *testing.T, rt *service.Runtime) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !rt.Readiness().Ready {
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 15s: %+v", rt.Name(), rt.Readiness())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestRuntimeReadinessAndEndpoints(t *testing.T) {
	srv := natstest.Start(t)
	deps := connect(t, srv.URL)
	rt, err := service.New(events.ServiceIngest, service.Defaults("127.0.0.1:0"), deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := rt.Handler()

	code, body := get(t, h, "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before Run = %d %s, want 503", code, body)
	}
	var rd service.Readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if rd.Status != "not ready" || !strings.Contains(strings.Join(rd.NotReady, ","), "topology") || !strings.Contains(strings.Join(rd.NotReady, ","), "router") {
		t.Fatalf("/readyz before Run names %v (status %q), want topology and router", rd.NotReady, rd.Status)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	waitReady(t, rt)

	tests := []struct {
		path     string
		wantCode int
		contains []string
	}{
		{"/healthz", http.StatusOK, []string{`"status":"ok"`, `"service":"ingest"`}},
		{"/readyz", http.StatusOK, []string{`"status":"ready"`, `"service":"ingest"`}},
		{"/metrics", http.StatusOK, []string{"go_goroutines", "process_"}},
	}
	for _, tt := range tests {
		code, body := get(t, h, tt.path)
		if code != tt.wantCode {
			t.Errorf("GET %s = %d, want %d; body %s", tt.path, code, tt.wantCode, body)
		}
		for _, s := range tt.contains {
			if !strings.Contains(body, s) {
				t.Errorf("GET %s body lacks %q:\n%.500s", tt.path, s, body)
			}
		}
	}

	// The service's declared consumers exist.
	for _, c := range events.ServiceConsumers()[events.ServiceIngest] {
		if _, err := deps.JS.Consumer(context.Background(), c.Stream, c.Durable()); err != nil {
			t.Errorf("consumer %s/%s: %v", c.Stream, c.Durable(), err)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if rt.Readiness().Ready {
		t.Fatal("ready after Run returned")
	}
	if err := rt.Run(context.Background()); err == nil {
		t.Fatal("second Run: want an error")
	}
}

func TestSecondProvisionReportsUnchanged(t *testing.T) {
	srv := natstest.Start(t)
	deps := connect(t, srv.URL)

	first := start(t, events.ServiceTrainer, deps)
	waitReady(t, first.rt)
	var created int
	for _, c := range first.rt.Changes() {
		if c.Action == bus.Created {
			created++
		}
	}
	if created == 0 {
		t.Fatalf("first provisioning created nothing: %v", first.rt.Changes())
	}

	second := start(t, events.ServiceTrainer, deps)
	waitReady(t, second.rt)
	changes := second.rt.Changes()
	if len(changes) != len(first.rt.Changes()) {
		t.Fatalf("second report has %d lines, first %d", len(changes), len(first.rt.Changes()))
	}
	for _, c := range changes {
		if c.Action != bus.Unchanged {
			t.Errorf("second provisioning: %s", c)
		}
	}
}

func TestNotReadyWhileNATSDisconnected(t *testing.T) {
	// An embedded server even when NATS_URL is set: the test stops it.
	srv := natstest.StartEmbedded(t, t.TempDir())
	deps := connect(t, srv.URL)
	r := start(t, events.ServiceRegistry, deps)
	waitReady(t, r.rt)

	srv.Embedded.Shutdown()
	srv.Embedded.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	for r.rt.Readiness().Ready {
		if time.Now().After(deadline) {
			t.Fatal("still ready 10s after the NATS server stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rd := r.rt.Readiness()
	if len(rd.NotReady) != 1 || rd.NotReady[0] != "nats" {
		t.Fatalf("not ready = %v, want [nats]", rd.NotReady)
	}
	code, body := get(t, r.rt.Handler(), "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"nats"`) {
		t.Fatalf("/readyz = %d %s, want 503 naming nats", code, body)
	}
	r.cancel()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
}

func TestHandleAddsRoutesAndRefusesConflicts(t *testing.T) {
	srv := natstest.Start(t)
	deps := connect(t, srv.URL)
	rt, err := service.New(events.ServiceDashboard, service.Defaults("127.0.0.1:0"), deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := rt.HandleScoped("GET /hello", service.ScopePublic, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hi")
	})); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if code, body := get(t, rt.Handler(), "/hello"); code != http.StatusOK || body != "hi" {
		t.Fatalf("GET /hello = %d %q", code, body)
	}
	if err := rt.Handle("GET /healthz", http.NotFoundHandler()); err == nil {
		t.Fatal("Handle(GET /healthz): want a conflict error")
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		service string
		deps    service.Deps
		want    string
	}{
		{"bad service name", "Ingest", service.Deps{}, "service name"},
		{"missing deps", "ingest", service.Deps{}, "missing [Conn JS Registry Logger BusMetrics]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := service.New(tt.service, service.Defaults("127.0.0.1:0"), tt.deps)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*service.Config)
		want   []string
	}{
		{"defaults", func(*service.Config) {}, nil},
		{"nats list", func(c *service.Config) { c.NATSURL = "nats://a:4222,nats://b:4222" }, nil},
		{"empty nats", func(c *service.Config) { c.NATSURL = "" }, []string{"--nats (env GYRE_NATS_URL)", "is empty"}},
		{"http scheme nats", func(c *service.Config) { c.NATSURL = "http://x:4222" }, []string{"--nats", `scheme "http"`}},
		{"http not host:port", func(c *service.Config) { c.HTTPAddr = "8080" }, []string{"--http (env GYRE_HTTP_ADDR)", `"8080"`}},
		{"http bad port", func(c *service.Config) { c.HTTPAddr = "127.0.0.1:99999" }, []string{"--http", "0 to 65535"}},
		{"log level", func(c *service.Config) { c.LogLevel = "loud" }, []string{"--log-level (env GYRE_LOG_LEVEL)", `"loud"`}},
		{"trace exporter", func(c *service.Config) { c.TraceExporter = "jaeger" }, []string{"--trace-exporter", "none or stdout"}},
		{"shutdown timeout", func(c *service.Config) { c.ShutdownTimeout = 0 }, []string{"--shutdown-timeout", "must be positive"}},
		{"stream replicas 0", func(c *service.Config) { c.StreamReplicas = 0 }, []string{"--stream-replicas (env GYRE_STREAM_REPLICAS)", "must be 1 to 5"}},
		{"stream replicas 7", func(c *service.Config) { c.StreamReplicas = 7 }, []string{"--stream-replicas", `"7"`}},
		{"all at once", func(c *service.Config) { c.NATSURL, c.LogLevel = "", "loud" }, []string{"--nats", "--log-level"}},
		{"http auth none", func(c *service.Config) { c.HTTPAuth = service.HTTPAuthNone }, nil},
		{"http auth mode", func(c *service.Config) { c.HTTPAuth = "optional" }, []string{"--http-auth (env GYRE_HTTP_AUTH)", `"optional"`, "required or none"}},
		{"token file missing", func(c *service.Config) { c.AuthTokens = "/no/such/tokens.json" }, []string{"--auth-tokens (env GYRE_AUTH_TOKENS)", "is not an existing file", "gyre auth token create"}},
		{"jwks alone", func(c *service.Config) { c.AuthJWKSURL = "https://idp.example/jwks" }, []string{"--auth-jwt-issuer (env GYRE_AUTH_JWT_ISSUER)", "--auth-jwt-audience (env GYRE_AUTH_JWT_AUDIENCE)", "required with --auth-jwks-url"}},
		{"jwks complete", func(c *service.Config) {
			c.AuthJWKSURL, c.AuthJWTIssuer, c.AuthJWTAudience = "https://idp.example/jwks", "https://idp.example", "gyre"
		}, nil},
		{"jwks plain http", func(c *service.Config) {
			c.AuthJWKSURL, c.AuthJWTIssuer, c.AuthJWTAudience = "http://idp.example/jwks", "https://idp.example", "gyre"
		}, []string{"--auth-jwks-url (env GYRE_AUTH_JWKS_URL)", "plain http"}},
		{"jwks http loopback", func(c *service.Config) {
			c.AuthJWKSURL, c.AuthJWTIssuer, c.AuthJWTAudience = "http://127.0.0.1:9000/jwks", "https://idp.example", "gyre"
		}, nil},
		{"issuer without jwks", func(c *service.Config) { c.AuthJWTIssuer = "https://idp.example" }, []string{"--auth-jwt-issuer", "needs --auth-jwks-url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := service.Defaults("127.0.0.1:0")
			tt.mutate(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: want an error")
			}
			var fe *service.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate error %v is not a *FieldError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q lacks %q", err, w)
				}
			}
		})
	}
}

// Not parallel: t.Setenv.
func TestRegisterFlagsPrecedence(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		check   func(service.Config) bool
		wantErr string
	}{
		{
			name: "defaults",
			check: func(c service.Config) bool {
				return c.NATSURL == service.DefaultNATSURL && c.HTTPAddr == "127.0.0.1:8081" && c.HTTPAuth == service.HTTPAuthRequired
			},
		},
		{
			name:  "auth from env",
			env:   map[string]string{"GYRE_HTTP_AUTH": "none", "GYRE_AUTH_JWT_AUDIENCE": "gyre", "GYRE_AUTH_JWT_ISSUER": "https://idp", "GYRE_AUTH_JWKS_URL": "https://idp/jwks"},
			check: func(c service.Config) bool { return c.HTTPAuth == service.HTTPAuthNone && c.AuthJWTAudience == "gyre" },
		},
		{
			name: "env over default",
			env:  map[string]string{"GYRE_NATS_URL": "nats://env:4222", "GYRE_SHUTDOWN_TIMEOUT": "5s"},
			check: func(c service.Config) bool {
				return c.NATSURL == "nats://env:4222" && c.ShutdownTimeout == 5*time.Second
			},
		},
		{
			name:  "flag over env",
			env:   map[string]string{"GYRE_NATS_URL": "nats://env:4222", "GYRE_HTTP_ADDR": "127.0.0.1:9"},
			args:  []string{"--nats", "nats://flag:4222"},
			check: func(c service.Config) bool { return c.NATSURL == "nats://flag:4222" && c.HTTPAddr == "127.0.0.1:9" },
		},
		{
			name:    "bad env duration",
			env:     map[string]string{"GYRE_SHUTDOWN_TIMEOUT": "soon"},
			wantErr: `--shutdown-timeout (env GYRE_SHUTDOWN_TIMEOUT): "soon" is not a duration`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg := service.Defaults("127.0.0.1:8081")
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			cfg.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err := cfg.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:secret@host:4222", "nats://REDACTED@host:4222"},
		{"nats://s3cr3ttoken@host:4222,nats://other:4222", "nats://REDACTED@host:4222,nats://other:4222"},
	}
	for _, tt := range tests {
		if got := service.RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestBeforeConsume: the hook runs after provisioning (the service's
// consumers exist) and before the router is running; its error ends Run
// with it.
func TestBeforeConsume(t *testing.T) {
	srv := natstest.Start(t)
	deps := connect(t, srv.URL)
	var rt *service.Runtime
	var sawConsumer, sawRouter bool
	hook := func(ctx context.Context) error {
		for _, c := range events.ServiceConsumers()[events.ServiceIngest] {
			_, err := deps.JS.Consumer(ctx, c.Stream, c.Durable())
			sawConsumer = err == nil
		}
		sawRouter = rt.Readiness().Ready
		return nil
	}
	var err error
	rt, err = service.New(events.ServiceIngest, service.Defaults("127.0.0.1:0"), deps, service.WithBeforeConsume(hook))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	waitReady(t, rt)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !sawConsumer || sawRouter {
		t.Errorf("hook saw consumers %v, a running router %v; want consumers and no router yet", sawConsumer, sawRouter)
	}

	failing, err := service.New(events.ServiceIngest, service.Defaults("127.0.0.1:0"), deps,
		service.WithBeforeConsume(func(context.Context) error { return errors.New("state not rebuilt") }))
	if err != nil {
		t.Fatal(err)
	}
	if err := failing.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "state not rebuilt") {
		t.Errorf("Run with a failing hook = %v, want its error", err)
	}
}

// TestStreamReplicasNeedACluster runs a service asking for three copies of
// each stream against a single server: it stops with an error naming the
// setting and what the server lacks, rather than retrying.
func TestStreamReplicasNeedACluster(t *testing.T) {
	t.Parallel()
	srv := natstest.StartEmbedded(t, t.TempDir())
	deps := connect(t, srv.URL)
	cfg := service.Defaults("127.0.0.1:0")
	cfg.StreamReplicas = 3
	rt, err := service.New(events.ServiceIngest, cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if got := rt.Topology().Replicas; got != 3 {
		t.Fatalf("topology replicas %d, want the config's 3", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = rt.Run(ctx)
	for _, want := range []string{"--stream-replicas 3", "GYRE_STREAM_REPLICAS", "a JetStream cluster of at least 3 servers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run = %v, want an error naming %q", err, want)
		}
	}
}
