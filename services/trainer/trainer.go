// Package trainer is Gyre's trainer service.
//
// Trainer decides when to retrain and does it. Its scheduler turns
// drift.detected, performance.degraded, new validated batches and explicit
// training.requested events into training jobs under the pipeline's retrain
// policy (cooldown, budget, dedup of storms on (pipeline, window)) and
// queues them on the worker pool's work queue gyre.jobs.train.<pool>; its
// workers take jobs from the queue of --pool, train on the newest validated
// batches of the window, store the artifact in gyre-models and emit
// training.started then training.completed or training.failed.
//
// The loop logic arrives with issue #3. Until then this package is a
// skeleton, and honest about it: the service connects, provisions its
// topology (every stream and bucket, and its own durable consumers), and
// reports health, readiness and metrics, but it registers no message
// handler, so the events it will consume wait in its durable consumers
// rather than being taken and dropped.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/trainer runs it alone.
package trainer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
)

// Name is the service's name: its durable consumers (trainer_<handler>), its
// event source (/gyre/trainer) and its dead-letter subject (gyre.dlq.trainer)
// derive from it.
const Name = events.ServiceTrainer

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8085"

// About says what the service does in the loop; it opens the command's help.
const About = `Trainer decides when to retrain and does it. Its scheduler turns drift.detected,
performance.degraded, new validated batches and explicit training.requested events into
training jobs under the pipeline's retrain policy (cooldown, budget, dedup of storms on
(pipeline, window)) and queues them on the worker pool's work queue
gyre.jobs.train.<pool>; its workers take jobs from the queue of --pool, train on the
newest validated batches of the window, store the artifact in gyre-models and emit
training.started then training.completed or training.failed.

Status: a skeleton until issue #3. It connects, provisions its topology and reports
health and readiness, but handles no event yet: what it will consume waits in its
durable consumers.`

// Config is the trainer service's configuration.
type Config struct {
	service.Config
	// Pool is the worker pool whose job queue (gyre.jobs.train.<pool>) this
	// trainer's workers take jobs from: cpu, gpu, or any pool name.
	Pool string
	// Concurrency is how many jobs the workers run at once.
	Concurrency int
}

// Defaults of the trainer's own settings.
const (
	DefaultPool        = "cpu"
	DefaultConcurrency = 1
)

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{Config: service.Defaults(DefaultHTTPAddr), Pool: DefaultPool, Concurrency: DefaultConcurrency}
}

// RegisterFlags registers the shared flags and the trainer's own on fs,
// with GYRE_* environment variables as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.StringFlag(fs, &c.Pool, "pool", "GYRE_TRAINER_POOL", c.Pool,
		"worker pool whose job queue gyre.jobs.train.<pool> this trainer serves")
	c.IntFlag(fs, &c.Concurrency, "concurrency", "GYRE_TRAINER_CONCURRENCY", c.Concurrency,
		"training jobs run at once (used by the job handler that arrives with issue #3)")
}

// Validate checks the configuration; each error names its flag.
func (c Config) Validate() error {
	var errs []error
	if err := c.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := events.ValidatePool(c.Pool); err != nil {
		errs = append(errs, &service.FieldError{Flag: "pool", Env: "GYRE_TRAINER_POOL", Value: c.Pool, Reason: err.Error()})
	}
	if c.Concurrency < 1 {
		errs = append(errs, &service.FieldError{Flag: "concurrency", Env: "GYRE_TRAINER_CONCURRENCY", Value: strconv.Itoa(c.Concurrency), Reason: "must be at least 1"})
	}
	return errors.Join(errs...)
}

// Topology is what the trainer provisions: every stream and bucket, its
// event consumers, and the job consumer of its pool (the catalog declares
// the cpu pool's; another pool gets its own, which never overlaps it on the
// work-queue stream).
func (c Config) Topology() bus.Topology {
	t := bus.ServiceTopology(Name)
	consumers := make([]events.Consumer, 0, len(t.Consumers))
	for _, cons := range t.Consumers {
		if cons.Stream == events.StreamJobs {
			continue
		}
		consumers = append(consumers, cons)
	}
	t.Consumers = append(consumers, events.JobConsumer(c.Pool))
	return t
}

// Service is the trainer service.
type Service struct {
	rt *service.Runtime
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	rt, err := service.New(Name, cfg.Config, deps, service.WithTopology(cfg.Topology()))
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
