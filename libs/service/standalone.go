package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/gyrehq/gyre/events"
)

// Standalone runs one service as its own process: it connects (Connect),
// builds the service from the connection's Deps, serves its HTTP handler on
// cfg.HTTPAddr, runs it until ctx ends, then stops HTTP and drains the
// connection. It is what each services/<name>/cmd/<name> does after loading
// its configuration.
func Standalone(ctx context.Context, cfg Config, name string, build func(Deps) (Runner, error)) (err error) {
	// Events' dataschema: the schema server's URL when the installation
	// has one (GYRE_SCHEMA_BASE_URL), else a URN.
	if err := events.LoadSchemaBaseURL(); err != nil {
		return fmt.Errorf("GYRE_SCHEMA_BASE_URL: %w", err)
	}
	proc, err := Connect(ctx, cfg, name)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		err = errors.Join(err, proc.Close(cctx))
	}()
	svc, err := build(proc.Deps)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", cfg.HTTPAddr, err)
	}
	logger := proc.Logger.With("service", name)
	logger.Info("serving http", "addr", ln.Addr().String(), "endpoints", []string{"/healthz", "/readyz", "/metrics"})
	return Serve(ctx, ServeConfig{
		Listener: ln, Handler: svc.Handler(), ShutdownTimeout: cfg.ShutdownTimeout, Logger: logger,
	}, svc.Run)
}

// Usage returns a usage function for a service's flag set that teaches what
// the service is: about (its role in the loop), the events it consumes (from
// its declared durable consumers), the events it emits (from the catalog),
// its endpoints and its flags.
func Usage(fs *flag.FlagSet, name, about string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s — Gyre's %s service\n\n%s\n\n", name, name, strings.TrimSpace(about))
		writeEvents(w, name)
		fmt.Fprintf(w, "HTTP (on --http):\n"+
			"  GET /healthz  the process is alive\n"+
			"  GET /readyz   200 once the topology is provisioned, the router runs and NATS is\n"+
			"                connected; 503 with a JSON body naming what is not\n"+
			"  GET /metrics  Prometheus metrics\n"+
			"  (these are open; every other route needs an Authorization: Bearer token or JWT\n"+
			"  with the route's scope — see --http-auth, --auth-tokens, --auth-jwks-url)\n\n")
		fmt.Fprintf(w, "`gyre up` runs this service in-process with all the others; run it alone like this:\n\n")
		fmt.Fprintf(w, "  %s --nats nats://127.0.0.1:4222 --http 127.0.0.1:0 --auth-tokens tokens.json\n\n", name)
		fmt.Fprintf(w, "Flags:\n")
		fs.PrintDefaults()
	}
}

func writeEvents(w io.Writer, name string) {
	consumers := events.ServiceConsumers()[name]
	if len(consumers) == 0 {
		fmt.Fprintf(w, "Consumes: no durable consumer.\n")
	} else {
		fmt.Fprintf(w, "Consumes (durable consumer: subject filter):\n")
		for _, c := range consumers {
			fmt.Fprintf(w, "  %-32s %s\n", c.Durable(), c.FilterSubject)
		}
	}
	var emits []string
	if a, err := events.AccessOf(name); err == nil {
		emits = a.Emits
	}
	if len(emits) == 0 {
		fmt.Fprintf(w, "Emits: nothing.\n\n")
		return
	}
	fmt.Fprintf(w, "Emits: %s\n\n", strings.Join(emits, ", "))
}
