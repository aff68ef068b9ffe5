package evaluator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// Emitter publishes events on their catalog subjects.
type Emitter interface {
	Publish(ctx context.Context, ev event.Event) error
}

// Buckets opens the JetStream buckets (store.Lazy does, once provisioned).
type Buckets interface {
	Get(ctx context.Context) (*store.Buckets, error)
}

// Evaluator scores candidates against the pipeline's gates.
type Evaluator struct {
	buckets Buckets
	pub     Emitter
	source  string
}

// NewEvaluator returns an evaluator emitting with source /gyre/evaluator.
func NewEvaluator(buckets Buckets, pub Emitter) *Evaluator {
	return &Evaluator{buckets: buckets, pub: pub, source: "/gyre/" + Name}
}

// Candidate is a trained model to evaluate: the typed command of the
// training.completed handler.
type Candidate struct {
	// EventID is the training.completed event's id.
	EventID   string
	Completed *gyrev1.TrainingCompleted
}

// Evaluate scores the candidate, and the champion if there is one, on the
// evaluation batch — the newest validated batch outside the training
// window, or, when there is none, the newest batch of the window (in-sample,
// which the reason says) — applies every gate and emits model.evaluated.
//
// A candidate that cannot be scored on the batch (a class or column it
// never saw) is rejected, with the reason; a champion that cannot be scored
// is not compared with. The event's id derives from the training request,
// so a redelivery is stored once.
func (e *Evaluator) Evaluate(ctx context.Context, c Candidate) (*gyrev1.ModelEvaluated, error) {
	tc := c.Completed
	p := tc.GetPipeline()
	b, err := e.buckets.Get(ctx)
	if err != nil {
		return nil, err
	}
	spec, _, err := store.Pipeline(ctx, b.Pipelines, p)
	if err != nil {
		return nil, err
	}
	candidate, err := loadBundle(ctx, b, models.ObjectFromProto(tc.GetArtifact()))
	if err != nil {
		return nil, fmt.Errorf("candidate of request %s: %w", tc.GetRequestId(), err)
	}
	reg, _, _, err := models.Get(ctx, b.Registry, p)
	if err != nil {
		return nil, err
	}
	champion, hasChampion := reg.Champion()
	if hasChampion && champion.RequestID == tc.GetRequestId() {
		hasChampion = false // a redelivery after the candidate was promoted
	}

	batch, inSample, err := evaluationBatch(ctx, b, p, tc.GetLineage().GetBatchIds())
	if err != nil {
		return nil, err
	}
	data, err := store.GetObject(ctx, b.Batches, batch.ObjectKey)
	if err != nil {
		return nil, fmt.Errorf("evaluation batch %s: %w", batch.BatchID, err)
	}
	tab, err := table.Read(batch.Format, data)
	if err != nil {
		return nil, fmt.Errorf("evaluation batch %s: %w", batch.BatchID, err)
	}

	var notes []string
	candMetrics, err := candidate.Evaluate(tab)
	if err != nil {
		if !bus.IsPermanent(err) {
			return nil, err
		}
		notes = append(notes, fmt.Sprintf("the candidate cannot be scored on batch %s: %v", batch.BatchID, err))
		candMetrics = nil
	}
	var champMetrics map[string]float64
	if hasChampion {
		champMetrics, err = e.scoreChampion(ctx, b, champion, tab)
		if err != nil {
			if !bus.IsPermanent(err) {
				return nil, err
			}
			notes = append(notes, fmt.Sprintf("champion v%d cannot be scored on batch %s (%v): not compared", champion.Version, batch.BatchID, err))
			champMetrics = nil
		}
	}
	gates := ApplyGates(spec.Spec.Evaluation.Gates, candMetrics, champMetrics)
	verdict := Verdict(gates)
	if candMetrics == nil {
		verdict = models.VerdictRejected
	}

	evaluatedID := bus.StableID(events.ModelEvaluated, p, tc.GetRequestId())
	lineage := proto.Clone(tc.GetLineage()).(*gyrev1.Lineage)
	if lineage == nil {
		lineage = &gyrev1.Lineage{}
	}
	lineage.EventIds = append(lineage.EventIds, evaluatedID)
	out := &gyrev1.ModelEvaluated{
		Pipeline: p, RequestId: tc.GetRequestId(), JobId: tc.GetJobId(), CandidateArtifact: tc.GetArtifact(),
		EvalBatchId: batch.BatchID, EvalRows: int64(tab.Len()), CandidateMetrics: candMetrics,
		Verdict: verdict, Algorithm: tc.GetAlgorithm(), Params: tc.GetParams(), TrainingMetrics: tc.GetMetrics(),
		Reference: tc.GetReference(), Schema: tc.GetSchema(), Lineage: lineage,
	}
	if hasChampion && champMetrics != nil {
		out.ChampionVersion, out.ChampionMetrics = champion.Version, champMetrics
	}
	// The champion in force, scored or not: the registry promotes the
	// verdict only while it still is.
	atEvaluation := int64(0)
	if c, ok := reg.Champion(); ok {
		atEvaluation = c.Version
	}
	out.ChampionAtEvaluation = &atEvaluation
	for _, g := range gates {
		out.Gates = append(out.Gates, &gyrev1.Gate{
			Metric: g.Metric, Kind: g.Kind, Value: g.Value, Threshold: g.Threshold,
			ChampionValue: g.ChampionValue, Passed: g.Passed, Message: g.Message,
		})
	}
	out.Reason = reason(out, gates, inSample, notes)

	ev, err := events.New(e.source, p, out)
	if err != nil {
		return nil, bus.Permanent(err)
	}
	ev.SetID(evaluatedID)
	if dv := lineage.GetDatasetVersion(); dv != "" {
		ev.SetExtension(bus.ExtDatasetVersion, dv)
	}
	if err := e.pub.Publish(ctx, ev); err != nil {
		return nil, err
	}
	bus.Logger(ctx).Info("candidate evaluated", "pipeline", p, "request_id", tc.GetRequestId(),
		"verdict", verdict, "reason", out.Reason)
	return out, nil
}

