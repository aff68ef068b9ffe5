// Package monitoring is the monitor's application: it keeps each
// pipeline's drift reference (the champion's training window), measures the
// drift of every materialised batch against it, and joins sampled
// predictions with their labels (through a JoinStore shared by every
// replica) into live accuracy per model version. It decides what to emit
// and returns it; the service publishes. It knows no transport: its inputs
// are typed commands, its state and data come through the small interfaces
// below.
package monitoring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// ErrNoChange returned by a state update function leaves the state as it is.
var ErrNoChange = errors.New("no change")

// StateStore holds each pipeline's State.
type StateStore interface {
	// Load returns the pipeline's state (the zero State when there is none).
	Load(ctx context.Context, pipeline string) (State, error)
	// Update changes the state with compare-and-set, calling fn again when
	// another writer got there first; fn returns ErrNoChange to write
	// nothing.
	Update(ctx context.Context, pipeline string, fn func(*State) error) error
}

// Batch is one entry of a pipeline's validated-batch log.
type Batch struct {
	Seq       int64
	BatchID   string
	ObjectKey string
	Format    string
}

// BatchStore reads validated batches.
type BatchStore interface {
	// Log returns the pipeline's validated-batch log, oldest first.
	Log(ctx context.Context, pipeline string) ([]Batch, error)
	// Read returns a stored raw batch (gyre-batches) as a table.
	Read(ctx context.Context, objectKey, format string) (*table.Table, error)
}

// SpecStore reads pipeline specs.
type SpecStore interface {
	Pipeline(ctx context.Context, name string) (*pipeline.Pipeline, error)
}

// WindowStats are a training window's statistics as the trainer stored
// them beside the bundle (gyre.reference/v1).
type WindowStats struct {
	BatchIDs          []string
	Rows              int64
	FeatureSetVersion string
	Features          map[string]drift.Reference
}

// ReferenceStore reads the window statistics the trainer stored.
type ReferenceStore interface {
	WindowStats(ctx context.Context, key string) (WindowStats, error)
}

// Options are the monitor's optional settings.
type Options struct {
	// Logger receives what the monitor has to say (default slog.Default);
	// handlers pass theirs through LoggerFrom.
	LoggerFrom func(context.Context) *slog.Logger
	// OnLiveAccuracy, when set, is told the champion's live accuracy each
	// time labelled predictions of the champion are counted (for metrics).
	OnLiveAccuracy func(LiveAccuracy)
}

// LiveAccuracy is a champion's accuracy on its newest labelled
// predictions: the figure performance.degraded judges.
type LiveAccuracy struct {
	Pipeline     string
	ModelVersion int64
	// Accuracy is the share of correct outcomes among the newest Rows.
	Accuracy float64
	// Rows is how many labelled predictions it is measured on: the newest
	// max(minRows, labels in the event), at most MaxWindow.
	Rows int
	// Baseline is the champion's evaluation accuracy, when it has one.
	Baseline *float64
}

// Monitor is the monitor's application.
type Monitor struct {
	state    StateStore
	batches  BatchStore
	registry RegistryStore
	specs    SpecStore
	stats    ReferenceStore
	joins    JoinStore
	logger   func(context.Context) *slog.Logger
	now      func() time.Time
	onLive   func(LiveAccuracy)
}

// New returns a monitor over its stores.
func New(state StateStore, batches BatchStore, specs SpecStore, stats ReferenceStore, registry RegistryStore, joins JoinStore, opts Options) *Monitor {
	logger := opts.LoggerFrom
	if logger == nil {
		logger = func(context.Context) *slog.Logger { return slog.Default() }
	}
	return &Monitor{
		state: state, batches: batches, specs: specs, stats: stats, registry: registry, joins: joins,
		logger: logger, now: time.Now, onLive: opts.OnLiveAccuracy,
	}
}

