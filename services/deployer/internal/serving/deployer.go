package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
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
	Offer(rec *PredictionRecord) bool
}

// Options tune the deployer.
type Options struct {
	// TrackedPredictions bounds the predictions remembered per rollout for
	// their labels.
	TrackedPredictions int
	// MirrorsInFlight bounds the copies of requests a shadow (or the
	// previous model after a blue-green switch) scores at once; a request
	// arriving when that many are being scored is not mirrored (and
	// counted), so that a mirror never queues work behind live traffic.
	MirrorsInFlight int
	// Logger receives what the deployer has to say.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultTrackedPredictions = 100_000
)

// DefaultMirrorsInFlight is 4 per CPU: enough to absorb bursts, few enough
// that a slow mirror cannot pile up goroutines.
func DefaultMirrorsInFlight() int { return 4 * runtime.GOMAXPROCS(0) }

// Deployment statuses of a Record: the strategy's name while a rollout is
// in progress (canary, shadow, blue-green), then completed or rolledback.
const (
	StatusCanary     = pipeline.StrategyCanary
	StatusShadow     = pipeline.StrategyShadow
	StatusBlueGreen  = pipeline.StrategyBlueGreen
	StatusCompleted  = "completed"
	StatusRolledBack = "rolledback"
)

// InProgress reports whether a Record's status is a rollout in progress.
func InProgress(status string) bool {
	switch status {
	case StatusCanary, StatusShadow, StatusBlueGreen:
		return true
	}
	return false
}

// Record is a pipeline's deployment, as JSON under <pipeline> in
// gyre-deployments: what serves, and the rollout in progress or last done.
type Record struct {
	Pipeline     string `json:"pipeline"`
	DeploymentID string `json:"deploymentId"`
	// Status is the strategy while the rollout is in progress (canary,
	// shadow, blue-green), then completed or rolledback.
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
	// Version and PreviousVersion are the rollout's: the version promoted
	// and the one serving before it (0: none).
	Version         int64 `json:"version"`
	PreviousVersion int64 `json:"previousVersion"`
	// Champion is what served before the rollout and serves again if it is
	// rolled back: all traffic but a canary's share, all of it during a
	// shadow run, none after a blue-green switch (it stays loaded).
	// Candidate is the version promoted while the rollout is in progress.
	Champion  *Serving `json:"champion,omitempty"`
	Candidate *Serving `json:"candidate,omitempty"`
	// Steps of a canary, in percent; Step the 1-based step in force and
	// TrafficPercent the candidate's share of live traffic.
	Steps          []float64 `json:"steps,omitempty"`
	Step           int       `json:"step,omitempty"`
	TrafficPercent float64   `json:"trafficPercent"`
	StepRequests   int       `json:"stepRequests,omitempty"`
	// Reason says why a rollout was rolled back.
	Reason string `json:"reason,omitempty"`
	// Figures of the last judgement (or of a blue-green verification).
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

	// mu serialises rollouts: promotions, judgements, restoration.
	mu      sync.Mutex
	records map[string]*Record

	// mirrors holds a token per copy of a request being scored.
	mirrors chan struct{}
	// beforePredict, when set, runs before every model call (tests plant
	// slow or stalled models with it).
	beforePredict atomic.Pointer[func(version int64)]

	restored     chan struct{}
	restoredOnce sync.Once
	wake         chan struct{}
	now          func() time.Time
}

