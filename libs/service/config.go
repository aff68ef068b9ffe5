package service

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults shared by every service.
const (
	DefaultNATSURL         = "nats://127.0.0.1:4222"
	DefaultLogLevel        = "info"
	DefaultTraceExporter   = TraceNone
	DefaultShutdownTimeout = 30 * time.Second
	DefaultStreamReplicas  = 1
	// MaxStreamReplicas is JetStream's limit on a stream's replicas.
	MaxStreamReplicas = 5
)

// Trace exporters.
const (
	// TraceNone records spans — so trace context still flows through events
	// as traceparent — but exports none.
	TraceNone = "none"
	// TraceStdout writes finished spans as JSON (for local debugging).
	TraceStdout = "stdout"
)

// Config is the part of a service's configuration every service shares. Each
// service's own Config embeds it; it is loaded once, from flags with GYRE_*
// environment variables as their defaults, and validated once.
type Config struct {
	// NATSURL is the NATS server (or comma-separated servers) to connect to.
	NATSURL string
	// HTTPAddr is where a standalone service serves /healthz, /readyz and
	// /metrics (host:port; port 0 picks a free one). Under `gyre up` the
	// services share one listener and this is not used.
	HTTPAddr string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// TraceExporter is where spans go: none or stdout.
	TraceExporter string
	// ShutdownTimeout bounds the drain of in-flight messages and HTTP
	// requests after a stop signal.
	ShutdownTimeout time.Duration
	// StreamReplicas is how many copies a JetStream cluster keeps of the
	// streams and buckets the service provisions (bus.Topology.Replicas):
	// 1 on a single server, 3 on a three-node cluster.
	StreamReplicas int

	// envErrs holds the environment variables whose value did not parse when
	// flags were registered; Validate reports them, because RegisterFlags has
	// no way to.
	envErrs []error
}

// Defaults returns the shared defaults with the given HTTP address (each
// standalone service has its own default port).
func Defaults(httpAddr string) Config {
	return Config{
		NATSURL:         DefaultNATSURL,
		HTTPAddr:        httpAddr,
		LogLevel:        DefaultLogLevel,
		TraceExporter:   DefaultTraceExporter,
		ShutdownTimeout: DefaultShutdownTimeout,
		StreamReplicas:  DefaultStreamReplicas,
	}
}

// Env returns the environment variable key, or def when it is unset or
// empty. It is the one place Gyre reads the environment: configuration
// loaders call it for the defaults of their flags.
func Env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// Environment variables of the shared settings.
const (
	EnvNATSURL         = "GYRE_NATS_URL"
	EnvHTTPAddr        = "GYRE_HTTP_ADDR"
	EnvLogLevel        = "GYRE_LOG_LEVEL"
	EnvTraceExporter   = "GYRE_TRACE_EXPORTER"
	EnvShutdownTimeout = "GYRE_SHUTDOWN_TIMEOUT"
	EnvStreamReplicas  = "GYRE_STREAM_REPLICAS"
)

// RegisterFlags registers the shared flags on fs. The current field values
// are the defaults, overridden by the GYRE_* environment variables, which the
// command line overrides in turn.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.StringFlag(fs, &c.NATSURL, "nats", EnvNATSURL, c.NATSURL,
		"NATS server URL (comma-separated for several)")
	c.StringFlag(fs, &c.HTTPAddr, "http", EnvHTTPAddr, c.HTTPAddr,
		"host:port for /healthz, /readyz and /metrics (port 0: any free port)")
	c.StringFlag(fs, &c.LogLevel, "log-level", EnvLogLevel, c.LogLevel,
		"log level: debug, info, warn or error")
	c.StringFlag(fs, &c.TraceExporter, "trace-exporter", EnvTraceExporter, c.TraceExporter,
		"where OpenTelemetry spans go: none (trace context still propagates) or stdout")
	c.DurationFlag(fs, &c.ShutdownTimeout, "shutdown-timeout", EnvShutdownTimeout, c.ShutdownTimeout,
		"how long a stop signal waits for in-flight messages and requests")
	c.IntFlag(fs, &c.StreamReplicas, "stream-replicas", EnvStreamReplicas, c.StreamReplicas,
		"copies a JetStream cluster keeps of each stream and bucket: missing ones are created with that many, ones with fewer are raised, none is lowered (3 on a three-node cluster)")
}

// StringFlag registers a string flag whose default is the environment
// variable env, or def. Services use it for their own settings.
func (c *Config) StringFlag(fs *flag.FlagSet, p *string, name, env, def, usage string) {
	fs.StringVar(p, name, Env(env, def), usage+" (env "+env+")")
}

