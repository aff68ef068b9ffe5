// Package deployer is Gyre's deployer service.
//
// Deployer puts champions into service. On model.promoted it loads the
// bundle from gyre-models and rolls the version out with the pipeline's
// strategy: immediate (an atomic swap: requests in flight finish on the
// model they started with), canary (steps of traffic, sticky per route
// header), shadow (the candidate scores a copy of the traffic, off the
// request path) or blue-green (verified beside the champion, then all
// traffic switched at once, the champion kept loaded to switch back). The
// candidate is judged on its error rate, p99 latency, the drift of its
// predictions from the champion's and, once labels arrive, its live
// accuracy against the champion's; each decision is a
// deployment.progressed, .completed or .rolledback with its figures.
// It records each pipeline's deployment in gyre-deployments and restores
// what served from there when it starts. It serves predictions with the
// Open Inference Protocol v2 — REST under /v2/models/<pipeline>, with the
// binary tensor data extension, and, on --grpc, gRPC's
// GRPCInferenceService (with the gRPC health service and server
// reflection) — and publishes a sample of them (spec.deployment.sampleRate)
// as prediction.logged, off the request path.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/deployer runs it alone.
package deployer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/lease"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// Name is the service's name: its durable consumers (deployer_<handler>), its
// event source (/gyre/deployer) and its dead-letter subject (gyre.dlq.deployer)
// derive from it.
const Name = events.ServiceDeployer

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8088"

// About says what the service does in the loop; it opens the command's help.
const About = `Deployer puts champions into service. On model.promoted it loads the bundle and rolls the
version out with the pipeline's strategy — immediate (an atomic swap), canary (sticky traffic
steps), shadow (the candidate scores a copy of the traffic) or blue-green (verify, switch all
at once, switch back if it fails) — judged on error rate, p99 latency, prediction drift and
live accuracy, with automatic promotion or rollback, emitting deployment.started, .progressed,
.completed or .rolledback with the figures that decided, and records it in gyre-deployments,
from where it restores what served when it starts. It serves predictions with the Open
Inference Protocol v2 at /v2/models/<pipeline>/infer (REST, with binary tensor data) and,
with --grpc, as gRPC's inference.GRPCInferenceService (plus grpc.health.v1 and server
reflection; the same bearer tokens and scopes as HTTP, as authorization metadata), and
publishes a sample of them as prediction.logged.`

// Config is the deployer service's configuration.
type Config struct {
	service.Config
	// PredictionQueue bounds the sampled predictions waiting to be
	// published; beyond it they are dropped (and counted).
	PredictionQueue int
	// MaxRequestBytes bounds an inference request's body; a larger one is
	// answered 413.
	MaxRequestBytes int
	// ReplicaID names this replica: in the deployer's lease (the replica
	// that controls the rollouts) and its logs. Unique per replica.
	ReplicaID string
	// VerifyKeys is a PEM file of the ed25519 public keys the deployer
	// trusts to have signed the versions it serves (the registry's).
	VerifyKeys string
	// GRPCAddr is where the Open Inference Protocol's gRPC service
	// listens (host:port, port 0 for any free one); empty: no gRPC. Off by
	// default for the service alone, whose ports its deployment declares;
	// `gyre up` serves it on 127.0.0.1:8081.
	GRPCAddr string
}

// Environment variables of the deployer's own settings.
const (
	EnvPredictionQueue = "GYRE_DEPLOYER_PREDICTION_QUEUE"
	EnvMaxRequestBytes = "GYRE_DEPLOYER_MAX_REQUEST_BYTES"
	EnvReplicaID       = "GYRE_DEPLOYER_REPLICA_ID"
	EnvVerifyKeys      = "GYRE_DEPLOYER_VERIFY_KEYS"
	EnvGRPCAddr        = "GYRE_DEPLOYER_GRPC_ADDR"
)

// LeaseName is the lease of the role one deployer replica holds at a time:
// controlling the rollouts.
const LeaseName = "deployer-controller"

// DefaultPredictionQueue is the default bound of the prediction log queue.
const DefaultPredictionQueue = 4096

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{
		Config:          service.Defaults(DefaultHTTPAddr),
		PredictionQueue: DefaultPredictionQueue,
		MaxRequestBytes: DefaultMaxRequestBytes,
		ReplicaID:       service.DefaultReplicaID(),
	}
}

