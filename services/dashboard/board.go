package dashboard

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	gyrev1 "github.com/gyrehq/gyre/events/gyrev1"
)

// Entry is one lifecycle event as the dashboard shows it: its envelope, a
// line that says what happened, and its payload as JSON.
type Entry struct {
	// Seq is the event's sequence in the lifecycle stream; the live feed
	// resumes after the last one a browser saw.
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Pipeline      string    `json:"pipeline"`
	Type          string    `json:"type"` // the catalog name, e.g. "model.promoted"
	ID            string    `json:"id"`
	Source        string    `json:"source"`
	CorrelationID string    `json:"correlationId,omitempty"`
	CausationID   string    `json:"causationId,omitempty"`
	ModelVersion  string    `json:"modelVersion,omitempty"`
	// Summary says what happened in one line, with the figures that matter.
	Summary string `json:"summary"`
	// Tone is how the feed colours it: "info", "good", "warn" or "bad".
	Tone string `json:"tone"`
	// Data is the payload as protojson, with bulky fields left out (see
	// payloadJSON).
	Data json.RawMessage `json:"data,omitempty"`
}

// Tones of an entry.
const (
	ToneInfo = "info"
	ToneGood = "good"
	ToneWarn = "warn"
	ToneBad  = "bad"
)

// Pipeline is what the dashboard knows of one pipeline: the latest state of
// each stage of the loop, folded from its lifecycle events.
type Pipeline struct {
	Name      string    `json:"name"`
	Revision  int64     `json:"revision,omitempty"`
	Events    int64     `json:"events"`
	LastEvent time.Time `json:"lastEvent"`

	Batches  Batches `json:"batches"`
	Labelled int64   `json:"labelled"` // labels received

	// Champion is the registry's champion (model.promoted).
	Champion *Model `json:"champion,omitempty"`
	// Serving is the model the deployer serves to every request.
	Serving    *Model      `json:"serving,omitempty"`
	Rollout    *Rollout    `json:"rollout,omitempty"`
	Training   *Training   `json:"training,omitempty"`
	Evaluation *Evaluation `json:"evaluation,omitempty"`
	Drift      *Drift      `json:"drift,omitempty"`
	// Degraded is the latest fall in live accuracy the monitor reported.
	Degraded *Degraded `json:"degraded,omitempty"`
}

// Batches counts a pipeline's data batches by outcome.
type Batches struct {
	Received     int64     `json:"received"`
	Validated    int64     `json:"validated"`
	Rejected     int64     `json:"rejected"`
	Materialized int64     `json:"materialized"`
	LastBatchID  string    `json:"lastBatchId,omitempty"`
	LastRejected string    `json:"lastRejected,omitempty"` // why the latest rejected batch was
	Updated      time.Time `json:"updated,omitzero"`
}

// Model is a model version and the figures it was chosen on.
type Model struct {
	Version   int64              `json:"version"`
	Algorithm string             `json:"algorithm,omitempty"`
	Metrics   map[string]float64 `json:"metrics,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	Since     time.Time          `json:"since"`
}

// Rollout is the latest deployment of a pipeline: in progress, completed or
// rolled back.
type Rollout struct {
	DeploymentID   string             `json:"deploymentId"`
	Strategy       string             `json:"strategy"`
	Candidate      int64              `json:"candidate"`
	Previous       int64              `json:"previous,omitempty"`
	Step           int32              `json:"step,omitempty"`
	Steps          []int32            `json:"steps,omitempty"`
	TrafficPercent int32              `json:"trafficPercent"`
	State          string             `json:"state"` // RolloutInProgress, RolloutCompleted, RolloutRolledBack
	Reason         string             `json:"reason,omitempty"`
	Figures        map[string]float64 `json:"figures,omitempty"`
	Updated        time.Time          `json:"updated"`
}

// Rollout states.
const (
	RolloutInProgress = "in progress"
	RolloutCompleted  = "completed"
	RolloutRolledBack = "rolled back"
)

// Training is a pipeline's latest training request and how it went.
type Training struct {
	State      string             `json:"state"` // requested, started, completed, failed
	RequestID  string             `json:"requestId,omitempty"`
	JobID      string             `json:"jobId,omitempty"`
	Reason     string             `json:"reason,omitempty"` // why it was requested
	Algorithm  string             `json:"algorithm,omitempty"`
	Pool       string             `json:"pool,omitempty"`
	Worker     string             `json:"worker,omitempty"`
	Attempt    int32              `json:"attempt,omitempty"`
	Error      string             `json:"error,omitempty"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	DurationMs int64              `json:"durationMs,omitempty"`
	Updated    time.Time          `json:"updated"`
}

