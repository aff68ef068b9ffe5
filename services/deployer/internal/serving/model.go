// Package serving is the deployer's application: it holds the models that
// serve each pipeline behind an atomically swapped routing table, answers
// inference requests (typed commands the HTTP port decodes), rolls promoted
// models out — immediate, canary, shadow or blue-green, judged on error
// rate, latency, live accuracy and prediction drift (routing.go, canary.go)
// — and restores what served after a restart. It knows no
// transport: state, artifacts, specs and emitted events go through the
// small interfaces in deployer.go.
package serving

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/signing"
)

// Artifact locates a model bundle in the object store.
type Artifact struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Sha256 string `json:"sha256,omitempty"`
}

// Input is one raw feature column a model takes.
type Input struct {
	Name string
	// Numeric is false for text (categorical) columns.
	Numeric bool
}

// Model is a loaded bundle with its version. What it predicts with is
// immutable, so any number of requests may use it while another model
// replaces it. Its batcher groups the concurrent requests it serves into
// shared model calls; holding no goroutine of its own, the batcher finishes
// what it was given and goes with the model when the model is swapped out.
type Model struct {
	Version  int64
	Artifact Artifact
	// Accuracy is the evaluation accuracy the version was promoted with;
	// nil when unknown.
	Accuracy *float64
	// Signature is the registry's signature the model was verified with.
	Signature signing.Signature
	bundle    *bundle.Bundle
	inputs    []Input
	names     []string
	// numeric names the numeric inputs, in order: the features of the
	// prediction log's values.
	numeric []string
	// What the request path needs of the bundle, read once (the model's
	// Signature clones on every call).
	task    ml.Task
	classes []string
	columns []features.Column
	width   int
	// batch groups concurrent requests; ApplyBatching replaces it when the
	// pipeline's spec changes, and the one replaced finishes what it holds.
	batch atomic.Pointer[batcher]
	stats batchStats
}

// ModelOption adjusts a model as it is loaded.
type ModelOption func(*modelOptions)

type modelOptions struct {
	batching pipeline.Batching
}

// WithBatching sets how the model groups concurrent requests: the
// pipeline's spec.deployment.batching. Without it the spec's defaults
// apply.
func WithBatching(b pipeline.Batching) ModelOption {
	return func(o *modelOptions) { o.batching = b }
}

// NewModel wraps a loaded bundle.
func NewModel(version int64, art Artifact, b *bundle.Bundle, accuracy *float64, opts ...ModelOption) *Model {
	o := modelOptions{batching: pipeline.Batching{MaxBatchSize: pipeline.DefaultMaxBatchSize}}
	for _, opt := range opts {
		opt(&o)
	}
	sig := b.Model.Signature()
	m := &Model{
		Version: version, Artifact: art, Accuracy: accuracy, bundle: b,
		task: sig.Task, classes: sig.Classes, columns: b.Features.Columns, width: len(sig.Inputs),
	}
	for _, c := range b.Features.Columns {
		m.inputs = append(m.inputs, Input{Name: c.Name, Numeric: c.Numeric})
		m.names = append(m.names, c.Name)
		if c.Numeric {
			m.numeric = append(m.numeric, c.Name)
		}
	}
	m.ApplyBatching(o.batching)
	return m
}

// ApplyBatching sets how the model groups concurrent requests from now
// on, and reports whether that changed anything. Requests in the batcher
// it replaces are scored there as before: it holds no goroutine, and goes
// when they are done.
func (m *Model) ApplyBatching(b pipeline.Batching) bool {
	delay := b.QueueDelay()
	maxRows := max(b.MaxBatchSize, 1)
	if cur := m.batch.Load(); cur != nil && cur.maxRows == maxRows && cur.delay == max(delay, 0) {
		return false
	}
	m.batch.Store(newBatcher(maxRows, delay, defaultSlots(), m.score, &m.stats))
	return true
}

// Inputs returns the raw feature columns the model takes, in order.
func (m *Model) Inputs() []Input { return slices.Clone(m.inputs) }

// InputNames returns the names of the model's inputs, in order. The slice
// is the model's: callers must not change it.
func (m *Model) InputNames() []string { return m.names }

