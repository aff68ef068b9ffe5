// Package feature is Gyre's feature service.
//
// Feature turns each validated batch into the pipeline's features (identity,
// standardize, minmax, log1p, onehot, bucketize), writes an offline snapshot
// (Parquet) to the gyre-features object store and the online rows to the
// online store, and emits features.materialized naming the feature-set
// version.
//
// The transforms are fitted (libs/features) on the training window that ends
// at the batch: the newest spec.model.window.batches entries of the
// pipeline's validated-batch log up to and including it, so that the
// feature-set version of a batch is the one a model trained on that window
// has. The online store is the JetStream KV bucket gyre-online by default,
// or Redis with --redis (pipelined writes behind a circuit breaker: while
// Redis is down, writes fail fast and the event is redelivered later).
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/feature runs it alone.
package feature

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// Name is the service's name: its durable consumers (feature_<handler>), its
// event source (/gyre/feature) and its dead-letter subject (gyre.dlq.feature)
// derive from it.
const Name = events.ServiceFeature

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8083"

// EnvRedisURL is the environment variable of --redis.
const EnvRedisURL = "GYRE_REDIS_URL"

// About says what the service does in the loop; it opens the command's help.
const About = `Feature turns each validated batch into the pipeline's features (identity, standardize,
minmax, log1p, onehot, bucketize), writes an offline snapshot (Parquet) to the
gyre-features object store and the online rows to the online store, and emits
features.materialized naming the feature-set version.

The transforms are fitted on the training window ending at the batch (the newest
spec.model.window.batches validated batches up to it). Snapshots are stored at
gyre-features <pipeline>/<batchId>/<featureSetVersion>.parquet; online rows, one per
batch row, at <pipeline>.<batch>.<row> (1-based) in the JetStream KV bucket gyre-online,
or — with --redis redis://host:port — in Redis under gyre-online.<pipeline>.<batch>.<row>,
written in pipelines behind a circuit breaker.`

// Config is the feature service's configuration.
type Config struct {
	service.Config
	// RedisURL, when set, puts the online store on Redis instead of JetStream KV.
	RedisURL string
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// RegisterFlags registers the shared flags and --redis on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.StringFlag(fs, &c.RedisURL, "redis", EnvRedisURL, c.RedisURL,
		"put the online feature store on Redis at this URL (redis://host:port[/db]) instead of the JetStream KV bucket "+events.BucketOnline)
}

// Validate checks every setting and names those that are wrong.
func (c Config) Validate() error {
	err := c.Config.Validate()
	if c.RedisURL != "" {
		if _, perr := redis.ParseURL(c.RedisURL); perr != nil {
			err = errors.Join(err, &service.FieldError{Flag: "redis", Env: EnvRedisURL, Value: c.RedisURL, Reason: perr.Error()})
		}
	}
	return err
}

// Service is the feature service.
type Service struct {
	rt           *service.Runtime
	materializer *Materializer
	redis        *RedisOnline
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	rt, err := service.New(Name, cfg.Config, deps)
	if err != nil {
		return nil, err
	}
	s := &Service{rt: rt}
	var online OnlineStore = NewKVOnline(rt.JetStream())
	if cfg.RedisURL != "" {
		if s.redis, err = NewRedisOnline(cfg.RedisURL, rt.Logger()); err != nil {
			return nil, fmt.Errorf("%s: --redis: %w", Name, err)
		}
		online = s.redis
	}
	// Buckets open lazily: Run provisions them after New.
	s.materializer = NewMaterializer(store.NewLazy(rt.JetStream()), rt.Publisher(), online)
	if err := rt.Router().HandleDeclared(map[string]bus.Handler{"batch-validated": s.batchValidated}); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return s, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	err := s.rt.Run(ctx)
	if s.redis != nil {
		// After the drain: no handler writes any more.
		err = errors.Join(err, s.redis.Close())
	}
	return err
}

// Handler serves GET /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
