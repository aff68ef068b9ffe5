package trainer_test

import (
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/trainer"
)

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := trainer.DefaultConfig()
		cfg.NATSURL = url
		return trainer.New(cfg, deps)
	}, events.ServiceConsumers()[trainer.Name])
}

func TestOtherPoolProvisionsItsJobConsumer(t *testing.T) {
	cfg := trainer.DefaultConfig()
	cfg.Pool = "gpu"
	want := cfg.Topology().Consumers
	var jobs []string
	for _, c := range want {
		if c.Stream == events.StreamJobs {
			jobs = append(jobs, c.Durable()+" "+c.FilterSubject)
		}
	}
	if len(jobs) != 1 || jobs[0] != "trainer_jobs-gpu gyre.jobs.train.gpu" {
		t.Fatalf("job consumers %v, want only trainer_jobs-gpu on gyre.jobs.train.gpu", jobs)
	}
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg.NATSURL = url
		return trainer.New(cfg, deps)
	}, want)
}

func TestConfigValidateNamesTheField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*trainer.Config)
		want   string
	}{
		{"defaults", func(*trainer.Config) {}, ""},
		{"bad pool", func(c *trainer.Config) { c.Pool = "GPU" }, "--pool (env GYRE_TRAINER_POOL)"},
		{"zero concurrency", func(c *trainer.Config) { c.Concurrency = 0 }, "--concurrency (env GYRE_TRAINER_CONCURRENCY)"},
		{"shared field", func(c *trainer.Config) { c.NATSURL = "" }, "--nats"},
		{"empty replica id", func(c *trainer.Config) { c.ReplicaID = "" }, "--replica-id (env GYRE_TRAINER_REPLICA_ID)"},
		{"bad replica id", func(c *trainer.Config) { c.ReplicaID = "a b" }, "--replica-id (env GYRE_TRAINER_REPLICA_ID)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := trainer.DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want it to name %q", err, tt.want)
			}
		})
	}
}
