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
// or Redis with --redis (pipelined writes behind a circuit breaker). The
// online store is off the critical path: rows it does not take at once are
// queued durably in gyre-state and written by a catch-up loop once it is
// back (onlinequeue.go); the batch is materialised and announced meanwhile.
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
	"strings"
	"sync"
	"time"

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
written in pipelines behind a circuit breaker.

An online store that is down delays the online rows, never the batch: the
snapshot is written and features.materialized emitted (onlineRowsWritten 0), and
the rows are queued in gyre-state (feature.online.<pipeline>[.<seq>]) and written
in order when the store is back, by whichever replica holds the queue's lease;
the queue survives restarts. gyre_feature_online_lag_batches and
gyre_feature_online_lag_seconds (per pipeline) measure the delay.`

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
	online       *onlineWriter
	// catchUp ends when the online store's catch-up loop has stopped.
	catchUp sync.WaitGroup
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	s := &Service{}
	rt, err := service.New(Name, cfg.Config, deps,
		// The catch-up loop starts once the buckets are provisioned.
		service.WithBeforeConsume(func(ctx context.Context) error {
			s.catchUp.Add(1)
			go func() {
				defer s.catchUp.Done()
				s.online.run(ctx)
			}()
			return nil
		}),
		service.WithChecks(func() []service.Check { return []service.Check{s.onlineCheck()} }))
	if err != nil {
		return nil, err
	}
	s.rt = rt
	var online OnlineStore = NewKVOnline(rt.JetStream())
	if cfg.RedisURL != "" {
		if s.redis, err = NewRedisOnline(cfg.RedisURL, rt.Logger()); err != nil {
			return nil, fmt.Errorf("%s: --redis: %w", Name, err)
		}
		online = s.redis
	}
	// Buckets open lazily: Run provisions them after New.
	buckets := store.NewLazy(rt.JetStream())
	if s.online, err = newOnlineWriter(buckets, online, rt.Logger(), deps.Registry); err != nil {
		return nil, fmt.Errorf("%s: metrics: %w", Name, err)
	}
	s.materializer = NewMaterializer(buckets, rt.Publisher(), online)
	s.materializer.writer = s.online
	if err := rt.Router().HandleDeclared(map[string]bus.Handler{"batch-validated": s.batchValidated}); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	return s, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	err := s.rt.Run(ctx)
	// The catch-up loop ends with ctx; nothing writes once it has.
	s.catchUp.Wait()
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

// onlineCheck reports the online store's lag in /readyz. It is informative
// and always OK: an online store that is down delays online rows, and the
// service goes on materialising batches.
func (s *Service) onlineCheck() service.Check {
	c := service.Check{Name: "online-store", OK: true}
	state := storeState(s.online.store)
	c.Detail = s.online.store.Kind()
	if s.redis != nil {
		c.Detail += ", circuit breaker " + state
	}
	lags := s.online.lags()
	if len(lags) == 0 {
		c.Detail += "; current"
		return c
	}
	var parts []string
	for _, l := range lags {
		parts = append(parts, fmt.Sprintf("%s %d batches behind (oldest queued %s ago)", l.Pipeline, l.Batches,
			time.Since(l.Oldest).Round(time.Second)))
	}
	c.Detail += "; catching up: " + strings.Join(parts, ", ")
	return c
}

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
