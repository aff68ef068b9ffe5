// Package monitor is Gyre's monitor service.
//
// Monitor watches the deployed model's world. For every materialized batch
// it measures per-feature drift against the champion's training reference
// (psi, ks, wasserstein, jensenshannon or chisquare) and emits
// drift.measured, and drift.detected when the pipeline's drift policy is
// crossed; from prediction.logged and label.received it tracks live accuracy
// and emits performance.degraded when it falls under policy; model.promoted
// tells it which reference to use.
//
// The loop logic arrives with issue #3. Until then this package is a
// skeleton, and honest about it: the service connects, provisions its
// topology (every stream and bucket, and its own durable consumers), and
// reports health, readiness and metrics, but it registers no message
// handler, so the events it will consume wait in its durable consumers
// rather than being taken and dropped.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/monitor runs it alone.
package monitor

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
)

// Name is the service's name: its durable consumers (monitor_<handler>), its
// event source (/gyre/monitor) and its dead-letter subject (gyre.dlq.monitor)
// derive from it.
const Name = events.ServiceMonitor

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8084"

// About says what the service does in the loop; it opens the command's help.
const About = `Monitor watches the deployed model's world. For every materialized batch it measures
per-feature drift against the champion's training reference (psi, ks, wasserstein,
jensenshannon or chisquare) and emits drift.measured, and drift.detected when the
pipeline's drift policy is crossed; from prediction.logged and label.received it tracks
live accuracy and emits performance.degraded when it falls under policy; model.promoted
tells it which reference to use.

Status: a skeleton until issue #3. It connects, provisions its topology and reports
health and readiness, but handles no event yet: what it will consume waits in its
durable consumers.`

// Config is the monitor service's configuration.
type Config struct {
	service.Config
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// Service is the monitor service.
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
