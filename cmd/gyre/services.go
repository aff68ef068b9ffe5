package main

import (
	"net"

	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/dashboard"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/evaluator"
	"github.com/gyrehq/gyre/services/feature"
	"github.com/gyrehq/gyre/services/ingest"
	"github.com/gyrehq/gyre/services/monitor"
	"github.com/gyrehq/gyre/services/registry"
	"github.com/gyrehq/gyre/services/trainer"
	"github.com/gyrehq/gyre/services/validation"
)

// upSettings are what `gyre up` gives its services: the shared settings,
// and the files it keeps in its data dir.
type upSettings struct {
	service.Config
	// SigningKey and VerifyKeys are the registry's signing key and its
	// public key, which the deployer trusts (upKeys).
	SigningKey, VerifyKeys string
	// GRPCListener is where the deployer serves the Open Inference
	// Protocol's gRPC service (--grpc); nil: no gRPC.
	GRPCListener net.Listener
}

// serviceBuilders build every service `gyre up` runs, in the order of the
// loop (events.ServiceNames), each from its defaults with the shared
// settings of the process.
var serviceBuilders = []serviceBuilder{
	{ingest.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		// GYRE_INGEST_FILE_ROOT lets file:// batch URIs name files under a
		// directory, as --file-root does for the standalone service.
		cfg.FileRoot = service.Env(ingest.EnvFileRoot, "")
		cfg.Config = c.Config
		return runner(ingest.New(cfg, d))
	}},
	{validation.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.Config = c.Config
		return runner(validation.New(cfg, d))
	}},
	{feature.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := feature.DefaultConfig()
		cfg.Config = c.Config
		// GYRE_REDIS_URL puts the online feature store on Redis, as
		// --redis does for the standalone service.
		cfg.RedisURL = service.Env(feature.EnvRedisURL, "")
		return runner(feature.New(cfg, d))
	}},
	{monitor.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := monitor.DefaultConfig()
		cfg.Config = c.Config
		return runner(monitor.New(cfg, d))
	}},
	{trainer.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := trainer.DefaultConfig()
		cfg.Config = c.Config
		return runner(trainer.New(cfg, d))
	}},
	{evaluator.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := evaluator.DefaultConfig()
		cfg.Config = c.Config
		return runner(evaluator.New(cfg, d))
	}},
	{registry.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := registry.DefaultConfig()
		cfg.Config, cfg.SigningKey = c.Config, c.SigningKey
		return runner(registry.New(cfg, d))
	}},
	{deployer.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := deployer.DefaultConfig()
		cfg.Config, cfg.VerifyKeys = c.Config, c.VerifyKeys
		svc, err := deployer.New(cfg, d)
		if err != nil {
			return nil, err
		}
		if c.GRPCListener != nil {
			svc.ServeGRPC(c.GRPCListener)
		}
		return svc, nil
	}},
	{dashboard.Name, func(c upSettings, d service.Deps) (service.Runner, error) {
		cfg := dashboard.DefaultConfig()
		cfg.Config = c.Config
		return runner(dashboard.New(cfg, d))
	}},
}

// serviceBuilder builds one service of `gyre up`.
type serviceBuilder struct {
	name  string
	build func(upSettings, service.Deps) (service.Runner, error)
}

// runner turns a constructor's result into a Runner without the trap of a
// typed nil: a failed New returns a nil *Service, which as an interface
// would not be nil.
func runner[S service.Runner](s S, err error) (service.Runner, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// buildServices builds every service, each on the deps depsOf gives it:
// the process's metrics registry and logger, and its own NATS connection
// when each service has an identity of its own.
func buildServices(cfg upSettings, depsOf func(name string) service.Deps) ([]service.Runner, error) {
	svcs := make([]service.Runner, 0, len(serviceBuilders))
	for _, b := range serviceBuilders {
		s, err := b.build(cfg, depsOf(b.name))
		if err != nil {
			return nil, err
		}
		svcs = append(svcs, s)
	}
	return svcs, nil
}
