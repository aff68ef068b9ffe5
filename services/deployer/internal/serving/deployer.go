package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// ErrNoPipeline is wrapped by SpecStore errors for a pipeline never applied.
var ErrNoPipeline = errors.New("no such pipeline")

// SpecStore reads pipeline specs.
type SpecStore interface {
	Pipeline(ctx context.Context, name string) (*pipeline.Pipeline, error)
}

// ModelStore reads model bundles.
type ModelStore interface {
	Load(ctx context.Context, art Artifact) (*bundle.Bundle, error)
}

// DeploymentStore keeps each pipeline's Record (gyre-deployments).
type DeploymentStore interface {
	Get(ctx context.Context, pipeline string) (Record, bool, error)
	Put(ctx context.Context, pipeline string, r Record) error
	Pipelines(ctx context.Context) ([]string, error)
}

// Cause is the event a deployment acts on behalf of; what the deployer
// emits for it, even from a later request or step, carries its lineage.
type Cause struct {
	ID            string `json:"id"`
	Type          string `json:"type"`
	CorrelationID string `json:"correlationId"`
	Pipeline      string `json:"pipeline"`
}

// Emitter publishes an event caused by cause with a deterministic id made of
// idParts.
type Emitter interface {
	Emit(ctx context.Context, cause Cause, pipeline string, msg proto.Message, modelVersion int64, idParts ...string) error
}

// PredictionSink takes sampled predictions off the request path; Offer
// never blocks and reports whether the predictions were taken.
type PredictionSink interface {
	Offer(msg *gyrev1.PredictionLogged) bool
}

// Options tune the deployer.
type Options struct {
	// CanaryMinLabels is how many labelled predictions a variant needs
	// before its live accuracy counts in a canary's judgement.
	CanaryMinLabels int
	// TrackedPredictions bounds the predictions remembered per rollout for
	// their labels.
	TrackedPredictions int
	// Logger receives what the deployer has to say.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultCanaryMinLabels    = 30
	DefaultTrackedPredictions = 100_000
)

// Deployment statuses of a Record.
const (
	StatusCanary     = "canary"
	StatusCompleted  = "completed"
	StatusRolledBack = "rolledback"
)

