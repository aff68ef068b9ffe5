package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/signing"
)

// ErrNoPipeline is wrapped by SpecStore errors for a pipeline never applied.
var ErrNoPipeline = errors.New("no such pipeline")

// ErrConflict is returned by DeploymentStore.Write when the record changed
// since the revision the writer read: someone else wrote it.
var ErrConflict = errors.New("deployment record changed meanwhile")

// SpecStore reads pipeline specs.
type SpecStore interface {
	Pipeline(ctx context.Context, name string) (*pipeline.Pipeline, error)
	// Watch sends the name of every pipeline whose spec exists, then of
	// each one that changes, until ctx ends.
	Watch(ctx context.Context) (<-chan string, error)
}

// ModelStore reads model bundles.
type ModelStore interface {
	// Load reads a bundle and returns it with the SHA-256 (hex) of the
	// bytes it was read from, for the signature check.
	Load(ctx context.Context, art Artifact) (b *bundle.Bundle, sha256 string, err error)
}

// DeploymentStore keeps each pipeline's Record (gyre-deployments), the
// rollout state every replica serves from.
type DeploymentStore interface {
	// Get returns the record and its revision; found is false when none.
	Get(ctx context.Context, pipeline string) (rec Record, rev uint64, found bool, err error)
	// Write stores the record with compare-and-set against rev (0: the
	// record must not exist) and returns the new revision; ErrConflict when
	// it changed meanwhile.
	Write(ctx context.Context, pipeline string, r Record, rev uint64) (uint64, error)
	// Watch sends every record as it is now, then a change with Ready set,
	// then every change as it happens, until ctx ends.
	Watch(ctx context.Context) (<-chan RecordChange, error)
}

// RecordChange is one record as a watch saw it.
type RecordChange struct {
	Pipeline string
	Record   Record
	Revision uint64
	// Ready marks the end of the records as they were when the watch began.
	Ready bool
}

// Desired is the registry's champion of a pipeline: what must serve.
type Desired struct {
	Pipeline string
	Version  int64
	// Generation is the registry record's generation: a rollout is started
	// for each newer one, and a record at it or beyond is applied.
	Generation int64
	Artifact   Artifact
	// Accuracy is the champion's evaluation accuracy, when it has one.
	Accuracy *float64
	// Reason is the move's: blessed, manual, rollback, rolledback.
	Reason string
	// EventID and CorrelationID are the move's model.promoted: the cause of
	// the deployment's events.
	EventID       string
	CorrelationID string
	// Signature is the registry's signature of the version.
	Signature signing.Signature
	// DeploymentID is the deployment of the move: one per model.promoted,
	// so that the same move is always the same deployment.
	DeploymentID string
}