// New returns a deployer over its stores.
func New(deployments DeploymentStore, models ModelStore, specs SpecStore, emit Emitter, sink PredictionSink, opts Options) *Deployer {
	if opts.TrackedPredictions <= 0 {
		opts.TrackedPredictions = DefaultTrackedPredictions
	}
	if opts.MirrorsInFlight <= 0 {
		opts.MirrorsInFlight = DefaultMirrorsInFlight()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Deployer{
		server:      server{slots: map[string]*atomic.Pointer[Routing]{}},
		deployments: deployments, models: models, specs: specs, emit: emit, sink: sink, opts: opts,
		records: map[string]*Record{}, mirrors: make(chan struct{}, opts.MirrorsInFlight),
		restored: make(chan struct{}), wake: make(chan struct{}, 1), now: time.Now,
	}
}

// InjectBeforePredict makes f run before every model call with the
// version called, on the request path and in mirrors alike; nil removes
// it. It is fault injection for tests: a sleeping f plants a slow model, a
// blocking one a stalled model.
func (d *Deployer) InjectBeforePredict(f func(version int64)) {
	if f == nil {
		d.beforePredict.Store(nil)
		return
	}
	d.beforePredict.Store(&f)
}

func (d *Deployer) injected(m *Model) {
	if f := d.beforePredict.Load(); f != nil {
		(*f)(m.Version)
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

// set replaces a pipeline's routing. The rows kept for a blue-green
// verification carry over from one routing to the next.
func (s *server) set(name string, r *Routing) {
	s.mu.RLock()
	p := s.slots[name]
	s.mu.RUnlock()
	if p == nil {
		s.mu.Lock()
		if p = s.slots[name]; p == nil {
			p = &atomic.Pointer[Routing]{}
			s.slots[name] = p
		}
		s.mu.Unlock()
	}
	if r.Strategy == pipeline.StrategyBlueGreen && r.recent == nil {
		if old := p.Load(); old != nil && old.recent != nil {
			r.recent = old.recent
		} else {
			r.recent = &recentRows{}
		}
	}
	p.Store(r)
}

// Routing returns what serves a pipeline; nil when nothing does.
func (d *Deployer) Routing(pipeline string) *Routing { return d.server.routing(pipeline) }

// RouteHeader returns the request header that pins a caller of a pipeline
// to one variant.
func (d *Deployer) RouteHeader(pipelineName string) string {
	if r := d.server.routing(pipelineName); r != nil && r.RouteHeader != "" {
		return r.RouteHeader
	}
	return pipeline.DefaultRouteHeader
}

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

// conf is what a routing takes from its pipeline's spec.
type conf struct {
	strategy    string
	sampleRate  float64
	routeHeader string
}

func confOf(p *pipeline.Pipeline) conf {
	d := p.Spec.Deployment
	return conf{strategy: d.Strategy, sampleRate: d.LogRate(), routeHeader: d.RouteHeader}
}

func (r *Routing) conf() conf {
	return conf{strategy: r.Strategy, sampleRate: r.SampleRate, routeHeader: r.RouteHeader}
}

// plain is the routing of one model serving all traffic.
func (c conf) plain(name, deploymentID string, m *Model) *Routing {
	return &Routing{Pipeline: name, DeploymentID: deploymentID, Strategy: c.strategy, Champion: m,
		SampleRate: c.sampleRate, RouteHeader: c.routeHeader}
}

// rollout is the routing of a rollout in progress, at the step rec says:
// a canary's share of traffic, a shadow mirroring the champion, or after a
// blue-green switch the candidate answering and the previous model
// mirroring it.
func (d *Deployer) rollout(c conf, rec *Record, champion, candidate *Model) *Routing {
	r := c.plain(rec.Pipeline, rec.DeploymentID, champion)
	labels := newLabelTracker(d.opts.TrackedPredictions)
	switch rec.Status {
	case StatusCanary:
		r.Candidate, r.Percent = candidate, rec.TrafficPercent
	case StatusShadow:
		r.Mirror, r.MirrorAs = candidate, Shadow
	case StatusBlueGreen:
		r.Candidate, r.Percent = candidate, 100
		r.Mirror, r.MirrorAs = champion, Champion
	}
	r.Rollout = newRollout(rec.DeploymentID, max(rec.Step, 1), r.Percent, rec.StepRequests, labels, d.poke)
	return r
}

// Restore puts back what served each pipeline, from its Record and the
// model store, retrying transient failures until ctx ends; a pipeline
// whose models cannot be loaded is left out, with the reason logged. A
// rollout in progress resumes at its step with fresh counts.
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
	champion, err := d.load(ctx, rec.Champion, WithBatching(spec.Spec.Deployment.Batching))
	if err != nil {
		if isPermanent(err) {
			d.opts.Logger.Error("deployment not restored: its model cannot be loaded", "pipeline", name, "error", err)
			return nil
		}
		return err
	}
	c := confOf(spec)
	r := c.plain(name, rec.DeploymentID, champion)
	if InProgress(rec.Status) && rec.Candidate != nil {
		candidate, err := d.load(ctx, rec.Candidate, WithBatching(spec.Spec.Deployment.Batching))
		switch {
		case err != nil && !isPermanent(err):
			return err
		case err != nil:
			d.opts.Logger.Error("rollout not resumed: its candidate cannot be loaded", "pipeline", name, "error", err)
		case champion == nil:
			r.Champion = candidate
		default:
			r = d.rollout(c, &rec, champion, candidate)
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

func (d *Deployer) load(ctx context.Context, s *Serving, opts ...ModelOption) (*Model, error) {
	if s == nil {
		return nil, nil
	}
	b, err := d.models.Load(ctx, s.Artifact)
	if err != nil {
		return nil, err
	}
	return NewModel(s.Version, s.Artifact, b, s.Accuracy, opts...), nil
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
//   - immediate swaps it in at once;
//   - canary gives it the first step's share of traffic, and the step
//     judgements the rest;
//   - shadow has it score a copy of the traffic the champion answers, and
//     one judgement promotes it to all traffic or drops it;
//   - blue-green verifies it on the rows served last, beside the champion,
//     then switches all traffic to it at once, keeping the champion loaded
//     until the judgement to switch back instantly if it fails.
//
// The first model of a pipeline goes live at once whatever the strategy:
// there is nothing to compare it with. A promotion handled before (same
// deployment id) emits what it emitted again, and changes nothing.
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
	dep := spec.Spec.Deployment
	strategy := dep.Strategy
	cur := d.server.routing(p.Pipeline)
	if cur != nil && (cur.Rollout != nil || cur.Candidate != nil || cur.Mirror != nil) {
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
		for _, s := range dep.Steps {
			started.Steps = append(started.Steps, int32(math.Round(s)))
		}
	}
	c := confOf(spec)
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
	candidate := NewModel(p.Version, p.Artifact, b, accuracy, WithBatching(dep.Batching))
	if err := d.emitStarted(ctx, rec, started); err != nil {
		return err
	}
	if champion == nil || champion.Version == p.Version {
		return d.complete(ctx, rec, candidate, c, nil)
	}
	rec.StepRequests = dep.StepRequests
	switch {
	case strategy == pipeline.StrategyCanary && len(dep.Steps) > 0 && dep.Steps[0] < 100:
		rec.Status, rec.Steps, rec.Step, rec.TrafficPercent = StatusCanary, slices.Clone(dep.Steps), 1, dep.Steps[0]
		return d.start(ctx, rec, d.rollout(c, rec, champion, candidate))
	case strategy == pipeline.StrategyShadow:
		rec.Status, rec.Step, rec.TrafficPercent = StatusShadow, 1, 0
		return d.start(ctx, rec, d.rollout(c, rec, champion, candidate))
	case strategy == pipeline.StrategyBlueGreen:
		return d.blueGreen(ctx, rec, cur, c, PolicyOf(dep.Rollback), champion, candidate)
	default:
		return d.complete(ctx, rec, candidate, c, nil)
	}
}

// start records a rollout in progress and puts its routing in force.
func (d *Deployer) start(ctx context.Context, rec *Record, r *Routing) error {
	rec.Candidate = servingOf(rolloutCandidate(r))
	rec.UpdatedAt = d.now().UTC()
	if err := d.deployments.Put(ctx, rec.Pipeline, *rec); err != nil {
		return err
	}
	d.records[rec.Pipeline] = rec
	d.server.set(rec.Pipeline, r)
	d.opts.Logger.Info("rollout started", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
		"strategy", rec.Strategy, "version", rec.Version, "champion", rec.PreviousVersion,
		"traffic_percent", rec.TrafficPercent)
	return nil
}

// rolloutCandidate is the version a rollout routing judges.
func rolloutCandidate(r *Routing) *Model {
	if r.MirrorAs == Shadow {
		return r.Mirror
	}
	return r.Candidate
}

// blueGreen verifies the candidate beside the champion on the rows served
// last; if it holds, all traffic switches to it at once
// (deployment.progressed at 100 %), the champion staying loaded and
// scoring a copy of the traffic until the judgement.
func (d *Deployer) blueGreen(ctx context.Context, rec *Record, cur *Routing, c conf, p Policy, champion, candidate *Model) error {
	var reqs []*Request
	if cur != nil && cur.recent != nil {
		reqs = cur.recent.snapshot()
	}
	figures, reason := d.verify(champion, candidate, reqs, p)
	if reason != "" {
		return d.rollBack(ctx, rec, cur, 0, 0, "verification failed: "+reason+"; "+keeps(rec.PreviousVersion), figures)
	}
	rec.Status, rec.Step, rec.TrafficPercent, rec.Figures = StatusBlueGreen, 1, 100, figures
	if err := d.start(ctx, rec, d.rollout(c, rec, champion, candidate)); err != nil {
		return err
	}
	return d.emitProgressed(ctx, rec, figures)
}

// verify scores the requests served last with both models — which also
// warms the candidate — and says why the candidate may not take traffic:
// it fails on them, or its predictions drift from the champion's beyond the
// policy. No requests (no traffic yet) verify nothing.
func (d *Deployer) verify(champion, candidate *Model, reqs []*Request, p Policy) (figures map[string]float64, reason string) {
	figures = map[string]float64{"verifiedRequests": float64(len(reqs))}
	var cs, ws predictionSample
	rows, agree := 0, 0
	start := time.Now()
	for _, req := range reqs {
		got, err := d.predict(context.Background(), *req, candidate)
		if err != nil {
			figures["verifiedRows"] = float64(rows)
			return figures, fmt.Sprintf("version %d cannot score the requests served last: %v", candidate.Version, err)
		}
		want, err := d.predict(context.Background(), *req, champion)
		if err != nil {
			// The champion failing on its own traffic says nothing of
			// the candidate.
			continue
		}
		rows += len(got.Labels)
		for i := range got.Labels {
			if canonical(got.Labels[i]) == canonical(want.Labels[i]) {
				agree++
			}
		}
		cs.add(got)
		ws.add(want)
	}
	figures["verifyMs"] = float64(time.Since(start).Microseconds()) / 1000
	figures["verifiedRows"] = float64(rows)
	if rows > 0 {
		figures["verifyAgreement"] = float64(agree) / float64(rows)
	}
	if psi, _, _, ok := predictionDrift(&ws, &cs); ok {
		figures["verifyPredictionDrift"] = psi
		if p.MaxPredictionDrift > 0 && psi > p.MaxPredictionDrift+tolerance {
			return figures, fmt.Sprintf("predictionDrift %.4g > maxPredictionDrift %.4g (PSI over the %d rows served last)",
				psi, p.MaxPredictionDrift, rows)
		}
	}
	return figures, ""
}

// complete makes m serve all traffic and records and announces it; the
// models the rollout held beside it are released.
func (d *Deployer) complete(ctx context.Context, rec *Record, m *Model, c conf, figures map[string]float64) error {
	rec.Status, rec.Candidate, rec.Champion = StatusCompleted, nil, servingOf(m)
	rec.TrafficPercent, rec.Figures, rec.UpdatedAt = 100, figures, d.now().UTC()
	if err := d.deployments.Put(ctx, rec.Pipeline, *rec); err != nil {
		return err
	}
	d.records[rec.Pipeline] = rec
	d.server.set(rec.Pipeline, c.plain(rec.Pipeline, rec.DeploymentID, m))
	d.opts.Logger.Info("deployment completed", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
		"strategy", rec.Strategy, "version", m.Version, "previous_version", rec.PreviousVersion)
	return d.emitCompleted(ctx, rec)
}

// rollBack ends a rollout with what served before (cur's champion) serving
// all traffic; it is still loaded, so the switch is one store.
func (d *Deployer) rollBack(ctx context.Context, rec *Record, cur *Routing, step int, percent float64, reason string, figures map[string]float64) error {
	rec.Status, rec.Candidate, rec.Reason, rec.Figures = StatusRolledBack, nil, reason, figures
	rec.Step, rec.TrafficPercent, rec.UpdatedAt = step, percent, d.now().UTC()
	if err := d.deployments.Put(ctx, rec.Pipeline, *rec); err != nil {
		return err
	}
	d.records[rec.Pipeline] = rec
	if cur != nil && cur.Champion != nil {
		d.server.set(rec.Pipeline, cur.conf().plain(rec.Pipeline, cur.DeploymentID, cur.Champion))
	}
	d.opts.Logger.Warn("deployment rolled back", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
		"strategy", rec.Strategy, "version", rec.Version, "reason", reason)
	return d.emitRolledBack(ctx, rec)
}

// supersede abandons a rollout in progress for a newer promotion; its
// champion keeps (or, after a blue-green switch, again) serving.
func (d *Deployer) supersede(ctx context.Context, name string, cur *Routing, by int64) {
	rec := d.records[name]
	if rec == nil || !InProgress(rec.Status) || cur.Rollout == nil {
		d.server.set(name, cur.conf().plain(name, cur.DeploymentID, cur.Champion))
		return
	}
	figures := Judge(Policy{MaxErrorRate: math.Inf(1)}, cur.Rollout.Status(), nil).Figures
	if err := d.rollBack(ctx, rec, cur, rec.Step, rec.TrafficPercent, fmt.Sprintf("superseded by version %d", by), figures); err != nil {
		d.opts.Logger.Error("superseded rollout: record or event failed", "pipeline", name, "error", err)
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

// emitProgressed announces the step now in force (rec.Step) and the
// figures that allowed the move.
func (d *Deployer) emitProgressed(ctx context.Context, rec *Record, figures map[string]float64) error {
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentProgressed{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Step: int32(rec.Step),
		TrafficPercent: int32(math.Round(rec.TrafficPercent)), Figures: maps.Clone(figures),
	}, rec.Version, events.DeploymentProgressed, rec.DeploymentID, fmt.Sprint(rec.Step))
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

// Labels counts labels of predictions made during a rollout.
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

// Run judges rollout steps as they fall due, until ctx ends. Steps fall
// due on the request path (the candidate served, or scored, its share);
// the judgement, and what it records and emits, happens here, off that
// path.
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
		if !InProgress(rec.Status) || r == nil || r.Rollout == nil || r.Rollout.DeploymentID != rec.DeploymentID || !r.Rollout.Due() {
			continue
		}
		if err := d.judge(ctx, rec, r); err != nil {
			d.opts.Logger.Error("rollout step: record or event failed; judged again shortly", "pipeline", name,
				"deployment_id", rec.DeploymentID, "error", err)
		}
	}
}

// judge ends the step in force: on to the next canary step
// (deployment.progressed), to all traffic (deployment.completed), or back
// to the champion (deployment.rolledback), each with the figures that
// decided it.
func (d *Deployer) judge(ctx context.Context, rec *Record, r *Routing) error {
	spec, err := d.specs.Pipeline(ctx, rec.Pipeline)
	if err != nil {
		return err
	}
	policy := PolicyOf(spec.Spec.Deployment.Rollback)
	status := r.Rollout.Status()
	v := Judge(policy, status, r.Champion.Accuracy)
	back := keeps(rec.PreviousVersion)
	if rec.Status == StatusBlueGreen {
		back = fmt.Sprintf("all traffic switched back to version %d", rec.PreviousVersion)
	}
	if !v.Pass {
		return d.rollBack(ctx, rec, r, rec.Step, rec.TrafficPercent, v.Reason+"; "+back, v.Figures)
	}
	if need := int64(max(policy.MinLabels, 1)); policy.LabelTimeout > 0 && status.Labelled < need {
		// Accuracy must be judged, and too few labels have come: the step
		// keeps its traffic and waits for them, judged again each second
		// (errors, latency and drift still roll it back meanwhile).
		now := d.now()
		if r.Rollout.waitingSince.IsZero() {
			r.Rollout.waitingSince = now
			d.opts.Logger.Info("rollout step due; waiting for labels", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
				"step", rec.Step, "labelled", status.Labelled, "min_labels", need, "label_timeout", policy.LabelTimeout)
		}
		waited := now.Sub(r.Rollout.waitingSince)
		if waited < policy.LabelTimeout {
			return nil
		}
		v.Figures["labelWaitSeconds"] = waited.Seconds()
		reason := fmt.Sprintf("%d of the %d labelled candidate predictions needed (minLabels) arrived within labelTimeoutSeconds %g: its live accuracy could not be checked",
			status.Labelled, need, policy.LabelTimeout.Seconds())
		return d.rollBack(ctx, rec, r, rec.Step, rec.TrafficPercent, reason+"; "+back, v.Figures)
	}
	candidate := rolloutCandidate(r)
	next := rec.Step + 1
	if rec.Status != StatusCanary || next > len(rec.Steps) || rec.Steps[next-1] >= 100 {
		return d.complete(ctx, rec, candidate, r.conf(), v.Figures)
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
	return d.emitProgressed(ctx, rec, v.Figures)
}

// Records returns a copy of every pipeline's deployment this process
// holds, by pipeline name.
func (d *Deployer) Records() []Record {
	d.mu.Lock()
	out := make([]Record, 0, len(d.records))
	for _, r := range d.records {
		out = append(out, *r)
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Pipeline, b.Pipeline) })
	return out
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
