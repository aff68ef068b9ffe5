package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/natsauth"
)

// Deps are what a service runtime is built from. They are explicit so that
// `gyre up` can share one NATS connection, one metrics registry and one set
// of bus metrics across every service of the process; a standalone service
// gets its own from Connect.
type Deps struct {
	// Conn is the NATS connection; readiness follows its state.
	Conn *nats.Conn
	// JS is the JetStream API over Conn.
	JS jetstream.JetStream
	// Registry is what /metrics serves.
	Registry *prometheus.Registry
	// Logger is the process logger; each runtime adds its service attribute.
	Logger *slog.Logger
	// BusMetrics are the bus collectors, registered on Registry.
	BusMetrics *bus.Metrics
	// Auth checks the credentials of HTTP requests to the routes the
	// services add (Runtime.HandleScoped). One per process, so that `gyre up`
	// reads the token file and the JWT key set once for every service. Nil
	// refuses every protected route, like a required mode with no
	// credential source.
	Auth *httpauth.Authenticator
}

// Validate reports the dependencies that are missing.
func (d Deps) Validate() error {
	var missing []string
	if d.Conn == nil {
		missing = append(missing, "Conn")
	}
	if d.JS == nil {
		missing = append(missing, "JS")
	}
	if d.Registry == nil {
		missing = append(missing, "Registry")
	}
	if d.Logger == nil {
		missing = append(missing, "Logger")
	}
	if d.BusMetrics == nil {
		missing = append(missing, "BusMetrics")
	}
	if len(missing) > 0 {
		return fmt.Errorf("service deps: missing %v", missing)
	}
	return nil
}

// NewLogger returns a JSON logger writing to w at the given level.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	lvl, err := ParseLogLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

// NewRegistry returns a Prometheus registry holding the Go runtime and
// process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Process is what Connect makes for a process: its Deps, and the connection,
// tracer provider and authenticator that Close releases.
type Process struct {
	Deps
	closed          <-chan struct{}
	shutdownTracing func(context.Context) error
}

// ConnectOption configures Connect.
type ConnectOption func(*connectOptions)

type connectOptions struct {
	logOut   io.Writer
	traceOut io.Writer
}

// WithLogOutput sends the JSON logs to w (default os.Stderr).
func WithLogOutput(w io.Writer) ConnectOption {
	return func(o *connectOptions) { o.logOut = w }
}

// WithTraceOutput sends the spans of the stdout trace exporter to w (default os.Stdout).
func WithTraceOutput(w io.Writer) ConnectOption {
	return func(o *connectOptions) { o.traceOut = w }
}

// Connect makes the dependencies of a process named name: a JSON logger, a
// metrics registry with the Go and process collectors and the bus metrics,
// the global OpenTelemetry tracer provider, and a NATS connection named
// "gyre-<name>" that reconnects forever with jittered backoff. It does not
// wait for the server: when it is not reachable yet the connection keeps
// trying, the runtime reports not ready and retries provisioning, so that a
// service may start before NATS does (as pods do). Call Close on exit.
func Connect(ctx context.Context, cfg Config, name string, opts ...ConnectOption) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := connectOptions{logOut: os.Stderr, traceOut: os.Stdout}
	for _, opt := range opts {
		opt(&o)
	}
	logger, err := NewLogger(o.logOut, cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	shutdownTracing, err := SetupTracing(cfg.TraceExporter, name, o.traceOut)
	if err != nil {
		return nil, err
	}
	reg := NewRegistry()
	busMetrics, err := bus.NewMetrics(reg)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bus metrics: %w", err), shutdownTracing(context.Background()))
	}
	auth, err := NewAuthenticator(cfg, logger.With("service", name, "component", "httpauth"))
	if err != nil {
		return nil, errors.Join(err, shutdownTracing(context.Background()))
	}
	nc, closed, err := Dial(cfg, name, logger)
	if err != nil {
		auth.Close()
		return nil, errors.Join(err, shutdownTracing(context.Background()))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		auth.Close()
		return nil, errors.Join(fmt.Errorf("jetstream: %w", err), shutdownTracing(context.Background()))
	}
	return &Process{
		Deps:            Deps{Conn: nc, JS: js, Registry: reg, Logger: logger, BusMetrics: busMetrics, Auth: auth},
		closed:          closed,
		shutdownTracing: shutdownTracing,
	}, nil
}

