package feature_test

import (
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/feature"
)

// TestSkeletonRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestSkeletonRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := feature.DefaultConfig()
		cfg.NATSURL = url
		return feature.New(cfg, deps)
	}, events.ServiceConsumers()[feature.Name])
}
