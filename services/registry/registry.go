// Package registry is Gyre's registry service.
//
// Registry is the record of models. On model.evaluated it records the
// version — metrics, gates, lineage back to its datasets and the events that
// caused it — in the gyre-registry bucket and emits model.registered; when
// the verdict is blessed it moves the pipeline's champion alias and emits
// model.promoted.
//
// Versions are numbered from 1 per pipeline and registration is idempotent
// per training request, so a redelivered model.evaluated never makes a
// second version. Its HTTP API reads versions and lineage, moves the
// champion by hand (promote, rollback) and registers models trained
// outside the loop (outside.go: bundled, judged by the evaluator's gates in
// this process, signed like any version); the Registrar that does so is
// exported so that the CLI (gyre promote, gyre rollback) has the same
// effects without finding the service's address.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/registry runs it alone.
package registry

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/libs/store"
)

// Name is the service's name: its durable consumers (registry_<handler>), its
// event source (/gyre/registry) and its dead-letter subject (gyre.dlq.registry)
// derive from it.
const Name = events.ServiceRegistry

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8087"

// About says what the service does in the loop; it opens the command's help.
const About = `Registry is the record of models. On model.evaluated it records the version — metrics,
gates, lineage back to its datasets and the events that caused it — in the gyre-registry
bucket and emits model.registered; when the verdict is blessed — and was judged against
the champion in force — it moves the pipeline's champion alias and emits model.promoted.
Its record is the desired state every other service reconciles to: each move has a
generation (1, 2, …) carried by model.promoted. On deployment.completed it records that the
version served (previous is the newest version that did, other than the champion); on
deployment.rolledback it moves champion back to what kept serving (reason rolledback,
with the deployer's reason and figures), so that the monitor and the evaluator follow
the model that actually serves.

HTTP API:
  GET  /v1/pipelines/{pipeline}/models               versions, newest first, and aliases
  GET  /v1/pipelines/{pipeline}/models/{version}     one version (a number or an alias)
  GET  /v1/pipelines/{pipeline}/lineage?version=N    where a version comes from (default: champion)
  POST /v1/pipelines/{pipeline}/promote {"version":N} make N champion (model.promoted, reason manual)
  POST /v1/pipelines/{pipeline}/rollback             champion back to previous (reason rollback)
  POST /v1/pipelines/{pipeline}/models?format=xgboost|gyre[&signature=schema][&inputs=a,b][&classes=x,y]
       [&skipGates=true][&promote=true]                register a model trained elsewhere (the body
                                                     is its file): bundled under the pipeline's names,
                                                     stored in gyre-models, judged by the evaluator's
                                                     gates, signed; promote it like any version`

// Config is the registry service's configuration.
type Config struct {
	service.Config
	// SigningKey is the ed25519 private key (PKCS #8 PEM, mode 0600) the
	// registry signs every version with; deployers trust its public key.
	SigningKey string
}

// EnvSigningKey is the environment variable of --signing-key.
const EnvSigningKey = "GYRE_REGISTRY_SIGNING_KEY"

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config { return Config{Config: service.Defaults(DefaultHTTPAddr)} }

// RegisterFlags registers the shared flags and the registry's own.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.StringFlag(fs, &c.SigningKey, "signing-key", EnvSigningKey, c.SigningKey,
		"ed25519 private key (PKCS #8 PEM, mode 0600) that signs every model version; deployers verify with its public key (gyre auth signing-key writes a pair)")
}

// Validate checks every setting: the signing key must be there and
// readable only by its owner.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	if c.SigningKey == "" {
		errs = append(errs, &service.FieldError{Flag: "signing-key", Env: EnvSigningKey, Value: "",
			Reason: "is required: deployers serve only signed versions (write a key pair with: gyre auth signing-key --dir DIR)"})
	} else if _, err := signing.LoadPrivateKey(c.SigningKey); err != nil {
		errs = append(errs, &service.FieldError{Flag: "signing-key", Env: EnvSigningKey, Value: c.SigningKey, Reason: err.Error()})
	}
	return errors.Join(errs...)
}