// Champion is the registry's champion of a pipeline: the desired state the
// monitor follows.
type Champion struct {
	Version int64
	// Generation is the registry record's generation that made it champion.
	Generation int64
	// ReferenceKey is where the trainer stored the window's statistics
	// (gyre-models); empty when the version names none.
	ReferenceKey      string
	BatchIDs          []string
	FeatureSetVersion string
	// Metrics are its evaluation metrics; "accuracy" is the baseline of
	// live accuracy.
	Metrics map[string]float64
}

// RegistryStore reads the registry's champion of a pipeline.
type RegistryStore interface {
	// Champion returns the champion and the record's generation; ok is
	// false when the pipeline has none.
	Champion(ctx context.Context, pipeline string) (c Champion, ok bool, err error)
}

// Prompt is a model.promoted: a prompt to follow the registry's champion.
type Prompt struct {
	EventID  string
	Pipeline string
	// Generation is the one the event announces (0: unknown, an event from
	// a registry older than generations).
	Generation int64
}

// Followed says what following the registry did.
type Followed struct {
	// Version is the champion the reference now describes; 0 when there is
	// none.
	Version int64
	// Generation is the registry generation now applied.
	Generation int64
	// Changed is true when the reference moved to another version.
	Changed bool
	// Stale names why the prompt was ignored as older than what is
	// applied; empty when it was not.
	Stale string
}

// Follow makes the registry's champion the reference, level-triggered: the
// prompt only says "look"; the registry's record decides what the
// champion is, and its generation whether it is news. The champion's
// training window becomes the reference (the statistics the trainer
// stored beside the bundle, else built from the window's batches: lineage
// → validated-batch log → gyre-batches), with its evaluation accuracy as
// the baseline of live accuracy; a champion that changed version is judged
// on its own predictions only (its live counters start again). A prompt of
// a generation below the one applied is stale and changes nothing; a
// prompt of the applied generation (a redelivery) or one whose record has
// not moved past what is applied changes nothing either.
func (m *Monitor) Follow(ctx context.Context, p Prompt) (Followed, error) {
	st, err := m.state.Load(ctx, p.Pipeline)
	if err != nil {
		return Followed{}, err
	}
	applied := appliedGeneration(st.Reference)
	if p.Generation > 0 && p.Generation < applied {
		return Followed{Version: st.Reference.ModelVersion, Generation: applied,
			Stale: fmt.Sprintf("generation %d is older than the applied %d", p.Generation, applied)}, nil
	}
	c, ok, err := m.registry.Champion(ctx, p.Pipeline)
	if err != nil {
		return Followed{}, err
	}
	if !ok || c.Generation <= applied {
		out := Followed{Generation: applied}
		if st.Reference != nil {
			out.Version = st.Reference.ModelVersion
		}
		return out, nil
	}
	ref, err := m.reference(ctx, p.Pipeline, c)
	if err != nil {
		return Followed{}, err
	}
	ref.ModelVersion, ref.Generation, ref.EventID, ref.BuiltAt = c.Version, c.Generation, p.EventID, m.now().UTC()
	if acc, ok := c.Metrics["accuracy"]; ok {
		ref.BaselineAccuracy = &acc
	}
	out := Followed{Version: c.Version, Generation: c.Generation}
	err = m.state.Update(ctx, p.Pipeline, func(s *State) error {
		out.Changed = false
		if appliedGeneration(s.Reference) >= c.Generation {
			return ErrNoChange
		}
		out.Changed = s.Reference == nil || s.Reference.ModelVersion != c.Version
		s.Reference = ref
		if out.Changed {
			// The new champion is judged on its own predictions only.
			if s.Live != nil {
				delete(s.Live, versionKey(c.Version))
			}
			s.live(c.Version)
		}
		s.pruneVersions()
		return nil
	})
	if err != nil {
		return Followed{}, err
	}
	m.logger(ctx).Info("drift reference set", "pipeline", p.Pipeline, "model_version", c.Version, "generation", c.Generation,
		"features", len(ref.Features), "rows", ref.Rows, "batches", len(ref.BatchIDs))
	return out, nil
}

