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

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/natsauth"
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
	// NATSNkey is the file holding this service's NATS identity (an nkey
	// seed, `gyre auth config` makes one per service): the server gives it
	// the permissions of its service and no other. Empty connects without
	// credentials, which a secured server refuses.
	NATSNkey string
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

	// HTTPAuth is required (the default: every route but /healthz, /readyz,
	// /metrics and other public ones needs a credential with the route's
	// scope) or none (authentication off, for local tests only).
	HTTPAuth string
	// AuthTokens is the token file (`gyre auth token create` writes it);
	// it is read again when it changes. Empty accepts no Gyre token.
	AuthTokens string
	// AuthJWKSURL is an OIDC provider's key set: JWTs it signed are
	// accepted, with their scope or scp claim. Empty accepts no JWT.
	AuthJWKSURL string
	// AuthJWTIssuer and AuthJWTAudience must match a JWT's iss and aud.
	AuthJWTIssuer   string
	AuthJWTAudience string

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
		HTTPAuth:        HTTPAuthRequired,
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
	EnvNATSNkey        = "GYRE_NATS_NKEY"
	EnvHTTPAddr        = "GYRE_HTTP_ADDR"
	EnvLogLevel        = "GYRE_LOG_LEVEL"
	EnvTraceExporter   = "GYRE_TRACE_EXPORTER"
	EnvShutdownTimeout = "GYRE_SHUTDOWN_TIMEOUT"
	EnvStreamReplicas  = "GYRE_STREAM_REPLICAS"
	EnvHTTPAuth        = "GYRE_HTTP_AUTH"
	EnvAuthTokens      = "GYRE_AUTH_TOKENS"
	EnvAuthJWKSURL     = "GYRE_AUTH_JWKS_URL"
	EnvAuthJWTIssuer   = "GYRE_AUTH_JWT_ISSUER"
	EnvAuthJWTAudience = "GYRE_AUTH_JWT_AUDIENCE"
)

// Values of --http-auth.
const (
	// HTTPAuthRequired: routes need a credential with their scope.
	HTTPAuthRequired = string(httpauth.ModeRequired)
	// HTTPAuthNone turns HTTP authentication off: for local tests only.
	HTTPAuthNone = string(httpauth.ModeNone)
)

// RegisterFlags registers the shared flags on fs. The current field values
// are the defaults, overridden by the GYRE_* environment variables, which the
// command line overrides in turn.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.StringFlag(fs, &c.NATSURL, "nats", EnvNATSURL, c.NATSURL,
		"NATS server URL (comma-separated for several)")
	c.StringFlag(fs, &c.NATSNkey, "nats-nkey", EnvNATSNkey, c.NATSNkey,
		"file holding this service's NATS nkey seed (`gyre auth config --dir DIR` writes DIR/<service>.nk; mode 0600): the server allows it only its service's subjects")
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
	c.StringFlag(fs, &c.HTTPAuth, "http-auth", EnvHTTPAuth, c.HTTPAuth,
		"HTTP authentication: required (routes need a bearer token or JWT with their scope; /healthz, /readyz and /metrics stay open) or none (off: anyone who reaches the port may do anything; local tests only)")
	c.StringFlag(fs, &c.AuthTokens, "auth-tokens", EnvAuthTokens, c.AuthTokens,
		"token file of the bearer tokens accepted (`gyre auth token create` writes it; read again when it changes, so a revoked token stops working)")
	c.StringFlag(fs, &c.AuthJWKSURL, "auth-jwks-url", EnvAuthJWKSURL, c.AuthJWKSURL,
		"OIDC provider's JWKS URL: JWTs it signed (RS256, ES256, EdDSA) are accepted, their scopes from the scope or scp claim; needs --auth-jwt-issuer and --auth-jwt-audience")
	c.StringFlag(fs, &c.AuthJWTIssuer, "auth-jwt-issuer", EnvAuthJWTIssuer, c.AuthJWTIssuer,
		"the iss a JWT must have")
	c.StringFlag(fs, &c.AuthJWTAudience, "auth-jwt-audience", EnvAuthJWTAudience, c.AuthJWTAudience,
		"the aud a JWT must have")
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
	if c.NATSNkey != "" {
		if _, err := natsauth.PublicKey(c.NATSNkey); err != nil {
			errs = append(errs, &FieldError{Flag: "nats-nkey", Env: EnvNATSNkey, Value: c.NATSNkey, Reason: "is not a usable nkey seed: " + err.Error()})
		}
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
	errs = append(errs, c.validateAuth()...)
	return errors.Join(errs...)
}

