// Package service is the runtime every Gyre service runs on: configuration
// shared by all services (flags with GYRE_* environment defaults), the
// process dependencies (NATS connection, JetStream, Prometheus registry,
// logger, tracing), and a Runtime that provisions the service's JetStream
// topology, owns its bus publisher and router, tracks readiness, and serves
// /healthz, /readyz and /metrics.
//
// A standalone service gets its dependencies from Connect; `gyre up` makes one
// set and hands it to every service, so that they share a connection and a
// registry.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/httpauth"
)

// Runtime runs one service: it provisions the service's topology, runs its
// bus router, and answers health, readiness and metrics over HTTP. Services
// register their handlers on Router and their HTTP routes, each with the
// scope it needs, with HandleRoute or HandleScoped before Run.
type Runtime struct {
	name      string
	cfg       Config
	deps      Deps
	logger    *slog.Logger
	topology  bus.Topology
	publisher *bus.Publisher
	router    *bus.Router
	mux       *http.ServeMux

	started       atomic.Bool
	provisioned   atomic.Bool
	routerRunning atomic.Bool
	stopping      atomic.Bool

	mu      sync.Mutex
	changes []bus.Change

	beforeConsume func(ctx context.Context) error
	checks        func() []Check
}

// Option configures a Runtime.
type Option func(*Runtime)

// WithTopology replaces what the runtime provisions (default:
// bus.ServiceTopology(name)), for a service whose consumers depend on its
// configuration, such as a trainer serving another pool.
func WithTopology(t bus.Topology) Option {
	return func(r *Runtime) { r.topology = t }
}

// WithBeforeConsume runs f after provisioning and before the router takes
// its first message: for a service that must prepare something the
// handlers need first. An error from f ends Run with it.
func WithBeforeConsume(f func(ctx context.Context) error) Option {
	return func(r *Runtime) { r.beforeConsume = f }
}

// WithChecks adds the service's own readiness checks, called on every
// Readiness and /readyz: whether its models are in force (the deployer),
// which replica holds a role (informative checks that stay OK). A check
// that is not OK makes the service not ready.
func WithChecks(f func() []Check) Option {
	return func(r *Runtime) { r.checks = f }
}

// New returns the runtime of the named service.
func New(name string, cfg Config, deps Deps, opts ...Option) (*Runtime, error) {
	if err := events.ValidateService(name); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", name, err)
	}
	if err := deps.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	logger := deps.Logger.With("service", name)
	router, err := bus.NewRouter(deps.JS, bus.RouterConfig{
		Service:      name,
		CloseTimeout: cfg.ShutdownTimeout,
		Logger:       logger,
		Metrics:      deps.BusMetrics,
	})
	if err != nil {
		return nil, fmt.Errorf("%s router: %w", name, err)
	}
	r := &Runtime{
		name:      name,
		cfg:       cfg,
		deps:      deps,
		logger:    logger,
		topology:  bus.ServiceTopology(name),
		publisher: bus.NewPublisher(deps.JS, name, bus.WithPublisherMetrics(deps.BusMetrics)),
		router:    router,
		mux:       http.NewServeMux(),
	}
	for _, o := range opts {
		o(r)
	}
	r.topology.Replicas = cfg.StreamReplicas
	// With an identity of its own the service may create what is missing
	// but not change what exists (libs/natsauth): the admin does.
	r.topology.CreateOnly = cfg.NATSNkey != ""
	r.mux.HandleFunc("GET /healthz", r.serveHealth)
	r.mux.HandleFunc("GET /readyz", r.serveReady)
	r.mux.Handle("GET /metrics", promhttp.HandlerFor(deps.Registry, promhttp.HandlerOpts{
		Registry:          deps.Registry,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
		EnableOpenMetrics: true,
	}))
	return r, nil
}

// Name returns the service name.
func (r *Runtime) Name() string { return r.name }

// Logger returns the service's logger (JSON, with the service attribute).
func (r *Runtime) Logger() *slog.Logger { return r.logger }

// Publisher returns the service's publisher: events it emits have source
// /gyre/<service>.
func (r *Runtime) Publisher() *bus.Publisher { return r.publisher }

// Router returns the service's router; register handlers on it before Run.
func (r *Runtime) Router() *bus.Router { return r.router }

// JetStream returns the JetStream API the runtime uses.
func (r *Runtime) JetStream() jetstream.JetStream { return r.deps.JS }

// Topology returns what the runtime provisions.
func (r *Runtime) Topology() bus.Topology { return r.topology }

// Changes returns the report of the last provisioning: one change per
// stream, consumer and bucket, in provisioning order.
func (r *Runtime) Changes() []bus.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bus.Change(nil), r.changes...)
}

// Scope is what a credential allows (httpauth.Scope); a route names the one
// it needs.
type Scope = httpauth.Scope

