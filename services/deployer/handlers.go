package deployer

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// Handler names: the durable consumers deployer_<handler> declared in events.
const (
	handlerPromoted = "model-promoted"
	handlerLabels   = "label-received"
	handlerApplied  = "pipeline-applied"
)

// register binds each declared consumer of the service to its handler.
func (s *Service) register() error {
	return s.rt.Router().HandleDeclared(map[string]bus.Handler{
		handlerPromoted: s.onPromoted,
		handlerLabels:   s.onLabels,
		handlerApplied:  s.onApplied,
	})
}

// onPromoted rolls the promoted version out.
func (s *Service) onPromoted(ctx context.Context, ev event.Event) error {
	var m gyrev1.ModelPromoted
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	// Only the champion serves and is the drift reference; other aliases
	// moving concern neither.
	if a := m.GetAlias(); a != "" && a != models.AliasChampion {
		return nil
	}
	art := m.GetArtifact()
	if art.GetKey() == "" {
		return bus.Permanentf("model.promoted of %s v%d: artifact: no bundle key", m.GetPipeline(), m.GetModelVersion())
	}
	if m.GetModelVersion() <= 0 {
		return bus.Permanentf("model.promoted of %s: modelVersion: %d, want a version >= 1", m.GetPipeline(), m.GetModelVersion())
	}
	c := bus.CauseOf(ev)
	return s.app.Promote(ctx, serving.Promotion{
		Cause:    serving.Cause{ID: c.ID, Type: c.Type, CorrelationID: c.CorrelationID, Pipeline: c.Pipeline},
		Pipeline: m.GetPipeline(),
		// One deployment per promotion event: a redelivery is the same
		// deployment, with the same events.
		DeploymentID: bus.StableID("deployment", m.GetPipeline(), ev.ID()),
		Version:      m.GetModelVersion(),
		Artifact:     serving.Artifact{Bucket: art.GetBucket(), Key: art.GetKey(), Sha256: art.GetSha256()},
		Metrics:      m.GetMetrics(),
		Reason:       m.GetReason(),
	})
}

// onLabels counts labels of a rollout's predictions towards its judgement.
func (s *Service) onLabels(ctx context.Context, ev event.Event) error {
	var m gyrev1.LabelReceived
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	labels := make([]serving.Label, len(m.GetLabels()))
	for i, l := range m.GetLabels() {
		labels[i] = serving.Label{PredictionID: l.GetPredictionId(), Value: l.GetValue()}
	}
	if n := s.app.Labels(m.GetPipeline(), labels); n > 0 {
		bus.Logger(ctx).Debug("rollout labels counted", "pipeline", m.GetPipeline(), "labels", n)
	}
	return nil
}

// onApplied brings a changed spec's serving settings (batching, sampleRate,
// routeHeader) to the models serving its pipeline. The event is the
// trigger; the spec is read from the store, the newest there is.
func (s *Service) onApplied(ctx context.Context, ev event.Event) error {
	var msg gyrev1.PipelineApplied
	if err := bus.DecodePayload(ev, &msg); err != nil {
		return err
	}
	changed, err := s.app.ApplySpec(ctx, msg.GetPipeline())
	if err != nil {
		return err
	}
	if len(changed) > 0 {
		bus.Logger(ctx).Info("serving settings applied", "pipeline", msg.GetPipeline(), "changed", changed)
	}
	return nil
}
