package monitoring

import (
	"slices"
	"strconv"
	"time"

	"github.com/gyrehq/gyre/libs/drift"
)

// State is what the monitor keeps per pipeline, as JSON under
// monitor.<pipeline> in gyre-state, written with compare-and-set.
type State struct {
	// Reference is the champion's training-window statistics; nil until a
	// model is promoted.
	Reference *Reference `json:"reference,omitempty"`
	// Drift is the cooldown of drift.detected.
	Drift Cooldown `json:"drift"`
	// Performance is the cooldown of performance.degraded, with the last
	// emission so that a redelivery re-emits the same event.
	Performance PerformanceCooldown `json:"performance"`
	// Live holds the live-accuracy counters per model version (decimal key).
	Live map[string]*Live `json:"live,omitempty"`
	// Logged counts the predictions logged per model version (decimal
	// key), each prediction id once (its first prediction.logged), since
	// the version was first seen; performance.degraded reports the
	// champion's. Unlike Live it is not reset by a promotion: a version's
	// predictions are often logged (canary, shadow) before the monitor
	// follows its promotion.
	Logged map[string]int64 `json:"logged,omitempty"`
	// Applied lists the ids of the newest events whose labelled outcomes are
	// counted, so that an event applied twice (a redelivery after a lost
	// acknowledgement) is counted once.
	Applied []string `json:"applied,omitempty"`
}

// Reference is the drift reference of a champion: one drift.Reference per
// raw feature column, built from the batches of its training window.
type Reference struct {
	// ModelVersion is the champion it describes.
	ModelVersion int64 `json:"modelVersion"`
	// Generation is the registry generation that made it champion: the
	// monitor applies a newer one only.
	Generation int64 `json:"generation,omitempty"`
	// EventID is the model.promoted event it was built for.
	EventID string `json:"eventId"`
	// BaselineAccuracy is the champion's evaluation accuracy; nil when the
	// promotion carried none (a regressor), which turns the performance
	// check off.
	BaselineAccuracy *float64 `json:"baselineAccuracy,omitempty"`
	// BatchIDs are the window's batches the statistics come from; Missing
	// the window's batches that could not be read (no longer in the log,
	// object gone).
	BatchIDs []string `json:"batchIds,omitempty"`
	Missing  []string `json:"missing,omitempty"`
	// FeatureSetVersion is the champion's feature-set version.
	FeatureSetVersion string `json:"featureSetVersion,omitempty"`
	// Rows is the number of rows of the window.
	Rows int64 `json:"rows"`
	// Features maps a raw feature column to its reference.
	Features map[string]drift.Reference `json:"features,omitempty"`
	// Unmonitored maps a monitored column that has no reference to the
	// reason (known when the monitor built the reference itself); such
	// columns are reported as skipped on every batch.
	Unmonitored map[string]string `json:"unmonitored,omitempty"`
	// BuiltAt is when the reference was built.
	BuiltAt time.Time `json:"builtAt"`
}

// Cooldown remembers the last emission of a trigger, by position in the
// pipeline's validated-batch log.
type Cooldown struct {
	// Emitted is false until the first emission.
	Emitted bool `json:"emitted"`
	// Seq is the validated-batch log position of the last emission.
	Seq int64 `json:"seq,omitempty"`
	// BatchID and ModelVersion identify the last drift.detected (batch and
	// reference), so that a redelivery of that batch emits it again.
	BatchID      string `json:"batchId,omitempty"`
	ModelVersion int64  `json:"modelVersion,omitempty"`
	// Count is the number of emissions.
	Count int64 `json:"count,omitempty"`
}

// allows reports whether a trigger at log position seq may be emitted with
// a cooldown of cooldown batches.
func (c Cooldown) allows(seq int64, cooldown int) bool {
	return !c.Emitted || seq-c.Seq >= int64(cooldown)
}

// PerformanceCooldown is the cooldown of performance.degraded.
type PerformanceCooldown struct {
	Cooldown
	// Trigger is the id of the event whose labels caused the last emission.
	Trigger string `json:"trigger,omitempty"`
	// Last is the payload of the last emission.
	Last *Degradation `json:"last,omitempty"`
}

