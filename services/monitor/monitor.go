// Package monitor is Gyre's monitor service.
//
// Monitor watches the deployed model's world. On model.promoted it builds
// the champion's drift reference from the batches of its training window
// (one reference per raw feature column) and keeps it, with the champion's
// evaluation accuracy as the baseline, in gyre-state (monitor.<pipeline>).
// For every materialised batch it measures per-feature drift against that
// reference with the pipeline's method (psi, ks, wasserstein,
// jensenshannon or chisquare) and emits drift.measured, and drift.detected
// when the drift policy is crossed and the cooldown allows; it joins
// prediction.logged with label.received into live accuracy per model
// version and emits performance.degraded when the champion's falls under
// its baseline by more than drift.accuracyDrop. The join is held in memory
// and rebuilt from the streams when the service starts (rejoin).
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/monitor runs it alone.
package monitor

import (
	"context"
	"errors"
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
const About = `Monitor watches the deployed model's world. On model.promoted it builds the champion's
drift reference from the batches of its training window and keeps it, with the champion's
evaluation accuracy as baseline, in gyre-state (monitor.<pipeline>). For every materialized
batch it measures per-feature drift against that reference (psi, ks, wasserstein,
jensenshannon or chisquare) and emits drift.measured, and drift.detected when the pipeline's
drift policy is crossed and its cooldown allows; it joins prediction.logged with
label.received into live accuracy per model version and emits performance.degraded when
the champion's falls under its baseline by more than drift.accuracyDrop.`

// Config is the monitor service's configuration.
type Config struct {
	service.Config
	// MaxPendingPredictions bounds the logged predictions remembered per
	// pipeline while they wait for labels.
	MaxPendingPredictions int
	// MaxPendingLabels bounds the labels remembered per pipeline while
	// they wait for their predictions.
	MaxPendingLabels int
}

// Environment variables of the monitor's own settings.
const (
	EnvMaxPendingPredictions = "GYRE_MONITOR_MAX_PENDING_PREDICTIONS"
	EnvMaxPendingLabels      = "GYRE_MONITOR_MAX_PENDING_LABELS"
)

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{
		Config:                service.Defaults(DefaultHTTPAddr),
		MaxPendingPredictions: monitoring.DefaultMaxPredictions,
		MaxPendingLabels:      monitoring.DefaultMaxLabels,
	}
}

// RegisterFlags registers the shared flags and the monitor's own.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.IntFlag(fs, &c.MaxPendingPredictions, "max-pending-predictions", EnvMaxPendingPredictions, c.MaxPendingPredictions,
		"logged predictions remembered per pipeline while they wait for labels")
	c.IntFlag(fs, &c.MaxPendingLabels, "max-pending-labels", EnvMaxPendingLabels, c.MaxPendingLabels,
		"labels remembered per pipeline while they wait for their predictions")
}

// Validate checks every setting.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.MaxPendingPredictions <= 0 {
		errs = append(errs, &service.FieldError{Flag: "max-pending-predictions", Env: EnvMaxPendingPredictions,
			Value: fmt.Sprint(c.MaxPendingPredictions), Reason: "must be positive"})
	}
	if c.MaxPendingLabels <= 0 {
		errs = append(errs, &service.FieldError{Flag: "max-pending-labels", Env: EnvMaxPendingLabels,
			Value: fmt.Sprint(c.MaxPendingLabels), Reason: "must be positive"})
	}
	return errors.Join(errs...)
}

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
		app: monitoring.New(st, st, st, st, monitoring.Options{
			MaxPredictions: cfg.MaxPendingPredictions,
			MaxLabels:      cfg.MaxPendingLabels,
			LoggerFrom:     bus.Logger,
			OnLiveAccuracy: m.observeLive,
		}),
	}
	rt, err := service.New(Name, cfg.Config, deps, service.WithBeforeConsume(s.rejoin))
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
