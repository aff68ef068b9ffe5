// Package evaluator is Gyre's evaluator service.
//
// Evaluator judges each trained candidate. On training.completed it scores
// the candidate and the current champion on the newest validated data,
// applies the pipeline's gates (absolute, and relative to the champion) and
// emits model.evaluated with every gate and the verdict: blessed or
// rejected.
//
// The evaluation batch is the newest validated batch outside the training
// window (the scheduler keeps the newest batch out of it for this); each
// model is scored with its own bundled feature set, and the event carries
// everything the registry records: artifact, reference statistics, metrics,
// schema and lineage.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/evaluator runs it alone.
package evaluator

import (
	"context"
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// Name is the service's name: its durable consumers (evaluator_<handler>), its
// event source (/gyre/evaluator) and its dead-letter subject (gyre.dlq.evaluator)
// derive from it.
const Name = events.ServiceEvaluator

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8086"

// About says what the service does in the loop; it opens the command's help.
const About = `Evaluator judges each trained candidate. On training.completed it scores the candidate and
the current champion on the newest validated data, applies the pipeline's gates (absolute,
and relative to the champion) and emits model.evaluated with every gate and the verdict:
blessed or rejected. The evaluation batch is the newest validated batch outside the
training window (the newest of the window, in-sample, when there is none, and the reason
says so).`

// Config is the evaluator service's configuration.
type Config struct {
	service.Config
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// Service is the evaluator service.
type Service struct {
	rt        *service.Runtime
	evaluator *Evaluator
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
	s := &Service{rt: rt, evaluator: NewEvaluator(store.NewLazy(deps.JS), rt.Publisher())}
	decl := events.EventConsumer(Name, "training-completed", events.TrainingCompleted)
	if err := rt.Router().Handle(decl, s.onTrainingCompleted); err != nil {
		return nil, fmt.Errorf("%s: handler %s: %w", Name, decl.Durable(), err)
	}
	return s, nil
}

// onTrainingCompleted is the port of training.completed: it decodes the
// candidate and has it evaluated.
func (s *Service) onTrainingCompleted(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.TrainingCompleted{}
	if err := events.Decode(ev, msg); err != nil {
		return err
	}
	if err := events.ValidatePipeline(msg.GetPipeline()); err != nil {
		return bus.Permanent(fmt.Errorf("%s %s: %w", ev.Type(), ev.ID(), err))
	}
	if msg.GetRequestId() == "" || msg.GetArtifact().GetKey() == "" {
		return bus.Permanentf("%s %s: no request id or artifact", ev.Type(), ev.ID())
	}
	_, err := s.evaluator.Evaluate(ctx, Candidate{EventID: ev.ID(), Completed: msg})
	return err
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