// Dial opens the NATS connection of a service named name: named
// "gyre-<name>", with the identity of cfg.NATSNkey and its replies under
// natsauth.InboxPrefix(name) (the only subjects that identity may
// subscribe to), reconnecting forever with jittered backoff. It does not
// wait for the server. The channel closes once the connection is closed.
func Dial(cfg Config, name string, logger *slog.Logger) (*nats.Conn, <-chan struct{}, error) {
	connLog := logger.With("service", name, "component", "nats")
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.Name("gyre-" + name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.ConnectHandler(func(c *nats.Conn) {
			connLog.Info("nats connected", "url", c.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			// A drain on shutdown disconnects too; that is no news.
			if err == nil && (c.IsClosed() || c.IsDraining()) {
				return
			}
			connLog.Warn("nats disconnected; reconnecting", "error", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			connLog.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			// A permissions violation names the subject this identity was
			// refused: a missing grant, or a service doing what it should not.
			connLog.Error("nats asynchronous error", "subject", subject, "error", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	}
	if cfg.NATSNkey != "" {
		seed, err := natsauth.ReadSeed(cfg.NATSNkey)
		if err != nil {
			return nil, nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opt, err := natsauth.NkeyOption(seed)
		if err != nil {
			return nil, nil, fmt.Errorf("--nats-nkey %s: %w", cfg.NATSNkey, err)
		}
		opts = append(opts, opt, nats.CustomInboxPrefix(natsauth.InboxPrefix(name)))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", RedactURL(cfg.NATSURL), err)
	}
	if !nc.IsConnected() {
		connLog.Warn("nats not reachable yet; retrying in the background", "url", RedactURL(cfg.NATSURL))
	}
	return nc, closed, nil
}

// RedactURL returns a NATS URL (or comma-separated URLs) with passwords
// masked, for logs and errors.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		// A user name alone may be a token (nats://token@host): mask it all.
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// reconnectDelay backs off from 250ms to 10s, with jitter so that many
// services restarting together do not reconnect in lockstep.
func reconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(attempts, 6)
	d = min(d, 10*time.Second)
	return d/2 + rand.N(d/2+1)
}

// Close drains the NATS connection — pending publishes are flushed — and
// flushes and shuts down the tracer provider, within ctx.
func (p *Process) Close(ctx context.Context) error {
	var errs []error
	// Drain of a connection that is still (re)connecting closes it at once:
	// there is nothing in flight to flush.
	if err := p.Conn.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionReconnecting) {
		errs = append(errs, fmt.Errorf("drain nats connection: %w", err))
		p.Conn.Close()
	}
	select {
	case <-p.closed:
	case <-ctx.Done():
		p.Conn.Close()
		errs = append(errs, fmt.Errorf("drain nats connection: %w", ctx.Err()))
	}
	if err := p.shutdownTracing(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down tracing: %w", err))
	}
	p.Auth.Close()
	return errors.Join(errs...)
}

// NewAuthenticator returns the HTTP authenticator of cfg's --http-auth,
// --auth-tokens and --auth-jwt-* settings, and logs once what it accepts:
// a warning when authentication is off, or when it is required but no
// credential can pass (every protected route answers 401 saying how to
// create a token). Connect calls it; close it when done.
func NewAuthenticator(cfg Config, logger *slog.Logger) (*httpauth.Authenticator, error) {
	if err := errors.Join(cfg.validateAuth()...); err != nil {
		return nil, err
	}
	auth, err := httpauth.New(cfg.AuthConfig(logger))
	if err != nil {
		return nil, fmt.Errorf("http auth: %w", err)
	}
	switch {
	case auth.Mode() == httpauth.ModeNone:
		logger.Warn("HTTP authentication is off (--http-auth none): anyone who can reach the HTTP port may upload, infer, promote and roll back; use it for local tests only")
	case !auth.Configured():
		logger.Warn("HTTP authentication is required but no credential source is configured: every route but /healthz, /readyz and /metrics answers 401. " +
			"Create a token with `gyre auth token create --scopes SCOPES --file FILE` and pass --auth-tokens FILE (env " + EnvAuthTokens + "), or configure --auth-jwks-url")
	default:
		logger.Info("HTTP authentication required", "tokenFile", cfg.AuthTokens, "jwksURL", cfg.AuthJWKSURL)
	}
	return auth, nil
}
