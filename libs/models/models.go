// Package models is the contract of the model registry's state: the JSON
// record the registry service keeps per pipeline in the gyre-registry bucket
// (key = the pipeline name), and the reads other parts of Gyre make of it —
// the trainer asks whether a champion exists, the evaluator loads it, the
// CLI lists versions and their lineage.
//
// Only the registry service writes the record (compare-and-set, see
// services/registry); everyone else reads it through Get.
package models

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/libs/store"
)

// Aliases a version can hold.
const (
	// AliasChampion names the version that serves: what the deployer rolls
	// out and the monitor measures drift against.
	AliasChampion = "champion"
	// AliasPrevious names what a rollback returns to: the newest version,
	// other than the champion, whose deployment completed (it served all
	// traffic), unless a rollback withdrew it since. A version that failed
	// its rollout never becomes previous.
	AliasPrevious = "previous"
)

// Verdicts of an evaluation.
const (
	VerdictBlessed  = "blessed"
	VerdictRejected = "rejected"
)

// Reasons of an alias move (ModelPromoted.reason).
const (
	ReasonBlessed  = "blessed"
	ReasonManual   = "manual"
	ReasonRollback = "rollback"
	// ReasonRolledBack: the deployer rolled the champion's rollout back, and
	// champion returned to the version that kept serving.
	ReasonRolledBack = "rolledback"
)

// Registry is the record of one pipeline's models: the value of key
// <pipeline> in the gyre-registry bucket.
type Registry struct {
	Pipeline string `json:"pipeline"`
	// Versions are every registered version, oldest first; Version numbers
	// run from 1 without gaps.
	Versions []Version `json:"versions"`
	// Aliases map an alias (champion, previous) to a version.
	Aliases map[string]int64 `json:"aliases,omitempty"`
	// Requests map a training request id to the version registered for it:
	// what makes registration idempotent.
	Requests map[string]int64 `json:"requests,omitempty"`
	// Moves are the alias moves, oldest first (the newest MaxMoves).
	Moves []Move `json:"moves,omitempty"`
	// MoveSeq numbers the moves from 1; it keys model.promoted event ids
	// and is the record's generation (Generation).
	MoveSeq int64 `json:"moveSeq,omitempty"`
	// Served lists the deployments that completed (their version served all
	// traffic), oldest first, the newest MaxServed: what previous is chosen
	// from.
	Served    []Served  `json:"served,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Served is one completed deployment of a version.
type Served struct {
	Version int64 `json:"version"`
	// Generation is the champion generation the deployment rolled out.
	Generation   int64     `json:"generation"`
	DeploymentID string    `json:"deploymentId,omitempty"`
	At           time.Time `json:"at"`
}

// MaxServed bounds the served history kept in a record.
const MaxServed = 50

// MaxMoves bounds the alias history kept in a record.
const MaxMoves = 200

// Version is one registered model.
type Version struct {
	Version   int64  `json:"version"`
	RequestID string `json:"requestId"`
	JobID     string `json:"jobId,omitempty"`
	// Verdict is blessed or rejected; Reason is the evaluator's summary.
	Verdict   string         `json:"verdict"`
	Reason    string         `json:"reason,omitempty"`
	Algorithm string         `json:"algorithm"`
	Params    map[string]any `json:"params,omitempty"`
	// Metrics are the evaluation metrics on EvalBatchID (the monitor's
	// baseline accuracy is Metrics["accuracy"]).
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	TrainingMetrics map[string]float64 `json:"trainingMetrics,omitempty"`
	// ChampionVersion is the champion the candidate was compared with (0:
	// none) and ChampionMetrics its metrics on the same batch.
	ChampionVersion int64              `json:"championVersion,omitempty"`
	ChampionMetrics map[string]float64 `json:"championMetrics,omitempty"`
	Gates           []Gate             `json:"gates,omitempty"`
	EvalBatchID     string             `json:"evalBatchId,omitempty"`
	EvalRows        int64              `json:"evalRows,omitempty"`
	// Artifact is the bundle (gyre-models <pipeline>/<requestId>.bundle);
	// Reference the training window's statistics
	// (<pipeline>/<requestId>.reference.json).
	Artifact  Object    `json:"artifact"`
	Reference *Object   `json:"reference,omitempty"`
	Schema    Schema    `json:"schema"`
	Lineage   Lineage   `json:"lineage"`
	CreatedAt time.Time `json:"createdAt"`
	// Withdrawn says why a rollback moved champion away from this version
	// (empty while it was not): a withdrawn version is not what a later
	// rollback returns to, until it is promoted again.
	Withdrawn string `json:"withdrawn,omitempty"`
	// Signature is the registry's signature of the version's identity
	// (Subject): deployers serve no version without a valid one.
	Signature signing.Signature `json:"signature,omitzero"`
	// Registered is set on a version registered from outside the loop
	// (gyre models register, POST /v1/pipelines/{p}/models): a model
	// trained elsewhere, by whom and how. Nil for the versions the
	// trainer's candidates became.
	Registered *Registered `json:"registered,omitempty"`
}

// Registered says how a model trained outside the loop was registered.
type Registered struct {
	// By is the credential that registered it, as the registry's HTTP
	// authentication saw it: "token:tok_… (name)", "jwt:<subject>", or
	// "anonymous" when authentication is off.
	By string `json:"by"`
	// For is who the client said it acted for (the CLI sends its user,
	// user@host): recorded beside By, never instead of it.
	For string `json:"for,omitempty"`
	// Format is the model's format as given: xgboost or gyre.
	Format string `json:"format"`
	// File is the SHA-256 and size of the file as uploaded; the version's
	// artifact is the bundle that carries it.
	FileSha256 string `json:"fileSha256"`
	FileBytes  int64  `json:"fileBytes"`
	// Signature says where the names of the model's inputs and classes
	// come from: "schema" (the pipeline's feature columns and label),
	// "model" (the file's own) or "given".
	Signature string `json:"signature"`
	// SkippedGates is true when an admin registered it without running the
	// evaluator's gates: its verdict is rejected (never promoted on its
	// own), and it serves only when promoted by hand.
	SkippedGates bool `json:"skippedGates,omitempty"`
}

// Who is the one-line account of a registration: "registered by
// token:tok_… (ci) for alice@laptop".
func (r *Registered) Who() string {
	s := "registered by " + r.By
	if r.For != "" {
		s += " for " + r.For
	}
	return s
}

// Subject is what the registry signs of a version of pipeline: its
// number, its artifact and the artifact's digest.
func (v *Version) Subject(pipeline string) signing.Subject {
	return signing.Subject{Pipeline: pipeline, Version: v.Version, Bucket: v.Artifact.Bucket, Key: v.Artifact.Key, Sha256: v.Artifact.Sha256}
}

// Gate is the outcome of one evaluation gate.
type Gate struct {
	Metric        string  `json:"metric"`
	Kind          string  `json:"kind"`
	Value         float64 `json:"value"`
	Threshold     float64 `json:"threshold"`
	ChampionValue float64 `json:"championValue,omitempty"`
	Passed        bool    `json:"passed"`
	Message       string  `json:"message,omitempty"`
}

// Object points at an object store object.
type Object struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	URI       string `json:"uri,omitempty"`
	Sha256    string `json:"sha256,omitempty"`
	SizeBytes int64  `json:"sizeBytes,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
}