// appliedGeneration is the registry generation a reference was built for.
// A reference from before generations counts as generation 0: anything
// the registry holds now is newer.
func appliedGeneration(r *Reference) int64 {
	if r == nil {
		return 0
	}
	return r.Generation
}

// reference returns the statistics of the champion's training window.
func (m *Monitor) reference(ctx context.Context, pipelineName string, p Champion) (*Reference, error) {
	log := m.logger(ctx)
	if p.ReferenceKey != "" {
		ws, err := m.stats.WindowStats(ctx, p.ReferenceKey)
		switch {
		case err == nil && len(ws.Features) > 0:
			return &Reference{BatchIDs: ws.BatchIDs, FeatureSetVersion: ws.FeatureSetVersion, Rows: ws.Rows, Features: ws.Features}, nil
		case err != nil && !isPermanent(err):
			return nil, fmt.Errorf("window statistics %s: %w", p.ReferenceKey, err)
		default:
			log.Warn("stored window statistics unusable; building them from the window's batches",
				"pipeline", pipelineName, "model_version", p.Version, "key", p.ReferenceKey, "error", err)
		}
	}
	spec, err := m.specs.Pipeline(ctx, pipelineName)
	if err != nil {
		return nil, err
	}
	window, read, missing, err := m.readWindow(ctx, pipelineName, p.BatchIDs)
	if err != nil {
		return nil, err
	}
	refs, rows, skipped := BuildReferences(FeatureColumns(spec, window), window)
	if len(missing) > 0 {
		log.Warn("training-window batches not readable; the reference is built without them",
			"pipeline", pipelineName, "model_version", p.Version, "missing", missing)
	}
	if len(skipped) > 0 {
		log.Warn("features without a reference", "pipeline", pipelineName, "model_version", p.Version, "skipped", describeSkipped(skipped))
	}
	return &Reference{BatchIDs: read, Missing: missing, FeatureSetVersion: p.FeatureSetVersion, Rows: rows, Features: refs, Unmonitored: skipped}, nil
}

// readWindow reads the batches of a training window through the
// validated-batch log; batches the log or the object store no longer have
// are returned as missing rather than failing the reference.
func (m *Monitor) readWindow(ctx context.Context, pipeline string, ids []string) (tables []*table.Table, read, missing []string, err error) {
	if len(ids) == 0 {
		return nil, nil, nil, nil
	}
	log, err := m.batches.Log(ctx, pipeline)
	if err != nil {
		return nil, nil, nil, err
	}
	byID := make(map[string]Batch, len(log))
	for _, b := range log {
		byID[b.BatchID] = b
	}
	for _, id := range ids {
		b, ok := byID[id]
		if !ok {
			missing = append(missing, id)
			continue
		}
		t, err := m.batches.Read(ctx, b.ObjectKey, b.Format)
		if err != nil {
			if isPermanent(err) {
				m.logger(ctx).Warn("training-window batch unreadable", "pipeline", pipeline, "batch_id", id, "error", err)
				missing = append(missing, id)
				continue
			}
			return nil, nil, nil, fmt.Errorf("read window batch %s: %w", id, err)
		}
		tables = append(tables, t)
		read = append(read, id)
	}
	return tables, read, missing, nil
}

// Materialized is a features.materialized: a batch to measure.
type Materialized struct {
	EventID           string
	Pipeline          string
	BatchID           string
	FeatureSetVersion string
	// SourceKey is the raw batch's key in gyre-batches; Rows its rows.
	SourceKey string
	Rows      int64
}

// Measurement is what measuring a batch emits: drift.measured always, and
// drift.detected when the batch drifted and the cooldown allowed it.
type Measurement struct {
	Measured *gyrev1.DriftMeasured
	Detected *gyrev1.DriftDetected
	// ReferenceVersion is the champion compared with; 0 when none.
	ReferenceVersion int64
}

