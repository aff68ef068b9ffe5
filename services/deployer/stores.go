package deployer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// stores adapts Gyre's JetStream buckets to what the serving application
// reads, writes and watches. Buckets are opened on first use: the service
// is built before Run provisions them.
type stores struct{ lazy *store.Lazy }

var (
	_ serving.DeploymentStore = stores{}
	_ serving.ModelStore      = stores{}
	_ serving.SpecStore       = specStore{}
	_ serving.DesiredStore    = desiredStore{}
	_ serving.TallyStore      = tallyStore{}
)

func (s stores) Get(ctx context.Context, pipeline string) (serving.Record, uint64, bool, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return serving.Record{}, 0, false, err
	}
	return store.GetJSON[serving.Record](ctx, b.Deployments, pipeline)
}

func (s stores) Write(ctx context.Context, pipeline string, r serving.Record, rev uint64) (uint64, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("deployment record %s: %w", pipeline, err)
	}
	var next uint64
	if rev == 0 {
		next, err = b.Deployments.Create(ctx, pipeline, data)
	} else {
		next, err = b.Deployments.Update(ctx, pipeline, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
		return 0, fmt.Errorf("kv %s %s at revision %d: %w", events.BucketDeployments, pipeline, rev, serving.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("kv %s write %s: %w", events.BucketDeployments, pipeline, err)
	}
	return next, nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Watch sends every deployment record, then a Ready marker, then every
// change.
func (s stores) Watch(ctx context.Context) (<-chan serving.RecordChange, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	w, err := b.Deployments.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", events.BucketDeployments, err)
	}
	out := make(chan serving.RecordChange)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			var e jetstream.KeyValueEntry
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				e = entry
			}
			ch := serving.RecordChange{Ready: e == nil}
			if e != nil {
				ch.Pipeline, ch.Revision = e.Key(), e.Revision()
				if err := json.Unmarshal(e.Value(), &ch.Record); err != nil {
					// Not a record this deployer can read: nothing to put
					// in force, and nothing a retry would change.
					continue
				}
				ch.Record.Pipeline = e.Key()
			}
			select {
			case out <- ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// watchKeys sends the key of every entry of kv, then of each that changes.
func watchKeys(ctx context.Context, kv jetstream.KeyValue) (<-chan string, error) {
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	out := make(chan string)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				select {
				case out <- e.Key():
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (s stores) Load(ctx context.Context, art serving.Artifact) (*bundle.Bundle, string, error) {
	if art.Bucket != "" && art.Bucket != events.ObjectModels {
		return nil, "", bus.Permanentf("artifact %s/%s: models live in %s", art.Bucket, art.Key, events.ObjectModels)
	}
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, "", err
	}
	data, err := store.GetObject(ctx, b.Models, art.Key)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	bd, err := bundle.Unmarshal(data)
	return bd, hex.EncodeToString(sum[:]), err
}

func (s stores) Pipeline(ctx context.Context, name string) (*pipeline.Pipeline, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	p, _, err := store.Pipeline(ctx, b.Pipelines, name)
	if store.IsNotFound(err) {
		return nil, &noPipeline{err: err}
	}
	return p, err
}

// specStore is the spec port with its watch.
type specStore struct{ stores }

func (s specStore) Watch(ctx context.Context) (<-chan string, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	return watchKeys(ctx, b.Pipelines)
}

// desiredStore is the registry seen as the desired state.
type desiredStore struct{ stores }

// Champion reads the registry's champion of a pipeline and the move that
// made it champion.
func (s desiredStore) Champion(ctx context.Context, pipeline string) (serving.Desired, bool, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return serving.Desired{}, false, err
	}
	rec, _, found, err := models.Get(ctx, b.Registry, pipeline)
	if err != nil || !found {
		return serving.Desired{}, false, err
	}
	v, ok := rec.Champion()
	if !ok {
		return serving.Desired{}, false, nil
	}
	mv, _ := rec.ChampionMove()
	if mv.EventID == "" {
		mv.EventID = bus.StableID(events.ModelPromoted, pipeline, strconv.FormatInt(mv.Seq, 10))
	}
	d := serving.Desired{
		Signature: v.Signature,
		Pipeline:  pipeline, Version: v.Version, Generation: rec.Generation(),
		Artifact: serving.Artifact{Bucket: v.Artifact.Bucket, Key: v.Artifact.Key, Sha256: v.Artifact.Sha256},
		Reason:   mv.Reason, EventID: mv.EventID, CorrelationID: mv.CorrelationID,
		// One deployment per model.promoted, with the id a deployer that
		// consumed the event gave it.
		DeploymentID: bus.StableID("deployment", pipeline, mv.EventID),
	}
	if d.CorrelationID == "" {
		d.CorrelationID = mv.EventID
	}
	if a, ok := v.Metrics["accuracy"]; ok {
		d.Accuracy = &a
	}
	return d, true, nil
}

func (s desiredStore) Watch(ctx context.Context) (<-chan string, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	return watchKeys(ctx, b.Registry)
}

// tallyStore keeps each replica's rollout counts in gyre-rollouts, key
// <pipeline>.<replica>.
type tallyStore struct{ stores }

func (s tallyStore) Report(ctx context.Context, t serving.Tally) error {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return err
	}
	_, err = store.PutJSON(ctx, b.Rollouts, t.Pipeline+"."+t.Replica, t)
	return err
}

func (s tallyStore) Watch(ctx context.Context) (<-chan serving.Tally, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	w, err := b.Rollouts.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", events.BucketRollouts, err)
	}
	out := make(chan serving.Tally)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			var e jetstream.KeyValueEntry
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				e = entry
			}
			var t serving.Tally
			if e == nil || json.Unmarshal(e.Value(), &t) != nil {
				continue
			}
			select {
			case out <- t:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// noPipeline is store's NotFound seen as the application's ErrNoPipeline;
// it stays permanent.
type noPipeline struct{ err error }

func (e *noPipeline) Error() string        { return e.err.Error() }
func (e *noPipeline) Unwrap() error        { return e.err }
func (e *noPipeline) Is(target error) bool { return target == serving.ErrNoPipeline }
func (e *noPipeline) Permanent() bool      { return true }

// emitter publishes the application's events: with the cause's lineage, a
// deterministic id, and the model version as the modelversion extension.
type emitter struct{ pub *bus.Publisher }

func (e emitter) Emit(ctx context.Context, cause serving.Cause, pipeline string, msg proto.Message, modelVersion int64, idParts ...string) error {
	if cause.ID != "" {
		ctx = bus.WithCause(ctx, bus.Cause{ID: cause.ID, Type: cause.Type, CorrelationID: cause.CorrelationID, Pipeline: cause.Pipeline})
	}
	ev, err := events.New(e.pub.Source(), pipeline, msg)
	if err != nil {
		return bus.Permanent(err)
	}
	ev.SetID(bus.StableID(idParts...))
	if modelVersion > 0 {
		ev.SetExtension(bus.ExtModelVersion, fmt.Sprint(modelVersion))
	}
	if err := e.pub.Publish(ctx, ev); err != nil {
		return fmt.Errorf("emit %s: %w", ev.Type(), err)
	}
	return nil
}
