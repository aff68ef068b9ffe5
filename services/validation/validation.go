// Package validation is Gyre's validation service.
//
// Validation checks every received batch against its pipeline's dataset
// schema (types, ranges, required columns; learned from the first
// batches when the spec has none, see schema.go) and CEL row rules, and
// reports TFDV's anomalies per column (anomalies.go). It emits data.batch.validated
// with a report of each check and column statistics, or data.batch.rejected
// and quarantines the batch; it follows pipeline.applied to know each
// pipeline's current spec. Within spec.dataset.maxRowErrors, the rows a
// check flags are quarantined and the columns nothing declares dropped: the
// batch is passed on as a cleaned copy without them (see quarantine.go).
//
// The checks (Checker) are plain functions of a table and a schema; the
// application code (Validator) loads the spec and the batch, keeps the
// state the contract of docs/loop.md names — the validated-batch log
// batches.<pipeline> (in arrival order), the learned schema and reference
// schema.<pipeline>, what was kept out of a batch
// rejected.<pipeline>.<batch> — and emits; the ports decode events into its
// commands. A rejected batch changes nothing but its own
// record: it never enters the validated-batch log.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/validation runs it alone.
package validation

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// Name is the service's name: its durable consumers (validation_<handler>), its
// event source (/gyre/validation) and its dead-letter subject (gyre.dlq.validation)
// derive from it.
const Name = events.ServiceValidation

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8082"

// About says what the service does in the loop; it opens the command's help.
const About = `Validation checks every received batch against its pipeline's dataset schema (types,
ranges, required columns; learned from the first spec.dataset.inferSchema.batches batches
when the spec has none) and CEL row rules. It emits data.batch.validated with a report of each check and column
statistics, or data.batch.rejected and quarantines the batch; it follows pipeline.applied
to know each pipeline's current spec.

Checks: the label column is present; required columns and values are there; every cell
has its column's type (float, int, bool; NaN and Inf are invalid in numeric columns);
min/max; categories; the share of missing values per column is at most maxMissingShare;
every CEL rule of spec.dataset.rules holds. More than spec.dataset.maxRowErrors bad rows
(default 0), or any problem of the whole batch, rejects it, with up to 100 reasons naming
column, row and value. Up to maxRowErrors bad rows are quarantined instead: the batch is
validated without them, and without the columns that neither the schema, the label nor
spec.features declares (a new_column anomaly each); what is passed on is a cleaned CSV
copy in gyre-batches (<pipeline>/validated/<sha256>.csv), named by data.batch.validated
and the log, so no quarantined row reaches features, training or reference statistics.
The reasons are kept at gyre-state rejected.<pipeline>.<batch> and served at
GET /v1/pipelines/{pipeline}/rejected[/{batch}] (scope read; gyre data rejected).

Anomalies per column, TFDV's (docs/validation.md): new_column, dropped_column (a
required one rejects), type_change (most values of another type: rejects), out_of_domain
(declared or frozen domains quarantine the rows; learned categories warn), low_presence
and category_shift (warnings: L-infinity distance of the category shares to the
reference learned from the first batches, above spec.dataset.maxShareShift). The learned
schema and reference are kept at gyre-state schema.<pipeline>; gyre schema show|freeze.
A validated batch is added to the pipeline's validated-batch
log (gyre-state batches.<pipeline>) at its arrival position, the stream sequence of its
data.batch.received, so the log follows arrival even when a batch's validation finishes
late; a rejected one changes nothing else.`

// Config is the validation service's configuration.
type Config struct {
	service.Config
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// Service is the validation service.
type Service struct {
	rt        *service.Runtime
	validator *Validator
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
	// Buckets open lazily: Run provisions them after New.
	s := &Service{rt: rt, validator: NewValidator(store.NewLazy(rt.JetStream()), rt.Publisher())}
	if err := rt.Router().HandleDeclared(map[string]bus.Handler{
		"batch-received":   s.batchReceived,
		"pipeline-applied": s.pipelineApplied,
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	// What was kept out of batches is data about the data: reading it
	// needs read.
	if err := rt.HandleScoped(RejectedRoute, service.ScopeRead, http.HandlerFunc(s.serveRejected)); err != nil {
		return nil, err
	}
	if err := rt.HandleScoped(RejectedBatchRoute, service.ScopeRead, http.HandlerFunc(s.serveRejectedBatch)); err != nil {
		return nil, err
	}
	return s, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error { return s.rt.Run(ctx) }

// Handler serves GET /healthz, /readyz, /metrics and the quarantine
// routes (RejectedRoute, RejectedBatchRoute).
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
