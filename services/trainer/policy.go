package trainer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/gyrehq/gyre/libs/store"
)

// Reasons of a training request (TrainingRequested.reason).
const (
	// ReasonBootstrap: the pipeline has no champion yet and enough validated
	// batches (spec.model.bootstrapBatches).
	ReasonBootstrap = "bootstrap"
	// ReasonDrift: drift.detected.
	ReasonDrift = "drift"
	// ReasonPerformance: performance.degraded.
	ReasonPerformance = "performance"
	// ReasonManual: someone asked (training.requested from the CLI or any
	// client).
	ReasonManual = "manual"
)

// Trigger is something that may start a training run: the typed command
// every scheduler handler decodes its event into.
type Trigger struct {
	Pipeline string
	// Reason is one of the Reason constants.
	Reason string
	// EventID and EventType name the event that is the trigger; the request
	// carries them as its cause.
	EventID   string
	EventType string
	// RequestedBy is who asked: "trainer" for the scheduler's own triggers,
	// the requester's words for a manual one.
	RequestedBy string
	// BatchID is the validated batch a bootstrap trigger is about.
	BatchID string
}

// SchedulerState is the scheduler's state of one pipeline: the value of
// gyre-state key trainer.<pipeline>, written with compare-and-set so that
// concurrent triggers decide one at a time.
type SchedulerState struct {
	Pipeline string `json:"pipeline"`
	// InFlight is the request whose job has not finished; at most one per
	// pipeline.
	InFlight *InFlight `json:"inFlight,omitempty"`
	// LastRequestSeq is the newest validated batch (store.ValidatedBatch.Seq)
	// when the last request was made: the cooldown counts from it. The
	// log's newest Seq minus it is the number of batches validated since,
	// also when some were inserted before older entries (arrived earlier,
	// validated late): an insertion renumbers every entry after it, the
	// newest included.
	LastRequestSeq int64     `json:"lastRequestSeq,omitempty"`
	LastRequestID  string    `json:"lastRequestId,omitempty"`
	LastRequestAt  time.Time `json:"lastRequestAt,omitzero"`
	// Windows are the dataset versions (content hashes of training windows)
	// already requested, oldest first, the newest MaxWindows: a window is
	// never requested twice.
	Windows []string `json:"windows,omitempty"`
	// LastOutcome is how the last finished request ended.
	LastOutcome *Outcome `json:"lastOutcome,omitempty"`
	// LeaseToken is the fencing token of the newest tenure of the
	// scheduler's lease that wrote this state; a write by an older one is
	// refused (see Scheduler.Fenced).
	LeaseToken uint64 `json:"leaseToken,omitempty"`
}

// InFlight is a request being trained.
type InFlight struct {
	RequestID      string    `json:"requestId"`
	EventID        string    `json:"eventId"`
	DatasetVersion string    `json:"datasetVersion"`
	Reason         string    `json:"reason"`
	CauseEventID   string    `json:"causeEventId,omitempty"`
	BatchSeq       int64     `json:"batchSeq"`
	RequestedAt    time.Time `json:"requestedAt"`
	// Request is the TrainingRequested payload (protojson) as published: a
	// redelivery of its cause publishes it again, byte for byte, so a crash
	// between this write and the publish loses nothing.
	Request json.RawMessage `json:"request"`
}

// Outcome is how a request ended.
type Outcome struct {
	RequestID string    `json:"requestId"`
	Status    string    `json:"status"` // completed or failed
	Error     string    `json:"error,omitempty"`
	At        time.Time `json:"at"`
}

// MaxWindows bounds the windows remembered per pipeline.
const MaxWindows = 500

// StateKey returns the gyre-state key of a pipeline's scheduler state.
func StateKey(pipeline string) string { return "trainer." + pipeline }

// Policy is what the retrain policy decides with, besides the state.
type Policy struct {
	// Batches is the pipeline's validated-batch log, oldest first.
	Batches []store.ValidatedBatch
	// WindowBatches is spec.model.window.batches.
	WindowBatches int
	// BootstrapBatches is spec.model.bootstrapBatches.
	BootstrapBatches int
	// Cooldown is pipeline.RetrainCooldown(): validated batches between two
	// requests.
	Cooldown int
	// HasChampion says the registry has a champion for the pipeline.
	HasChampion bool
	// Now is the time of the decision; InFlightExpiry is how long a request
	// may stay in flight before it is presumed lost.
	Now            time.Time
	InFlightExpiry time.Duration
}

// Decision is the outcome of the policy for one trigger.
type Decision struct {
	// Request is true when a new request is to be made, on Window.
	Request bool
	// Republish is true when the trigger is the cause of the request in
	// flight (a redelivery): publish that request again.
	Republish bool
	// Window is the training window, oldest first; DatasetVersion its hash.
	Window         []store.ValidatedBatch
	DatasetVersion string
	// NewestSeq is the seq of the newest validated batch.
	NewestSeq int64
	// Why explains a decision not to request (and notes an expired request).
	Why string
}

