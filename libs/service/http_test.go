package service_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
)

// connectWith returns process deps for srv with cfg's authentication.
func connectWith(t *testing.T, url string, mutate func(*service.Config)) service.Deps {
	t.Helper()
	cfg := service.Defaults("127.0.0.1:0")
	cfg.NATSURL = url
	mutate(&cfg)
	p, err := service.Connect(context.Background(), cfg, "test", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p.Deps
}

// scopedRuntime is a runtime with one route per kind of scope.
func scopedRuntime(t *testing.T, deps service.Deps) *service.Runtime {
	t.Helper()
	rt, err := service.New(events.ServiceRegistry, service.Defaults("127.0.0.1:0"), deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	for _, r := range []service.Route{
		{Pattern: "GET /v1/models", Scope: service.ScopeRead, Handler: ok},
		{Pattern: "POST /v1/promote", Scope: service.ScopeAdmin, Handler: ok},
		{Pattern: "POST /v1/batches", Scope: service.ScopeIngest, Handler: ok},
		{Pattern: "POST /v2/infer", Scope: service.ScopeInfer, Handler: ok},
		{Pattern: "GET /v2/health/live", Scope: service.ScopePublic, Handler: ok},
		{Pattern: "GET /feed", Scope: service.ScopeRead, Handler: ok, QueryToken: true},
	} {
		if err := rt.HandleRoute(r); err != nil {
			t.Fatalf("HandleRoute %s: %v", r.Pattern, err)
		}
	}
	if err := rt.Handle("GET /legacy", ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []service.Route{
		{Pattern: "GET /noscope", Handler: ok},
		{Pattern: "GET /root", Scope: "root", Handler: ok},
		{Pattern: "GET /nohandler", Scope: service.ScopeRead},
	} {
		if err := rt.HandleRoute(bad); err == nil {
			t.Errorf("HandleRoute %s: want an error", bad.Pattern)
		}
	}
	return rt
}

// TestRoutesNeedTheirScope: each route answers 401 without a token, 403
// with a token of another scope and 200 with its own or admin — served by
// the service alone and mounted under /services/<name>/ as `gyre up` does;
// the health, readiness and metrics routes and public routes stay open; a
// route added with Handle needs admin.
func TestRoutesNeedTheirScope(t *testing.T) {
	srv := natstest.Start(t)
	tokens := servicetest.NewTokens(t)
	rt := scopedRuntime(t, connectWith(t, srv.URL, tokens.Config))
	up := http.NewServeMux()
	up.Handle("/services/registry/", http.StripPrefix("/services/registry", rt.Handler()))

	tests := []struct {
		method, path string
		scope        service.Scope // of the token sent; "" none
		code         int
	}{
		{"GET", "/v1/models", "", 401},
		{"GET", "/v1/models", service.ScopeIngest, 403},
		{"GET", "/v1/models", service.ScopeRead, 200},
		{"GET", "/v1/models", service.ScopeAdmin, 200},
		{"POST", "/v1/promote", "", 401},
		{"POST", "/v1/promote", service.ScopeRead, 403},
		{"POST", "/v1/promote", service.ScopeInfer, 403},
		{"POST", "/v1/promote", service.ScopeAdmin, 200},
		{"POST", "/v1/batches", service.ScopeRead, 403},
		{"POST", "/v1/batches", service.ScopeIngest, 200},
		{"POST", "/v2/infer", service.ScopeIngest, 403},
		{"POST", "/v2/infer", service.ScopeInfer, 200},
		{"GET", "/legacy", service.ScopeRead, 403},
		{"GET", "/legacy", service.ScopeAdmin, 200},
		{"GET", "/v2/health/live", "", 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 503}, // open, and not ready: Run was not called
		{"GET", "/metrics", "", 200},
	}
	for _, mount := range []struct {
		prefix string
		h      http.Handler
	}{{"", rt.Handler()}, {"/services/registry", up}} {
		for _, tt := range tests {
			req := httptest.NewRequest(tt.method, mount.prefix+tt.path, nil)
			if tt.scope != "" {
				tokens.Authorize(req, tt.scope)
			}
			rec := httptest.NewRecorder()
			mount.h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Errorf("%s %s%s with a %q token: %d, want %d (%s)", tt.method, mount.prefix, tt.path, tt.scope, rec.Code, tt.code, rec.Body.String())
				continue
			}
			if tt.code == 401 || tt.code == 403 {
				var body map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] == "" || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s: refusal %q %q", tt.method, tt.path, rec.Header().Get("WWW-Authenticate"), rec.Body.String())
				}
			}
		}
	}
	// The feed takes its token in the query too.
	rec := httptest.NewRecorder()
	rt.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/feed?access_token="+tokens.Secret(service.ScopeRead), nil))
	if rec.Code != 200 {
		t.Errorf("GET /feed?access_token=: %d", rec.Code)
	}
}

