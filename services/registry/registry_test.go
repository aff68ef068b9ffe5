package registry_test

import (
	"os"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/registry"
)

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	key := looptest.SigningKeyFile(t)
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := registry.DefaultConfig()
		cfg.NATSURL = url
		cfg.SigningKey = key
		return registry.New(cfg, deps)
	}, events.ServiceConsumers()[registry.Name])
}

// TestSigningKeyIsRequired: the registry does not start without a key, or
// with one others can read.
func TestSigningKeyIsRequired(t *testing.T) {
	t.Parallel()
	cfg := registry.DefaultConfig()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "signing-key") {
		t.Fatalf("no key: %v", err)
	}
	cfg.SigningKey = looptest.SigningKeyFile(t)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a key: %v", err)
	}
	if err := os.Chmod(cfg.SigningKey, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: %v", err)
	}
}