// IntFlag registers an int flag whose default is the environment variable
// env, or def; a value that is not an integer is reported by Validate.
func (c *Config) IntFlag(fs *flag.FlagSet, p *int, name, env string, def int, usage string) {
	v := def
	if raw := Env(env, ""); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil {
			c.envErrs = append(c.envErrs, &FieldError{Flag: name, Env: env, Value: raw, Reason: "is not an integer"})
		} else {
			v = n
		}
	}
	fs.IntVar(p, name, v, usage+" (env "+env+")")
}

// DurationFlag registers a duration flag whose default is the environment
// variable env, or def; a value that is not a duration is reported by Validate.
func (c *Config) DurationFlag(fs *flag.FlagSet, p *time.Duration, name, env string, def time.Duration, usage string) {
	v := def
	if raw := Env(env, ""); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil {
			c.envErrs = append(c.envErrs, &FieldError{Flag: name, Env: env, Value: raw, Reason: "is not a duration (e.g. 30s, 2m)"})
		} else {
			v = d
		}
	}
	fs.DurationVar(p, name, v, usage+" (env "+env+")")
}

// FieldError is a configuration error that names the setting: its flag and
// environment variable, the value, and what is wrong with it.
type FieldError struct {
	Flag   string
	Env    string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	name := "--" + e.Flag
	if e.Env != "" {
		name += " (env " + e.Env + ")"
	}
	return fmt.Sprintf("%s: %q %s", name, e.Value, e.Reason)
}

// Validate checks every shared setting and returns all problems at once,
// each a *FieldError naming the setting.
func (c Config) Validate() error {
	errs := append([]error(nil), c.envErrs...)
	if err := ValidateNATSURL(c.NATSURL); err != nil {
		errs = append(errs, &FieldError{Flag: "nats", Env: EnvNATSURL, Value: RedactURL(c.NATSURL), Reason: err.Error()})
	}
	if err := ValidateHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, &FieldError{Flag: "http", Env: EnvHTTPAddr, Value: c.HTTPAddr, Reason: err.Error()})
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, &FieldError{Flag: "log-level", Env: EnvLogLevel, Value: c.LogLevel, Reason: err.Error()})
	}
	switch c.TraceExporter {
	case TraceNone, TraceStdout:
	default:
		errs = append(errs, &FieldError{Flag: "trace-exporter", Env: EnvTraceExporter, Value: c.TraceExporter, Reason: "is not an exporter (want none or stdout)"})
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, &FieldError{Flag: "shutdown-timeout", Env: EnvShutdownTimeout, Value: c.ShutdownTimeout.String(), Reason: "must be positive"})
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > MaxStreamReplicas {
		errs = append(errs, &FieldError{Flag: "stream-replicas", Env: EnvStreamReplicas, Value: strconv.Itoa(c.StreamReplicas), Reason: fmt.Sprintf("must be 1 to %d (JetStream's limit)", MaxStreamReplicas)})
	}
	return errors.Join(errs...)
}

// ValidateNATSURL checks a NATS URL, or a comma-separated list of them.
func ValidateNATSURL(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("is empty (want e.g. " + DefaultNATSURL + ")")
	}
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("is not a URL: %w", err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("has scheme %q (want nats://host:port, or tls, ws, wss)", u.Scheme)
		}
		if u.Host == "" {
			return errors.New("has no host (want e.g. " + DefaultNATSURL + ")")
		}
	}
	return nil
}

// ValidateHostPort checks a listen address: host:port with a numeric port
// (0 for any free port); the host may be empty (every interface).
func ValidateHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("is not host:port (%w)", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("has port %q (want 0 to 65535)", port)
	}
	return nil
}

// ParseLogLevel parses debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, errors.New("is not a log level (want debug, info, warn or error)")
}

// DefaultReplicaID names a replica of a service when its configuration
// does not: the host name (a pod's name on Kubernetes) and the process id,
// so that two replicas on one host differ and a restarted one is new.
func DefaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "replica"
	}
	return sanitizeReplicaID(host + "-" + strconv.Itoa(os.Getpid()))
}

func sanitizeReplicaID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '-'
		}
	}
	return string(b)
}

// ValidateReplicaID checks a replica's name: 1 to 128 letters, digits,
// '-', '_' or '.'.
func ValidateReplicaID(id string) error {
	if id == "" || len(id) > 128 || sanitizeReplicaID(id) != id {
		return errors.New("must be 1 to 128 letters, digits, '-', '_' or '.'")
	}
	return nil
}
