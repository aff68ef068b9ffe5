// Package monitor is Gyre's monitor service.
//
// Monitor watches the deployed model's world. On model.promoted it follows
// the registry's champion: it builds the champion's drift reference from
// the batches of its training window (one reference per raw feature
// column) and keeps it, with the champion's evaluation accuracy as the
// baseline, in gyre-state (monitor.<pipeline>). For every materialised
// batch it measures per-feature drift against that reference with the
// pipeline's method (psi, ks, wasserstein, jensenshannon, chisquare, z, or
// auto: a test per feature) and emits drift.measured, listing every
// monitored feature (compared, or skipped with the reason), and
// drift.detected when the drift policy is crossed and the cooldown allows;
// it joins prediction.logged with label.received
// into live accuracy per model version and emits performance.degraded when
// the champion's falls under its baseline by more than drift.accuracyDrop.
// The join is in gyre-joins, one key per prediction id, shared by every
// replica: any replica may take any prediction or label, and each pair is
// counted once.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/monitor runs it alone.
package monitor

import (
	"context"
	"flag"
	"fmt"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// Name is the service's name: its durable consumers (monitor_<handler>), its
// event source (/gyre/monitor) and its dead-letter subject (gyre.dlq.monitor)
// derive from it.
const Name = events.ServiceMonitor

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8084"

// About says what the service does in the loop; it opens the command's help.
const About = `Monitor watches the deployed model's world. On model.promoted it reads the registry's
champion and builds its drift reference from the batches of its training window and keeps it, with the champion's
evaluation accuracy as baseline, in gyre-state (monitor.<pipeline>). For every materialized
batch it measures per-feature drift against that reference (psi, ks, wasserstein,
jensenshannon, chisquare, z, or auto: a test per feature) and emits drift.measured, and drift.detected when the pipeline's
drift policy is crossed and its cooldown allows; it joins prediction.logged with
label.received into live accuracy per model version and emits performance.degraded when
the champion's falls under its baseline by more than drift.accuracyDrop. Predictions wait for
their labels (and labels for their predictions) in the gyre-joins bucket for 72 hours, shared
by every replica: run as many replicas as the load needs, each pair is counted once.`

// Config is the monitor service's configuration: the shared settings
// only. The join needs no bound of its own: gyre-joins' TTL
// (events.JoinTTL) forgets what waits longer than the predictions stream
// keeps its events.
type Config struct {
	service.Config
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{Config: service.Defaults(DefaultHTTPAddr)}
}

// RegisterFlags registers the shared flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) { c.Config.RegisterFlags(fs) }

// Validate checks every setting.
func (c Config) Validate() error { return c.Config.Validate() }

// Service is the monitor service.
type Service struct {
	rt      *service.Runtime
	app     *monitoring.Monitor
	metrics *metrics
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	st := stores{lazy: store.NewLazy(deps.JS)}
	m, err := newMetrics(deps.Registry)
	if err != nil {
		return nil, fmt.Errorf("%s metrics: %w", Name, err)
	}
	s := &Service{
		metrics: m,
		app: monitoring.New(st, st, st, st, st, kvJoins(st), monitoring.Options{
			LoggerFrom:     bus.Logger,
			OnLiveAccuracy: m.observeLive,
		}),
	}
	rt, err := service.New(Name, cfg.Config, deps)
	if err != nil {
		return nil, err
	}
	s.rt = rt
	if err := s.register(); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return s, nil
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
