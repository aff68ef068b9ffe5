package main

import (
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

// serviceBuilders build every service `gyre up` runs, in the order of the
// loop (events.ServiceNames), each from its defaults with the shared
// settings of the process.
var serviceBuilders = []func(service.Config, service.Deps) (service.Runner, error){
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		// GYRE_INGEST_FILE_ROOT lets file:// batch URIs name files under a
		// directory, as --file-root does for the standalone service.
		cfg.FileRoot = service.Env(ingest.EnvFileRoot, "")
		cfg.Config = c
		return runner(ingest.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.Config = c
		return runner(validation.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := feature.DefaultConfig()
		cfg.Config = c
		// GYRE_REDIS_URL puts the online feature store on Redis, as
		// --redis does for the standalone service.
		cfg.RedisURL = service.Env(feature.EnvRedisURL, "")
		return runner(feature.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := monitor.DefaultConfig()
		cfg.Config = c
		return runner(monitor.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := trainer.DefaultConfig()
		cfg.Config = c
		return runner(trainer.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := evaluator.DefaultConfig()
		cfg.Config = c
		return runner(evaluator.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := registry.DefaultConfig()
		cfg.Config = c
		return runner(registry.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := deployer.DefaultConfig()
		cfg.Config = c
		return runner(deployer.New(cfg, d))
	},
	func(c service.Config, d service.Deps) (service.Runner, error) {
		cfg := dashboard.DefaultConfig()
		cfg.Config = c
		return runner(dashboard.New(cfg, d))
	},
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

// buildServices builds every service on the shared deps.
func buildServices(cfg service.Config, deps service.Deps) ([]service.Runner, error) {
	svcs := make([]service.Runner, 0, len(serviceBuilders))
	for _, build := range serviceBuilders {
		s, err := build(cfg, deps)
		if err != nil {
			return nil, err
		}
		svcs = append(svcs, s)
	}
	return svcs, nil
}
