package deployer

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"

	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// Handler names: the consumers deployer_<handler> declared in events.
const handlerLabels = "label-received"

// register binds each declared consumer of the service to its handler.
// The desired state — the registry's champions, the deployment records,
// the specs — is watched, not consumed: see serving.Deployer.
func (s *Service) register() error {
	return s.rt.Router().HandleDeclared(map[string]bus.Handler{
		handlerLabels: s.onLabels,
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