// MeasureBatch measures the drift of a batch against the reference.
//
// Without a reference (no champion yet, or a champion whose window could
// not be read) the batch is still reported: drift.measured with reference
// model version 0 and no features, so that every batch shows in the event
// log and dashboards can say "no reference yet" rather than wonder.
func (m *Monitor) MeasureBatch(ctx context.Context, b Materialized) (Measurement, error) {
	spec, err := m.specs.Pipeline(ctx, b.Pipeline)
	if err != nil {
		return Measurement{}, err
	}
	policy, err := Policy(spec).Normalize()
	if err != nil {
		return Measurement{}, permanentf("pipeline %s: drift policy: %w", b.Pipeline, err)
	}
	st, err := m.state.Load(ctx, b.Pipeline)
	if err != nil {
		return Measurement{}, err
	}
	measured := &gyrev1.DriftMeasured{
		Method: string(policy.Method), Threshold: policy.Threshold,
		ShareThreshold: policy.ShareOfFeatures, MinRows: int64(policy.MinRows), Rows: b.Rows,
	}
	ref := st.Reference
	if ref == nil || len(ref.Features) == 0 {
		why := "no champion yet"
		if ref != nil {
			why = fmt.Sprintf("champion v%d has no reference features (its window could not be read)", ref.ModelVersion)
		}
		m.logger(ctx).Info("batch not compared: "+why, "pipeline", b.Pipeline, "batch_id", b.BatchID)
		fillMeasured(measured, b, 0)
		return Measurement{Measured: measured}, nil
	}
	log, err := m.batches.Log(ctx, b.Pipeline)
	if err != nil {
		return Measurement{}, err
	}
	entry, seq := locate(log, b)
	t, err := m.batches.Read(ctx, entry.ObjectKey, entry.Format)
	if err != nil {
		return Measurement{}, fmt.Errorf("batch %s: %w", b.BatchID, err)
	}
	report, err := drift.EvaluateSamples(policy, ref.Features, Samples(ref.Features, t))
	if err != nil {
		return Measurement{}, permanentf("batch %s: %w", b.BatchID, err)
	}
	// Every monitored feature is reported: those without a reference too.
	if extra := Unreferenced(spec, ref.Features, ref.Unmonitored, t); len(extra) > 0 {
		report.Features = append(report.Features, extra...)
		slices.SortStableFunc(report.Features, func(a, b drift.FeatureScore) int { return strings.Compare(a.Feature, b.Feature) })
	}
	measured = report.ToProto()
	fillMeasured(measured, b, ref.ModelVersion)
	out := Measurement{Measured: measured, ReferenceVersion: ref.ModelVersion}
	if !report.Drifted {
		return out, nil
	}
	cooldown := cooldownBatches(spec)
	allowed := false
	err = m.state.Update(ctx, b.Pipeline, func(s *State) error {
		c := s.Drift
		if c.Emitted && c.BatchID == b.BatchID && c.ModelVersion == ref.ModelVersion {
			allowed = true // a redelivery: emit the same event again
			return ErrNoChange
		}
		if !c.allows(seq, cooldown) {
			allowed = false
			return ErrNoChange
		}
		allowed = true
		s.Drift = Cooldown{Emitted: true, Seq: seq, BatchID: b.BatchID, ModelVersion: ref.ModelVersion, Count: c.Count + 1}
		return nil
	})
	if err != nil {
		return Measurement{}, err
	}
	if !allowed {
		m.logger(ctx).Info("drift detected within the cooldown; not emitted", "pipeline", b.Pipeline,
			"batch_id", b.BatchID, "seq", seq, "last_seq", st.Drift.Seq, "cooldown_batches", cooldown)
		return out, nil
	}
	detected := report.ToDetectedProto()
	detected.Pipeline, detected.BatchId = b.Pipeline, b.BatchID
	detected.ReferenceModelVersion = ref.ModelVersion
	detected.FeatureSetVersion = b.FeatureSetVersion
	out.Detected = detected
	return out, nil
}

func fillMeasured(d *gyrev1.DriftMeasured, b Materialized, version int64) {
	d.Pipeline, d.BatchId = b.Pipeline, b.BatchID
	d.ReferenceModelVersion = version
	d.FeatureSetVersion = b.FeatureSetVersion
}