// The scopes of routes. ScopeAdmin implies the others; ScopePublic needs no
// credential at all.
const (
	ScopeIngest = httpauth.ScopeIngest
	ScopeInfer  = httpauth.ScopeInfer
	ScopeRead   = httpauth.ScopeRead
	ScopeAdmin  = httpauth.ScopeAdmin
	ScopePublic = httpauth.Public
)

// Route is an HTTP route of a service and the scope a caller needs for it.
type Route struct {
	// Pattern is an http.ServeMux pattern, with its method: "GET /v1/x/{id}".
	Pattern string
	// Scope is what a caller's credential must hold (or admin); ScopePublic
	// for a route anyone may call (a health check). Required: a route that
	// does not say is an error, not an open door.
	Scope Scope
	// Handler serves the route; the caller's principal is in its request
	// context (httpauth.PrincipalFrom).
	Handler http.Handler
	// QueryToken also accepts the token as ?access_token=, for a route a
	// browser's EventSource reads (it cannot send headers); the parameter is
	// removed before Handler sees the request.
	QueryToken bool
}

// HandleRoute adds an HTTP route to the service's handler, guarded by its
// scope (see Deps.Auth). The health, readiness and metrics routes are taken
// and public; a pattern that conflicts with a route already there, or a
// route without a scope, is an error.
func (r *Runtime) HandleRoute(rt Route) (err error) {
	if rt.Scope != ScopePublic && !rt.Scope.Valid() {
		return fmt.Errorf("%s: route %q: scope %q is not one of %v or %q", r.name, rt.Pattern, rt.Scope, httpauth.Scopes(), ScopePublic)
	}
	if rt.Handler == nil {
		return fmt.Errorf("%s: route %q: no handler", r.name, rt.Pattern)
	}
	var opts []httpauth.RequireOption
	if rt.QueryToken {
		opts = append(opts, httpauth.WithQueryToken())
	}
	h := r.deps.Auth.Require(rt.Scope, rt.Handler, opts...)
	// http.ServeMux reports a conflicting pattern by panicking; a service
	// adding a route should get an error it can return instead.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: route %q: %v", r.name, rt.Pattern, p)
		}
	}()
	r.mux.Handle(rt.Pattern, h)
	return nil
}

// HandleScoped adds a route that needs scope: HandleRoute(Route{pattern,
// scope, h}).
func (r *Runtime) HandleScoped(pattern string, scope Scope, h http.Handler) error {
	return r.HandleRoute(Route{Pattern: pattern, Scope: scope, Handler: h})
}

// Handle adds a route that needs the admin scope. A route that has not said
// what it needs gets the most privileged: use HandleScoped to name the
// least one.
func (r *Runtime) Handle(pattern string, h http.Handler) error {
	return r.HandleScoped(pattern, ScopeAdmin, h)
}

// Handler returns the service's HTTP handler: GET /healthz, GET /readyz,
// GET /metrics and the routes added with HandleRoute.
func (r *Runtime) Handler() http.Handler { return r.mux }