// validateAuth checks the HTTP authentication settings.
func (c Config) validateAuth() []error {
	var errs []error
	if _, err := httpauth.ParseMode(c.HTTPAuth); err != nil {
		errs = append(errs, &FieldError{Flag: "http-auth", Env: EnvHTTPAuth, Value: c.HTTPAuth, Reason: err.Error()})
	}
	if c.AuthTokens != "" {
		if fi, err := os.Stat(c.AuthTokens); err != nil || !fi.Mode().IsRegular() {
			errs = append(errs, &FieldError{Flag: "auth-tokens", Env: EnvAuthTokens, Value: c.AuthTokens,
				Reason: "is not an existing file (create it with `gyre auth token create --file " + c.AuthTokens + "`)"})
		}
	}
	if c.AuthJWKSURL != "" {
		if err := validateJWKSURL(c.AuthJWKSURL); err != nil {
			errs = append(errs, &FieldError{Flag: "auth-jwks-url", Env: EnvAuthJWKSURL, Value: c.AuthJWKSURL, Reason: err.Error()})
		}
		// Without both, a JWT the provider issued for any other application
		// (or another provider's) would be accepted here.
		if c.AuthJWTIssuer == "" {
			errs = append(errs, &FieldError{Flag: "auth-jwt-issuer", Env: EnvAuthJWTIssuer, Value: "", Reason: "is required with --auth-jwks-url"})
		}
		if c.AuthJWTAudience == "" {
			errs = append(errs, &FieldError{Flag: "auth-jwt-audience", Env: EnvAuthJWTAudience, Value: "", Reason: "is required with --auth-jwks-url"})
		}
	} else {
		if c.AuthJWTIssuer != "" {
			errs = append(errs, &FieldError{Flag: "auth-jwt-issuer", Env: EnvAuthJWTIssuer, Value: c.AuthJWTIssuer, Reason: "needs --auth-jwks-url"})
		}
		if c.AuthJWTAudience != "" {
			errs = append(errs, &FieldError{Flag: "auth-jwt-audience", Env: EnvAuthJWTAudience, Value: c.AuthJWTAudience, Reason: "needs --auth-jwks-url"})
		}
	}
	return errs
}

// validateJWKSURL wants https, or http to a loopback host (a provider
// beside the service, or a test's).
func validateJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("is not a URL: %w", err)
	}
	switch {
	case u.Host == "":
		return errors.New("has no host (want https://provider/.../jwks)")
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return errors.New("is plain http to another host: the keys that decide who may call Gyre must come over https")
	}
	return fmt.Errorf("has scheme %q (want https)", u.Scheme)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// AuthConfig returns the httpauth configuration of the settings, with the
// message that tells a caller how to configure credentials when none is.
func (c Config) AuthConfig(logger *slog.Logger) httpauth.Config {
	ac := httpauth.Config{
		Mode:      httpauth.Mode(c.HTTPAuth),
		TokenFile: c.AuthTokens,
		Logger:    logger,
		Unconfigured: "this service accepts no credentials yet: it has no token file and no JWKS URL. " +
			"Create a token with `gyre auth token create --scopes SCOPES --file FILE` and start the service with --auth-tokens FILE (env " + EnvAuthTokens + "), " +
			"or give it --auth-jwks-url, --auth-jwt-issuer and --auth-jwt-audience; for a local test only, --http-auth none",
	}
	if c.AuthJWKSURL != "" {
		ac.JWT = &httpauth.JWTConfig{JWKSURL: c.AuthJWKSURL, Issuer: c.AuthJWTIssuer, Audience: c.AuthJWTAudience, Logger: logger}
	}
	return ac
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
