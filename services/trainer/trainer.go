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
// The scheduler is a role one replica plays at a time: the replica that
// holds the lease trainer-scheduler (gyre-leases) runs its handlers, the
// others stand by and take over within the lease's TTL when it goes; each
// tenure's writes carry its fencing token, so a deposed holder's late write
// is refused. Workers run on every replica.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/trainer runs it alone.
package trainer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/lease"
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
training.completed or training.failed.

With several replicas, one runs the scheduler: the holder of the lease trainer-scheduler
in the gyre-leases bucket (--replica-id names it there); the others stand by and take
over within seconds when it stops or dies. Workers run on every replica.`

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
	// ReplicaID names this replica in the scheduler's lease (who holds it,
	// as standbys and /readyz report it) and its logs. Unique per replica.
	ReplicaID string
}

// EnvReplicaID is the environment variable of --replica-id.
const EnvReplicaID = "GYRE_TRAINER_REPLICA_ID"

// SchedulerLease is the lease of the scheduler role in gyre-leases: its
// holder runs the scheduler's handlers.
const SchedulerLease = "trainer-scheduler"

// DefaultReplicaID names a replica by its host and process
// (service.DefaultReplicaID) and a random suffix, so that a restarted
// process — pid 1 again in a container — is told apart from the one before
// it in the lease and the logs.
func DefaultReplicaID() string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail
	return service.DefaultReplicaID() + "-" + hex.EncodeToString(b[:])
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
		Worker: DefaultWorkerID(), JobTimeout: DefaultJobTimeout, ReplicaID: DefaultReplicaID(),
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
	c.StringFlag(fs, &c.ReplicaID, "replica-id", EnvReplicaID, c.ReplicaID,
		"this replica's name in the scheduler's lease and logs, unique per replica (default: host name, process id and a random suffix)")
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
	if err := service.ValidateReplicaID(c.ReplicaID); err != nil {
		errs = append(errs, &service.FieldError{Flag: "replica-id", Env: EnvReplicaID, Value: c.ReplicaID, Reason: err.Error()})
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
	deps        service.Deps
	buckets     *store.Lazy
	scheduler   *Scheduler
	worker      *Worker
	concurrency int

	// provisioned is closed once the runtime has provisioned the topology:
	// the lease's bucket and the scheduler's consumers exist.
	provisioned     chan struct{}
	provisionedOnce sync.Once
	// lease is the scheduler's, made once the buckets exist.
	lease atomic.Pointer[lease.Lease]
	// leading is the fencing token of the tenure whose scheduler handlers
	// are running on this replica; 0 when none are.
	leading atomic.Uint64
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	buckets := store.NewLazy(deps.JS)
	s := &Service{
		cfg:         cfg,
		deps:        deps,
		buckets:     buckets,
		concurrency: cfg.Concurrency,
		provisioned: make(chan struct{}),
	}
	// The runtime provisions every consumer of the service, the
	// scheduler's included, and runs the workers' job consumer; the
	// scheduler's handlers run on a router of their own while this replica
	// holds the lease (lead).
	rt, err := service.New(Name, cfg.Config, deps, service.WithTopology(cfg.Topology()),
		service.WithBeforeConsume(func(context.Context) error {
			s.provisionedOnce.Do(func() { close(s.provisioned) })
			return nil
		}),
		service.WithChecks(func() []service.Check { return []service.Check{s.schedulerCheck()} }))
	if err != nil {
		return nil, err
	}
	s.rt = rt
	s.scheduler = NewScheduler(buckets, rt.Publisher(), &poolQueues{js: deps.JS}, 2*cfg.JobTimeout)
	s.worker = NewWorker(buckets, rt.Publisher(), cfg.Worker, cfg.Pool, cfg.JobTimeout)
	jobs := events.JobConsumer(cfg.Pool)
	if err := rt.Router().Handle(jobs, s.onJob, bus.WithConcurrency(cfg.Concurrency)); err != nil {
		return nil, fmt.Errorf("%s: handler %s: %w", Name, jobs.Durable(), err)
	}
	return s, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop. Meanwhile it campaigns for the
// scheduler's lease and runs the scheduler while it holds it; on stop the
// scheduler drains and the lease is given back, so that a standby takes
// over at once. The worker heartbeats until the drain is over, since jobs
// in hand are finished during it.
func (s *Service) Run(ctx context.Context) error {
	hctx, stopHeartbeat := context.WithCancel(context.WithoutCancel(ctx))
	// The campaign also stops when the runtime stops on an error.
	cctx, stopCampaign := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.worker.heartbeat(hctx, s.concurrency) })
	wg.Go(func() { s.campaign(cctx) })
	err := s.rt.Run(ctx)
	stopCampaign()
	stopHeartbeat()
	wg.Wait()
	return err
}

// campaign runs the scheduler's lease until ctx ends, once the topology is
// provisioned.
func (s *Service) campaign(ctx context.Context) {
	select {
	case <-s.provisioned:
	case <-ctx.Done():
		return
	}
	b, err := s.buckets.Get(ctx)
	for err != nil {
		if ctx.Err() != nil {
			return
		}
		s.rt.Logger().Warn("scheduler lease: buckets not open; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		b, err = s.buckets.Get(ctx)
	}
	l := lease.New(b.Leases, SchedulerLease, s.cfg.ReplicaID, events.LeaseTTL, s.rt.Logger())
	s.lease.Store(l)
	l.Run(ctx, s.lead)
}

// lead runs the scheduler's handlers for one tenure of the lease, on a
// router of their own, until ctx ends — the lease is lost or the service
// stops — and the router has drained: the message in hand is finished (its
// writes fenced by the tenure's token), the rest are left on the consumers
// for the next holder.
func (s *Service) lead(ctx context.Context, t lease.Tenure) {
	log := s.rt.Logger().With("lease", SchedulerLease, "token", t.Token)
	r, err := bus.NewRouter(s.deps.JS, bus.RouterConfig{
		Service: Name, CloseTimeout: s.cfg.ShutdownTimeout, Logger: s.rt.Logger(), Metrics: s.deps.BusMetrics,
	})
	if err != nil {
		log.Error("scheduler not started", "error", err)
		return
	}
	ports := schedulerPorts{sch: s.scheduler.Fenced(t.Token)}
	for _, route := range ports.routes() {
		if err := r.Handle(route.decl, route.h); err != nil {
			log.Error("scheduler not started", "handler", route.decl.Durable(), "error", err)
			return
		}
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Running():
		s.leading.Store(t.Token)
		log.Info("scheduler leading")
		err = <-done
	case err = <-done:
	}
	s.leading.Store(0)
	if err != nil && ctx.Err() == nil {
		// Returning gives the lease back; the campaign goes on.
		log.Error("scheduler stopped", "error", err)
		return
	}
	log.Info("scheduler standing by")
}

// Scheduler returns the service's scheduler, unfenced (see
// Scheduler.Fenced): the one the lease's holder runs is fenced by its
// tenure.
func (s *Service) Scheduler() *Scheduler { return s.scheduler }

// Leading returns the fencing token of the tenure whose scheduler runs on
// this replica; ok is false while it stands by.
func (s *Service) Leading() (token uint64, ok bool) {
	t := s.leading.Load()
	return t, t != 0
}

// Handler serves GET /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not: the
// runtime's checks, with whether this replica leads the scheduler or stands
// by — both ready states: a standby is a healthy replica.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }

// schedulerCheck is the readiness check "scheduler".
func (s *Service) schedulerCheck() service.Check {
	c := service.Check{Name: "scheduler", OK: true}
	l := s.lease.Load()
	if l == nil {
		c.OK, c.Detail = false, "not campaigning yet: the topology is not provisioned"
		return c
	}
	st := l.Status()
	switch token, leading := s.Leading(); {
	case leading:
		c.Detail = fmt.Sprintf("leading (token %d)", token)
	case st.Held:
		c.Detail = fmt.Sprintf("leading (token %d): starting or stopping its handlers", st.Token)
	case st.Holder != "" && st.Holder != s.cfg.ReplicaID:
		c.Detail = "standby: held by " + st.Holder
	default:
		c.Detail = "standby: campaigning for the lease " + SchedulerLease
	}
	return c
}
