// Package servicetest checks what every Gyre service owes the process that
// runs it, on a real JetStream server (natstest): it starts, provisions its
// durable consumers, becomes ready on /readyz, and returns nil promptly once
// its context ends.
package servicetest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
)

// Build makes the service under test for a server URL and its deps.
type Build func(natsURL string, deps service.Deps) (service.Runner, error)

// Timeouts of Check.
const (
	ReadyTimeout = 15 * time.Second
	StopTimeout  = 10 * time.Second
)

// Check runs the service built by build on natstest.Start(t) and checks that
// /readyz turns 200, /healthz answers, every consumer in consumers exists on
// the server, and Run returns nil within StopTimeout of its context ending.
func Check(t *testing.T, build Build, consumers []events.Consumer) {
	t.Helper()
	srv := natstest.Start(t)
	cfg := service.Defaults("127.0.0.1:0")
	cfg.NATSURL = srv.URL
	cfg.HTTPAuth = service.HTTPAuthNone // the health routes are open anyway
	proc, err := service.Connect(context.Background(), cfg, "servicetest", service.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		if err := proc.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	svc, err := build(srv.URL, proc.Deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := svc.Handler()
	if code := status(h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("%s: /readyz before Run = %d, want 503", svc.Name(), code)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	deadline := time.Now().Add(ReadyTimeout)
	for status(h, "/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("%s: /readyz not 200 after %s: %+v", svc.Name(), ReadyTimeout, svc.Readiness())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := status(h, "/healthz"); code != http.StatusOK {
		t.Errorf("%s: /healthz = %d, want 200", svc.Name(), code)
	}
	if code := status(h, "/metrics"); code != http.StatusOK {
		t.Errorf("%s: /metrics = %d, want 200", svc.Name(), code)
	}
	for _, c := range consumers {
		if c.PerReplica {
			continue // each replica's own, made as it subscribes
		}
		if _, err := proc.JS.Consumer(context.Background(), c.Stream, c.Durable()); err != nil {
			t.Errorf("%s: consumer %s/%s: %v", svc.Name(), c.Stream, c.Durable(), err)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: Run returned %v, want nil", svc.Name(), err)
		}
	case <-time.After(StopTimeout):
		t.Fatalf("%s: Run did not return within %s of cancel", svc.Name(), StopTimeout)
	}
}

func status(h http.Handler, path string) int {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}
