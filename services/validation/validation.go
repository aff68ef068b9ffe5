// Package validation is Gyre's validation service.
//
// Validation checks every received batch against its pipeline's dataset
// schema (types, ranges, required columns; inferred from the first batch
// when the spec has none) and CEL row rules. It emits data.batch.validated
// with a report of each check and column statistics, or data.batch.rejected
// and quarantines the batch; it follows pipeline.applied to know each
// pipeline's current spec.
//
// The loop logic arrives with issue #3. Until then this package is a
// skeleton, and honest about it: the service connects, provisions its
// topology (every stream and bucket, and its own durable consumers), and
// reports health, readiness and metrics, but it registers no message
// handler, so the events it will consume wait in its durable consumers
// rather than being taken and dropped.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/validation runs it alone.
package validation

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
)

// Name is the service's name: its durable consumers (validation_<handler>), its
// event source (/gyre/validation) and its dead-letter subject (gyre.dlq.validation)
// derive from it.
const Name = events.ServiceValidation

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8082"

// About says what the service does in the loop; it opens the command's help.
const About = `Validation checks every received batch against its pipeline's dataset schema (types,
ranges, required columns; inferred from the first batch when the spec has none) and CEL
row rules. It emits data.batch.validated with a report of each check and column
statistics, or data.batch.rejected and quarantines the batch; it follows pipeline.applied
to know each pipeline's current spec.

Status: a skeleton until issue #3. It connects, provisions its topology and reports
health and readiness, but handles no event yet: what it will consume waits in its
durable consumers.`

// Config is the validation service's configuration.
type Config struct {
	service.Config
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// Service is the validation service.
type Service struct {
	rt *service.Runtime
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
	return &Service{rt: rt}, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error { return s.rt.Run(ctx) }

// Handler serves GET /healthz, /readyz and /metrics.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