// TestAuthDefaults: by default (required, no token source) a protected
// route answers 401 saying how to create a token, and the health routes
// stay open; --http-auth none opens every route.
func TestAuthDefaults(t *testing.T) {
	srv := natstest.Start(t)
	secure := scopedRuntime(t, connectWith(t, srv.URL, func(*service.Config) {}))
	open := scopedRuntime(t, connectWith(t, srv.URL, func(c *service.Config) { c.HTTPAuth = service.HTTPAuthNone }))

	rec := httptest.NewRecorder()
	secure.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/models", nil))
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), "gyre auth token create") || !strings.Contains(rec.Body.String(), "--auth-tokens") {
		t.Errorf("default config: %d %s", rec.Code, rec.Body.String())
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if code, _ := get(t, secure.Handler(), path); code != 200 {
			t.Errorf("default config: %s %d", path, code)
		}
	}
	for _, r := range []struct{ method, path string }{{"GET", "/v1/models"}, {"POST", "/v1/promote"}, {"GET", "/legacy"}} {
		rec := httptest.NewRecorder()
		open.Handler().ServeHTTP(rec, httptest.NewRequest(r.method, r.path, nil))
		if rec.Code != 200 {
			t.Errorf("--http-auth none: %s %s %d", r.method, r.path, rec.Code)
		}
	}
}

// TestConnectLogsTheAuthMode: Connect says once what HTTP authentication
// accepts, warning when nothing can pass or when it is off.
func TestConnectLogsTheAuthMode(t *testing.T) {
	srv := natstest.Start(t)
	tokens := servicetest.NewTokens(t)
	tests := []struct {
		name   string
		mutate func(*service.Config)
		want   string
	}{
		{"unconfigured", func(*service.Config) {}, `"level":"WARN","msg":"HTTP authentication is required but no credential source is configured`},
		{"off", func(c *service.Config) { c.HTTPAuth = service.HTTPAuthNone }, `"level":"WARN","msg":"HTTP authentication is off`},
		{"tokens", tokens.Config, `"msg":"HTTP authentication required"`},
	}
	for _, tt := range tests {
		var logs bytes.Buffer
		cfg := service.Defaults("127.0.0.1:0")
		cfg.NATSURL = srv.URL
		tt.mutate(&cfg)
		p, err := service.Connect(context.Background(), cfg, "test", service.WithLogOutput(&logs))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = p.Close(ctx)
		cancel()
		if n := strings.Count(logs.String(), "HTTP authentication"); n != 1 || !strings.Contains(logs.String(), tt.want) {
			t.Errorf("%s: logged %d times, want once %q:\n%s", tt.name, n, tt.want, logs.String())
		}
	}
}

// serve runs handler on a loopback NewHTTPServer with limits until the test
// ends and returns its address.
func serve(t *testing.T, limits service.HTTPLimits, handler http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := service.NewHTTPServer(handler, limits, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// fastLimits are short limits for tests.
var fastLimits = service.HTTPLimits{
	ReadHeaderTimeout: time.Second,
	IdleTimeout:       5 * time.Second,
	WriteTimeout:      300 * time.Millisecond,
	BodyGrace:         400 * time.Millisecond,
	MinBodyRate:       10 << 10,
	BodyIdleTimeout:   time.Second,
}

// closedWithin sends a request's headers and then its body one byte every
// interval on a raw connection, and returns how long the server took to
// close the connection, or fails the test if it had not within limit.
func closedWithin(t *testing.T, addr, path string, interval, limit time.Duration) time.Duration {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, conn) // until the server closes
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return time.Since(start)
		case <-tick.C:
			if time.Since(start) > limit {
				t.Fatalf("%s: connection still open after %s", path, limit)
			}
			_, _ = conn.Write([]byte("x"))
		}
	}
}