// Evaluation is the evaluator's latest verdict on a candidate.
type Evaluation struct {
	Verdict          string             `json:"verdict"`
	Reason           string             `json:"reason,omitempty"`
	ChampionVersion  int64              `json:"championVersion,omitempty"`
	CandidateMetrics map[string]float64 `json:"candidateMetrics,omitempty"`
	ChampionMetrics  map[string]float64 `json:"championMetrics,omitempty"`
	Gates            []Gate             `json:"gates,omitempty"`
	Updated          time.Time          `json:"updated"`
}

// Gate is one promotion gate's outcome.
type Gate struct {
	Metric  string `json:"metric"`
	Passed  bool   `json:"passed"`
	Message string `json:"message"`
}

// Drift is the monitor's latest drift measurement of a pipeline.
type Drift struct {
	BatchID        string  `json:"batchId"`
	Method         string  `json:"method"`
	ShareDrifted   float64 `json:"shareDrifted"`
	ShareThreshold float64 `json:"shareThreshold"`
	Drifted        bool    `json:"drifted"`
	// Rows is the batch's size; under MinRows it is measured but not
	// judged (Drifted stays false).
	Rows    int64 `json:"rows"`
	MinRows int64 `json:"minRows,omitempty"`
	// ReferenceVersion is the champion whose training window the batch was
	// compared with; 0: none yet, nothing compared.
	ReferenceVersion int64          `json:"referenceVersion"`
	Features         []FeatureDrift `json:"features"`
	Updated          time.Time      `json:"updated"`
}