// scoreChampion loads the champion's bundle and scores it on the batch with
// its own feature set.
func (e *Evaluator) scoreChampion(ctx context.Context, b *store.Buckets, champion *models.Version, tab *table.Table) (map[string]float64, error) {
	cb, err := loadBundle(ctx, b, champion.Artifact)
	if err != nil {
		return nil, fmt.Errorf("champion v%d: %w", champion.Version, err)
	}
	return cb.Evaluate(tab)
}

// loadBundle reads a bundle and checks it is the object its reference names.
func loadBundle(ctx context.Context, b *store.Buckets, ref models.Object) (*bundle.Bundle, error) {
	if ref.Bucket != "" && ref.Bucket != events.ObjectModels {
		return nil, bus.Permanentf("artifact in bucket %q, want %s", ref.Bucket, events.ObjectModels)
	}
	if ref.Key == "" {
		return nil, bus.Permanentf("artifact reference names no key")
	}
	data, err := store.GetObject(ctx, b.Models, ref.Key)
	if err != nil {
		return nil, err
	}
	if ref.Sha256 != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != ref.Sha256 {
			return nil, bus.Permanentf("artifact %s has sha256 %s, the reference says %s", ref.Key, got, ref.Sha256)
		}
	}
	return bundle.Unmarshal(data)
}

// evaluationBatch picks the batch to evaluate on: the newest validated
// batch not in the training window, else (inSample) the newest batch of the
// window.
func evaluationBatch(ctx context.Context, b *store.Buckets, pipeline string, window []string) (batch store.ValidatedBatch, inSample bool, err error) {
	log, err := store.ValidatedBatches(ctx, b.State, pipeline)
	if err != nil {
		return batch, false, err
	}
	for i := len(log) - 1; i >= 0; i-- {
		if !slices.Contains(window, log[i].BatchID) {
			return log[i], false, nil
		}
	}
	for i := len(log) - 1; i >= 0; i-- {
		if slices.Contains(window, log[i].BatchID) {
			return log[i], true, nil
		}
	}
	return batch, false, bus.Permanentf("pipeline %s: no validated batch to evaluate on (the window %v is not in the validated-batch log)", pipeline, window)
}

// reason is the one-line summary of an evaluation.
func reason(ev *gyrev1.ModelEvaluated, gates []models.Gate, inSample bool, notes []string) string {
	metric := "accuracy"
	if len(gates) > 0 {
		metric = gates[0].Metric
	} else if _, ok := ev.GetCandidateMetrics()["accuracy"]; !ok {
		metric = "rmse"
	}
	var s strings.Builder
	if v, ok := ev.GetCandidateMetrics()[metric]; ok {
		fmt.Fprintf(&s, "%s %.4f", metric, v)
	} else {
		fmt.Fprintf(&s, "%s not measured", metric)
	}
	if v, ok := ev.GetChampionMetrics()[metric]; ok {
		fmt.Fprintf(&s, " vs champion v%d %.4f", ev.GetChampionVersion(), v)
	} else if ev.GetChampionVersion() == 0 {
		s.WriteString(", no champion")
	}
	fmt.Fprintf(&s, " on batch %s (%d rows", ev.GetEvalBatchId(), ev.GetEvalRows())
	if inSample {
		s.WriteString(", in-sample: no validated batch outside the training window")
	}
	s.WriteString(")")
	failed := 0
	for _, g := range gates {
		if !g.Passed {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(&s, "; %d of %d gates failed", failed, len(gates))
	}
	for _, n := range notes {
		s.WriteString("; " + n)
	}
	return s.String()
}
