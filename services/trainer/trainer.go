// Package trainer is Gyre's trainer service.
//
// Trainer decides when to retrain and does it. Its scheduler (Scheduler,
// Decide) turns triggers — a validated batch while the pipeline has no
// champion (bootstrap), drift.detected, performance.degraded, and manual
// training.requested events — into training requests under the pipeline's
// retrain policy: one job in flight per pipeline, a cooldown in validated
// batches, and never the same window twice. It emits training.requested and
// queues the same event as a job on the pool's work queue
// gyre.jobs.train.<pool>, and clears the request in flight when
// training.completed or a final training.failed comes back.
//
// Its workers (Worker) take jobs from the queue of --pool, --concurrency at
// a time, heartbeat in gyre-workers, fit the pipeline's feature set and the
// model on the window, store the bundle and the window's reference
// statistics in gyre-models, and emit training.started then
// training.completed or training.failed. Every effect is idempotent, so a
// worker killed mid-training leads to a redelivery and one completion.
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
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// Name is the service's name: its durable consumers (trainer_<handler>), its
// event source (/gyre/trainer) and its dead-letter subject (gyre.dlq.trainer)
// derive from it.
const Name = events.ServiceTrainer

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8085"

// About says what the service does in the loop; it opens the command's help.
const About = `Trainer decides when to retrain and does it. Its scheduler turns triggers — a
validated batch while the pipeline has no champion (bootstrap), drift.detected,
performance.degraded and manual training.requested events — into training requests under
the pipeline's retrain policy (one job in flight per pipeline, a cooldown in validated
batches, never the same window twice), emits training.requested and queues the job on the
pool's work queue gyre.jobs.train.<pool>, creating the pool's consumer trainer_jobs-<pool>
when it is missing, so that an autoscaler sees the lag of a pool scaled to zero.

Its workers take jobs from the queue of --pool (--concurrency at a time), heartbeat in the
gyre-workers bucket, fit the feature set and the model on the window, store the bundle and
the window's reference statistics in gyre-models, and emit training.started then
training.completed or training.failed.`

// Config is the trainer service's configuration.
type Config struct {
	service.Config
	// Pool is the worker pool whose job queue (gyre.jobs.train.<pool>) this
	// trainer's workers take jobs from: cpu, gpu, or any pool name.
	Pool string
	// Concurrency is how many jobs the workers run at once.
	Concurrency int
	// Worker names this worker in its heartbeat and its events.
	Worker string
	// JobTimeout bounds one training run; a request in flight for twice as
	// long is presumed lost by the scheduler.
	JobTimeout time.Duration
}

// Defaults of the trainer's own settings.
const (
	DefaultPool        = "cpu"
	DefaultConcurrency = 1
	DefaultJobTimeout  = time.Hour
)

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{
		Config: service.Defaults(DefaultHTTPAddr), Pool: DefaultPool, Concurrency: DefaultConcurrency,
		Worker: DefaultWorkerID(), JobTimeout: DefaultJobTimeout,
	}
}

// RegisterFlags registers the shared flags and the trainer's own on fs,
// with GYRE_* environment variables as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.StringFlag(fs, &c.Pool, "pool", "GYRE_TRAINER_POOL", c.Pool,
		"worker pool whose job queue gyre.jobs.train.<pool> this trainer serves")
	c.IntFlag(fs, &c.Concurrency, "concurrency", "GYRE_TRAINER_CONCURRENCY", c.Concurrency,
		"training jobs run at once")
	c.StringFlag(fs, &c.Worker, "worker", "GYRE_TRAINER_WORKER", c.Worker,
		"worker id in heartbeats (gyre-workers <pool>.<worker>) and training events")
	c.DurationFlag(fs, &c.JobTimeout, "job-timeout", "GYRE_TRAINER_JOB_TIMEOUT", c.JobTimeout,
		"longest one training run may take; a longer one fails for good")
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
	if c.Worker == "" || SanitizeWorkerID(c.Worker) != c.Worker {
		errs = append(errs, &service.FieldError{Flag: "worker", Env: "GYRE_TRAINER_WORKER", Value: c.Worker, Reason: "must be letters, digits, '-' or '_'"})
	}
	if c.JobTimeout <= 0 {
		errs = append(errs, &service.FieldError{Flag: "job-timeout", Env: "GYRE_TRAINER_JOB_TIMEOUT", Value: c.JobTimeout.String(), Reason: "must be positive"})
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
	rt          *service.Runtime
	cfg         Config
	scheduler   *Scheduler
	worker      *Worker
	concurrency int
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
	buckets := store.NewLazy(deps.JS)
	s := &Service{
		rt:          rt,
		cfg:         cfg,
		scheduler:   NewScheduler(buckets, rt.Publisher(), &poolQueues{js: deps.JS}, 2*cfg.JobTimeout),
		worker:      NewWorker(buckets, rt.Publisher(), cfg.Worker, cfg.Pool, cfg.JobTimeout),
		concurrency: cfg.Concurrency,
	}
	handlers := []struct {
		decl events.Consumer
		h    bus.Handler
		opts []bus.HandlerOption
	}{
		{events.EventConsumer(Name, "batch-validated", events.DataBatchValidated), s.onBatchValidated, nil},
		{events.EventConsumer(Name, "drift-detected", events.DriftDetected), s.onDriftDetected, nil},
		{events.EventConsumer(Name, "performance-degraded", events.PerformanceDegraded), s.onPerformanceDegraded, nil},
		{events.EventConsumer(Name, "training-requested", events.TrainingRequested), s.onTrainingRequested, nil},
		{events.EventConsumer(Name, "training-completed", events.TrainingCompleted), s.onTrainingCompleted, nil},
		{events.EventConsumer(Name, "training-failed", events.TrainingFailed), s.onTrainingFailed, nil},
		{events.JobConsumer(cfg.Pool), s.onJob, []bus.HandlerOption{bus.WithConcurrency(cfg.Concurrency)}},
	}
	for _, h := range handlers {
		if err := rt.Router().Handle(h.decl, h.h, h.opts...); err != nil {
			return nil, fmt.Errorf("%s: handler %s: %w", Name, h.decl.Durable(), err)
		}
	}
	return s, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop. The worker heartbeats until
// the drain is over, since jobs in hand are finished during it.
func (s *Service) Run(ctx context.Context) error {
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.worker.heartbeat(hctx, s.concurrency)
	}()
	err := s.rt.Run(ctx)
	stop()
	<-done
	return err
}

// Scheduler returns the service's scheduler.
func (s *Service) Scheduler() *Scheduler { return s.scheduler }

// Handler serves GET /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