// Record is a pipeline's deployment, as JSON under <pipeline> in
// gyre-deployments: what serves, and the rollout in progress or last done.
type Record struct {
	Pipeline     string `json:"pipeline"`
	DeploymentID string `json:"deploymentId"`
	// Status is canary (in progress), completed or rolledback.
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
	// Version and PreviousVersion are the rollout's: the version promoted
	// and the one serving before it (0: none).
	Version         int64 `json:"version"`
	PreviousVersion int64 `json:"previousVersion"`
	// Champion serves all traffic but the canary's share; Candidate is the
	// canary's model while Status is canary.
	Champion  *Serving `json:"champion,omitempty"`
	Candidate *Serving `json:"candidate,omitempty"`
	// Steps of a canary, in percent; Step the 1-based step in force and
	// TrafficPercent the candidate's share.
	Steps          []float64 `json:"steps,omitempty"`
	Step           int       `json:"step,omitempty"`
	TrafficPercent float64   `json:"trafficPercent"`
	StepRequests   int       `json:"stepRequests,omitempty"`
	// Reason says why a rollout was rolled back.
	Reason string `json:"reason,omitempty"`
	// Figures of the last step judged.
	Figures map[string]float64 `json:"figures,omitempty"`
	// Cause is the model.promoted the rollout acts on.
	Cause     Cause     `json:"cause"`
	StartedAt time.Time `json:"startedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Serving is a version in service.
type Serving struct {
	Version  int64    `json:"version"`
	Artifact Artifact `json:"artifact"`
	Accuracy *float64 `json:"accuracy,omitempty"`
}

// Deployer is the deployer's application.
type Deployer struct {
	server      server
	deployments DeploymentStore
	models      ModelStore
	specs       SpecStore
	emit        Emitter
	sink        PredictionSink
	opts        Options

	// mu serialises rollouts: promotions, canary steps, restoration.
	mu      sync.Mutex
	records map[string]*Record

	restored     chan struct{}
	restoredOnce sync.Once
	wake         chan struct{}
	now          func() time.Time
}

// New returns a deployer over its stores.
func New(deployments DeploymentStore, models ModelStore, specs SpecStore, emit Emitter, sink PredictionSink, opts Options) *Deployer {
	if opts.CanaryMinLabels <= 0 {
		opts.CanaryMinLabels = DefaultCanaryMinLabels
	}
	if opts.TrackedPredictions <= 0 {
		opts.TrackedPredictions = DefaultTrackedPredictions
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Deployer{
		server:      server{slots: map[string]*atomic.Pointer[Routing]{}},
		deployments: deployments, models: models, specs: specs, emit: emit, sink: sink, opts: opts,
		records:  map[string]*Record{},
		restored: make(chan struct{}), wake: make(chan struct{}, 1), now: time.Now,
	}
}

// server holds each pipeline's routing behind an atomic pointer: a swap is
// one store, and a request loads the pointer once.
type server struct {
	mu    sync.RWMutex
	slots map[string]*atomic.Pointer[Routing]
}

func (s *server) routing(pipeline string) *Routing {
	s.mu.RLock()
	p := s.slots[pipeline]
	s.mu.RUnlock()
	if p == nil {
		return nil
	}
	return p.Load()
}

func (s *server) set(pipeline string, r *Routing) {
	s.mu.RLock()
	p := s.slots[pipeline]
	s.mu.RUnlock()
	if p == nil {
		s.mu.Lock()
		if p = s.slots[pipeline]; p == nil {
			p = &atomic.Pointer[Routing]{}
			s.slots[pipeline] = p
		}
		s.mu.Unlock()
	}
	p.Store(r)
}

// Routing returns what serves a pipeline; nil when nothing does.
func (d *Deployer) Routing(pipeline string) *Routing { return d.server.routing(pipeline) }

// Known reports whether a pipeline exists (served or not).
func (d *Deployer) Known(ctx context.Context, pipeline string) (bool, error) {
	if d.server.routing(pipeline) != nil {
		return true, nil
	}
	if _, err := d.specs.Pipeline(ctx, pipeline); err != nil {
		if d.notFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (d *Deployer) notFound(err error) bool { return errors.Is(err, ErrNoPipeline) }

// Ready reports whether the deployer restored what served before it
// started; until then it answers no request with a model.
func (d *Deployer) Ready() bool {
	select {
	case <-d.restored:
		return true
	default:
		return false
	}
}

// Restore puts back what served each pipeline, from its Record and the
// model store, retrying transient failures until ctx ends; a pipeline
// whose models cannot be loaded is left out, with the reason logged. A
// canary in progress resumes at its step with fresh counts.
func (d *Deployer) Restore(ctx context.Context) error {
	defer d.restoredOnce.Do(func() { close(d.restored) })
	var names []string
	if err := retry(ctx, d.opts.Logger, "list deployments", func() error {
		var err error
		names, err = d.deployments.Pipelines(ctx)
		return err
	}); err != nil {
		return err
	}
	for _, name := range names {
		if err := retry(ctx, d.opts.Logger, "restore "+name, func() error { return d.restore(ctx, name) }); err != nil {
			return err
		}
	}
	return nil
}

func (d *Deployer) restore(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.server.routing(name) != nil {
		return nil
	}
	rec, ok, err := d.deployments.Get(ctx, name)
	if err != nil || !ok || rec.Champion == nil && rec.Candidate == nil {
		return err
	}
	spec, err := d.specs.Pipeline(ctx, name)
	if err != nil {
		if isPermanent(err) {
			d.opts.Logger.Error("deployment not restored: its pipeline spec cannot be read", "pipeline", name, "error", err)
			return nil
		}
		return err
	}
	champion, err := d.load(ctx, rec.Champion)
	if err != nil {
		if isPermanent(err) {
			d.opts.Logger.Error("deployment not restored: its model cannot be loaded", "pipeline", name, "error", err)
			return nil
		}
		return err
	}
	r := &Routing{Pipeline: name, DeploymentID: rec.DeploymentID, Champion: champion, SampleRate: spec.Spec.Deployment.SampleRate}
	if rec.Status == StatusCanary && rec.Candidate != nil {
		candidate, err := d.load(ctx, rec.Candidate)
		switch {
		case err != nil && !isPermanent(err):
			return err
		case err != nil:
			d.opts.Logger.Error("canary not resumed: its candidate cannot be loaded", "pipeline", name, "error", err)
		case champion == nil:
			r.Champion = candidate
		default:
			r.Candidate, r.Percent = candidate, rec.TrafficPercent
			r.Rollout = newRollout(rec.DeploymentID, rec.Step, rec.TrafficPercent, rec.StepRequests,
				newLabelTracker(d.opts.TrackedPredictions), d.poke)
		}
	}
	if r.Champion == nil {
		return nil
	}
	d.records[name] = &rec
	d.server.set(name, r)
	d.opts.Logger.Info("deployment restored", "pipeline", name, "deployment_id", rec.DeploymentID,
		"status", rec.Status, "versions", r.Versions())
	return nil
}

func (d *Deployer) load(ctx context.Context, s *Serving) (*Model, error) {
	if s == nil {
		return nil, nil
	}
	b, err := d.models.Load(ctx, s.Artifact)
	if err != nil {
		return nil, err
	}
	return NewModel(s.Version, s.Artifact, b, s.Accuracy), nil
}

// Promotion is a model.promoted: the version to roll out.
type Promotion struct {
	Cause        Cause
	Pipeline     string
	DeploymentID string
	Version      int64
	Artifact     Artifact
	Metrics      map[string]float64
	// Reason of the promotion: blessed, manual or rollback.
	Reason string
}

// Promote rolls a promoted version out with the pipeline's strategy:
// immediate swaps it in at once; canary gives it the first step's share of
// traffic and leaves the rest to the step judgements. The first model of a
// pipeline goes live at once whatever the strategy: there is nothing to
// compare it with. A promotion handled before (same deployment id) emits
// what it emitted again, and changes nothing.
func (d *Deployer) Promote(ctx context.Context, p Promotion) error {
	select {
	case <-d.restored:
	case <-ctx.Done():
		return ctx.Err()
	}
	spec, err := d.specs.Pipeline(ctx, p.Pipeline)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, found, err := d.deployments.Get(ctx, p.Pipeline)
	if err != nil {
		return err
	}
	if found && prev.DeploymentID == p.DeploymentID {
		return d.reemit(ctx, prev)
	}
	strategy := spec.Spec.Deployment.Strategy
	cur := d.server.routing(p.Pipeline)
	if cur != nil && cur.Candidate != nil {
		d.supersede(ctx, p.Pipeline, cur, p.Version)
		cur = d.server.routing(p.Pipeline)
	}
	var champion *Model
	if cur != nil {
		champion = cur.Champion
	}
	var accuracy *float64
	if a, ok := p.Metrics["accuracy"]; ok {
		accuracy = &a
	}
	rec := &Record{
		Pipeline: p.Pipeline, DeploymentID: p.DeploymentID, Strategy: strategy,
		Version: p.Version, Cause: p.Cause, StartedAt: d.now().UTC(),
	}
	if champion != nil {
		rec.PreviousVersion = champion.Version
		rec.Champion = servingOf(champion)
	}
	started := &gyrev1.DeploymentStarted{
		Pipeline: p.Pipeline, DeploymentId: p.DeploymentID, ModelVersion: p.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: strategy, Reason: startReason(p.Reason),
		Artifact: &gyrev1.ObjectRef{Bucket: p.Artifact.Bucket, Key: p.Artifact.Key, Sha256: p.Artifact.Sha256,
			Uri: events.ObjectURI(p.Artifact.Bucket, p.Artifact.Key)},
	}
	if strategy == pipeline.StrategyCanary {
		for _, s := range spec.Spec.Deployment.Steps {
			started.Steps = append(started.Steps, int32(math.Round(s)))
		}
	}
	b, err := d.models.Load(ctx, p.Artifact)
	if err != nil {
		if !isPermanent(err) {
			return err
		}
		// A bundle that does not load never will: the rollout is over
		// before it starts, and what served keeps serving.
		if err := d.emitStarted(ctx, rec, started); err != nil {
			return err
		}
		return d.rollBack(ctx, rec, cur, 0, 0, "the model cannot be loaded: "+err.Error(), nil)
	}
	candidate := NewModel(p.Version, p.Artifact, b, accuracy)
	if err := d.emitStarted(ctx, rec, started); err != nil {
		return err
	}
	sampleRate := spec.Spec.Deployment.SampleRate
	switch {
	case strategy == pipeline.StrategyShadow:
		return d.rollBack(ctx, rec, cur, 0, 0, "strategy shadow is not supported by this deployer; "+keeps(rec.PreviousVersion), nil)
	case strategy == pipeline.StrategyCanary && champion != nil && champion.Version != p.Version &&
		len(spec.Spec.Deployment.Steps) > 0 && spec.Spec.Deployment.Steps[0] < 100:
		steps := spec.Spec.Deployment.Steps
		rec.Status, rec.Steps, rec.Step, rec.TrafficPercent = StatusCanary, slices.Clone(steps), 1, steps[0]
		rec.StepRequests = spec.Spec.Deployment.StepRequests
		rec.Candidate = servingOf(candidate)
		rec.UpdatedAt = d.now().UTC()
		if err := d.deployments.Put(ctx, p.Pipeline, *rec); err != nil {
			return err
		}
		d.records[p.Pipeline] = rec
		d.server.set(p.Pipeline, &Routing{
			Pipeline: p.Pipeline, DeploymentID: p.DeploymentID, Champion: champion, Candidate: candidate,
			Percent: steps[0], SampleRate: sampleRate,
			Rollout: newRollout(p.DeploymentID, 1, steps[0], rec.StepRequests, newLabelTracker(d.opts.TrackedPredictions), d.poke),
		})
		d.opts.Logger.Info("canary started", "pipeline", p.Pipeline, "deployment_id", p.DeploymentID,
			"version", p.Version, "champion", champion.Version, "traffic_percent", steps[0])
		return nil
	default:
		return d.complete(ctx, rec, candidate, sampleRate, nil)
	}
}

// complete makes m serve all traffic and records and announces it.
func (d *Deployer) complete(ctx context.Context, rec *Record, m *Model, sampleRate float64, figures map[string]float64) error {
	rec.Status, rec.Candidate, rec.Champion = StatusCompleted, nil, servingOf(m)
	rec.TrafficPercent, rec.Figures, rec.UpdatedAt = 100, figures, d.now().UTC()
	if err := d.deployments.Put(ctx, rec.Pipeline, *rec); err != nil {
		return err
	}
	d.records[rec.Pipeline] = rec
	d.server.set(rec.Pipeline, &Routing{Pipeline: rec.Pipeline, DeploymentID: rec.DeploymentID, Champion: m, SampleRate: sampleRate})
	d.opts.Logger.Info("deployment completed", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
		"version", m.Version, "previous_version", rec.PreviousVersion)
	return d.emitCompleted(ctx, rec)
}

// rollBack ends a rollout with what served before (cur's champion) serving.
func (d *Deployer) rollBack(ctx context.Context, rec *Record, cur *Routing, step int, percent float64, reason string, figures map[string]float64) error {
	rec.Status, rec.Candidate, rec.Reason, rec.Figures = StatusRolledBack, nil, reason, figures
	rec.Step, rec.TrafficPercent, rec.UpdatedAt = step, percent, d.now().UTC()
	if err := d.deployments.Put(ctx, rec.Pipeline, *rec); err != nil {
		return err
	}
	d.records[rec.Pipeline] = rec
	if cur != nil && cur.Champion != nil {
		d.server.set(rec.Pipeline, &Routing{Pipeline: rec.Pipeline, DeploymentID: cur.DeploymentID, Champion: cur.Champion, SampleRate: cur.SampleRate})
	}
	d.opts.Logger.Warn("deployment rolled back", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
		"version", rec.Version, "reason", reason)
	return d.emitRolledBack(ctx, rec)
}

// supersede abandons a canary in progress for a newer promotion; its
// champion keeps serving.
func (d *Deployer) supersede(ctx context.Context, name string, cur *Routing, by int64) {
	rec := d.records[name]
	if rec == nil || rec.Status != StatusCanary {
		d.server.set(name, &Routing{Pipeline: name, DeploymentID: cur.DeploymentID, Champion: cur.Champion, SampleRate: cur.SampleRate})
		return
	}
	figures := Judge(Policy{MaxErrorRate: math.Inf(1)}, cur.Rollout.Status(), nil).Figures
	if err := d.rollBack(ctx, rec, cur, rec.Step, rec.TrafficPercent, fmt.Sprintf("superseded by version %d", by), figures); err != nil {
		d.opts.Logger.Error("superseded canary: record or event failed", "pipeline", name, "error", err)
	}
}

// reemit publishes again what a handled promotion published: its events
// have deterministic ids, so the stream keeps one of each.
func (d *Deployer) reemit(ctx context.Context, rec Record) error {
	started := &gyrev1.DeploymentStarted{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Reason: "promoted",
	}
	for _, s := range rec.Steps {
		started.Steps = append(started.Steps, int32(math.Round(s)))
	}
	if err := d.emitStarted(ctx, &rec, started); err != nil {
		return err
	}
	switch rec.Status {
	case StatusCompleted:
		if rec.Champion != nil && rec.Champion.Version == rec.Version {
			return d.emitCompleted(ctx, &rec)
		}
	case StatusRolledBack:
		return d.emitRolledBack(ctx, &rec)
	}
	return nil
}

func (d *Deployer) emitStarted(ctx context.Context, rec *Record, msg *gyrev1.DeploymentStarted) error {
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, msg, rec.Version, events.DeploymentStarted, rec.DeploymentID)
}

func (d *Deployer) emitCompleted(ctx context.Context, rec *Record) error {
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentCompleted{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, TrafficPercent: 100,
		Figures: maps.Clone(rec.Figures), DurationMs: rec.UpdatedAt.Sub(rec.StartedAt).Milliseconds(),
	}, rec.Version, events.DeploymentCompleted, rec.DeploymentID)
}

func (d *Deployer) emitRolledBack(ctx context.Context, rec *Record) error {
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentRolledBack{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Step: int32(rec.Step),
		TrafficPercent: int32(math.Round(rec.TrafficPercent)), Reason: rec.Reason, Figures: maps.Clone(rec.Figures),
	}, rec.Version, events.DeploymentRolledBack, rec.DeploymentID)
}

// Labels counts labels of predictions made during a canary.
func (d *Deployer) Labels(pipeline string, labels []Label) int {
	r := d.server.routing(pipeline)
	if r == nil || r.Rollout == nil {
		return 0
	}
	return r.Rollout.labels.label(labels)
}

// poke wakes the step judge without blocking a request.
func (d *Deployer) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run judges canary steps as they fall due, until ctx ends. Steps fall due
// on the request path (the candidate served its share); the judgement, and
// what it records and emits, happens here, off that path.
func (d *Deployer) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-tick.C:
		}
		d.judgeDue(context.WithoutCancel(ctx))
	}
}

func (d *Deployer) judgeDue(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, rec := range d.records {
		r := d.server.routing(name)
		if rec.Status != StatusCanary || r == nil || r.Rollout == nil || r.Rollout.DeploymentID != rec.DeploymentID || !r.Rollout.Due() {
			continue
		}
		if err := d.judge(ctx, rec, r); err != nil {
			d.opts.Logger.Error("canary step: record or event failed; judged again shortly", "pipeline", name,
				"deployment_id", rec.DeploymentID, "error", err)
		}
	}
}

// judge ends the step in force: on to the next step (deployment.progressed),
// to all traffic (deployment.completed), or back (deployment.rolledback).
func (d *Deployer) judge(ctx context.Context, rec *Record, r *Routing) error {
	spec, err := d.specs.Pipeline(ctx, rec.Pipeline)
	if err != nil {
		return err
	}
	rb := spec.Spec.Deployment.Rollback
	v := Judge(Policy{MaxErrorRate: rb.MaxErrorRate, MaxAccuracyDrop: rb.MaxAccuracyDrop, MinLabels: d.opts.CanaryMinLabels},
		r.Rollout.Status(), r.Champion.Accuracy)
	if !v.Pass {
		return d.rollBack(ctx, rec, r, rec.Step, rec.TrafficPercent, v.Reason+"; "+keeps(rec.PreviousVersion), v.Figures)
	}
	next := rec.Step + 1
	if next > len(rec.Steps) || rec.Steps[next-1] >= 100 {
		return d.complete(ctx, rec, r.Candidate, r.SampleRate, v.Figures)
	}
	upd := *rec
	upd.Step, upd.TrafficPercent, upd.Figures, upd.UpdatedAt = next, rec.Steps[next-1], v.Figures, d.now().UTC()
	if err := d.deployments.Put(ctx, rec.Pipeline, upd); err != nil {
		return err
	}
	*rec = upd
	nr := *r
	nr.Percent, nr.Rollout = upd.TrafficPercent, r.Rollout.next(upd.TrafficPercent)
	d.server.set(rec.Pipeline, &nr)
	d.opts.Logger.Info("canary progressed", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
		"step", next, "traffic_percent", upd.TrafficPercent)
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentProgressed{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Step: int32(next),
		TrafficPercent: int32(math.Round(upd.TrafficPercent)), Figures: maps.Clone(v.Figures),
	}, rec.Version, events.DeploymentProgressed, rec.DeploymentID, fmt.Sprint(next))
}

// DeploymentStatus returns a pipeline's deployment; ok is false when none
// was ever recorded by this process.
func (d *Deployer) DeploymentStatus(pipeline string) (rec *Record, serving []int64, canary *Status, ok bool) {
	d.mu.Lock()
	r := d.records[pipeline]
	if r != nil {
		c := *r
		rec = &c
	}
	d.mu.Unlock()
	rt := d.server.routing(pipeline)
	if rt != nil {
		serving = rt.Versions()
		if rt.Rollout != nil {
			s := rt.Rollout.Status()
			canary = &s
		}
	}
	return rec, serving, canary, rec != nil || rt != nil
}

func servingOf(m *Model) *Serving {
	return &Serving{Version: m.Version, Artifact: m.Artifact, Accuracy: m.Accuracy}
}

func startReason(promoted string) string {
	switch promoted {
	case "manual", "rollback":
		return promoted
	}
	return "promoted"
}

func keeps(previous int64) string {
	if previous == 0 {
		return "no model serves"
	}
	return fmt.Sprintf("version %d keeps serving", previous)
}

func isPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// retry runs fn until it succeeds, fails permanently, or ctx ends, backing
// off between attempts.
func retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || isPermanent(err) {
			return err
		}
		log.Warn(what+" failed; retrying", "error", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