// TestSlowBodyIsCut: a body trickling in below the minimum rate fails its
// read with ErrBodyTooSlow and the connection is closed; a body the handler
// never reads is not waited for either.
func TestSlowBodyIsCut(t *testing.T) {
	t.Parallel()
	readErr := make(chan error, 1)
	addr := serve(t, fastLimits, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unread" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, err := io.ReadAll(r.Body)
		readErr <- err
		if errors.Is(err, service.ErrBodyTooSlow) {
			w.WriteHeader(http.StatusRequestTimeout)
		}
	}))
	took := closedWithin(t, addr, "/read", 100*time.Millisecond, 5*time.Second)
	if err := <-readErr; !errors.Is(err, service.ErrBodyTooSlow) {
		t.Errorf("the handler's read: %v, want ErrBodyTooSlow", err)
	}
	// The grace, then the rate: 400 ms plus a few bytes' worth.
	if took < fastLimits.BodyGrace || took > 3*time.Second {
		t.Errorf("slow body closed after %s, want just over %s", took, fastLimits.BodyGrace)
	}
	if took := closedWithin(t, addr, "/unread", 100*time.Millisecond, 5*time.Second); took > 3*time.Second {
		t.Errorf("unread slow body closed after %s", took)
	}
}

// TestLargeFastBodyAndSlowHandler: a 64 MiB body sent at full speed is read
// whole, and a handler that takes longer than every limit after reading it
// keeps its context and answers.
func TestLargeFastBodyAndSlowHandler(t *testing.T) {
	t.Parallel()
	addr := serve(t, fastLimits, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		time.Sleep(3 * fastLimits.BodyIdleTimeout / 2) // past the grace, the idle and the write timeouts
		if err := r.Context().Err(); err != nil {
			http.Error(w, "context: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = fmt.Fprint(w, n)
	}))
	const size = 64 << 20
	resp, err := http.Post("http://"+addr+"/", "application/octet-stream", io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != fmt.Sprint(size) {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestStreamOutlivesWriteTimeout: a response that keeps writing and
// flushing for five write timeouts is not cut, through http.Flusher and
// http.ResponseController alike.
func TestStreamOutlivesWriteTimeout(t *testing.T) {
	t.Parallel()
	const events = 15
	addr := serve(t, fastLimits, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range events {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			if r.URL.Path == "/flusher" {
				w.(http.Flusher).Flush()
			} else if err := rc.Flush(); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}))
	for _, path := range []string{"/controller", "/flusher"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || strings.Count(string(body), "data:") != events {
			t.Errorf("%s: %d events, %v", path, strings.Count(string(body), "data:"), err)
		}
	}
}

// TestSlowReaderIsCut: a client that stops reading a response is cut off
// after the write timeout: the handler's write fails.
func TestSlowReaderIsCut(t *testing.T) {
	t.Parallel()
	writeErr := make(chan error, 1)
	addr := serve(t, fastLimits, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := make([]byte, 1<<20)
		for range 256 {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		if err == nil {
			t.Error("256 MiB written to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Error("the handler's write still blocked after 10s")
	}
}

// TestKeepAliveAfterIdle: a connection reused after more than the write
// timeout of idleness serves its next request (the deadlines of the first
// request do not linger).
func TestKeepAliveAfterIdle(t *testing.T) {
	t.Parallel()
	addr := serve(t, fastLimits, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	var reused []bool
	var mu sync.Mutex
	for i := range 2 {
		if i == 1 {
			time.Sleep(2 * fastLimits.BodyGrace) // past the write timeout and the grace
		}
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			mu.Lock()
			reused = append(reused, info.Reused)
			mu.Unlock()
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", "http://"+addr+"/", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if len(reused) != 2 || !reused[1] {
		t.Errorf("connection reuse %v, want the second request on the first's connection", reused)
	}
}

// TestHeaderLimits: headers over MaxHeaderBytes are refused (431), and a
// client that never finishes its headers is closed after ReadHeaderTimeout.
func TestHeaderLimits(t *testing.T) {
	t.Parallel()
	addr := serve(t, fastLimits, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", strings.Repeat("x", 128<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB of headers: %d, want 431", resp.StatusCode)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil { // no blank line
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = bufio.NewReader(conn).ReadString('\n')
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("unfinished headers: connection open after %s (%v)", took, err)
	}
}
