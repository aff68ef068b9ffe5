package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/libs/store"
)

// Emitter publishes events on their catalog subjects.
type Emitter interface {
	Publish(ctx context.Context, ev event.Event) error
}

// Registrar is the registry's application: it records evaluated candidates
// as versions of their pipeline and moves the champion and previous
// aliases, in the pipeline's record in gyre-registry (models.Registry),
// with compare-and-set. The service's event and HTTP ports call it, and so
// does the CLI (gyre promote, gyre rollback), with the same effects.
type Registrar struct {
	kv     jetstream.KeyValue
	pub    Emitter
	source string
	now    func() time.Time
	// signer signs each version it records; nil signs nothing (the CLI's
	// registrar, which moves aliases and records no version).
	signer *signing.Signer
}

// WithSigner makes the registrar sign every version it records and returns
// it: deployers serve no version without the signature.
func (r *Registrar) WithSigner(s *signing.Signer) *Registrar {
	r.signer = s
	return r
}

// NewRegistrar returns a registrar over the gyre-registry bucket, emitting
// with source /gyre/registry.
func NewRegistrar(kv jetstream.KeyValue, pub Emitter) *Registrar {
	return &Registrar{kv: kv, pub: pub, source: "/gyre/" + Name, now: time.Now}
}

// MaxDetailedVersions is how many versions keep their full record (gates,
// params, event chain); older ones without an alias keep a summary, so that
// a pipeline's record stays well under the server's message size.
const MaxDetailedVersions = 200

// Errors of the registrar's requests.
var (
	// ErrNoPrevious: a rollback with no previous champion to return to.
	ErrNoPrevious = errors.New("no previous version to roll back to")
)

// Evaluation is an evaluated candidate to register: the typed command of
// the model.evaluated handler.
type Evaluation struct {
	// EventID is the model.evaluated event's id; CorrelationID and
	// CausationID are its lineage extensions.
	EventID       string
	CorrelationID string
	CausationID   string
	Evaluated     *gyrev1.ModelEvaluated
	// Registered, for a model registered from outside the loop
	// (RegisterOutside), is recorded with the version; EventID is then
	// empty (no model.evaluated was published).
	Registered *models.Registered
	// Hold keeps a blessed version from becoming champion: an outside
	// model is promoted only when its registration asks.
	Hold bool
}

// Registration says what Register did.
type Registration struct {
	Version models.Version
	// Created is false when the request already had a version (a redelivery).
	Created bool
	// Promoted is the alias move the registration made (blessed), if any.
	Promoted *models.Move
	// Stale is true when a blessed verdict was refused: it was judged
	// against a champion that is no longer champion.
	Stale bool
}