// locate finds a batch in the validated-batch log: its stored object and
// position. A batch the log no longer holds is read from the event's
// source key, and positioned at the log's end.
func locate(log []Batch, b Materialized) (Batch, int64) {
	for i := len(log) - 1; i >= 0; i-- {
		if log[i].BatchID == b.BatchID {
			return log[i], log[i].Seq
		}
	}
	e := Batch{BatchID: b.BatchID, ObjectKey: b.SourceKey, Format: strings.TrimPrefix(path.Ext(b.SourceKey), ".")}
	return e, lastSeq(log)
}

func lastSeq(log []Batch) int64 {
	if len(log) == 0 {
		return 0
	}
	return log[len(log)-1].Seq
}

// Prediction is one logged prediction: its id and output.
type Prediction struct {
	ID     string
	Output string
}

// PredictionLog is a prediction.logged.
type PredictionLog struct {
	EventID      string
	Pipeline     string
	ModelVersion int64
	Rows         []Prediction
}

// Label is the truth of one prediction.
type Label struct {
	PredictionID string
	Value        string
}

// Labels is a label.received.
type Labels struct {
	EventID  string
	Pipeline string
	Labels   []Label
}

// LogPredictions records predictions in the join and counts those whose
// labels came first, and the predictions logged. It returns the
// performance.degraded to emit, if any.
func (m *Monitor) LogPredictions(ctx context.Context, p PredictionLog) (*gyrev1.PerformanceDegraded, error) {
	j, err := m.joins.JoinPredictions(ctx, p.Pipeline, p.EventID, p.ModelVersion, p.Rows)
	if err != nil {
		return nil, fmt.Errorf("join predictions of %s: %w", p.EventID, err)
	}
	return m.count(ctx, p.Pipeline, p.EventID, j.Pairs, len(j.Pairs), logged{version: p.ModelVersion, n: int64(j.Recorded)})
}

// ReceiveLabels counts the labelled predictions of a label.received into
// live accuracy and returns the performance.degraded to emit, if any.
// Labels of predictions not logged yet wait for them in the join.
func (m *Monitor) ReceiveLabels(ctx context.Context, l Labels) (*gyrev1.PerformanceDegraded, error) {
	j, err := m.joins.JoinLabels(ctx, l.Pipeline, l.EventID, l.Labels)
	if err != nil {
		return nil, fmt.Errorf("join labels of %s: %w", l.EventID, err)
	}
	return m.count(ctx, l.Pipeline, l.EventID, j.Pairs, len(l.Labels), logged{})
}

// logged is how many predictions of a version an event logged.
type logged struct {
	version int64
	n       int64
}