// Service is the registry service.
type Service struct {
	rt      *service.Runtime
	buckets *store.Lazy
	signer  *signing.Signer
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
	key, err := signing.LoadPrivateKey(cfg.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("%s: --signing-key: %w", Name, err)
	}
	s := &Service{rt: rt, buckets: store.NewLazy(deps.JS), signer: signing.NewSigner(key)}
	if err := rt.Router().HandleDeclared(map[string]bus.Handler{
		"model-evaluated":       s.onModelEvaluated,
		"deployment-completed":  s.onDeploymentCompleted,
		"deployment-rolledback": s.onDeploymentRolledBack,
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	// Reading needs read; moving the champion by hand and registering a
	// model trained elsewhere need admin.
	routes := []struct {
		pattern string
		scope   service.Scope
		h       http.HandlerFunc
	}{
		{"GET /v1/pipelines/{pipeline}/models", service.ScopeRead, s.serveModels},
		{"GET /v1/pipelines/{pipeline}/models/{version}", service.ScopeRead, s.serveModel},
		{"GET /v1/pipelines/{pipeline}/lineage", service.ScopeRead, s.serveLineage},
		{"POST /v1/pipelines/{pipeline}/models", service.ScopeAdmin, s.serveRegister},
		{"POST /v1/pipelines/{pipeline}/promote", service.ScopeAdmin, s.servePromote},
		{"POST /v1/pipelines/{pipeline}/rollback", service.ScopeAdmin, s.serveRollback},
	}
	for _, r := range routes {
		if err := rt.HandleScoped(r.pattern, r.scope, r.h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// registrar returns the registry's application over the gyre-registry
// bucket (opened on first use: it is provisioned by Run).
func (s *Service) registrar(ctx context.Context) (*Registrar, error) {
	b, err := s.buckets.Get(ctx)
	if err != nil {
		return nil, err
	}
	return NewRegistrar(b.Registry, s.rt.Publisher()).WithSigner(s.signer), nil
}

// onModelEvaluated is the port of model.evaluated: it decodes the
// evaluation and has it registered.
func (s *Service) onModelEvaluated(ctx context.Context, ev event.Event) error {
	msg := &gyrev1.ModelEvaluated{}
	if err := events.Decode(ev, msg); err != nil {
		return err
	}
	if err := events.ValidatePipeline(msg.GetPipeline()); err != nil {
		return bus.Permanent(fmt.Errorf("%s %s: %w", ev.Type(), ev.ID(), err))
	}
	if msg.GetRequestId() == "" || msg.GetCandidateArtifact().GetKey() == "" {
		return bus.Permanentf("%s %s: no request id or candidate artifact", ev.Type(), ev.ID())
	}
	r, err := s.registrar(ctx)
	if err != nil {
		return err
	}
	_, err = r.Register(ctx, Evaluation{
		EventID: ev.ID(), CorrelationID: bus.Ext(ev, bus.ExtCorrelationID), CausationID: bus.Ext(ev, bus.ExtCausationID),
		Evaluated: msg,
	})
	return err
}

// onDeploymentCompleted records that a version served all traffic.
func (s *Service) onDeploymentCompleted(ctx context.Context, ev event.Event) error {
	var m gyrev1.DeploymentCompleted
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	if m.GetModelVersion() < 1 {
		return bus.Permanentf("%s %s: modelVersion %d, want a version >= 1", ev.Type(), ev.ID(), m.GetModelVersion())
	}
	r, err := s.registrar(ctx)
	if err != nil {
		return err
	}
	return r.Completed(ctx, Deployed{
		Pipeline: m.GetPipeline(), DeploymentID: m.GetDeploymentId(), Version: m.GetModelVersion(),
		Generation: m.GetGeneration(), PreviousVersion: m.GetPreviousVersion(), At: ev.Time().UTC(),
	})
}

// onDeploymentRolledBack moves champion back to what kept serving.
func (s *Service) onDeploymentRolledBack(ctx context.Context, ev event.Event) error {
	var m gyrev1.DeploymentRolledBack
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	if m.GetModelVersion() < 1 {
		return bus.Permanentf("%s %s: modelVersion %d, want a version >= 1", ev.Type(), ev.ID(), m.GetModelVersion())
	}
	r, err := s.registrar(ctx)
	if err != nil {
		return err
	}
	_, err = r.RolledBack(ctx, Deployed{
		Pipeline: m.GetPipeline(), DeploymentID: m.GetDeploymentId(), Version: m.GetModelVersion(),
		Generation: m.GetGeneration(), PreviousVersion: m.GetPreviousVersion(),
		Reason: m.GetReason(), Figures: m.GetFigures(), At: ev.Time().UTC(),
	})
	return err
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error { return s.rt.Run(ctx) }

// Handler serves GET /healthz, /readyz, /metrics and the registry API.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