// Run provisions the service's topology, then runs the router until ctx
// ends, then drains it: no new message is taken and the messages in hand are
// finished within the shutdown timeout. It returns nil after a clean drain,
// also when ctx ends during provisioning. Provisioning is retried with
// backoff while NATS is unreachable; a declaration the server cannot accept
// (a stream's retention changed, say) is returned as an error.
func (r *Runtime) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return fmt.Errorf("%s: Run called twice", r.name)
	}
	// Readiness drops as soon as a stop is asked for, so that a load balancer
	// stops sending work while the router drains.
	stop := context.AfterFunc(ctx, func() { r.stopping.Store(true) })
	defer stop()

	if err := r.provision(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if r.beforeConsume != nil {
		if err := r.beforeConsume(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- r.router.Run(ctx) }()
	select {
	case <-r.router.Running():
		r.routerRunning.Store(true)
		r.logger.Info("service running")
	case err := <-errc:
		return fmt.Errorf("%s router: %w", r.name, err)
	}
	err := <-errc
	r.routerRunning.Store(false)
	if err != nil {
		return fmt.Errorf("%s router: %w", r.name, err)
	}
	r.logger.Info("service stopped")
	return nil
}

// provisionAttemptTimeout bounds one provisioning attempt; a server that
// answers takes milliseconds.
const provisionAttemptTimeout = 30 * time.Second

func (r *Runtime) provision(ctx context.Context) error {
	delay := 250 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, provisionAttemptTimeout)
		changes, err := bus.Provision(actx, r.deps.JS, r.topology)
		cancel()
		r.recordChanges(changes)
		if err == nil {
			r.provisioned.Store(true)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.transient(err) {
			if n := r.topology.Replicas; n > 1 && tooFewServers(err) {
				return fmt.Errorf("%s: provision topology: %w (--stream-replicas %d, env %s: the NATS server must be a JetStream cluster of at least %d servers)", r.name, err, n, EnvStreamReplicas, n)
			}
			return fmt.Errorf("%s: provision topology: %w", r.name, err)
		}
		r.logger.Warn("provisioning failed; retrying", "error", err, "retry_in", delay.String())
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// transient reports whether a provisioning error may go away by itself: the
// connection is down, or the server has not answered (yet).
func (r *Runtime) transient(err error) bool {
	if !r.deps.Conn.IsConnected() {
		return !r.deps.Conn.IsClosed()
	}
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// JetStream's errors for more replicas than the servers can place: a
// single server (JSStreamReplicasNotSupportedErr) or a smaller cluster
// (JSClusterNoPeersErrF).
const (
	errCodeReplicasNotSupported = 10074
	errCodeNoPeers              = 10005
)

// tooFewServers reports whether err says the server cannot place as many
// replicas as asked.
func tooFewServers(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == errCodeReplicasNotSupported || api.ErrorCode == errCodeNoPeers)
}

func (r *Runtime) recordChanges(changes []bus.Change) {
	r.mu.Lock()
	r.changes = changes
	r.mu.Unlock()
	counts := map[bus.Action]int{}
	for _, c := range changes {
		counts[c.Action]++
		if c.Action == bus.Unchanged {
			continue
		}
		attrs := []any{"kind", c.Kind, "name", c.Name, "action", string(c.Action)}
		if len(c.Diff) > 0 {
			attrs = append(attrs, "diff", c.Diff)
		}
		if c.Action == bus.Differs {
			r.logger.Warn("topology differs from the catalog and this service's NATS identity may not change it: provision as the admin (gyre up, or this service once with --nats-nkey admin.nk)", attrs...)
			continue
		}
		r.logger.Info("topology "+string(c.Action), attrs...)
	}
	if len(changes) > 0 {
		r.logger.Info("topology provisioned",
			"created", counts[bus.Created], "updated", counts[bus.Updated], "unchanged", counts[bus.Unchanged])
	}
}

// Check is one condition of readiness.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Readiness is what /readyz answers: whether the service can take work, and
// each condition with why it holds or not.
type Readiness struct {
	Service string `json:"service"`
	// Status is "ready" or "not ready".
	Status string  `json:"status"`
	Ready  bool    `json:"-"`
	Checks []Check `json:"checks"`
	// NotReady names the checks that fail.
	NotReady []string `json:"notReady,omitempty"`
}

// Readiness reports whether the service is ready: its topology is
// provisioned, its router is running and not draining, and NATS is
// connected.
func (r *Runtime) Readiness() Readiness {
	natsOK := r.deps.Conn.Status() == nats.CONNECTED
	natsDetail := "connected"
	if !natsOK {
		natsDetail = "not connected: " + natsStatus(r.deps.Conn.Status())
	}
	topoDetail := "provisioned"
	if !r.provisioned.Load() {
		topoDetail = "not provisioned yet"
	}
	running := r.routerRunning.Load() && !r.stopping.Load()
	routerDetail := "running"
	switch {
	case r.stopping.Load():
		routerDetail = "stopping: draining in-flight messages"
	case !r.routerRunning.Load():
		routerDetail = "not running yet"
	}
	rd := Readiness{Service: r.name, Checks: []Check{
		{Name: "nats", OK: natsOK, Detail: natsDetail},
		{Name: "topology", OK: r.provisioned.Load(), Detail: topoDetail},
		{Name: "router", OK: running, Detail: routerDetail},
	}}
	if r.checks != nil {
		rd.Checks = append(rd.Checks, r.checks()...)
	}
	for _, c := range rd.Checks {
		if !c.OK {
			rd.NotReady = append(rd.NotReady, c.Name)
		}
	}
	rd.Ready = len(rd.NotReady) == 0
	rd.Status = "ready"
	if !rd.Ready {
		rd.Status = "not ready"
	}
	return rd
}

func natsStatus(s nats.Status) string {
	switch s {
	case nats.DISCONNECTED:
		return "disconnected"
	case nats.CONNECTING:
		return "connecting"
	case nats.RECONNECTING:
		return "reconnecting"
	case nats.CLOSED:
		return "closed"
	case nats.DRAINING_SUBS, nats.DRAINING_PUBS:
		return "draining"
	}
	return s.String()
}

func (r *Runtime) serveHealth(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "service": r.name})
}

func (r *Runtime) serveReady(w http.ResponseWriter, _ *http.Request) {
	rd := r.Readiness()
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	WriteJSON(w, code, rd)
}

// WriteJSON writes v as a JSON response with the given status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		body = []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// Runner is what a Gyre service exposes to the process that runs it, alone
// (Standalone) or with the others under `gyre up`.
type Runner interface {
	Name() string
	Run(ctx context.Context) error
	Handler() http.Handler
	Readiness() Readiness
}

var _ Runner = (*Runtime)(nil)