// Schema is what a model takes and returns.
type Schema struct {
	Features []string `json:"features,omitempty"`
	Label    string   `json:"label,omitempty"`
	Classes  []string `json:"classes,omitempty"`
	Task     string   `json:"task,omitempty"`
}

// Lineage is where a version comes from: its data, its training request and
// the cascade of events that produced it.
type Lineage struct {
	BatchIDs          []string `json:"batchIds,omitempty"`
	FeatureSetVersion string   `json:"featureSetVersion,omitempty"`
	DatasetVersion    string   `json:"datasetVersion,omitempty"`
	TrainingRequestID string   `json:"trainingRequestId,omitempty"`
	TrainingJobID     string   `json:"trainingJobId,omitempty"`
	PipelineRevision  int64    `json:"pipelineRevision,omitempty"`
	// Reason is why training was requested: bootstrap, drift, performance, manual.
	Reason string `json:"reason,omitempty"`
	// EventIDs are the CloudEvents ids of the chain, oldest first: the
	// trigger, training.requested, training.completed, model.evaluated,
	// model.registered.
	EventIDs []string `json:"eventIds,omitempty"`
	// CorrelationID names the cascade; CausationID is the event that caused
	// the registration (model.evaluated's causation: training.completed).
	CorrelationID string `json:"correlationId,omitempty"`
	CausationID   string `json:"causationId,omitempty"`
}

