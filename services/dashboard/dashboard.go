// Package dashboard is Gyre's dashboard service.
//
// Dashboard shows the loop as it runs: it reads every lifecycle event
// (gyre.ev.>) with ephemeral ordered consumers, so it has no durable
// consumer and never holds up the loop, and it emits nothing.
//
// No issue has built its UI yet, so this package is a skeleton, and honest
// about it: the service connects, provisions its topology and reports
// health, readiness and metrics, and shows nothing. Until it does, `gyre
// events -f` follows the loop.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/dashboard runs it alone.
package dashboard

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
)

// Name is the service's name: its durable consumers (dashboard_<handler>), its
// event source (/gyre/dashboard) and its dead-letter subject (gyre.dlq.dashboard)
// derive from it.
const Name = events.ServiceDashboard

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8089"

// About says what the service does in the loop; it opens the command's help.
const About = `Dashboard shows the loop as it runs: it reads every lifecycle event (gyre.ev.>) with
ephemeral ordered consumers, so it has no durable consumer and never holds up the loop,
and it emits nothing.

Status: a skeleton; no issue has built its UI yet. It connects, provisions its
topology and reports health and readiness. Until it shows the loop, use
'gyre events -f'.`

// Config is the dashboard service's configuration.
type Config struct {
	service.Config
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// Service is the dashboard service.
type Service struct {
	rt *service.Runtime
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
	return &Service{rt: rt}, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error { return s.rt.Run(ctx) }

// Handler serves GET /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