// Task returns classification or regression.
func (m *Model) Task() ml.Task { return m.task }

// Algorithm returns the model's algorithm (gbdt, logreg, ...).
func (m *Model) Algorithm() string { return m.bundle.Model.Info().Algorithm }

// Classes returns the class names in the order of the probabilities.
func (m *Model) Classes() []string { return slices.Clone(m.classes) }

// Batching returns how the model groups concurrent requests: the most rows
// of one model call (1: no grouping) and the longest a queued request
// waits for others to join its call.
func (m *Model) Batching() (maxRows int, maxQueueDelay time.Duration) {
	b := m.batch.Load()
	return b.maxRows, b.delay
}

// BatchStats returns the model calls made and the rows they scored: rows
// per call is the mean batch size.
func (m *Model) BatchStats() (calls, rows int64) {
	return m.stats.calls.Load(), m.stats.scored.Load()
}

// predict scores a frame. Its columns are encoded into model inputs here,
// on the request's goroutine, so that a bad value fails its own request
// only; the model call may be shared with concurrent requests.
func (m *Model) predict(ctx context.Context, f *Frame) (*bundle.Predictions, error) {
	x, err := m.encode(f)
	if err != nil {
		return nil, err
	}
	s, err := m.batch.Load().do(ctx, x)
	if err != nil {
		return nil, err
	}
	return m.predictions(s, len(x))
}

// encode turns a frame into model input rows with the bundle's feature
// set, column by column, into one allocation.
func (m *Model) encode(f *Frame) ([][]float64, error) {
	n, w := f.Rows, m.width
	flat := make([]float64, n*w)
	x := make([][]float64, n)
	for i := range x {
		x[i] = flat[i*w : (i+1)*w : (i+1)*w]
	}
	off := 0
	for k := range m.columns {
		fc := &m.columns[k]
		width := fc.Width()
		col := f.Column(fc.Name)
		if col == nil {
			return nil, &InputError{Reason: fmt.Sprintf("missing input %q: the model takes %s", fc.Name, inputNames(m))}
		}
		// Booleans meet a text column as true and false, not 1 and 0.
		boolText := col.Bool && (!fc.Numeric || fc.Transform == pipeline.TransformOneHot)
		for i := 0; i < n; i++ {
			dst := x[i][off : off+width]
			var err error
			switch {
			case col.Text != nil:
				err = fc.Encode(col.Text[i], col.Missing != nil && col.Missing[i], dst, i+1)
			case boolText:
				v, ok := col.Value(i)
				err = fc.Encode(v, !ok, dst, i+1)
			default:
				err = fc.EncodeNumber(col.Numbers[i], dst, i+1)
			}
			if err != nil {
				return nil, &InputError{Reason: err.Error()}
			}
		}
		off += width
	}
	return x, nil
}

// score is the model call the batcher makes: a classifier's probabilities,
// a regressor's values.
func (m *Model) score(x [][]float64) scores {
	if m.task == ml.Regression {
		return scores{values: m.bundle.Model.Predict(x)}
	}
	return scores{proba: m.bundle.Model.PredictProba(x)}
}

// predictions are the scores of n rows as bundle.PredictRecords gives
// them: the class of highest probability (the lower on ties), or the
// value. A classifier's row that could not be scored fails the request.
func (m *Model) predictions(s scores, n int) (*bundle.Predictions, error) {
	p := &bundle.Predictions{Task: m.task, Classes: m.classes, Labels: make([]string, n)}
	if m.task == ml.Regression {
		p.Values = s.values
		for i, v := range p.Values {
			p.Labels[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
		return p, nil
	}
	p.Proba = s.proba
	p.Values = make([]float64, n)
	for i, row := range p.Proba {
		k := bundle.Argmax(row)
		if k < 0 || k >= len(m.classes) {
			return nil, &InputError{Reason: fmt.Sprintf("row %d could not be scored: the model cannot handle its missing values", i+1)}
		}
		p.Values[i] = float64(k)
		p.Labels[i] = m.classes[k]
	}
	return p, nil
}