// Register records an evaluated candidate as the pipeline's next version
// (1, 2, …) unless its training request already has one, and emits
// model.registered; a blessed one becomes champion and model.promoted is
// emitted. A blessed candidate judged against a champion that is no longer
// champion (another candidate, a rollback or a hand got there first) is
// registered but not promoted: a model never compared with the current
// champion does not replace it. Its verdict is rejected with that reason
// and a failed "champion" gate, and the refusal is counted as stale.
//
// A redelivery changes nothing and publishes the same events again (same
// ids), so a crash between the write and the publish loses nothing;
// model.promoted is published again only while the version is still
// champion.
func (r *Registrar) Register(ctx context.Context, e Evaluation) (Registration, error) {
	m := e.Evaluated
	p, rid := m.GetPipeline(), m.GetRequestId()
	judged := m.GetChampionVersion()
	if m.ChampionAtEvaluation != nil {
		judged = m.GetChampionAtEvaluation()
	}
	now := r.now().UTC()
	var out Registration
	rec, err := store.UpdateJSON(ctx, r.kv, p, func(rec *models.Registry, _ bool) error {
		out = Registration{}
		rec.Pipeline = p
		if n, ok := rec.Requests[rid]; ok {
			v, found := rec.Version(n)
			if !found {
				return fmt.Errorf("registry %s: request %s maps to version %d, which is not recorded", p, rid, n)
			}
			out.Version = *v
			for i := range rec.Moves {
				if mv := rec.Moves[i]; mv.RequestID == rid && mv.Reason == models.ReasonBlessed {
					out.Promoted = &mv
				}
			}
			return store.ErrNoChange
		}
		v := newVersion(nextVersion(rec), e, now)
		if r.signer != nil {
			sig, err := r.signer.Sign(v.Subject(p))
			if err != nil {
				return bus.Permanent(fmt.Errorf("sign version %d: %w", v.Version, err))
			}
			v.Signature = sig
		}
		promote := v.Verdict == models.VerdictBlessed && !e.Hold
		if cur := rec.Aliases[models.AliasChampion]; promote && judged != cur {
			refuseStale(&v, judged, cur)
			out.Stale = true
		}
		rec.Versions = append(rec.Versions, v)
		if rec.Requests == nil {
			rec.Requests = map[string]int64{}
		}
		rec.Requests[rid] = v.Version
		out.Version, out.Created = v, true
		if promote && v.Verdict == models.VerdictBlessed {
			mv := rec.PromoteTo(v.Version, models.ReasonBlessed, now)
			mv.RequestID = rid
			mv.EventID = promotedID(p, mv.Seq)
			mv.CorrelationID = correlation(ctx, mv.EventID)
			out.Promoted = new(*mv)
		}
		compact(rec)
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Registration{}, err
	}
	if out.Stale {
		bus.Stale(ctx, "verdict", "blessed candidate judged against a champion since replaced: registered, not promoted",
			"pipeline", p, "version", out.Version.Version, "judged_against", judged, "champion", rec.Aliases[models.AliasChampion])
	}
	if err := r.publishRegistered(ctx, &rec, out.Version); err != nil {
		return Registration{}, err
	}
	if out.Promoted != nil && rec.Aliases[models.AliasChampion] == out.Version.Version {
		if err := r.publishPromoted(ctx, &rec, *out.Promoted); err != nil {
			return Registration{}, err
		}
	}
	bus.Logger(ctx).Info("model registered", "pipeline", p, "version", out.Version.Version, "verdict", out.Version.Verdict,
		"request_id", rid, "created", out.Created, "promoted", out.Promoted != nil)
	return out, nil
}

// GateChampion is the gate a blessed verdict fails when it was judged
// against a champion that is no longer champion.
const GateChampion = "champion"

// refuseStale turns a blessed verdict judged against another champion than
// the current one into a rejection that says so.
func refuseStale(v *models.Version, judged, current int64) {
	against := "no champion"
	if judged > 0 {
		against = fmt.Sprintf("champion v%d", judged)
	}
	now := "there is no champion now"
	if current > 0 {
		now = fmt.Sprintf("v%d is champion now", current)
	}
	msg := fmt.Sprintf("judged against %s, but %s: not promoted over a champion it was never compared with (retrain, or gyre promote to override)", against, now)
	v.Verdict, v.Reason = models.VerdictRejected, msg+"; evaluation: "+v.Reason
	v.Gates = append(v.Gates, models.Gate{Metric: GateChampion, Kind: "judgedAgainst", Value: float64(judged),
		Threshold: float64(current), Passed: false, Message: msg})
}

// nextVersion is one more than the newest version: monotonic from 1, never
// reused.
func nextVersion(rec *models.Registry) int64 {
	if v, ok := rec.Latest(); ok {
		return v.Version + 1
	}
	return 1
}

// newVersion builds the record of an evaluated candidate.
func newVersion(n int64, e Evaluation, now time.Time) models.Version {
	m := e.Evaluated
	v := models.Version{
		Version: n, RequestID: m.GetRequestId(), JobID: m.GetJobId(),
		Verdict: m.GetVerdict(), Reason: m.GetReason(), Algorithm: m.GetAlgorithm(),
		Params: m.GetParams().AsMap(), Metrics: m.GetCandidateMetrics(), TrainingMetrics: m.GetTrainingMetrics(),
		ChampionVersion: m.GetChampionVersion(), ChampionMetrics: m.GetChampionMetrics(),
		EvalBatchID: m.GetEvalBatchId(), EvalRows: m.GetEvalRows(),
		Artifact:  models.ObjectFromProto(m.GetCandidateArtifact()),
		Schema:    models.SchemaFromProto(m.GetSchema()),
		Lineage:   models.LineageFromProto(m.GetLineage()),
		CreatedAt: now,
	}
	if v.Verdict != models.VerdictBlessed {
		v.Verdict = models.VerdictRejected
	}
	if m.GetReference() != nil {
		ref := models.ObjectFromProto(m.GetReference())
		v.Reference = &ref
	}
	for _, g := range m.GetGates() {
		v.Gates = append(v.Gates, models.GateFromProto(g))
	}
	v.Lineage.CorrelationID, v.Lineage.CausationID = e.CorrelationID, e.CausationID
	v.Registered = e.Registered
	if n := len(v.Lineage.EventIDs); e.EventID != "" && (n == 0 || v.Lineage.EventIDs[n-1] != e.EventID) {
		v.Lineage.EventIDs = append(v.Lineage.EventIDs, e.EventID)
	}
	v.Lineage.EventIDs = append(v.Lineage.EventIDs, registeredID(m.GetPipeline(), m.GetRequestId()))
	return v
}

// correlation is the correlationid the move's model.promoted gets: the
// cascade of the event being handled, or its own id when a hand moved it.
func correlation(ctx context.Context, eventID string) string {
	if c, ok := bus.CauseFrom(ctx); ok && c.CorrelationID != "" {
		return c.CorrelationID
	}
	return eventID
}

// promotedID is the id of the model.promoted event of move seq.
func promotedID(pipeline string, seq int64) string {
	return bus.StableID(events.ModelPromoted, pipeline, strconv.FormatInt(seq, 10))
}

// compact drops the details of old versions that hold no alias.
func compact(rec *models.Registry) {
	old := len(rec.Versions) - MaxDetailedVersions
	for i := 0; i < old; i++ {
		v := &rec.Versions[i]
		if len(rec.AliasesOf(v.Version)) > 0 {
			continue
		}
		v.Gates, v.Params, v.ChampionMetrics, v.TrainingMetrics = nil, nil, nil, nil
		v.Lineage.EventIDs, v.Lineage.BatchIDs = nil, nil
	}
}

// Promotion says what an alias move did.
type Promotion struct {
	Pipeline string      `json:"pipeline"`
	Move     models.Move `json:"move"`
	// Unchanged is true when the version already held the alias; the move
	// that put it there is announced again.
	Unchanged bool `json:"unchanged,omitempty"`
}

// Promote makes a version champion by hand (reason "manual"), whatever its
// verdict (a withdrawn version is no longer withdrawn), and emits
// model.promoted. Promoting the champion changes nothing and announces its
// last promotion again (same event id).
func (r *Registrar) Promote(ctx context.Context, pipeline string, version int64) (Promotion, error) {
	now := r.now().UTC()
	var out Promotion
	rec, err := store.UpdateJSON(ctx, r.kv, pipeline, func(rec *models.Registry, exists bool) error {
		out = Promotion{Pipeline: pipeline}
		if !exists {
			return &store.NotFoundError{What: fmt.Sprintf("pipeline %q in the model registry (it has no model yet)", pipeline)}
		}
		if _, ok := rec.Version(version); !ok {
			return &store.NotFoundError{What: fmt.Sprintf("version %d of pipeline %q", version, pipeline)}
		}
		if rec.Aliases[models.AliasChampion] == version {
			out.Unchanged = true
			out.Move = rec.LastMoveTo(version)
			return store.ErrNoChange
		}
		mv := rec.PromoteTo(version, models.ReasonManual, now)
		mv.EventID = promotedID(pipeline, mv.Seq)
		mv.CorrelationID = correlation(ctx, mv.EventID)
		out.Move = *mv
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Promotion{}, err
	}
	return out, r.announce(ctx, &rec, out)
}

// Rollback returns champion to previous (reason "rollback"): the newest
// version, other than the champion, that served all traffic and was not
// withdrawn. The version rolled back from is withdrawn, so that rolling
// back again keeps going back. cause says who asked (it is in the event).
func (r *Registrar) Rollback(ctx context.Context, pipeline, cause string) (Promotion, error) {
	now := r.now().UTC()
	var out Promotion
	rec, err := store.UpdateJSON(ctx, r.kv, pipeline, func(rec *models.Registry, exists bool) error {
		out = Promotion{Pipeline: pipeline}
		if !exists {
			return &store.NotFoundError{What: fmt.Sprintf("pipeline %q in the model registry (it has no model yet)", pipeline)}
		}
		target := rec.Aliases[models.AliasPrevious]
		if target == 0 {
			return fmt.Errorf("pipeline %s: %w", pipeline, ErrNoPrevious)
		}
		mv := rec.RollBackTo(target, models.ReasonRollback, "rolled back by hand ("+cause+")", now)
		mv.EventID, mv.Cause = promotedID(pipeline, mv.Seq), cause
		mv.CorrelationID = correlation(ctx, mv.EventID)
		out.Move = *mv
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Promotion{}, err
	}
	return out, r.announce(ctx, &rec, out)
}

// Deployed is the outcome of a deployment: deployment.completed or
// deployment.rolledback.
type Deployed struct {
	Pipeline     string
	DeploymentID string
	// Version is the version rolled out; Generation the champion
	// generation it rolled out (0 from deployers older than generations).
	Version    int64
	Generation int64
	// PreviousVersion is what kept serving (rolledback).
	PreviousVersion int64
	// Reason and Figures say why it was rolled back.
	Reason  string
	Figures map[string]float64
	At      time.Time
}

// Completed records that a deployment completed: its version served all
// traffic, and is what a rollback returns to once another is champion.
func (r *Registrar) Completed(ctx context.Context, d Deployed) error {
	if d.At.IsZero() {
		d.At = r.now().UTC()
	}
	created := false
	_, err := store.UpdateJSON(ctx, r.kv, d.Pipeline, func(rec *models.Registry, exists bool) error {
		created = false
		if !exists {
			return &store.NotFoundError{What: fmt.Sprintf("pipeline %q in the model registry", d.Pipeline)}
		}
		if _, ok := rec.Version(d.Version); !ok {
			return &store.NotFoundError{What: fmt.Sprintf("version %d of pipeline %q", d.Version, d.Pipeline)}
		}
		if !rec.RecordServed(d.Version, d.Generation, d.DeploymentID, d.At) {
			return store.ErrNoChange
		}
		created = true
		rec.UpdatedAt = r.now().UTC()
		return nil
	})
	if err != nil {
		return err
	}
	if created {
		bus.Logger(ctx).Info("version served", "pipeline", d.Pipeline, "version", d.Version, "generation", d.Generation)
	}
	return nil
}

// RolledBack moves champion back to what kept serving when the deployer
// rolled the champion's rollout back (reason "rolledback", with the
// deployer's reason and figures), so that the whole system follows the
// model actually serving; the version rolled back is withdrawn. The outcome
// of a generation that is no longer the newest (a newer promotion
// superseded the rollout) changes nothing and is counted as stale; a
// redelivery announces the same move again.
func (r *Registrar) RolledBack(ctx context.Context, d Deployed) (Promotion, error) {
	now := r.now().UTC()
	var out Promotion
	stale := ""
	rec, err := store.UpdateJSON(ctx, r.kv, d.Pipeline, func(rec *models.Registry, exists bool) error {
		out, stale = Promotion{Pipeline: d.Pipeline}, ""
		if !exists {
			return &store.NotFoundError{What: fmt.Sprintf("pipeline %q in the model registry", d.Pipeline)}
		}
		for i := len(rec.Moves) - 1; i >= 0; i-- {
			if mv := rec.Moves[i]; mv.Reason == models.ReasonRolledBack && mv.DeploymentID == d.DeploymentID {
				out.Move, out.Unchanged = mv, true // a redelivery
				return store.ErrNoChange
			}
		}
		champion := rec.Aliases[models.AliasChampion]
		switch {
		case champion != d.Version:
			stale = fmt.Sprintf("version %d is not champion (v%d is)", d.Version, champion)
		case d.Generation != 0 && d.Generation != rec.Generation():
			stale = fmt.Sprintf("generation %d is not the newest (%d)", d.Generation, rec.Generation())
		}
		if stale != "" {
			return store.ErrNoChange
		}
		target := d.PreviousVersion
		if _, ok := rec.Version(target); !ok || target == d.Version {
			target = rec.LastServed(d.Version)
		}
		why := "rolled back by the deployer: " + d.Reason
		if target == 0 {
			// Nothing served before (the first model could not be loaded):
			// there is no champion until a model deploys.
			if v, ok := rec.Version(d.Version); ok {
				v.Withdrawn = why
			}
			delete(rec.Aliases, models.AliasChampion)
			rec.RefreshPrevious()
			rec.UpdatedAt = now
			return nil
		}
		mv := rec.RollBackTo(target, models.ReasonRolledBack, why, now)
		mv.EventID, mv.Cause, mv.DeploymentID = promotedID(d.Pipeline, mv.Seq), d.Reason, d.DeploymentID
		mv.Figures = d.Figures
		mv.CorrelationID = correlation(ctx, mv.EventID)
		out.Move = *mv
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Promotion{}, err
	}
	if stale != "" {
		bus.Stale(ctx, "deployment.rolledback", "rollback of a superseded deployment: champion not moved",
			"pipeline", d.Pipeline, "version", d.Version, "generation", d.Generation, "why", stale)
		return out, nil
	}
	if out.Move.Seq == 0 {
		bus.Logger(ctx).Warn("champion withdrawn: its rollout was rolled back and no version served before it",
			"pipeline", d.Pipeline, "version", d.Version)
		return out, nil
	}
	return out, r.announce(ctx, &rec, out)
}

// announce publishes the model.promoted of a promotion.
func (r *Registrar) announce(ctx context.Context, rec *models.Registry, p Promotion) error {
	if p.Move.EventID == "" {
		return nil // an alias set before moves were recorded: nothing to announce
	}
	if err := r.publishPromoted(ctx, rec, p.Move); err != nil {
		return err
	}
	bus.Logger(ctx).Info("champion moved", "pipeline", rec.Pipeline, "version", p.Move.Version,
		"previous", p.Move.Previous, "reason", p.Move.Reason, "unchanged", p.Unchanged)
	return nil
}

// Get reads a pipeline's record; a pipeline without any model is a
// NotFoundError.
func (r *Registrar) Get(ctx context.Context, pipeline string) (*models.Registry, error) {
	rec, _, found, err := models.Get(ctx, r.kv, pipeline)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, &store.NotFoundError{What: fmt.Sprintf("pipeline %q in the model registry (it has no model yet)", pipeline)}
	}
	return rec, nil
}

// registeredID is the id of the model.registered event of a request.
func registeredID(pipeline, requestID string) string {
	return bus.StableID(events.ModelRegistered, pipeline, requestID)
}

// publishRegistered emits model.registered for a version.
func (r *Registrar) publishRegistered(ctx context.Context, rec *models.Registry, v models.Version) error {
	msg := &gyrev1.ModelRegistered{
		Pipeline: rec.Pipeline, ModelVersion: v.Version, Verdict: v.Verdict, Artifact: v.Artifact.Proto(),
		Algorithm: v.Algorithm, Metrics: v.Metrics, TrainingMetrics: v.TrainingMetrics,
		Schema: v.Schema.Proto(), Lineage: v.Lineage.Proto(), Aliases: rec.AliasesOf(v.Version),
	}
	if v.Reference != nil {
		msg.Reference = v.Reference.Proto()
	}
	if len(v.Params) > 0 {
		params, err := structpb.NewStruct(v.Params)
		if err != nil {
			return fmt.Errorf("version %d params: %w", v.Version, err)
		}
		msg.Params = params
	}
	return r.emit(ctx, rec.Pipeline, msg, registeredID(rec.Pipeline, v.RequestID), v)
}

// publishPromoted emits model.promoted for an alias move.
func (r *Registrar) publishPromoted(ctx context.Context, rec *models.Registry, mv models.Move) error {
	v, ok := rec.Version(mv.Version)
	if !ok {
		return fmt.Errorf("registry %s: version %d of move %d is not recorded", rec.Pipeline, mv.Version, mv.Seq)
	}
	msg := &gyrev1.ModelPromoted{
		Pipeline: rec.Pipeline, ModelVersion: v.Version, Alias: mv.Alias, PreviousVersion: mv.Previous,
		Reason: mv.Reason, Artifact: v.Artifact.Proto(), Algorithm: v.Algorithm, Metrics: v.Metrics,
		Schema: v.Schema.Proto(), Lineage: v.Lineage.Proto(),
		Generation: mv.Seq, Cause: mv.Cause, Figures: mv.Figures, DeploymentId: mv.DeploymentID,
	}
	if v.Reference != nil {
		msg.Reference = v.Reference.Proto()
	}
	return r.emit(ctx, rec.Pipeline, msg, mv.EventID, *v)
}

// emit publishes a payload about a version with a deterministic id.
func (r *Registrar) emit(ctx context.Context, pipeline string, msg proto.Message, id string, v models.Version) error {
	ev, err := events.New(r.source, pipeline, msg)
	if err != nil {
		return bus.Permanent(err)
	}
	ev.SetID(id)
	ev.SetExtension(bus.ExtModelVersion, strconv.FormatInt(v.Version, 10))
	if dv := v.Lineage.DatasetVersion; dv != "" {
		ev.SetExtension(bus.ExtDatasetVersion, dv)
	}
	return r.pub.Publish(ctx, ev)
}
