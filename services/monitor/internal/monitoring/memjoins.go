package monitoring

import (
	"context"
	"sync"
)

// MemoryJoins is a JoinStore in memory, for tests of the application: the
// same rules as the shared store (services/monitor's gyre-joins adapter),
// which one contract test checks both against, without a server. Entries
// never expire.
type MemoryJoins struct {
	mu      sync.Mutex
	entries map[string]JoinEntry // by pipeline + "\x00" + prediction id
}

var _ JoinStore = (*MemoryJoins)(nil)

// NewMemoryJoins returns an empty join.
func NewMemoryJoins() *MemoryJoins { return &MemoryJoins{entries: map[string]JoinEntry{}} }

// JoinPredictions implements JoinStore.
func (m *MemoryJoins) JoinPredictions(ctx context.Context, pipeline, eventID string, version int64, rows []Prediction) (Joined, error) {
	return m.join(ctx, pipeline, PredictionSides(eventID, version, rows))
}

// JoinLabels implements JoinStore.
func (m *MemoryJoins) JoinLabels(ctx context.Context, pipeline, eventID string, labels []Label) (Joined, error) {
	return m.join(ctx, pipeline, LabelSides(eventID, labels))
}

func (m *MemoryJoins) join(ctx context.Context, pipeline string, sides []Side) (Joined, error) {
	if err := ctx.Err(); err != nil {
		return Joined{}, err
	}
	steps := make([]Step, len(sides))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range sides {
		k := pipeline + "\x00" + s.ID
		e := m.entries[k] // a copy: Apply's change is kept only when written
		steps[i] = s.Apply(&e)
		if steps[i].Write {
			m.entries[k] = e
		}
	}
	return Collect(steps), nil
}
