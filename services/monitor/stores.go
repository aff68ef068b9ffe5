package monitor

import (
	"context"
	"errors"
	"fmt"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// StateKey is the gyre-state key of a pipeline's monitor state.
func StateKey(pipeline string) string { return "monitor." + pipeline }

// stores adapts Gyre's JetStream buckets to what the monitor application
// reads and writes. Buckets are opened on first use: handlers are
// registered before Run provisions them.
type stores struct{ lazy *store.Lazy }

var (
	_ monitoring.StateStore     = stores{}
	_ monitoring.BatchStore     = stores{}
	_ monitoring.SpecStore      = stores{}
	_ monitoring.ReferenceStore = stores{}
	_ monitoring.RegistryStore  = stores{}
)

func (s stores) Champion(ctx context.Context, pipeline string) (monitoring.Champion, bool, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return monitoring.Champion{}, false, err
	}
	rec, _, _, err := models.Get(ctx, b.Registry, pipeline)
	if err != nil {
		return monitoring.Champion{}, false, err
	}
	v, ok := rec.Champion()
	if !ok {
		return monitoring.Champion{}, false, nil
	}
	c := monitoring.Champion{
		Version: v.Version, Generation: rec.Generation(), BatchIDs: v.Lineage.BatchIDs,
		FeatureSetVersion: v.Lineage.FeatureSetVersion, Metrics: v.Metrics,
	}
	if r := v.Reference; r != nil && r.Key != "" && (r.Bucket == "" || r.Bucket == events.ObjectModels) {
		c.ReferenceKey = r.Key
	}
	return c, true, nil
}

func (s stores) Load(ctx context.Context, pipeline string) (monitoring.State, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return monitoring.State{}, err
	}
	st, _, _, err := store.GetJSON[monitoring.State](ctx, b.State, StateKey(pipeline))
	return st, err
}

func (s stores) Update(ctx context.Context, pipeline string, fn func(*monitoring.State) error) error {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return err
	}
	_, err = store.UpdateJSON(ctx, b.State, StateKey(pipeline), func(st *monitoring.State, _ bool) error {
		if err := fn(st); err != nil {
			if errors.Is(err, monitoring.ErrNoChange) {
				return store.ErrNoChange
			}
			return err
		}
		return nil
	})
	return err
}

func (s stores) Log(ctx context.Context, pipeline string) ([]monitoring.Batch, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	log, err := store.ValidatedBatches(ctx, b.State, pipeline)
	if err != nil {
		return nil, err
	}
	out := make([]monitoring.Batch, len(log))
	for i, e := range log {
		out[i] = monitoring.Batch{Seq: e.Seq, BatchID: e.BatchID, ObjectKey: e.ObjectKey, Format: e.Format}
	}
	return out, nil
}

func (s stores) Read(ctx context.Context, objectKey, format string) (*table.Table, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	data, err := store.GetObject(ctx, b.Batches, objectKey)
	if err != nil {
		return nil, err
	}
	t, err := table.Read(format, data)
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", objectKey, err)
	}
	return t, nil
}

func (s stores) Pipeline(ctx context.Context, name string) (*pipeline.Pipeline, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return nil, err
	}
	p, _, err := store.Pipeline(ctx, b.Pipelines, name)
	return p, err
}

func (s stores) WindowStats(ctx context.Context, key string) (monitoring.WindowStats, error) {
	b, err := s.lazy.Get(ctx)
	if err != nil {
		return monitoring.WindowStats{}, err
	}
	data, err := store.GetObject(ctx, b.Models, key)
	if err != nil {
		return monitoring.WindowStats{}, err
	}
	r, err := bundle.UnmarshalReference(data)
	if err != nil {
		return monitoring.WindowStats{}, err
	}
	return monitoring.WindowStats{BatchIDs: r.BatchIDs, Rows: r.Rows, FeatureSetVersion: r.FeatureSetVersion, Features: r.Features}, nil
}