// count adds an event's pairs to the live counters of their versions (and
// its logged predictions to theirs) and judges the champion's: over the
// newest max(minRows, eventLabels) labelled predictions, with at least
// minRows of them, live accuracy below the baseline by more than
// accuracyDrop degrades, when the cooldown allows.
//
// The join gives a redelivered event the pairs it completed the first
// time, so counting once per event id (State.Applied) counts every pair
// once, also when a handler failed between joining and counting.
func (m *Monitor) count(ctx context.Context, pipelineName, trigger string, pairs []Pair, eventLabels int, lg logged) (*gyrev1.PerformanceDegraded, error) {
	if len(pairs) == 0 && lg.n == 0 {
		// Nothing new; but if this event caused the last emission, the
		// publish may have failed after the state was written: emit again.
		st, err := m.state.Load(ctx, pipelineName)
		if err != nil {
			return nil, err
		}
		return m.reemit(pipelineName, st, trigger), nil
	}
	var (
		seq             int64
		minRows, window int
		maxDrop         float64
		cooldown        int
	)
	if len(pairs) > 0 {
		// Only pairs are judged, against the spec's policy.
		spec, err := m.specs.Pipeline(ctx, pipelineName)
		if err != nil {
			return nil, err
		}
		log, err := m.batches.Log(ctx, pipelineName)
		if err != nil {
			return nil, err
		}
		seq = lastSeq(log)
		minRows = spec.Spec.Drift.MinRows
		maxDrop = spec.Spec.Drift.AccuracyDrop
		cooldown = cooldownBatches(spec)
		window = min(max(minRows, eventLabels), MaxWindow)
	}

	var result *Degradation
	var live *LiveAccuracy
	err := m.state.Update(ctx, pipelineName, func(s *State) error {
		result, live = nil, nil
		if s.applied(trigger) {
			// Counted already (the acknowledgement of the first delivery
			// was lost); emit again what that delivery emitted.
			if s.Performance.Trigger == trigger {
				result = s.Performance.Last
			}
			return ErrNoChange
		}
		s.markApplied(trigger)
		if lg.n > 0 {
			s.addLogged(lg.version, lg.n)
		}
		champion := int64(-1)
		if s.Reference != nil {
			champion = s.Reference.ModelVersion
		}
		touched := false
		for _, p := range pairs {
			l := s.live(p.Version)
			l.Labelled++
			if p.Correct() {
				l.Correct++
				l.Window += "1"
			} else {
				l.Window += "0"
			}
			touched = touched || p.Version == champion
		}
		if len(pairs) > 0 {
			for _, l := range s.Live {
				if len(l.Window) > window {
					l.Window = l.Window[len(l.Window)-window:]
				}
			}
		}
		s.pruneVersions()
		if !touched {
			return nil
		}
		acc, n := s.live(champion).Accuracy(window)
		live = &LiveAccuracy{Pipeline: pipelineName, ModelVersion: champion, Accuracy: acc, Rows: n, Baseline: s.Reference.BaselineAccuracy}
		if s.Reference.BaselineAccuracy == nil {
			return nil
		}
		baseline := *s.Reference.BaselineAccuracy
		// The tolerance keeps a drop of exactly maxDrop (0.9 - 0.85) within it.
		if n < minRows || n == 0 || baseline-acc <= maxDrop+1e-9 {
			return nil
		}
		if !s.Performance.allows(seq, cooldown) {
			m.logger(ctx).Info("live accuracy degraded within the cooldown; not emitted", "pipeline", pipelineName,
				"model_version", champion, "live_accuracy", acc, "baseline_accuracy", baseline, "seq", seq,
				"last_seq", s.Performance.Seq, "cooldown_batches", cooldown)
			return nil
		}
		result = &Degradation{
			ModelVersion: champion, Baseline: baseline, Live: acc, Drop: baseline - acc, MaxDrop: maxDrop,
			Labelled: int64(n), Predictions: s.loggedOf(champion),
		}
		s.Performance = PerformanceCooldown{
			Cooldown: Cooldown{Emitted: true, Seq: seq, ModelVersion: champion, Count: s.Performance.Count + 1},
			Trigger:  trigger, Last: result,
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if live != nil && live.Rows > 0 && m.onLive != nil {
		m.onLive(*live)
	}
	if result == nil {
		return nil, nil
	}
	return degradedProto(pipelineName, result), nil
}

func (m *Monitor) reemit(pipelineName string, st State, trigger string) *gyrev1.PerformanceDegraded {
	if st.Performance.Trigger != trigger || st.Performance.Last == nil {
		return nil
	}
	return degradedProto(pipelineName, st.Performance.Last)
}

func degradedProto(pipelineName string, d *Degradation) *gyrev1.PerformanceDegraded {
	return &gyrev1.PerformanceDegraded{
		Pipeline: pipelineName, ModelVersion: d.ModelVersion, Metric: "accuracy",
		BaselineAccuracy: d.Baseline, LiveAccuracy: d.Live, Drop: d.Drop, MaxDrop: d.MaxDrop,
		LabelledRows: d.Labelled, Predictions: d.Predictions,
	}
}

// Permanent errors: the same input fails the same way every time.
type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Permanent() bool { return true }

func permanentf(format string, args ...any) error {
	return &permanentError{err: fmt.Errorf(format, args...)}
}

func isPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}