// Decide applies the retrain policy to a trigger:
//
//   - a redelivered trigger of the request in flight republishes it;
//   - bootstrap needs no champion and at least BootstrapBatches batches;
//   - one request in flight per pipeline: a trigger meanwhile is dropped
//     (the job in flight answers the data it was given, and drift that
//     persists is detected again against the next champion); a request in
//     flight longer than InFlightExpiry is presumed lost and replaced;
//   - cooldown: fewer than Cooldown validated batches since the last request
//     drop an automatic trigger (a manual one is not subject to it);
//   - storms: a window already requested is never requested again, whatever
//     the trigger.
//
// Decide does not change st; the caller records a request (see Record).
func Decide(st *SchedulerState, t Trigger, p Policy) Decision {
	if st.InFlight != nil && t.EventID != "" && st.InFlight.CauseEventID == t.EventID {
		return Decision{Republish: true, Why: "redelivery of the cause of request " + st.InFlight.RequestID}
	}
	n := len(p.Batches)
	if t.Reason == ReasonBootstrap {
		if p.HasChampion {
			return Decision{Why: "the pipeline has a champion: no bootstrap"}
		}
		if n < p.BootstrapBatches {
			return Decision{Why: fmt.Sprintf("bootstrap waits for %d validated batches, %d so far", p.BootstrapBatches, n)}
		}
	}
	if n == 0 {
		return Decision{Why: "no validated batch to train on"}
	}
	d := Decision{NewestSeq: p.Batches[n-1].Seq}
	var note string
	if f := st.InFlight; f != nil {
		if p.InFlightExpiry <= 0 || p.Now.Sub(f.RequestedAt) < p.InFlightExpiry {
			d.Why = fmt.Sprintf("request %s (%s) is in flight: one job per pipeline", f.RequestID, f.Reason)
			return d
		}
		note = fmt.Sprintf("request %s in flight since %s presumed lost; ", f.RequestID, f.RequestedAt.Format(time.RFC3339))
	}
	if t.Reason != ReasonManual && st.LastRequestSeq > 0 && d.NewestSeq-st.LastRequestSeq < int64(p.Cooldown) {
		d.Why = note + fmt.Sprintf("cooldown: %d validated batch(es) since the last request, %d needed", d.NewestSeq-st.LastRequestSeq, p.Cooldown)
		return d
	}
	d.Window = Window(p.Batches, p.WindowBatches)
	d.DatasetVersion = DatasetVersion(d.Window)
	if slices.Contains(st.Windows, d.DatasetVersion) {
		d.Why = note + fmt.Sprintf("window %s (batches %s…%s) was already requested", d.DatasetVersion, d.Window[0].BatchID, d.Window[len(d.Window)-1].BatchID)
		d.Window, d.DatasetVersion = nil, ""
		return d
	}
	d.Request = true
	d.Why = note
	return d
}

// Window returns the training window of a validated-batch log: the newest
// size batches before the newest one, which is kept for evaluation. With a
// single batch, it is that batch (the evaluator then scores in-sample, and
// says so).
//
// The log is in arrival order. A batch validated late is inserted where it
// arrived, so a window cut after its insertion holds it in its place, and
// the window — its dataset version, a hash of the batches in order — is
// then a new one, which a trigger may request; a window requested before
// the insertion stays what it was. The newest batch, kept for evaluation,
// is the newest to arrive (the evaluator picks the same one: the newest of
// the log outside the window).
func Window(batches []store.ValidatedBatch, size int) []store.ValidatedBatch {
	n := len(batches)
	if n <= 1 {
		return slices.Clone(batches)
	}
	size = max(size, 1)
	return slices.Clone(batches[max(0, n-1-size) : n-1])
}

// DatasetVersion is the content hash of a window: its batch ids and their
// sha256, in order (32 hex digits).
func DatasetVersion(window []store.ValidatedBatch) string {
	h := sha256.New()
	for _, b := range window {
		fmt.Fprintf(h, "%s\x00%s\n", b.BatchID, b.Sha256)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Record notes a new request in the state: in flight, the cooldown's new
// origin, and its window.
func (st *SchedulerState) Record(f InFlight) {
	st.InFlight = &f
	st.LastRequestSeq = f.BatchSeq
	st.LastRequestID = f.RequestID
	st.LastRequestAt = f.RequestedAt
	st.Windows = append(st.Windows, f.DatasetVersion)
	if len(st.Windows) > MaxWindows {
		st.Windows = slices.Clone(st.Windows[len(st.Windows)-MaxWindows:])
	}
}

// Settle clears the request in flight when requestID is it, and records the
// outcome; it reports whether the state changed.
func (st *SchedulerState) Settle(o Outcome) bool {
	if st.InFlight == nil || st.InFlight.RequestID != o.RequestID {
		if st.LastOutcome != nil && st.LastOutcome.RequestID == o.RequestID {
			return false
		}
		// A request no longer in flight (presumed lost, then finished
		// after all): worth recording, nothing to clear.
		st.LastOutcome = &o
		return true
	}
	st.InFlight = nil
	st.LastOutcome = &o
	return true
}
