package evaluator_test

import (
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/evaluator"
)

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := evaluator.DefaultConfig()
		cfg.NATSURL = url
		return evaluator.New(cfg, deps)
	}, events.ServiceConsumers()[evaluator.Name])
}
