package monitor

import (
	"context"
	"fmt"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// Handler names: the durable consumers monitor_<handler> declared in events.
const (
	handlerMaterialized = "features-materialized"
	handlerPredictions  = "prediction-logged"
	handlerLabels       = "label-received"
	handlerPromoted     = "model-promoted"
)

// register binds each declared consumer of the service to its handler.
func (s *Service) register() error {
	return s.rt.Router().HandleDeclared(map[string]bus.Handler{
		handlerMaterialized: s.onMaterialized,
		handlerPredictions:  s.onPredictions,
		handlerLabels:       s.onLabels,
		handlerPromoted:     s.onPromoted,
	})
}

// onPromoted is a prompt: the reference follows the registry's champion,
// whose record (and its generation) decides; a promotion older than what
// is applied is ignored and counted as stale.
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
	f, err := s.app.Follow(ctx, monitoring.Prompt{EventID: ev.ID(), Pipeline: m.GetPipeline(), Generation: m.GetGeneration()})
	if err != nil {
		return err
	}
	if f.Stale != "" {
		bus.Stale(ctx, events.ModelPromoted, "promotion older than the champion followed: ignored", "pipeline", m.GetPipeline(),
			"model_version", m.GetModelVersion(), "generation", m.GetGeneration(), "applied_generation", f.Generation,
			"following", f.Version, "why", f.Stale)
		return nil
	}
	if f.Changed {
		// The live figures were the previous champion's; the new one's come
		// with its first labels.
		s.metrics.forgetLive(m.GetPipeline())
	}
	return nil
}

// onMaterialized: measure the batch's drift; drift.measured always,
// drift.detected when the policy and the cooldown say so.
func (s *Service) onMaterialized(ctx context.Context, ev event.Event) error {
	var m gyrev1.FeaturesMaterialized
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	if m.GetSource().GetKey() == "" {
		return bus.Permanentf("features.materialized of batch %q: source: no raw batch object", m.GetBatchId())
	}
	out, err := s.app.MeasureBatch(ctx, monitoring.Materialized{
		EventID: ev.ID(), Pipeline: m.GetPipeline(), BatchID: m.GetBatchId(),
		FeatureSetVersion: m.GetFeatureSetVersion(), SourceKey: m.GetSource().GetKey(), Rows: m.GetRows(),
	})
	if err != nil {
		return err
	}
	version := strconv.FormatInt(out.ReferenceVersion, 10)
	if err := s.emit(ctx, m.GetPipeline(), out.Measured, out.ReferenceVersion,
		events.DriftMeasured, m.GetPipeline(), m.GetBatchId(), version); err != nil {
		return err
	}
	s.metrics.observeDrift(out.Measured)
	if out.Detected != nil {
		if err := s.emit(ctx, m.GetPipeline(), out.Detected, out.ReferenceVersion,
			events.DriftDetected, m.GetPipeline(), m.GetBatchId(), version); err != nil {
			return err
		}
		bus.Logger(ctx).Info("drift detected", "pipeline", m.GetPipeline(), "batch_id", m.GetBatchId(),
			"reference_model_version", out.ReferenceVersion, "drifted_features", out.Detected.GetDriftedFeatures())
	}
	return nil
}

// onPredictions: record sampled predictions in the shared join and count
// those whose labels came first.
func (s *Service) onPredictions(ctx context.Context, ev event.Event) error {
	var m gyrev1.PredictionLogged
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	// A shadow's predictions were never answered, and share their
	// prediction ids with the champion's answers: the deployer judges
	// them; live accuracy is the served model's.
	if m.GetVariant() == "shadow" {
		return nil
	}
	d, err := s.app.LogPredictions(ctx, predictionLog(ev, &m))
	if err != nil {
		return err
	}
	return s.emitDegraded(ctx, ev, d)
}

// onLabels: count the labelled predictions into live accuracy; labels of
// predictions not logged yet wait for them in the shared join.
func (s *Service) onLabels(ctx context.Context, ev event.Event) error {
	var m gyrev1.LabelReceived
	if err := bus.DecodePayload(ev, &m); err != nil {
		return err
	}
	d, err := s.app.ReceiveLabels(ctx, labelsOf(ev, &m))
	if err != nil {
		return err
	}
	return s.emitDegraded(ctx, ev, d)
}

// predictionLog is the command of a prediction.logged.
func predictionLog(ev event.Event, m *gyrev1.PredictionLogged) monitoring.PredictionLog {
	rows := make([]monitoring.Prediction, 0, len(m.GetRows()))
	for _, r := range m.GetRows() {
		rows = append(rows, monitoring.Prediction{ID: r.GetPredictionId(), Output: r.GetOutput()})
	}
	return monitoring.PredictionLog{EventID: ev.ID(), Pipeline: m.GetPipeline(), ModelVersion: m.GetModelVersion(), Rows: rows}
}

// labelsOf is the command of a label.received.
func labelsOf(ev event.Event, m *gyrev1.LabelReceived) monitoring.Labels {
	labels := make([]monitoring.Label, 0, len(m.GetLabels()))
	for _, l := range m.GetLabels() {
		labels = append(labels, monitoring.Label{PredictionID: l.GetPredictionId(), Value: l.GetValue()})
	}
	return monitoring.Labels{EventID: ev.ID(), Pipeline: m.GetPipeline(), Labels: labels}
}

func (s *Service) emitDegraded(ctx context.Context, cause event.Event, d *gyrev1.PerformanceDegraded) error {
	if d == nil {
		return nil
	}
	// One emission per causing event: its id names the emission.
	if err := s.emit(ctx, d.GetPipeline(), d, d.GetModelVersion(),
		events.PerformanceDegraded, d.GetPipeline(), cause.ID()); err != nil {
		return err
	}
	bus.Logger(ctx).Warn("live accuracy degraded", "pipeline", d.GetPipeline(), "model_version", d.GetModelVersion(),
		"live_accuracy", d.GetLiveAccuracy(), "baseline_accuracy", d.GetBaselineAccuracy(), "labelled_rows", d.GetLabelledRows())
	return nil
}

// emit publishes msg with the handler's ctx (lineage) and a deterministic
// id made of idParts, so that a handler running twice publishes once.
func (s *Service) emit(ctx context.Context, pipeline string, msg proto.Message, modelVersion int64, idParts ...string) error {
	pub := s.rt.Publisher()
	ev, err := events.New(pub.Source(), pipeline, msg)
	if err != nil {
		return bus.Permanent(err)
	}
	ev.SetID(bus.StableID(idParts...))
	if modelVersion > 0 {
		ev.SetExtension(bus.ExtModelVersion, strconv.FormatInt(modelVersion, 10))
	}
	if err := pub.Publish(ctx, ev); err != nil {
		return fmt.Errorf("emit %s: %w", ev.Type(), err)
	}
	return nil
}
