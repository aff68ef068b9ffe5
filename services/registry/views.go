package registry

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

// The views are what the registry's read API answers and what the CLI
// prints: read-only shapes of a pipeline's record.

// Summary is one line of a pipeline's version list.
type Summary struct {
	Version   int64              `json:"version"`
	Verdict   string             `json:"verdict"`
	Aliases   []string           `json:"aliases,omitempty"`
	Metrics   map[string]float64 `json:"metrics,omitempty"`
	Algorithm string             `json:"algorithm"`
	CreatedAt time.Time          `json:"createdAt"`
	RequestID string             `json:"requestId"`
	Reason    string             `json:"reason,omitempty"`
	// Withdrawn says why a rollback moved champion away from the version
	// (not what a rollback returns to until promoted again).
	Withdrawn string `json:"withdrawn,omitempty"`
	// Served is true when a deployment of the version completed.
	Served bool `json:"served,omitempty"`
	// Registered says who registered a model trained outside the loop.
	Registered *models.Registered `json:"registered,omitempty"`
}

// ModelList is a pipeline's versions, newest first, and its aliases.
type ModelList struct {
	Pipeline string           `json:"pipeline"`
	Aliases  map[string]int64 `json:"aliases"`
	Versions []Summary        `json:"versions"`
}

// List summarises a pipeline's versions, newest first.
func List(rec *models.Registry) ModelList {
	out := ModelList{Pipeline: rec.Pipeline, Aliases: rec.Aliases, Versions: make([]Summary, 0, len(rec.Versions))}
	if out.Aliases == nil {
		out.Aliases = map[string]int64{}
	}
	for i := len(rec.Versions) - 1; i >= 0; i-- {
		v := rec.Versions[i]
		sum := Summary{
			Version: v.Version, Verdict: v.Verdict, Aliases: rec.AliasesOf(v.Version), Metrics: v.Metrics,
			Algorithm: v.Algorithm, CreatedAt: v.CreatedAt, RequestID: v.RequestID, Reason: v.Reason,
			Withdrawn: v.Withdrawn, Registered: v.Registered,
		}
		for _, s := range rec.Served {
			sum.Served = sum.Served || s.Version == v.Version
		}
		out.Versions = append(out.Versions, sum)
	}
	return out
}

// Resolve finds a version by number or alias ("3", "champion",
// "previous", "latest"); "" is the champion, else the latest version.
func Resolve(rec *models.Registry, ref string) (*models.Version, error) {
	ref = strings.TrimPrefix(strings.TrimSpace(ref), "v")
	switch ref {
	case "":
		if v, ok := rec.Champion(); ok {
			return v, nil
		}
		if v, ok := rec.Latest(); ok {
			return v, nil
		}
		return nil, &store.NotFoundError{What: fmt.Sprintf("a model of pipeline %q", rec.Pipeline)}
	case "latest":
		if v, ok := rec.Latest(); ok {
			return v, nil
		}
		return nil, &store.NotFoundError{What: fmt.Sprintf("a model of pipeline %q", rec.Pipeline)}
	}
	if n, err := strconv.ParseInt(ref, 10, 64); err == nil {
		if v, ok := rec.Version(n); ok {
			return v, nil
		}
		return nil, &store.NotFoundError{What: fmt.Sprintf("version %d of pipeline %q", n, rec.Pipeline)}
	}
	if v, ok := rec.Alias(ref); ok {
		return v, nil
	}
	return nil, &store.NotFoundError{What: fmt.Sprintf("version %q of pipeline %q (want a number, champion, previous or latest)", ref, rec.Pipeline)}
}

// ChainEvent is one event of a version's cascade.
type ChainEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// LineageView is where a version comes from: its data, its feature set,
// its training request, the event that triggered it and the cascade of
// events that produced it.
type LineageView struct {
	Pipeline          string    `json:"pipeline"`
	Version           int64     `json:"version"`
	Aliases           []string  `json:"aliases,omitempty"`
	Verdict           string    `json:"verdict"`
	CreatedAt         time.Time `json:"createdAt"`
	Batches           []string  `json:"batches"`
	DatasetVersion    string    `json:"datasetVersion,omitempty"`
	FeatureSetVersion string    `json:"featureSetVersion,omitempty"`
	TrainingRequestID string    `json:"trainingRequestId"`
	TrainingJobID     string    `json:"trainingJobId,omitempty"`
	PipelineRevision  int64     `json:"pipelineRevision,omitempty"`
	// Reason is why training was requested, Trigger the event that did.
	Reason        string      `json:"reason,omitempty"`
	Trigger       *ChainEvent `json:"trigger,omitempty"`
	CorrelationID string      `json:"correlationId,omitempty"`
	// Events are the cascade, oldest first.
	Events          []ChainEvent       `json:"events"`
	EvalBatchID     string             `json:"evalBatchId,omitempty"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	ChampionVersion int64              `json:"championVersion,omitempty"`
	Artifact        models.Object      `json:"artifact"`
	Reference       *models.Object     `json:"reference,omitempty"`
	// Registered says who registered a model trained outside the loop, and
	// how.
	Registered *models.Registered `json:"registered,omitempty"`
}

// triggerTypes maps the reason of a training request to the event that
// triggers it.
var triggerTypes = map[string]string{
	"bootstrap":   events.DataBatchValidated,
	"drift":       events.DriftDetected,
	"performance": events.PerformanceDegraded,
	"manual":      events.TrainingRequested,
}

// cascade is the chain every registered version ends with, newest last;
// a trigger may precede it.
var cascade = []string{events.TrainingRequested, events.TrainingCompleted, events.ModelEvaluated, events.ModelRegistered}

// Lineage returns the lineage of a version.
func Lineage(rec *models.Registry, v *models.Version) LineageView {
	l := v.Lineage
	out := LineageView{
		Pipeline: rec.Pipeline, Version: v.Version, Aliases: rec.AliasesOf(v.Version), Verdict: v.Verdict,
		CreatedAt: v.CreatedAt, Batches: l.BatchIDs, DatasetVersion: l.DatasetVersion,
		FeatureSetVersion: l.FeatureSetVersion, TrainingRequestID: l.TrainingRequestID, TrainingJobID: l.TrainingJobID,
		PipelineRevision: l.PipelineRevision, Reason: l.Reason, CorrelationID: l.CorrelationID,
		EvalBatchID: v.EvalBatchID, Metrics: v.Metrics, ChampionVersion: v.ChampionVersion,
		Artifact: v.Artifact, Reference: v.Reference, Events: []ChainEvent{}, Registered: v.Registered,
	}
	// The chain's ids are positional: the trainer, evaluator and registry
	// each append their event to the trigger's.
	ids := l.EventIDs
	first := len(ids) - len(cascade)
	for i, id := range ids {
		typ := "event"
		switch {
		case i >= first && i-first < len(cascade):
			typ = cascade[i-first]
		case i == first-1:
			if t, ok := triggerTypes[l.Reason]; ok {
				typ = t
			}
		}
		out.Events = append(out.Events, ChainEvent{ID: id, Type: typ})
	}
	if first >= 1 {
		out.Trigger = &out.Events[first-1]
	}
	return out
}
