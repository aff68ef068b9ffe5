package deployer

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// stores adapts Gyre's JetStream buckets to what the serving application
// reads and writes. Buckets are opened on first use: handlers are
// registered before Run provisions them.
type stores struct{ lazy *store.Lazy }

var (
	_ serving.DeploymentStore = stores{}
	_ serving.ModelStore      = stores{}
	_ serving.SpecStore       = stores{}
)

func (s stores) Get(ctx context.Context, pipeline string) (serving.Record, bool, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return serving.Record{}, false, err
	}
	rec, _, found, err := store.GetJSON[serving.Record](ctx, b.Deployments, pipeline)
	return rec, found, err
}

func (s stores) Put(ctx context.Context, pipeline string, r serving.Record) error {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return err
	}
	_, err = store.PutJSON(ctx, b.Deployments, pipeline, r)
	return err
}

func (s stores) Pipelines(ctx context.Context) ([]string, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	lister, err := b.Deployments.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv %s: list keys: %w", events.BucketDeployments, err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	return names, nil
}

func (s stores) Load(ctx context.Context, art serving.Artifact) (*bundle.Bundle, error) {
	if art.Bucket != "" && art.Bucket != events.ObjectModels {
		return nil, bus.Permanentf("artifact %s/%s: models live in %s", art.Bucket, art.Key, events.ObjectModels)
	}
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	data, err := store.GetObject(ctx, b.Models, art.Key)
	if err != nil {
		return nil, err
	}
	return bundle.Unmarshal(data)
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
