package monitoring

import (
	"context"
	"math"
	"strconv"
	"strings"
)

// JoinStore pairs logged predictions with their labels, shared by every
// replica of the monitor. Either side may come first: prediction.logged
// and label.received travel on different streams, are consumed by any
// replica in any order, and the deployer logs predictions asynchronously,
// so a label often arrives before its prediction.
//
// A pair is completed once across all replicas, by the event whose
// handling brought its second side, and belongs to that event for good: a
// redelivery of the event returns the same pairs again (its counting may
// have failed after the join), any other event gets nothing for it. A
// second prediction or label of an id keeps the first.
//
// Entries live as long as the store keeps them (gyre-joins: events.JoinTTL
// after their last write); a side whose other side never comes is
// forgotten then.
type JoinStore interface {
	// JoinPredictions records the predictions of event eventID, logged by
	// model version. Pairs are in the order of rows (one per id, its first
	// row), so that the live-accuracy window is the same on every replica.
	JoinPredictions(ctx context.Context, pipeline, eventID string, version int64, rows []Prediction) (Joined, error)
	// JoinLabels records the labels of event eventID; pairs are in the
	// order of labels, one per id (its first label).
	JoinLabels(ctx context.Context, pipeline, eventID string, labels []Label) (Joined, error)
}

// Joined is what joining one event's side did.
type Joined struct {
	// Pairs are the pairs this event completed.
	Pairs []Pair
	// Recorded is how many of the event's ids it recorded first (their
	// side came with this event, not before): for predictions, how many
	// it logged. The same on a redelivery.
	Recorded int
}

// Pair is a logged prediction with its label.
type Pair struct {
	PredictionID string
	// Version is the model version that made the prediction.
	Version int64
	Output  string
	Label   string
}

// Correct reports whether the prediction matched its label.
func (p Pair) Correct() bool { return sameLabel(p.Output, p.Label) }

// JoinEntry is the join's record of one prediction id (a gyre-joins value).
type JoinEntry struct {
	// ID is the prediction id (keys may hold it encoded).
	ID         string            `json:"id"`
	Prediction *JoinedPrediction `json:"prediction,omitempty"`
	Label      *JoinedLabel      `json:"label,omitempty"`
	// JoinedBy is the id of the event that completed the pair; empty
	// while a side is missing.
	JoinedBy string `json:"joinedBy,omitempty"`
}

// JoinedPrediction is the prediction side of an entry.
type JoinedPrediction struct {
	Version int64  `json:"version"`
	Output  string `json:"output"`
	// EventID is the prediction.logged that recorded it.
	EventID string `json:"eventId"`
}

// JoinedLabel is the label side of an entry.
type JoinedLabel struct {
	Value string `json:"value"`
	// EventID is the label.received that recorded it.
	EventID string `json:"eventId"`
}

// Step is the outcome of applying one side of an event to an entry.
type Step struct {
	// Pair is set when the event completed the pair (now or on an earlier
	// delivery).
	Pair *Pair
	// Recorded is true when the event recorded the entry's side (now or on
	// an earlier delivery).
	Recorded bool
	// Write is true when the entry changed and must be stored.
	Write bool
}

// AddPrediction applies a prediction of event eventID to the entry (the
// zero JoinEntry for a new id). The rules make every store agree: only the
// write that sets JoinedBy completes a pair, and a store writes with
// compare-and-set, so of two replicas racing for one pair one writes and
// the other, on its retry, finds JoinedBy taken.
func (e *JoinEntry) AddPrediction(eventID string, version int64, p Prediction) Step {
	if e.Prediction != nil {
		// Logged before (a redelivery, or a duplicate): the first stays.
		return Step{Pair: e.pairOf(eventID), Recorded: e.Prediction.EventID == eventID}
	}
	if e.JoinedBy != "" {
		return Step{} // cannot happen: joined means both sides are there
	}
	e.ID = p.ID
	e.Prediction = &JoinedPrediction{Version: version, Output: p.Output, EventID: eventID}
	if e.Label != nil {
		e.JoinedBy = eventID
	}
	return Step{Pair: e.pairOf(eventID), Recorded: true, Write: true}
}

// AddLabel applies a label of event eventID to the entry; see
// AddPrediction.
func (e *JoinEntry) AddLabel(eventID string, l Label) Step {
	if e.Label != nil {
		return Step{Pair: e.pairOf(eventID), Recorded: e.Label.EventID == eventID}
	}
	if e.JoinedBy != "" {
		return Step{}
	}
	e.ID = l.PredictionID
	e.Label = &JoinedLabel{Value: l.Value, EventID: eventID}
	if e.Prediction != nil {
		e.JoinedBy = eventID
	}
	return Step{Pair: e.pairOf(eventID), Recorded: true, Write: true}
}

// pairOf returns the entry's pair when eventID completed it.
func (e *JoinEntry) pairOf(eventID string) *Pair {
	if e.JoinedBy == "" || e.JoinedBy != eventID || e.Prediction == nil || e.Label == nil {
		return nil
	}
	return &Pair{PredictionID: e.ID, Version: e.Prediction.Version, Output: e.Prediction.Output, Label: e.Label.Value}
}

// Side is one id's side of an event, ready to apply to its entry: what a
// JoinStore's implementations iterate over.
type Side struct {
	// ID is the prediction id.
	ID string
	// Apply applies the side to the entry.
	Apply func(e *JoinEntry) Step
}

// PredictionSides returns the sides of a prediction.logged, one per
// prediction id (its first row), in the order of rows; rows without an id
// are skipped. A second row of one id in the same event must not be
// applied on its own: it would find the pair its first row completed
// "joined by this event" and return it twice.
func PredictionSides(eventID string, version int64, rows []Prediction) []Side {
	seen := make(map[string]bool, len(rows))
	out := make([]Side, 0, len(rows))
	for _, r := range rows {
		if r.ID == "" || seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		out = append(out, Side{ID: r.ID, Apply: func(e *JoinEntry) Step { return e.AddPrediction(eventID, version, r) }})
	}
	return out
}

// LabelSides returns the sides of a label.received, one per prediction id
// (its first label), in the order of labels; see PredictionSides.
func LabelSides(eventID string, labels []Label) []Side {
	seen := make(map[string]bool, len(labels))
	out := make([]Side, 0, len(labels))
	for _, l := range labels {
		if l.PredictionID == "" || seen[l.PredictionID] {
			continue
		}
		seen[l.PredictionID] = true
		out = append(out, Side{ID: l.PredictionID, Apply: func(e *JoinEntry) Step { return e.AddLabel(eventID, l) }})
	}
	return out
}

// Collect turns the steps of an event's sides, in their order, into what
// the event joined.
func Collect(steps []Step) Joined {
	var j Joined
	for _, s := range steps {
		if s.Recorded {
			j.Recorded++
		}
		if s.Pair != nil {
			j.Pairs = append(j.Pairs, *s.Pair)
		}
	}
	return j
}

// sameLabel compares a prediction's output with a label: text equality,
// with numbers compared as numbers ("1" and "1.0" are one class).
func sameLabel(output, label string) bool {
	return canonical(output) == canonical(label)
}

func canonical(v string) string {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return v
}