// RegisterFlags registers the shared flags and the deployer's own.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.IntFlag(fs, &c.PredictionQueue, "prediction-queue", EnvPredictionQueue, c.PredictionQueue,
		"sampled predictions waiting to be published; more are dropped and counted")
	c.IntFlag(fs, &c.MaxRequestBytes, "max-request-bytes", EnvMaxRequestBytes, c.MaxRequestBytes,
		"largest inference request body, in bytes; a larger one is answered 413")
	c.StringFlag(fs, &c.ReplicaID, "replica-id", EnvReplicaID, c.ReplicaID,
		"this replica's name in the controller lease and logs, unique per replica (default: host name and process id; a pod's name on Kubernetes)")
	c.StringFlag(fs, &c.VerifyKeys, "verify-keys", EnvVerifyKeys, c.VerifyKeys,
		"PEM file of the ed25519 public keys (the registry's signing.pub) a version must be signed with to be served; several to rotate")
	c.StringFlag(fs, &c.GRPCAddr, "grpc", EnvGRPCAddr, c.GRPCAddr,
		"host:port of the Open Inference Protocol's gRPC service (inference.GRPCInferenceService, grpc.health.v1, reflection), port 0 for any free one; empty or off: none (the default)")
}

// Validate checks every setting.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.PredictionQueue <= 0 {
		errs = append(errs, &service.FieldError{Flag: "prediction-queue", Env: EnvPredictionQueue,
			Value: fmt.Sprint(c.PredictionQueue), Reason: "must be positive"})
	}
	if c.MaxRequestBytes <= 0 {
		errs = append(errs, &service.FieldError{Flag: "max-request-bytes", Env: EnvMaxRequestBytes,
			Value: fmt.Sprint(c.MaxRequestBytes), Reason: "must be positive"})
	}
	if err := service.ValidateReplicaID(c.ReplicaID); err != nil {
		errs = append(errs, &service.FieldError{Flag: "replica-id", Env: EnvReplicaID, Value: c.ReplicaID, Reason: err.Error()})
	}
	if c.GRPCAddr != "" && !grpcOff(c.GRPCAddr) {
		if err := service.ValidateHostPort(c.GRPCAddr); err != nil {
			errs = append(errs, &service.FieldError{Flag: "grpc", Env: EnvGRPCAddr, Value: c.GRPCAddr, Reason: err.Error()})
		}
	}
	if c.VerifyKeys == "" {
		errs = append(errs, &service.FieldError{Flag: "verify-keys", Env: EnvVerifyKeys, Value: "",
			Reason: "is required: the deployer serves only versions the registry signed (its --signing-key's public key; gyre auth signing-key writes a pair)"})
	} else if _, err := signing.LoadPublicKeys(c.VerifyKeys); err != nil {
		errs = append(errs, &service.FieldError{Flag: "verify-keys", Env: EnvVerifyKeys, Value: c.VerifyKeys, Reason: err.Error()})
	}
	return errors.Join(errs...)
}

// grpcOff reports whether a --grpc value turns gRPC off.
func grpcOff(addr string) bool { return addr == "" || strings.EqualFold(addr, "off") }

// Service is the deployer service.
type Service struct {
	rt      *service.Runtime
	cfg     Config
	app     *serving.Deployer
	log     *predictionLog
	metrics *metrics
	lazy    *store.Lazy
	// lease is the controller's, made once the buckets exist.
	lease atomic.Pointer[lease.Lease]
	// auth checks the credentials of gRPC calls, as HTTP's routes do.
	auth *httpauth.Authenticator
	// grpcLn is where gRPC is served (ServeGRPC, or --grpc once Run
	// listens); grpcAddr its address once listening.
	grpcLn   net.Listener
	grpcAddr atomic.Pointer[string]
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	s := &Service{cfg: cfg, auth: deps.Auth}
	rt, err := service.New(Name, cfg.Config, deps, service.WithChecks(s.checks))
	if err != nil {
		return nil, err
	}
	s.rt = rt
	m, err := newMetrics(deps.Registry)
	if err != nil {
		return nil, fmt.Errorf("%s metrics: %w", Name, err)
	}
	lazy := store.NewLazy(deps.JS)
	st := stores{lazy: lazy}
	s.metrics, s.lazy = m, lazy
	s.log = newPredictionLog(rt.Publisher(), cfg.PredictionQueue, m, rt.Logger())
	if err := registerQueueGauge(deps.Registry, s.log); err != nil {
		return nil, fmt.Errorf("%s metrics: %w", Name, err)
	}
	keys, err := signing.LoadPublicKeys(cfg.VerifyKeys)
	if err != nil {
		return nil, fmt.Errorf("%s: --verify-keys: %w", Name, err)
	}
	s.app = serving.New(st, desiredStore{st}, st, specStore{st}, tallyStore{st}, emitter{pub: rt.Publisher()}, s.log,
		serving.Options{Logger: rt.Logger().With("replica", cfg.ReplicaID), Replica: cfg.ReplicaID, Verifier: signing.NewVerifier(keys...)})
	if err := registerRolloutCollector(deps.Registry, s.app.Records); err != nil {
		return nil, fmt.Errorf("%s metrics: %w", Name, err)
	}
	if err := s.register(); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if err := s.routes(); err != nil {
		return nil, err
	}
	return s, nil
}

