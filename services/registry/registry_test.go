package registry_test

import (
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/registry"
)

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := registry.DefaultConfig()
		cfg.NATSURL = url
		return registry.New(cfg, deps)
	}, events.ServiceConsumers()[registry.Name])
}
