package deployer_test

import (
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/deployer"
)

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	t.Parallel()
	keys := looptest.VerifyKeyFile(t)
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := deployer.DefaultConfig()
		cfg.NATSURL, cfg.VerifyKeys = url, keys
		return deployer.New(cfg, deps)
	}, events.ServiceConsumers()[deployer.Name])
}