// FeatureDrift is one feature's drift score.
type FeatureDrift struct {
	Feature   string  `json:"feature"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Drifted   bool    `json:"drifted"`
}

// Degraded is a fall in live accuracy (performance.degraded).
type Degraded struct {
	ModelVersion int64     `json:"modelVersion"`
	Metric       string    `json:"metric"`
	Baseline     float64   `json:"baseline"`
	Live         float64   `json:"live"`
	Drop         float64   `json:"drop"`
	MaxDrop      float64   `json:"maxDrop"`
	LabelledRows int64     `json:"labelledRows"`
	Updated      time.Time `json:"updated"`
}

// Update is what one event changed: the entry for the feed and its
// pipeline's state after it.
type Update struct {
	Entry    Entry    `json:"entry"`
	Pipeline Pipeline `json:"pipeline"`
}

// Board folds lifecycle events into each pipeline's state and keeps the
// latest entries for the feed. Its subscribers get every update as it
// happens. It is safe for concurrent use.
type Board struct {
	mu        sync.Mutex
	pipelines map[string]*Pipeline
	recent    []Entry // a ring of the latest entries, oldest at start
	start     int
	keep      int
	lastSeq   uint64
	count     int64
	subs      map[*Subscription]struct{}
	closed    bool
}

// NewBoard returns an empty board that keeps the latest keep entries.
func NewBoard(keep int) *Board {
	return &Board{pipelines: map[string]*Pipeline{}, keep: max(keep, 1), subs: map[*Subscription]struct{}{}}
}

// Add folds one event into the board: e is its entry, payload its decoded
// data (nil when the payload could not be decoded: the entry still shows).
// It fills the entry's summary and tone, and returns the update it sent to
// subscribers.
func (b *Board) Add(e Entry, payload proto.Message) Update {
	e.Summary, e.Tone = describe(e.Type, payload)
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pipelines[e.Pipeline]
	if p == nil {
		p = &Pipeline{Name: e.Pipeline}
		b.pipelines[e.Pipeline] = p
	}
	p.Events++
	b.count++
	if e.Time.After(p.LastEvent) {
		p.LastEvent = e.Time
	}
	fold(p, e, payload)
	b.push(e)
	u := Update{Entry: e, Pipeline: p.clone()}
	for s := range b.subs {
		select {
		case s.c <- u:
		default:
			// A browser that cannot keep up is let go rather than
			// holding up the board; it reconnects and resumes from
			// the last entry it saw.
			b.drop(s)
		}
	}
	return u
}

func (b *Board) push(e Entry) {
	b.lastSeq = max(b.lastSeq, e.Seq)
	if len(b.recent) < b.keep {
		b.recent = append(b.recent, e)
		return
	}
	b.recent[b.start] = e
	b.start = (b.start + 1) % b.keep
}

// Snapshot is the board's state at one moment.
type Snapshot struct {
	// LastSeq is the sequence of the latest event folded.
	LastSeq uint64 `json:"lastSeq"`
	// Events counts the events folded.
	Events int64 `json:"events"`
	// Pipelines are every pipeline's state, by name.
	Pipelines []Pipeline `json:"pipelines"`
}

// Snapshot returns the board's state, taken at once.
func (b *Board) Snapshot() Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snapshot()
}

func (b *Board) snapshot() Snapshot {
	s := Snapshot{LastSeq: b.lastSeq, Events: b.count, Pipelines: make([]Pipeline, 0, len(b.pipelines))}
	for _, name := range slices.Sorted(maps.Keys(b.pipelines)) {
		s.Pipelines = append(s.Pipelines, b.pipelines[name].clone())
	}
	return s
}

// Query selects feed entries; its zero value selects all.
type Query struct {
	Pipeline      string
	Type          string
	CorrelationID string
	// After keeps entries whose Seq is greater.
	After uint64
	// Limit keeps the latest Limit entries; 0 keeps all.
	Limit int
}

func (q Query) match(e Entry) bool {
	return e.Seq > q.After &&
		(q.Pipeline == "" || e.Pipeline == q.Pipeline) &&
		(q.Type == "" || e.Type == q.Type) &&
		(q.CorrelationID == "" || e.CorrelationID == q.CorrelationID)
}

// Entries returns the kept entries that q selects, oldest first, and the
// sequence of the latest event the board has folded.
func (b *Board) Entries(q Query) ([]Entry, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entries(q), b.lastSeq
}

func (b *Board) entries(q Query) []Entry {
	var out []Entry
	for i := range b.recent {
		e := b.recent[(b.start+i)%len(b.recent)]
		if q.match(e) {
			out = append(out, e)
		}
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}

// Subscription is a live feed of the board's updates, and the state it
// starts from.
type Subscription struct {
	c chan Update
	// Snapshot is the board as it was when the feed started: the updates
	// on C follow on from it.
	Snapshot
	// Missed are kept entries to show before what arrives on C: those
	// after the sequence the subscriber resumes from, or, with Reset, the
	// latest ones.
	Missed []Entry
	// Reset is true when the subscriber is new, or the board no longer
	// keeps every entry after the sequence it resumes from: it should
	// forget the entries it shows and take Missed instead.
	Reset bool
}

// C delivers the updates; it is closed when the subscriber falls behind or
// the board closes.
func (s *Subscription) C() <-chan Update { return s.c }

// Subscribe starts a live feed. A subscriber that resumes gives the
// sequence of the last entry it has (after > 0); a new one gives 0 and gets
// the latest initial entries. buffer bounds how far it may fall behind
// before it is dropped. Cancel it with Unsubscribe.
func (b *Board) Subscribe(after uint64, initial, buffer int) *Subscription {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &Subscription{c: make(chan Update, max(buffer, 1)), Snapshot: b.snapshot()}
	// Sequences have gaps (messages that are no event), so entries are
	// lost only when the ring has wrapped and its oldest entry is past
	// the one after `after`.
	wrapped := len(b.recent) == b.keep && b.recent[b.start].Seq > after+1
	if after == 0 || after > b.lastSeq || wrapped {
		s.Reset = true
		s.Missed = b.entries(Query{Limit: max(initial, 0)})
		if initial == 0 {
			s.Missed = nil
		}
	} else {
		s.Missed = b.entries(Query{After: after})
	}
	if b.closed {
		close(s.c)
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// Unsubscribe ends a live feed; it is safe to call more than once.
func (b *Board) Unsubscribe(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drop(s)
}

func (b *Board) drop(s *Subscription) {
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// Subscribers returns how many live feeds are open.
func (b *Board) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Close ends every live feed, so that open HTTP streams finish and a server
// can shut down; later subscriptions are closed at once.
func (b *Board) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		b.drop(s)
	}
}

// Count returns how many events the board has folded.
func (b *Board) Count() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}

// LastSeq returns the sequence of the latest event folded.
func (b *Board) LastSeq() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastSeq
}

func (p *Pipeline) clone() Pipeline {
	c := *p
	// The pointed-to states are replaced, never changed in place, by fold,
	// so a shallow copy is a consistent snapshot.
	return c
}

// fold applies one event to its pipeline's state. Each state is replaced
// by a new value rather than changed in place (see clone).
func fold(p *Pipeline, e Entry, payload proto.Message) {
	switch m := payload.(type) {
	case *gyrev1.PipelineApplied:
		p.Revision = max(p.Revision, m.GetRevision())
	case *gyrev1.DataBatchReceived:
		b := p.Batches
		if !m.GetDuplicate() {
			b.Received++
		}
		b.LastBatchID, b.Updated = m.GetBatchId(), e.Time
		p.Batches = b
	case *gyrev1.DataBatchValidated:
		b := p.Batches
		b.Validated++
		b.LastBatchID, b.Updated = m.GetBatchId(), e.Time
		p.Batches = b
	case *gyrev1.DataBatchRejected:
		b := p.Batches
		b.Rejected++
		b.LastBatchID, b.Updated = m.GetBatchId(), e.Time
		b.LastRejected = rejectReason(m)
		p.Batches = b
	case *gyrev1.FeaturesMaterialized:
		b := p.Batches
		b.Materialized++
		p.Batches = b
	case *gyrev1.LabelReceived:
		p.Labelled += int64(len(m.GetLabels()))
	case *gyrev1.TrainingRequested:
		p.Training = &Training{State: "requested", RequestID: m.GetRequestId(), Reason: m.GetReason(),
			Algorithm: m.GetAlgorithm(), Pool: m.GetPool(), Updated: e.Time}
	case *gyrev1.TrainingStarted:
		p.Training = &Training{State: "started", RequestID: m.GetRequestId(), JobID: m.GetJobId(),
			Reason: sameRequestReason(p.Training, m.GetRequestId()), Algorithm: m.GetAlgorithm(),
			Pool: m.GetPool(), Worker: m.GetWorker(), Attempt: m.GetAttempt(), Updated: e.Time}
	case *gyrev1.TrainingCompleted:
		p.Training = &Training{State: "completed", RequestID: m.GetRequestId(), JobID: m.GetJobId(),
			Reason: sameRequestReason(p.Training, m.GetRequestId()), Algorithm: m.GetAlgorithm(),
			Pool: m.GetPool(), Worker: m.GetWorker(), Attempt: m.GetAttempt(), Metrics: m.GetMetrics(),
			DurationMs: m.GetDurationMs(), Updated: e.Time}
	case *gyrev1.TrainingFailed:
		p.Training = &Training{State: "failed", RequestID: m.GetRequestId(), JobID: m.GetJobId(),
			Reason: sameRequestReason(p.Training, m.GetRequestId()), Algorithm: m.GetAlgorithm(),
			Pool: m.GetPool(), Worker: m.GetWorker(), Attempt: m.GetAttempt(), Error: m.GetError(),
			DurationMs: m.GetDurationMs(), Updated: e.Time}
	case *gyrev1.ModelEvaluated:
		ev := &Evaluation{Verdict: m.GetVerdict(), Reason: m.GetReason(), ChampionVersion: m.GetChampionVersion(),
			CandidateMetrics: m.GetCandidateMetrics(), ChampionMetrics: m.GetChampionMetrics(), Updated: e.Time}
		for _, g := range m.GetGates() {
			ev.Gates = append(ev.Gates, Gate{Metric: g.GetMetric(), Passed: g.GetPassed(), Message: g.GetMessage()})
		}
		p.Evaluation = ev
	case *gyrev1.ModelPromoted:
		p.Champion = &Model{Version: m.GetModelVersion(), Algorithm: m.GetAlgorithm(), Metrics: m.GetMetrics(),
			Reason: m.GetReason(), Since: e.Time}
	case *gyrev1.DeploymentStarted:
		p.Rollout = &Rollout{DeploymentID: m.GetDeploymentId(), Strategy: m.GetStrategy(), Candidate: m.GetModelVersion(),
			Previous: m.GetPreviousVersion(), Steps: m.GetSteps(), State: RolloutInProgress, Reason: m.GetReason(), Updated: e.Time}
	case *gyrev1.DeploymentProgressed:
		r := &Rollout{DeploymentID: m.GetDeploymentId(), Strategy: m.GetStrategy(), Candidate: m.GetModelVersion(),
			Previous: m.GetPreviousVersion(), Step: m.GetStep(), TrafficPercent: m.GetTrafficPercent(),
			State: RolloutInProgress, Figures: m.GetFigures(), Updated: e.Time}
		if p.Rollout != nil && p.Rollout.DeploymentID == r.DeploymentID {
			r.Steps, r.Reason = p.Rollout.Steps, p.Rollout.Reason
		}
		p.Rollout = r
	case *gyrev1.DeploymentCompleted:
		r := &Rollout{DeploymentID: m.GetDeploymentId(), Strategy: m.GetStrategy(), Candidate: m.GetModelVersion(),
			Previous: m.GetPreviousVersion(), TrafficPercent: m.GetTrafficPercent(), State: RolloutCompleted,
			Figures: m.GetFigures(), Updated: e.Time}
		if p.Rollout != nil && p.Rollout.DeploymentID == r.DeploymentID {
			r.Steps, r.Step, r.Reason = p.Rollout.Steps, p.Rollout.Step, p.Rollout.Reason
		}
		p.Rollout = r
		p.Serving = &Model{Version: m.GetModelVersion(), Metrics: m.GetFigures(), Since: e.Time}
		if p.Champion != nil && p.Champion.Version == m.GetModelVersion() {
			p.Serving.Algorithm = p.Champion.Algorithm
		}
	case *gyrev1.DeploymentRolledBack:
		r := &Rollout{DeploymentID: m.GetDeploymentId(), Strategy: m.GetStrategy(), Candidate: m.GetModelVersion(),
			Previous: m.GetPreviousVersion(), Step: m.GetStep(), TrafficPercent: m.GetTrafficPercent(),
			State: RolloutRolledBack, Reason: m.GetReason(), Figures: m.GetFigures(), Updated: e.Time}
		if p.Rollout != nil && p.Rollout.DeploymentID == r.DeploymentID {
			r.Steps = p.Rollout.Steps
		}
		p.Rollout = r
	case *gyrev1.DriftMeasured:
		if m.GetReferenceModelVersion() == 0 && p.Drift != nil {
			break // compared nothing: the last comparison still stands
		}
		d := &Drift{BatchID: m.GetBatchId(), Method: m.GetMethod(), ShareDrifted: m.GetShareDrifted(),
			ShareThreshold: m.GetShareThreshold(), Drifted: m.GetDrifted(), Rows: m.GetRows(), MinRows: m.GetMinRows(),
			ReferenceVersion: m.GetReferenceModelVersion(), Updated: e.Time}
		for _, f := range m.GetFeatures() {
			d.Features = append(d.Features, FeatureDrift{Feature: f.GetFeature(), Score: f.GetScore(),
				Threshold: f.GetThreshold(), Drifted: f.GetDrifted()})
		}
		p.Drift = d
	case *gyrev1.PerformanceDegraded:
		p.Degraded = &Degraded{ModelVersion: m.GetModelVersion(), Metric: m.GetMetric(), Baseline: m.GetBaselineAccuracy(),
			Live: m.GetLiveAccuracy(), Drop: m.GetDrop(), MaxDrop: m.GetMaxDrop(), LabelledRows: m.GetLabelledRows(), Updated: e.Time}
	}
}

// sameRequestReason carries a training request's reason to the events of
// its job, which do not repeat it.
func sameRequestReason(t *Training, requestID string) string {
	if t != nil && t.RequestID == requestID {
		return t.Reason
	}
	return ""
}