// Run provisions the service's topology, then serves — every replica
// watches the deployment records and puts in force what each says — and
// campaigns for the controller's lease: the replica that holds it watches
// the registry and runs the rollouts. It runs until ctx ends; then it drains
// the event handlers, gives the lease back and publishes the predictions
// still queued. It returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	ln := s.grpcLn
	if ln == nil && !grpcOff(s.cfg.GRPCAddr) {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
			return fmt.Errorf("--grpc %s: %w", s.cfg.GRPCAddr, err)
		}
	}
	// The helpers stop with the runtime, also when it stops on an error.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var grpcSrv *grpcServer
	grpcErr := make(chan error, 1)
	if ln != nil {
		grpcSrv = s.newGRPCServer()
		addr := ln.Addr().String()
		s.grpcAddr.Store(&addr)
		s.rt.Logger().Info("serving grpc", "addr", addr, "services", grpcSrv.serviceNames())
		wg.Go(func() {
			err := grpcSrv.serve(ln)
			if err != nil {
				// As HTTP does: a server that fails stops the service.
				cancel()
			}
			grpcErr <- err
		})
		wg.Go(func() { grpcSrv.trackHealth(ctx) })
	}
	wg.Go(func() {
		if !s.awaitTopology(ctx) {
			return
		}
		if err := s.app.Serve(ctx); err != nil && ctx.Err() == nil {
			s.rt.Logger().Error("serving stopped", "error", err)
		}
	})
	wg.Go(func() {
		if !s.awaitTopology(ctx) {
			return
		}
		b, err := s.lazy.Get(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.rt.Logger().Error("controller lease: buckets not open", "error", err)
			}
			return
		}
		l := lease.New(b.Leases, LeaseName, s.cfg.ReplicaID, events.LeaseTTL, s.rt.Logger())
		s.lease.Store(l)
		l.Run(ctx, func(ctx context.Context, t lease.Tenure) { s.app.Lead(ctx, t.Token) })
	})
	wg.Go(func() { s.log.run(ctx, s.cfg.ShutdownTimeout) })
	err := s.rt.Run(ctx)
	cancel()
	if grpcSrv != nil {
		// Calls in flight finish within the shutdown timeout, as HTTP's.
		grpcSrv.stop(s.cfg.ShutdownTimeout)
		if gerr := <-grpcErr; gerr != nil {
			err = errors.Join(err, fmt.Errorf("grpc server: %w", gerr))
		}
	}
	wg.Wait()
	return err
}

// ServeGRPC makes Run serve the Open Inference Protocol's gRPC service on
// ln (instead of listening on --grpc): for `gyre up`, which opens its
// listeners before it starts the services, and for tests. Call it before
// Run; Run closes ln when it returns.
func (s *Service) ServeGRPC(ln net.Listener) { s.grpcLn = ln }

// GRPCAddr returns the address gRPC is served on, once Run listens; ""
// before, or when gRPC is off.
func (s *Service) GRPCAddr() string {
	if a := s.grpcAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// awaitTopology waits until the runtime has provisioned the buckets that
// serving reads; false when ctx ended first.
func (s *Service) awaitTopology(ctx context.Context) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, c := range s.rt.Readiness().Checks {
			if c.Name == "topology" && c.OK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// Handler serves the Open Inference Protocol v2 routes, GET
// /v1/deployments/{pipeline}, /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not: the
// runtime's checks, whether every deployment record is in force on this
// replica, and (informative, never failing) whether it controls the
// rollouts or stands by.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }

// checks are the deployer's own readiness checks (on /readyz too).
func (s *Service) checks() []service.Check {
	if s.app == nil {
		return nil
	}
	ok, why := s.app.Ready()
	return []service.Check{{Name: "serving", OK: ok, Detail: why}, s.controllerCheck()}
}

// controllerCheck says whether this replica controls the rollouts; a
// standby is as ready as the controller.
func (s *Service) controllerCheck() service.Check {
	c := service.Check{Name: "controller", OK: true, Detail: "campaigning for the lease " + LeaseName}
	l := s.lease.Load()
	if l == nil {
		return c
	}
	st := l.Status()
	switch {
	case st.Held && s.app.Leading():
		c.Detail = fmt.Sprintf("controlling the rollouts (lease %s, token %d)", LeaseName, st.Token)
	case st.Held:
		c.Detail = fmt.Sprintf("holds the lease %s (token %d); restoring before controlling", LeaseName, st.Token)
	case st.Holder != "":
		c.Detail = fmt.Sprintf("standing by: %s controls the rollouts", st.Holder)
	}
	return c
}