// Degradation is the content of one performance.degraded.
type Degradation struct {
	ModelVersion int64   `json:"modelVersion"`
	Baseline     float64 `json:"baseline"`
	Live         float64 `json:"live"`
	Drop         float64 `json:"drop"`
	MaxDrop      float64 `json:"maxDrop"`
	Labelled     int64   `json:"labelled"`
	Predictions  int64   `json:"predictions"`
}

// Live counts the labelled predictions of one model version.
type Live struct {
	// Labelled and Correct count every labelled prediction since the
	// version was promoted (or first seen).
	Labelled int64 `json:"labelled"`
	Correct  int64 `json:"correct"`
	// Window holds the newest outcomes, oldest first: '1' correct, '0' not.
	// A string keeps the KV value compact.
	Window string `json:"window,omitempty"`
}

// Accuracy returns the share of correct outcomes among the newest n of the
// window (all of it when it is shorter) and how many that is.
func (l *Live) Accuracy(n int) (float64, int) {
	w := l.Window
	if n < len(w) {
		w = w[len(w)-n:]
	}
	if len(w) == 0 {
		return 0, 0
	}
	correct := 0
	for i := 0; i < len(w); i++ {
		if w[i] == '1' {
			correct++
		}
	}
	return float64(correct) / float64(len(w)), len(w)
}

// Limits of the state, so that its KV value stays far below the server's
// message size.
const (
	// MaxWindow is the longest live-accuracy window kept.
	MaxWindow = 100_000
	// maxVersions is how many versions' live counters are kept.
	maxVersions = 4
	// maxApplied is how many applied event ids are remembered: a
	// redelivery comes within seconds (the consumers' AckWait), but every
	// replica applies events meanwhile, predictions and labels alike.
	maxApplied = 256
)

func versionKey(v int64) string { return strconv.FormatInt(v, 10) }

// live returns the counters of version v, creating them.
func (s *State) live(v int64) *Live {
	if s.Live == nil {
		s.Live = map[string]*Live{}
	}
	l := s.Live[versionKey(v)]
	if l == nil {
		l = &Live{}
		s.Live[versionKey(v)] = l
	}
	return l
}

// addLogged counts n more predictions logged by version v.
func (s *State) addLogged(v, n int64) {
	if s.Logged == nil {
		s.Logged = map[string]int64{}
	}
	s.Logged[versionKey(v)] += n
}

// loggedOf returns the predictions logged by version v.
func (s *State) loggedOf(v int64) int64 { return s.Logged[versionKey(v)] }

// pruneVersions keeps the counters of the champion and of the newest other
// versions, maxVersions in all.
func (s *State) pruneVersions() {
	champion := int64(-1)
	if s.Reference != nil {
		champion = s.Reference.ModelVersion
	}
	pruneVersionMap(s.Live, champion)
	pruneVersionMap(s.Logged, champion)
}

// pruneVersionMap keeps the entries (by decimal version) of the champion
// and of the newest other versions, maxVersions in all.
func pruneVersionMap[V any](m map[string]V, champion int64) {
	if len(m) <= maxVersions {
		return
	}
	var others []int64
	for k := range m {
		v, err := strconv.ParseInt(k, 10, 64)
		if err != nil {
			delete(m, k)
			continue
		}
		if v != champion {
			others = append(others, v)
		}
	}
	slices.Sort(others)
	keep := maxVersions
	if _, ok := m[versionKey(champion)]; ok {
		keep--
	}
	for len(others) > keep {
		delete(m, versionKey(others[0]))
		others = others[1:]
	}
}

// applied reports whether the outcomes of event id were counted already.
func (s *State) applied(id string) bool { return slices.Contains(s.Applied, id) }

// markApplied remembers id among the newest maxApplied applied events.
func (s *State) markApplied(id string) {
	s.Applied = append(s.Applied, id)
	if len(s.Applied) > maxApplied {
		s.Applied = s.Applied[len(s.Applied)-maxApplied:]
	}
}