// DesiredStore reads the desired state: the registry's champions.
type DesiredStore interface {
	// Champion returns a pipeline's champion; ok is false when it has none.
	Champion(ctx context.Context, pipeline string) (d Desired, ok bool, err error)
	// Watch sends the name of every pipeline with a registry record, then of
	// each one whose record changes, until ctx ends.
	Watch(ctx context.Context) (<-chan string, error)
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
	// Resync is how often the controller reconciles every pipeline even
	// without a change (a safety net under the watches; default 30s).
	Resync time.Duration
	// Replica names this replica in its rollout tallies.
	Replica string
	// Verifier checks the registry's signature of every version before it
	// is loaded. Required: New panics without one.
	Verifier *signing.Verifier
	// Logger receives what the deployer has to say.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultTrackedPredictions = 100_000
	DefaultResync             = 30 * time.Second
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
// The controller (the replica holding the deployer's lease) writes it,
// with compare-and-set; every replica serves what it says.
type Record struct {
	Pipeline     string `json:"pipeline"`
	DeploymentID string `json:"deploymentId"`
	// Generation is the registry generation (the champion move) the
	// rollout follows: the controller starts a rollout for each newer one.
	Generation int64 `json:"generation,omitempty"`
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
	// Artifact is the promoted version's bundle.
	Artifact Artifact `json:"artifact"`
	// Steps of a canary, in percent; Step the 1-based step in force and
	// TrafficPercent the candidate's share of live traffic.
	Steps          []float64 `json:"steps,omitempty"`
	Step           int       `json:"step,omitempty"`
	TrafficPercent float64   `json:"trafficPercent"`
	StepRequests   int       `json:"stepRequests,omitempty"`
	// PromotionReason is the registry move's reason (blessed, manual,
	// rollback, rolledback).
	PromotionReason string `json:"promotionReason,omitempty"`
	// Reason says why a rollout was rolled back.
	Reason string `json:"reason,omitempty"`
	// Figures of the last judgement (or of a blue-green verification).
	Figures map[string]float64 `json:"figures,omitempty"`
	// Cause is the model.promoted the rollout acts on.
	Cause Cause `json:"cause"`
	// Token is the fencing token of the controller that wrote the record:
	// a controller holding an older one has been deposed and writes no more.
	Token uint64 `json:"token,omitempty"`
	// Announced lists the rollout's events published so far ("started",
	// "progressed/2", "completed", "rolledback"): a controller that took
	// over after a crash between a write and its events publishes what is
	// missing (an outbox).
	Announced []string  `json:"announced,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Serving is a version in service.
type Serving struct {
	Version  int64    `json:"version"`
	Artifact Artifact `json:"artifact"`
	Accuracy *float64 `json:"accuracy,omitempty"`
	// Signature is the registry's signature of the version: every replica
	// verifies it, and the artifact's bytes against it, before it loads the
	// model, so a deployment record naming another artifact is not served.
	Signature signing.Signature `json:"signature,omitzero"`
}

// Deployer is the deployer's application. Every replica serves (Serve):
// it watches the deployment records and puts in force what each says. One
// replica at a time also controls (Lead, under a lease): it watches the
// registry's champions and runs the rollouts, writing the records.
type Deployer struct {
	server      server
	deployments DeploymentStore
	desired     DesiredStore
	models      ModelStore
	specs       SpecStore
	tallies     TallyStore
	emit        Emitter
	sink        PredictionSink
	opts        Options

	// mu guards applied; it is never held across I/O.
	mu      sync.Mutex
	applied map[string]applied
	// failed holds, per pipeline, why this replica could not put the
	// newest record in force (absent: it could).
	failed map[string]error
	// others holds the other replicas' latest tallies, by pipeline and
	// replica (the controller's view of their traffic).
	others map[string]Tally

	// mirrors holds a token per copy of a request being scored.
	mirrors chan struct{}
	// beforePredict, when set, runs before every model call (tests plant
	// slow or stalled models with it).
	beforePredict atomic.Pointer[func(version int64)]

	restored     chan struct{}
	restoredOnce sync.Once
	wake         chan struct{}
	leading      atomic.Bool
	now          func() time.Time
}

// applied is a record this replica has put in force, with its revision.
type applied struct {
	rec Record
	rev uint64
}

// New returns a deployer over its stores.
func New(deployments DeploymentStore, desired DesiredStore, models ModelStore, specs SpecStore, tallies TallyStore, emit Emitter, sink PredictionSink, opts Options) *Deployer {
	if opts.TrackedPredictions <= 0 {
		opts.TrackedPredictions = DefaultTrackedPredictions
	}
	if opts.MirrorsInFlight <= 0 {
		opts.MirrorsInFlight = DefaultMirrorsInFlight()
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Verifier == nil {
		// A deployer that cannot verify would serve whatever a record
		// names: the service refuses to start without keys long before.
		panic("serving.New: no signature verifier")
	}
	return &Deployer{
		server:      server{slots: map[string]*atomic.Pointer[Routing]{}},
		deployments: deployments, desired: desired, models: models, specs: specs, tallies: tallies, emit: emit, sink: sink, opts: opts,
		applied: map[string]applied{}, failed: map[string]error{}, others: map[string]Tally{},
		mirrors:  make(chan struct{}, opts.MirrorsInFlight),
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

// Ready reports whether the replica has put in force every deployment
// record there was when it started, and every one since (a record whose
// model can never load here is logged and does not count); until then
// it answers no request with a model. Why says what it waits for.
func (d *Deployer) Ready() (ok bool, why string) {
	select {
	case <-d.restored:
	default:
		return false, "restoring the deployed models"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	names := slices.Sorted(maps.Keys(d.failed))
	for _, p := range names {
		if err := d.failed[p]; err != nil && !isPermanent(err) {
			return false, fmt.Sprintf("pipeline %s: the newest deployment record is not in force yet: %v", p, err)
		}
	}
	return true, "serving every deployment record"
}

// Leading reports whether this replica controls the rollouts now.
func (d *Deployer) Leading() bool { return d.leading.Load() }

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

// plain is the routing of one model serving all traffic.
func (c conf) plain(name, deploymentID string, m *Model) *Routing {
	return &Routing{Pipeline: name, DeploymentID: deploymentID, Strategy: c.strategy, Champion: m,
		SampleRate: c.sampleRate, RouteHeader: c.routeHeader}
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

// Records returns a copy of every pipeline's deployment this replica has
// in force, by pipeline name.
func (d *Deployer) Records() []Record {
	d.mu.Lock()
	out := make([]Record, 0, len(d.applied))
	for _, a := range d.applied {
		out = append(out, a.rec)
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Pipeline, b.Pipeline) })
	return out
}

// DeploymentStatus returns a pipeline's deployment as this replica has it
// in force; ok is false when it has none.
func (d *Deployer) DeploymentStatus(pipeline string) (rec *Record, serving []int64, canary *Status, ok bool) {
	d.mu.Lock()
	if a, found := d.applied[pipeline]; found {
		c := a.rec
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
	return &Serving{Version: m.Version, Artifact: m.Artifact, Accuracy: m.Accuracy, Signature: m.Signature}
}

func startReason(promoted string) string {
	switch promoted {
	case "manual", "rollback", "rolledback":
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
