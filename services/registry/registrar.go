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
}

// Registration says what Register did.
type Registration struct {
	Version models.Version
	// Created is false when the request already had a version (a redelivery).
	Created bool
	// Promoted is the alias move the registration made (blessed), if any.
	Promoted *models.Move
}

// Register records an evaluated candidate as the pipeline's next version
// (1, 2, …) unless its training request already has one, and emits
// model.registered; a blessed one becomes champion (its champion becomes
// previous) and model.promoted is emitted. A redelivery changes nothing and
// publishes the same events again (same ids), so a crash between the write
// and the publish loses nothing; model.promoted is published again only
// while the version is still champion.
func (r *Registrar) Register(ctx context.Context, e Evaluation) (Registration, error) {
	m := e.Evaluated
	p, rid := m.GetPipeline(), m.GetRequestId()
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
		rec.Versions = append(rec.Versions, v)
		if rec.Requests == nil {
			rec.Requests = map[string]int64{}
		}
		rec.Requests[rid] = v.Version
		out.Version, out.Created = v, true
		if v.Verdict == models.VerdictBlessed {
			mv := move(rec, v.Version, models.ReasonBlessed, now)
			mv.RequestID = rid
			rec.Moves[len(rec.Moves)-1] = mv
			out.Promoted = &mv
		}
		compact(rec)
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Registration{}, err
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
	if n := len(v.Lineage.EventIDs); n == 0 || v.Lineage.EventIDs[n-1] != e.EventID {
		v.Lineage.EventIDs = append(v.Lineage.EventIDs, e.EventID)
	}
	v.Lineage.EventIDs = append(v.Lineage.EventIDs, registeredID(m.GetPipeline(), m.GetRequestId()))
	return v
}

// move points champion at version n (its champion becomes previous) and
// records the move.
func move(rec *models.Registry, n int64, reason string, now time.Time) models.Move {
	if rec.Aliases == nil {
		rec.Aliases = map[string]int64{}
	}
	prev := rec.Aliases[models.AliasChampion]
	if prev != 0 {
		rec.Aliases[models.AliasPrevious] = prev
	}
	rec.Aliases[models.AliasChampion] = n
	return record(rec, models.Move{Alias: models.AliasChampion, Version: n, Previous: prev, Reason: reason, At: now})
}

// record appends a move with the next sequence number and its event id.
func record(rec *models.Registry, mv models.Move) models.Move {
	rec.MoveSeq++
	mv.Seq = rec.MoveSeq
	mv.EventID = bus.StableID(events.ModelPromoted, rec.Pipeline, strconv.FormatInt(mv.Seq, 10))
	rec.Moves = append(rec.Moves, mv)
	if len(rec.Moves) > models.MaxMoves {
		rec.Moves = append([]models.Move(nil), rec.Moves[len(rec.Moves)-models.MaxMoves:]...)
	}
	return mv
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
// verdict, and emits model.promoted. Promoting the champion changes nothing
// and announces its last promotion again (same event id).
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
			out.Move = lastMoveTo(rec, version)
			return store.ErrNoChange
		}
		out.Move = move(rec, version, models.ReasonManual, now)
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Promotion{}, err
	}
	return out, r.announce(ctx, &rec, out)
}

// Rollback returns champion to the previous version (reason "rollback") and
// emits model.promoted. The version rolled back from does not become
// previous: previous becomes the champion before the one restored, so that
// rolling back again keeps going back.
func (r *Registrar) Rollback(ctx context.Context, pipeline string) (Promotion, error) {
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
		from := rec.Aliases[models.AliasChampion]
		before := lastMoveTo(rec, target).Previous
		rec.Aliases[models.AliasChampion] = target
		if before != 0 && before != from {
			rec.Aliases[models.AliasPrevious] = before
		} else {
			delete(rec.Aliases, models.AliasPrevious)
		}
		out.Move = record(rec, models.Move{Alias: models.AliasChampion, Version: target, Previous: from, Reason: models.ReasonRollback, At: now})
		rec.UpdatedAt = now
		return nil
	})
	if err != nil {
		return Promotion{}, err
	}
	return out, r.announce(ctx, &rec, out)
}

// lastMoveTo returns the newest move of champion to version n (zero when
// none is remembered).
func lastMoveTo(rec *models.Registry, n int64) models.Move {
	for i := len(rec.Moves) - 1; i >= 0; i-- {
		if mv := rec.Moves[i]; mv.Alias == models.AliasChampion && mv.Version == n {
			return mv
		}
	}
	return models.Move{}
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