// Move is one alias move.
type Move struct {
	Seq      int64     `json:"seq"`
	Alias    string    `json:"alias"`
	Version  int64     `json:"version"`
	Previous int64     `json:"previous,omitempty"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
	// EventID is the model.promoted event of the move; CorrelationID the
	// cascade it belongs to (what the deployments it causes carry).
	EventID       string `json:"eventId,omitempty"`
	CorrelationID string `json:"correlationId,omitempty"`
	// RequestID is the training request whose registration made the move
	// (automatic promotions only).
	RequestID string `json:"requestId,omitempty"`
	// Cause, Figures and DeploymentID say why a rollback moved champion: the
	// deployer's reason and figures and the deployment rolled back (reason
	// rolledback), or who asked (rollback).
	Cause        string             `json:"cause,omitempty"`
	Figures      map[string]float64 `json:"figures,omitempty"`
	DeploymentID string             `json:"deploymentId,omitempty"`
}

// Get reads a pipeline's record; found is false when the pipeline has no
// model yet (the record returned is then empty, not nil).
func Get(ctx context.Context, kv jetstream.KeyValue, pipeline string) (rec *Registry, rev uint64, found bool, err error) {
	if err := events.ValidatePipeline(pipeline); err != nil {
		return nil, 0, false, &store.NotFoundError{What: fmt.Sprintf("pipeline %q (%v)", pipeline, err)}
	}
	r, rev, found, err := store.GetJSON[Registry](ctx, kv, pipeline)
	if err != nil {
		return nil, 0, false, err
	}
	if !found {
		r.Pipeline = pipeline
	}
	return &r, rev, found, nil
}

// Pipelines lists the pipelines that have a record, sorted.
func Pipelines(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("kv %s list keys: %w", kv.Bucket(), err)
	}
	defer func() { _ = lister.Stop() }()
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Version returns version n.
func (r *Registry) Version(n int64) (*Version, bool) {
	i, ok := slices.BinarySearchFunc(r.Versions, n, func(v Version, n int64) int {
		switch {
		case v.Version < n:
			return -1
		case v.Version > n:
			return 1
		}
		return 0
	})
	if !ok {
		return nil, false
	}
	return &r.Versions[i], true
}

// Alias returns the version an alias points to.
func (r *Registry) Alias(alias string) (*Version, bool) {
	n, ok := r.Aliases[alias]
	if !ok || n == 0 {
		return nil, false
	}
	return r.Version(n)
}

// Champion returns the champion version, if any.
func (r *Registry) Champion() (*Version, bool) { return r.Alias(AliasChampion) }

// Generation is the record's generation: the number of the newest alias
// move (0 before the first). It grows with every move, so a service that
// has applied generation G ignores anything that names G or less.
func (r *Registry) Generation() int64 { return r.MoveSeq }

// PromoteTo makes version n champion: the move is recorded (the caller
// fills its event id and extras through the returned index) and previous
// is chosen again. A withdrawn version promoted again is no longer
// withdrawn.
func (r *Registry) PromoteTo(n int64, reason string, now time.Time) *Move {
	if v, ok := r.Version(n); ok {
		v.Withdrawn = ""
	}
	if r.Aliases == nil {
		r.Aliases = map[string]int64{}
	}
	from := r.Aliases[AliasChampion]
	r.Aliases[AliasChampion] = n
	r.RefreshPrevious()
	return r.record(Move{Alias: AliasChampion, Version: n, Previous: from, Reason: reason, At: now})
}

// RollBackTo moves champion back to version n, away from the champion,
// which is withdrawn with why; previous is chosen again (never the version
// withdrawn).
func (r *Registry) RollBackTo(n int64, reason, why string, now time.Time) *Move {
	from := r.Aliases[AliasChampion]
	if v, ok := r.Version(from); ok && from != n {
		v.Withdrawn = why
	}
	if r.Aliases == nil {
		r.Aliases = map[string]int64{}
	}
	r.Aliases[AliasChampion] = n
	r.RefreshPrevious()
	return r.record(Move{Alias: AliasChampion, Version: n, Previous: from, Reason: reason, At: now})
}

// record appends a move with the next sequence number (the new generation).
func (r *Registry) record(mv Move) *Move {
	r.MoveSeq++
	mv.Seq = r.MoveSeq
	r.Moves = append(r.Moves, mv)
	if len(r.Moves) > MaxMoves {
		r.Moves = append([]Move(nil), r.Moves[len(r.Moves)-MaxMoves:]...)
	}
	return &r.Moves[len(r.Moves)-1]
}

// RecordServed records that a deployment of version n (generation g)
// completed: the version served all traffic. It reports false when the
// deployment was recorded already (a redelivery).
func (r *Registry) RecordServed(n, g int64, deploymentID string, at time.Time) bool {
	for _, s := range r.Served {
		if s.Generation == g && s.Version == n {
			return false
		}
	}
	r.Served = append(r.Served, Served{Version: n, Generation: g, DeploymentID: deploymentID, At: at})
	slices.SortStableFunc(r.Served, func(a, b Served) int { return cmpInt(a.Generation, b.Generation) })
	if len(r.Served) > MaxServed {
		r.Served = append([]Served(nil), r.Served[len(r.Served)-MaxServed:]...)
	}
	r.RefreshPrevious()
	return true
}

// LastServed returns the newest version that served, other than except and
// not withdrawn; 0 when there is none.
func (r *Registry) LastServed(except int64) int64 {
	for i := len(r.Served) - 1; i >= 0; i-- {
		n := r.Served[i].Version
		if n == except {
			continue
		}
		if v, ok := r.Version(n); ok && v.Withdrawn == "" {
			return n
		}
	}
	return 0
}

// RefreshPrevious points previous at the newest version that served, other
// than the champion and not withdrawn, or removes it when there is none.
func (r *Registry) RefreshPrevious() {
	prev := r.LastServed(r.Aliases[AliasChampion])
	if prev == 0 {
		delete(r.Aliases, AliasPrevious)
		return
	}
	if r.Aliases == nil {
		r.Aliases = map[string]int64{}
	}
	r.Aliases[AliasPrevious] = prev
}

// LastMoveTo returns the newest move of champion to version n (zero when
// none is remembered).
func (r *Registry) LastMoveTo(n int64) Move {
	for i := len(r.Moves) - 1; i >= 0; i-- {
		if mv := r.Moves[i]; mv.Alias == AliasChampion && mv.Version == n {
			return mv
		}
	}
	return Move{}
}

// ChampionMove returns the move that made the current champion (its Seq is
// the record's generation, unless a move of another alias came after).
func (r *Registry) ChampionMove() (Move, bool) {
	n := r.Aliases[AliasChampion]
	if n == 0 {
		return Move{}, false
	}
	mv := r.LastMoveTo(n)
	return mv, mv.Seq != 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Latest returns the newest version, if any.
func (r *Registry) Latest() (*Version, bool) {
	if len(r.Versions) == 0 {
		return nil, false
	}
	return &r.Versions[len(r.Versions)-1], true
}

// AliasesOf returns the aliases pointing at version n, sorted.
func (r *Registry) AliasesOf(n int64) []string {
	var out []string
	for a, v := range r.Aliases {
		if v == n {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

// ObjectFromProto converts an object reference of an event.
func ObjectFromProto(o *gyrev1.ObjectRef) Object {
	return Object{
		Bucket: o.GetBucket(), Key: o.GetKey(), URI: o.GetUri(), Sha256: o.GetSha256(),
		SizeBytes: o.GetSizeBytes(), MediaType: o.GetMediaType(),
	}
}

// Proto converts the reference for an event.
func (o Object) Proto() *gyrev1.ObjectRef {
	return &gyrev1.ObjectRef{
		Bucket: o.Bucket, Key: o.Key, Uri: o.URI, Sha256: o.Sha256, SizeBytes: o.SizeBytes, MediaType: o.MediaType,
	}
}

// SchemaFromProto converts a model schema of an event.
func SchemaFromProto(s *gyrev1.ModelSchema) Schema {
	return Schema{
		Features: slices.Clone(s.GetFeatures()), Label: s.GetLabel(),
		Classes: slices.Clone(s.GetClasses()), Task: s.GetTask(),
	}
}

// Proto converts the schema for an event.
func (s Schema) Proto() *gyrev1.ModelSchema {
	return &gyrev1.ModelSchema{Features: slices.Clone(s.Features), Label: s.Label, Classes: slices.Clone(s.Classes), Task: s.Task}
}

// LineageFromProto converts the lineage of an event (correlation and
// causation come from the event's extensions, not its payload).
func LineageFromProto(l *gyrev1.Lineage) Lineage {
	return Lineage{
		BatchIDs: slices.Clone(l.GetBatchIds()), FeatureSetVersion: l.GetFeatureSetVersion(),
		DatasetVersion: l.GetDatasetVersion(), TrainingRequestID: l.GetTrainingRequestId(),
		TrainingJobID: l.GetTrainingJobId(), PipelineRevision: l.GetPipelineRevision(),
		Reason: l.GetReason(), EventIDs: slices.Clone(l.GetEventIds()),
	}
}

// Proto converts the lineage for an event.
func (l Lineage) Proto() *gyrev1.Lineage {
	return &gyrev1.Lineage{
		BatchIds: slices.Clone(l.BatchIDs), FeatureSetVersion: l.FeatureSetVersion,
		DatasetVersion: l.DatasetVersion, TrainingRequestId: l.TrainingRequestID,
		TrainingJobId: l.TrainingJobID, PipelineRevision: l.PipelineRevision,
		Reason: l.Reason, EventIds: slices.Clone(l.EventIDs),
	}
}

// GateFromProto converts a gate outcome of an event.
func GateFromProto(g *gyrev1.Gate) Gate {
	return Gate{
		Metric: g.GetMetric(), Kind: g.GetKind(), Value: g.GetValue(), Threshold: g.GetThreshold(),
		ChampionValue: g.GetChampionValue(), Passed: g.GetPassed(), Message: g.GetMessage(),
	}
}
