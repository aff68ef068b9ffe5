package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/dlq"
	"github.com/gyrehq/gyre/libs/embednats"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/dashboard"
	"github.com/gyrehq/gyre/services/deployer"
)

// upOptions are the flags of `gyre up`.
type upOptions struct {
	natsURL       string
	dataDir       string
	httpAddr      string
	natsListen    string
	natsListenSet bool // --nats-listen was given on the command line
	// grpcAddr is where the deployer's gRPC inference service listens
	// ("off": nowhere); grpcSet says --grpc was given (a default that is
	// taken falls back to a free port, a given address fails); grpcBound
	// is the address it listens on, once it does.
	grpcAddr, grpcBound string
	grpcSet             bool
	// natsAuthDir holds the NATS seeds of an external server's identities
	// (`gyre auth config --dir`); the embedded server's are in the data dir.
	natsAuthDir     string
	logLevel        string
	traceExporter   string
	shutdownTimeout time.Duration
	// readyTimeout bounds the wait for every service to turn ready.
	readyTimeout time.Duration
}

const (
	defaultUpHTTP     = "127.0.0.1:8080"
	defaultNATSListen = "127.0.0.1:4222"
	// defaultUpGRPC is where the Open Inference Protocol's gRPC service
	// listens, the port KServe's and Triton's gRPC clients are usually
	// pointed at beside HTTP's 8080.
	defaultUpGRPC = "127.0.0.1:8081"
	envUpGRPC     = "GYRE_GRPC_ADDR"
	// gyre up prints what it does; its JSON logs (stderr) show problems only
	// unless asked for more.
	defaultUpLogLevel = "warn"
)

func newUpCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run every Gyre service in one process, with an embedded NATS server",
		Long: `Run the whole platform on this machine: every service (ingest, validation,
feature, monitor, trainer, evaluator, registry, deployer, dashboard) in this one
process, sharing one NATS connection and one metrics registry.

Without --nats, gyre up starts an embedded NATS server with JetStream, keeping its
data under --data-dir (default .gyre/nats), so streams, models and state survive
a restart. It listens on --nats-listen (default 127.0.0.1:4222); when that port is
taken, it picks a free one and says so. It admits only Gyre's identities: one nkey
per service, the admin's (for the CLI and provisioning) and a reader's, made on the
first start in <data-dir>/nats-auth/ (mode 0600), plus any producer 'gyre auth
producer' put there; each service connects as itself, with the permissions the event
catalog gives it (docs/security.md). With --nats it uses that server instead, and
with --nats-auth-dir the identities 'gyre auth config' made for it.

It then provisions Gyre's streams, consumers and buckets, idempotently, and prints
one line per resource: created, updated or unchanged. A second run against the
same server reports every resource unchanged.

One HTTP listener (--http, default 127.0.0.1:8080) serves:
  /healthz                 the process is alive
  /readyz                  200 when every service is ready; 503 naming those that are not
  /metrics                 Prometheus metrics of every service
  /services/<name>/...     each service's own /healthz, /readyz, /metrics and routes
  /v1/dlq                  the dead letters (read); POST /v1/dlq/<seq>/redrive (admin)
  /schemas/                every event payload's .proto and JSON Schema (dataschema)
  /v2/...                  the Open Inference Protocol v2 (the deployer's), where KServe's
                           and Triton's clients look: /v2/health/live, /v2/models/<pipeline>/infer

The deployer's gRPC inference service (inference.GRPCInferenceService, KServe's
Open Inference Protocol v2, with grpc.health.v1 and server reflection) listens on
--grpc (default 127.0.0.1:8081; when that port is taken, a free one, said so; off:
none). Its calls take the same bearer tokens as HTTP, as authorization metadata.

While it runs, <data-dir>/up.json records its pid, NATS URL and HTTP URL, so that
client commands such as 'gyre events' find it without flags. Ctrl-C (or SIGTERM)
stops it cleanly: services drain their in-flight messages, HTTP stops, the
embedded server shuts down, and up.json is removed.

Serving (Open Inference Protocol v2) is at /v2/models/<pipeline> and
/services/deployer/v2/models/<pipeline>, and over gRPC on --grpc;
the ingest API at /services/ingest/v1/pipelines/<pipeline>/batches; the registry's
read API at /services/registry/v1/pipelines/<pipeline>/models.`,
		Example: `  # everything local: embedded NATS in .gyre/, HTTP on 127.0.0.1:8080
  gyre up

  # against an existing NATS server, HTTP on any free port
  gyre up --nats nats://127.0.0.1:4222 --http 127.0.0.1:0

  # keep the data elsewhere and expose the embedded NATS on another port
  gyre up --data-dir /var/lib/gyre --nats-listen 127.0.0.1:14222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.natsListenSet = cmd.Flags().Changed("nats-listen")
			o.grpcSet = cmd.Flags().Changed("grpc") || service.Env(envUpGRPC, "") != ""
			return runUp(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.natsURL, "nats", service.Env(service.EnvNATSURL, ""),
		"use the NATS server at this URL instead of an embedded one (env "+service.EnvNATSURL+")")
	f.StringVar(&o.dataDir, "data-dir", service.Env(envDataDir, defaultDataDir),
		"directory for the embedded server's data (nats/) and up.json (env "+envDataDir+")")
	f.StringVar(&o.httpAddr, "http", service.Env(service.EnvHTTPAddr, defaultUpHTTP),
		"host:port of the HTTP listener; port 0 picks a free one (env "+service.EnvHTTPAddr+")")
	f.StringVar(&o.grpcAddr, "grpc", service.Env(envUpGRPC, defaultUpGRPC),
		"host:port of the deployer's gRPC inference service (Open Inference Protocol v2, grpc.health.v1, reflection); port 0 picks a free one; off: none (env "+envUpGRPC+")")
	f.StringVar(&o.natsAuthDir, "nats-auth-dir", service.Env("GYRE_NATS_AUTH_DIR", ""),
		"with --nats: the directory of the server's Gyre identities (`gyre auth config --dir` writes <identity>.nk); each service connects with its own, gyre up and the CLI with admin.nk. Without it they connect with no credentials (env GYRE_NATS_AUTH_DIR)")
	f.StringVar(&o.natsListen, "nats-listen", service.Env("GYRE_NATS_LISTEN", defaultNATSListen),
		"host:port the embedded NATS server listens on (env GYRE_NATS_LISTEN)")
	f.StringVar(&o.logLevel, "log-level", service.Env(service.EnvLogLevel, defaultUpLogLevel),
		"level of the JSON logs on stderr: debug, info, warn or error (env "+service.EnvLogLevel+")")
	f.StringVar(&o.traceExporter, "trace-exporter", service.Env(service.EnvTraceExporter, service.TraceNone),
		"where OpenTelemetry spans go: none, or stdout (the stdout exporter; spans are written as JSON to stderr, beside the logs) (env "+service.EnvTraceExporter+")")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", service.DefaultShutdownTimeout,
		"how long Ctrl-C waits for in-flight messages and requests")
	o.readyTimeout = 30 * time.Second
	return cmd
}

// validate checks the flags and names the one that is wrong.
func (o upOptions) validate() error {
	var errs []error
	if o.natsURL != "" {
		if err := service.ValidateNATSURL(o.natsURL); err != nil {
			errs = append(errs, &service.FieldError{Flag: "nats", Env: service.EnvNATSURL, Value: service.RedactURL(o.natsURL), Reason: err.Error()})
		}
		if o.natsListenSet {
			errs = append(errs, &service.FieldError{Flag: "nats-listen", Value: o.natsListen,
				Reason: "applies to the embedded server only, and --nats names an external one; drop one of them"})
		}
	} else if o.natsAuthDir != "" {
		errs = append(errs, &service.FieldError{Flag: "nats-auth-dir", Env: "GYRE_NATS_AUTH_DIR", Value: o.natsAuthDir,
			Reason: "applies to an external server (--nats) only: the embedded one keeps its identities in <data-dir>/" + natsAuthDir})
	} else if err := service.ValidateHostPort(o.natsListen); err != nil {
		errs = append(errs, &service.FieldError{Flag: "nats-listen", Env: "GYRE_NATS_LISTEN", Value: o.natsListen, Reason: err.Error()})
	}
	if !grpcOff(o.grpcAddr) {
		if err := service.ValidateHostPort(o.grpcAddr); err != nil {
			errs = append(errs, &service.FieldError{Flag: "grpc", Env: envUpGRPC, Value: o.grpcAddr, Reason: err.Error() + " (or off)"})
		}
	}
	if strings.TrimSpace(o.dataDir) == "" {
		errs = append(errs, &service.FieldError{Flag: "data-dir", Env: envDataDir, Value: o.dataDir, Reason: "is empty"})
	}
	// The shared settings are checked by the services' own validation; the
	// NATS URL is stood in for when it is not known yet (embedded server).
	cfg := o.serviceConfig(service.DefaultNATSURL)
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// serviceConfig is the shared configuration every service runs with.
func (o upOptions) serviceConfig(natsURL string) service.Config {
	// The shared defaults, so that a setting up has no flag for keeps its
	// default (one replica of each stream: the embedded server is one node).
	c := service.Defaults(o.httpAddr)
	c.NATSURL, c.LogLevel, c.TraceExporter, c.ShutdownTimeout = natsURL, o.logLevel, o.traceExporter, o.shutdownTimeout
	return c
}

// connectTimeout bounds the wait for an external server at start: an
// interactive command should say the server is not there rather than wait.
const connectTimeout = 10 * time.Second

func runUp(ctx context.Context, o upOptions, stdout, stderr io.Writer) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.dataDir, 0o750); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	if st, err := readState(o.dataDir); err == nil && st.PID != os.Getpid() && processAlive(st.PID) {
		return fmt.Errorf("gyre up is already running with data dir %s (pid %d, %s); stop it first or pass another --data-dir", o.dataDir, st.PID, st.HTTPURL)
	}
	out := &lockedWriter{w: stdout}
	priv, pub, created, err := upKeys(o.dataDir)
	if err != nil {
		return err
	}
	if created {
		out.printf("Signing key %s (new: the registry signs every model version with it; the deployer serves only what it signed)\n", priv)
	}

	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w (pass --http 127.0.0.1:0 for any free port)", o.httpAddr, err)
	}
	httpURL := "http://" + ln.Addr().String()
	defer func() {
		if ln != nil {
			_ = ln.Close()
		}
	}()
	grpcLn, grpcNote, err := listenGRPC(o)
	if err != nil {
		return err
	}
	if grpcLn != nil {
		// The deployer serves on it and closes it; this is for an early return.
		defer func() { _ = grpcLn.Close() }()
		o.grpcBound = grpcLn.Addr().String()
	}
	if grpcNote != "" {
		out.printf("%s\n", grpcNote)
	}

	natsURL, natsNote, seedDir := o.natsURL, "external", o.natsAuthDir
	if natsURL == "" {
		// Secure by default: the embedded server accepts Gyre's
		// identities only, their seeds in the data dir.
		seedDir = filepath.Join(o.dataDir, natsAuthDir)
		users, created, err := upIdentities(seedDir)
		if err != nil {
			return err
		}
		if created {
			out.printf("NATS identities in %s (new: one nkey per service, the admin's for the CLI, a reader's; the embedded server accepts no one else)\n", seedDir)
		}
		srv, note, err := startEmbedded(o, users)
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		natsURL, natsNote = srv.ClientURL(), "embedded, data in "+filepath.Join(o.dataDir, "nats")
		if note != "" {
			out.printf("%s\n", note)
		}
	}

	tokens, _, readToken, err := upTokens(o.dataDir)
	if err != nil {
		return err
	}
	// Events' dataschema resolves here, unless GYRE_SCHEMA_BASE_URL points
	// elsewhere (a schema server of the installation's).
	if service.Env("GYRE_SCHEMA_BASE_URL", "") != "" {
		if err := events.LoadSchemaBaseURL(); err != nil {
			return fmt.Errorf("GYRE_SCHEMA_BASE_URL: %w", err)
		}
	} else if err := events.SetSchemaBaseURL(httpURL + "/schemas"); err != nil {
		return fmt.Errorf("schema base URL: %w", err)
	}
	cfg := o.serviceConfig(natsURL)
	// Every service's HTTP API checks bearer tokens against the data dir's
	// token file; the CLI sends the admin token kept beside it.
	cfg.AuthTokens = tokens
	// gyre up provisions as the admin; each service then connects as itself.
	upCfg := cfg
	if seedDir != "" {
		upCfg.NATSNkey = seedFile(seedDir, events.IdentityAdmin)
	}
	proc, err := service.Connect(ctx, upCfg, "up", service.WithLogOutput(stderr), service.WithTraceOutput(stderr))
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
		defer cancel()
		err = errors.Join(err, proc.Close(cctx))
	}()
	logger := proc.Logger.With("service", "up")
	if err := waitConnected(ctx, proc, natsURL); err != nil {
		return err
	}

	out.printf("Provisioning the topology on %s:\n", service.RedactURL(natsURL))
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	changes, err := bus.Provision(pctx, proc.JS, bus.FullTopology())
	cancel()
	printReport(out, changes)
	if err != nil {
		return fmt.Errorf("provision topology: %w", err)
	}

	depsOf := func(string) service.Deps { return proc.Deps }
	if seedDir != "" {
		conns, err := dialServices(cfg, seedDir, proc.Deps)
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout)
			defer cancel()
			err = errors.Join(err, conns.close(cctx))
		}()
		depsOf = conns.deps
	}
	svcs, err := buildServices(upSettings{Config: cfg, SigningKey: priv, VerifyKeys: pub, GRPCListener: grpcLn}, depsOf)
	if err != nil {
		return err
	}
	mux := upMux(svcs, proc.Deps, logger)

	run := func(ctx context.Context) error {
		return runServices(ctx, o, svcs, out, upState{
			PID: os.Getpid(), NATSURL: natsURL, HTTPURL: httpURL, StartedAt: time.Now().UTC(), NATSSeed: upCfg.NATSNkey,
		}, natsNote, readToken)
	}
	serveLn := ln
	ln = nil // Serve owns it now
	err = service.Serve(ctx, service.ServeConfig{
		Listener: serveLn, Handler: mux, ShutdownTimeout: o.shutdownTimeout, Logger: logger,
	}, run)
	if rmErr := os.Remove(statePath(o.dataDir)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("remove state file: %w", rmErr))
	}
	if err == nil {
		out.printf("Stopped.\n")
	}
	return err
}

// grpcOff reports whether a --grpc value turns gRPC off.
func grpcOff(addr string) bool { return addr == "" || strings.EqualFold(addr, "off") }

// listenGRPC opens --grpc: nil when it is off. The default address, when
// taken (another gyre up, say), gives way to a free port on the same host,
// with a note saying so, as --nats-listen's does; an address given is
// used or fails.
func listenGRPC(o upOptions) (net.Listener, string, error) {
	if grpcOff(o.grpcAddr) {
		return nil, "", nil
	}
	ln, err := net.Listen("tcp", o.grpcAddr)
	if err == nil {
		return ln, "", nil
	}
	if o.grpcSet {
		return nil, "", fmt.Errorf("--grpc %s: %w (pass --grpc 127.0.0.1:0 for any free port, or --grpc off)", o.grpcAddr, err)
	}
	host, _, _ := net.SplitHostPort(o.grpcAddr) // validated
	free, ferr := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if ferr != nil {
		return nil, "", fmt.Errorf("--grpc %s: %w", o.grpcAddr, err)
	}
	return free, fmt.Sprintf("Note: %s is taken (%v); gRPC listens on %s instead.", o.grpcAddr, err, free.Addr()), nil
}

// startEmbedded starts the embedded NATS server on --nats-listen, or on a free
// port when that one is taken (say, by another NATS server).
func startEmbedded(o upOptions, users []*server.NkeyUser) (*server.Server, string, error) {
	host, portStr, _ := net.SplitHostPort(o.natsListen) // validated
	port, _ := strconv.Atoi(portStr)
	note := ""
	if port != 0 {
		probe, err := net.Listen("tcp", o.natsListen)
		if err != nil {
			note = fmt.Sprintf("Note: %s is taken (%v); the embedded NATS server listens on a free port instead.", o.natsListen, err)
			port = -1
		} else {
			_ = probe.Close()
		}
	}
	srv, err := embednats.Run(embednats.Options{StoreDir: filepath.Join(o.dataDir, "nats"), Host: host, Port: port, Users: users})
	if err != nil {
		return nil, "", fmt.Errorf("embedded NATS: %w", err)
	}
	return srv, note, nil
}

func waitConnected(ctx context.Context, proc *service.Process, url string) error {
	deadline := time.Now().Add(connectTimeout)
	for !proc.Conn.IsConnected() {
		if err := proc.Conn.LastError(); err != nil && strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			return fmt.Errorf("NATS at %s refused gyre up's credentials (%v): the server requires a Gyre identity; pass --nats-auth-dir with the seeds 'gyre auth config' wrote for it", service.RedactURL(url), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cannot reach NATS at %s within %s: is the server running? (drop --nats to run an embedded one)", service.RedactURL(url), connectTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// runServices runs every service until ctx ends; if one fails, the others
// are stopped and its error returned. Once all are ready it writes the state
// file and prints where everything is.
func runServices(ctx context.Context, o upOptions, svcs []service.Runner, out *lockedWriter, st upState, natsNote, readToken string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(svcs))
	for _, s := range svcs {
		go func() {
			err := s.Run(ctx)
			if err != nil {
				cancel()
			}
			results <- result{s.Name(), err}
		}()
	}
	var announced sync.WaitGroup
	announced.Go(func() { announce(ctx, o, svcs, out, st, natsNote, readToken) })

	var errs []error
	for range svcs {
		if r := <-results; r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, r.err))
		}
	}
	cancel()
	announced.Wait()
	return errors.Join(errs...)
}

// announce waits until every service is ready, writes the state file and
// prints what runs where; then it waits for the stop and says so.
func announce(ctx context.Context, o upOptions, svcs []service.Runner, out *lockedWriter, st upState, natsNote, readToken string) {
	deadline := time.Now().Add(o.readyTimeout)
	warned := false
	for {
		notReady := notReadyServices(svcs)
		if len(notReady) == 0 {
			break
		}
		if !warned && time.Now().After(deadline) {
			out.printf("Still waiting after %s for: %s (see %s/readyz)\n", o.readyTimeout, strings.Join(notReady, ", "), st.HTTPURL)
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := writeState(o.dataDir, st); err != nil {
		out.printf("Warning: %v; client commands will need --nats\n", err)
	}
	out.printf("\nNATS   %s (%s)\n", service.RedactURL(st.NATSURL), natsNote)
	out.printf("HTTP   %s/healthz  %s/readyz  %s/metrics\n", st.HTTPURL, st.HTTPURL, st.HTTPURL)
	out.printf("OIP v2 %s/v2/models/<pipeline>/infer (REST; /v2/health/live, /v2/health/ready)\n", st.HTTPURL)
	if o.grpcBound != "" {
		out.printf("gRPC   %s (%s, grpc.health.v1, reflection)\n", o.grpcBound, deployer.InferenceService)
	}
	// The read token rides in the fragment, which the browser keeps to
	// itself: the page sends it as a bearer header.
	out.printf("Dashboard %s/services/%s/#token=%s\n", st.HTTPURL, dashboard.Name, readToken)
	out.printf("State  %s\nTokens %s (the CLI's admin token: %s)\n\nServices (each with /healthz, /readyz, /metrics):\n",
		statePath(o.dataDir), filepath.Join(o.dataDir, tokensFile), filepath.Join(o.dataDir, adminTokenFile))
	for _, s := range svcs {
		out.printf("  %-11s %s/services/%s/\n", s.Name(), st.HTTPURL, s.Name())
	}
	out.printf("\nReady. Follow the loop on the dashboard or with 'gyre events -f'; press Ctrl-C to stop.\n")
	<-ctx.Done()
	out.printf("Stopping: draining services...\n")
}

func notReadyServices(svcs []service.Runner) []string {
	var names []string
	for _, s := range svcs {
		if !s.Readiness().Ready {
			names = append(names, s.Name())
		}
	}
	return names
}

// upMux lays out the single HTTP listener: aggregate health, readiness and
// metrics at the root, each service's own handler under /services/<name>/.
func upMux(svcs []service.Runner, deps service.Deps, logger *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	names := make([]string, 0, len(svcs))
	for _, s := range svcs {
		names = append(names, s.Name())
		prefix := "/services/" + s.Name()
		mux.Handle(prefix+"/", http.StripPrefix(prefix, s.Handler()))
		if s.Name() == deployer.Name {
			// The Open Inference Protocol at the root too, where KServe's
			// and Triton's clients look: the deployer's own routes, scopes
			// and all (it serves /v2 and /v2/... only from here).
			mux.Handle("/v2", s.Handler())
			mux.Handle("/v2/", s.Handler())
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		service.WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "services": names})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		body := struct {
			Status   string              `json:"status"`
			NotReady []string            `json:"notReady,omitempty"`
			Services []service.Readiness `json:"services"`
		}{Status: "ready"}
		for _, s := range svcs {
			rd := s.Readiness()
			body.Services = append(body.Services, rd)
			if !rd.Ready {
				body.NotReady = append(body.NotReady, s.Name())
			}
		}
		code := http.StatusOK
		if len(body.NotReady) > 0 {
			body.Status, code = "not ready", http.StatusServiceUnavailable
		}
		service.WriteJSON(w, code, body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(deps.Registry, promhttp.HandlerOpts{
		Registry:          deps.Registry,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelError),
		EnableOpenMetrics: true,
	}))
	// Dead letters: listed with a read token, redriven with an admin one,
	// through the process's own connection (the admin identity's on a
	// secured server): a redrive publishes to any subject.
	dlq.Mount(mux, deps.JS, deps.Auth)
	// The event payloads' schemas, where events' dataschema points: open,
	// since any consumer must be able to resolve them.
	mux.Handle("/schemas/", http.StripPrefix("/schemas", events.SchemaHandler()))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		index := map[string]any{"healthz": "/healthz", "readyz": "/readyz", "metrics": "/metrics", "schemas": "/schemas/", "deadLetters": "/v1/dlq",
			"inference": "/v2"}
		services := map[string]string{}
		for _, n := range names {
			services[n] = "/services/" + n + "/"
		}
		index["services"] = services
		service.WriteJSON(w, http.StatusOK, index)
	})
	return mux
}

// printReport prints one aligned line per resource: kind, name, action and,
// for an update, the settings that changed.
func printReport(out *lockedWriter, changes []bus.Change) {
	kindW, nameW := 0, 0
	for _, c := range changes {
		kindW, nameW = max(kindW, len(c.Kind)), max(nameW, len(c.Name))
	}
	for _, c := range changes {
		line := fmt.Sprintf("  %-*s  %-*s  %s", kindW, c.Kind, nameW, c.Name, c.Action)
		if len(c.Diff) > 0 {
			line += " (" + strings.Join(c.Diff, ", ") + ")"
		}
		out.printf("%s\n", line)
	}
}

// lockedWriter serializes the human output of concurrent goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
