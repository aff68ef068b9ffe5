// Package dashboard is Gyre's dashboard service.
//
// Dashboard shows the loop as it runs, in a browser: each pipeline's data
// batches, training, evaluation, champion, rollout (strategy, step, share of
// traffic, the figures that decided it), drift and falls in live accuracy,
// and a live feed of every lifecycle event that can be narrowed to one
// pipeline, one event type or one cascade (correlation id).
//
// It reads the lifecycle stream (gyre.ev.>) with an ordered consumer:
// ephemeral, so it has no durable consumer, never holds up the loop, and
// emits nothing. On start it reads the stream's history, so what it shows
// survives a restart. Browsers follow it with server-sent events.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/dashboard runs it alone.
package dashboard

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
)

// Name is the service's name: its event source (/gyre/dashboard) and its
// dead-letter subject (gyre.dlq.dashboard) derive from it.
const Name = events.ServiceDashboard

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8089"

// About says what the service does in the loop; it opens the command's help.
const About = `Dashboard shows the loop as it runs, in a browser (GET /): for each pipeline its data
batches, training, evaluation, champion, rollout (strategy, step, share of traffic and the
figures that decided it), drift and falls in live accuracy, and a live feed of every
lifecycle event, which a click narrows to one pipeline, event type or cascade.

It reads the lifecycle stream (gyre.ev.>) from its start with an ephemeral ordered
consumer, so it holds up nothing and emits nothing. JSON for scripts: GET /api/pipelines,
GET /api/events?pipeline=&type=&correlation=&after=&limit=, and the live feed as
server-sent events at GET /api/stream.`

// Config is the dashboard service's configuration.
type Config struct {
	service.Config
	// KeepEvents is how many of the latest lifecycle events the feed keeps
	// in memory; pipeline states are folded from every event regardless.
	KeepEvents int
}

// EnvKeepEvents is the environment variable of Config.KeepEvents.
const EnvKeepEvents = "GYRE_DASHBOARD_KEEP_EVENTS"

// DefaultKeepEvents is the default of Config.KeepEvents.
const DefaultKeepEvents = 2000

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{Config: service.Defaults(DefaultHTTPAddr), KeepEvents: DefaultKeepEvents}
}

// RegisterFlags registers the shared flags and the dashboard's own.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.IntFlag(fs, &c.KeepEvents, "keep-events", EnvKeepEvents, c.KeepEvents,
		"latest lifecycle events the feed keeps in memory (pipeline states fold every event)")
}

// Validate checks every setting.
func (c Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.KeepEvents <= 0 {
		return &service.FieldError{Flag: "keep-events", Env: EnvKeepEvents, Value: fmt.Sprint(c.KeepEvents), Reason: "must be positive"}
	}
	return nil
}

// Service is the dashboard service.
type Service struct {
	rt     *service.Runtime
	board  *Board
	follow *follower
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	rt, err := service.New(Name, cfg.Config, deps)
	if err != nil {
		return nil, err
	}
	board := NewBoard(cfg.KeepEvents)
	m, err := newMetrics(deps.Registry, board)
	if err != nil {
		return nil, fmt.Errorf("%s metrics: %w", Name, err)
	}
	s := &Service{
		rt:     rt,
		board:  board,
		follow: &follower{js: deps.JS, board: board, logger: rt.Logger(), metrics: m},
	}
	a := &api{board: board, caughtUp: s.follow.caughtUp.Load, keepalive: 15 * time.Second, initial: 300}
	// The page is static (it holds no data): open, so that a browser can
	// load it; what it reads needs read, the live feed taking the token as
	// a query parameter (EventSource sends no header).
	if err := a.routes(func(pattern string, h http.Handler) error {
		scope := service.ScopeRead
		if pattern == "GET /{$}" {
			scope = service.ScopePublic
		}
		return rt.HandleRoute(service.Route{Pattern: pattern, Scope: scope, Handler: h, QueryToken: pattern == "GET /api/stream"})
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// Run provisions the service's topology and follows the lifecycle stream
// until ctx ends; it returns nil after a clean stop. Open live feeds end
// when it returns, so that the HTTP server can shut down at once.
func (s *Service) Run(ctx context.Context) error {
	defer s.board.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var err error
	// The feed starts once the runtime has provisioned the stream; until
	// then the ordered consumer would fail and retry.
	wg.Go(func() {
		err = s.rt.Run(ctx)
		cancel()
	})
	wg.Go(func() {
		if s.waitProvisioned(ctx) {
			_ = s.follow.run(ctx)
		}
	})
	wg.Wait()
	return err
}

func (s *Service) waitProvisioned(ctx context.Context) bool {
	for !s.rt.Readiness().Ready {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// Handler serves the dashboard page and its API, and GET /healthz, /readyz
// and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }

// Board returns what the dashboard shows, for tests and for embedding.
func (s *Service) Board() *Board { return s.board }
