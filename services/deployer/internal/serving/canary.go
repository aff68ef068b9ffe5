package serving

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// Rollout counts one step of a rollout — a canary step, a shadow run, the
// verification window after a blue-green switch — for the candidate and
// the champion: requests, failures, latency, and a sample of their
// predictions; shared by every step, the labelled predictions of each.
type Rollout struct {
	DeploymentID string
	// Step is the 1-based index of the step in force; Percent the share of
	// routed traffic the candidate answers (0 for a shadow).
	Step    int
	Percent float64
	// StepRequests candidate requests end the step.
	StepRequests int
	Started      time.Time

	// side[0] is the champion's, side[1] the candidate's (canary, shadow).
	side   [2]side
	labels *labelTracker
	// skipped counts the requests a mirror could not score because too
	// many copies were being scored already.
	skipped atomic.Int64
	// due is called once, when the candidate has served StepRequests.
	due     func()
	dueOnce sync.Once
	// waitingSince is when the step, due, began to wait for labels
	// (Policy.LabelTimeout); zero while it has not. Under the deployer's
	// lock.
	waitingSince time.Time
}

// side is what a rollout counts of one variant.
type side struct {
	requests, errors, latencyNs atomic.Int64
	latency                     latencyHist
	predictions                 predictionSample
}

func newRollout(deploymentID string, step int, percent float64, stepRequests int, labels *labelTracker, due func()) *Rollout {
	return &Rollout{
		DeploymentID: deploymentID, Step: step, Percent: percent, StepRequests: max(stepRequests, 1),
		Started: time.Now(), labels: labels, due: due,
	}
}

// at returns the rollout at another step with fresh counts; the labels of
// the deployment's predictions carry over.
func (r *Rollout) at(step int, percent float64) *Rollout {
	return newRollout(r.DeploymentID, step, percent, r.StepRequests, r.labels, r.due)
}

// sideOf is 1 for the candidate's variants, 0 for the champion.
func sideOf(v Variant) int {
	if v == Champion {
		return 0
	}
	return 1
}

// record counts one request of a variant; the predictions it made (nil
// when it failed) are sampled for the drift check and remembered under
// their ids so that their labels can be counted.
func (r *Rollout) record(v Variant, failed bool, latency time.Duration, ids []string, p *bundle.Predictions) {
	k := sideOf(v)
	s := &r.side[k]
	n := s.requests.Add(1)
	if failed {
		s.errors.Add(1)
	}
	s.latencyNs.Add(int64(latency))
	s.latency.observe(latency)
	if p != nil {
		s.predictions.add(p)
		if len(ids) > 0 {
			r.labels.track(k, ids, p.Labels)
		}
	}
	if k == 1 && n >= int64(r.StepRequests) {
		r.dueOnce.Do(func() {
			if r.due != nil {
				r.due()
			}
		})
	}
}

// Due reports whether the candidate has served the step's requests.
func (r *Rollout) Due() bool { return r.side[1].requests.Load() >= int64(r.StepRequests) }

// Status is a snapshot of a rollout, for judging and for operators.
type Status struct {
	Step         int     `json:"step"`
	Percent      float64 `json:"trafficPercent"`
	StepRequests int     `json:"stepRequests"`
	// Requests, Errors and latency of the candidate in the step.
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	LatencyMs float64 `json:"meanLatencyMs"`
	P99Ms     float64 `json:"p99LatencyMs"`
	// Of the champion in the step.
	ChampionRequests int64   `json:"championRequests"`
	ChampionErrors   int64   `json:"championErrors"`
	ChampionP99Ms    float64 `json:"championP99LatencyMs"`
	// Labelled predictions and the correct ones, over the whole rollout.
	Labelled         int64 `json:"labelled"`
	Correct          int64 `json:"correct"`
	ChampionLabelled int64 `json:"championLabelled"`
	ChampionCorrect  int64 `json:"championCorrect"`
	// Drift is the PSI of the candidate's predictions against the
	// champion's in the step, over DriftRows and ChampionDriftRows sampled
	// predictions; DriftOK is false while either has fewer than
	// MinDriftRows.
	Drift             float64 `json:"predictionDrift"`
	DriftOK           bool    `json:"predictionDriftMeasured"`
	DriftRows         int64   `json:"driftRows"`
	ChampionDriftRows int64   `json:"championDriftRows"`
	// Skipped counts requests a mirror did not score (too many in flight).
	Skipped int64 `json:"mirrorSkipped"`
}

// MinDriftRows is how many sampled predictions each variant needs before
// the PSI between them is measured: below it the noise of a small sample
// alone reads as drift.
const MinDriftRows = 30

// Status returns the counts so far.
func (r *Rollout) Status() Status {
	c, ch := &r.side[1], &r.side[0]
	s := Status{
		Step: r.Step, Percent: r.Percent, StepRequests: r.StepRequests,
		Requests: c.requests.Load(), Errors: c.errors.Load(), P99Ms: c.latency.quantileMs(0.99),
		ChampionRequests: ch.requests.Load(), ChampionErrors: ch.errors.Load(), ChampionP99Ms: ch.latency.quantileMs(0.99),
		Skipped: r.skipped.Load(),
	}
	if s.Requests > 0 {
		s.LatencyMs = float64(c.latencyNs.Load()) / float64(s.Requests) / 1e6
	}
	s.Labelled, s.Correct, s.ChampionLabelled, s.ChampionCorrect = r.labels.counts()
	s.Drift, s.DriftRows, s.ChampionDriftRows, s.DriftOK = predictionDrift(&ch.predictions, &c.predictions)
	return s
}

// Policy is how a candidate is judged (spec.deployment.rollback); a limit
// of 0 is not checked, except MaxErrorRate.
type Policy struct {
	// MaxErrorRate bounds the candidate's share of failed requests.
	MaxErrorRate float64
	// MaxAccuracyDrop bounds how far the candidate's live accuracy may
	// fall below the champion's.
	MaxAccuracyDrop float64
	// MaxLatencyP99Ms is the candidate's latency SLO.
	MaxLatencyP99Ms float64
	// MaxPredictionDrift bounds the PSI between the candidate's and the
	// champion's predictions.
	MaxPredictionDrift float64
	// MinLabels is how many labelled predictions a variant needs before
	// its live accuracy is trusted.
	MinLabels int
	// LabelTimeout is how long a due step waits for MinLabels labelled
	// candidate predictions; 0: it does not wait.
	LabelTimeout time.Duration
}

// PolicyOf returns the policy of a pipeline's rollback limits.
func PolicyOf(rb pipeline.Rollback) Policy {
	return Policy{
		MaxErrorRate: rb.ErrorRateLimit(), MaxAccuracyDrop: rb.AccuracyDropLimit(),
		MaxLatencyP99Ms: rb.MaxLatencyP99Ms, MaxPredictionDrift: rb.MaxPredictionDrift,
		MinLabels:    rb.MinLabels,
		LabelTimeout: time.Duration(rb.LabelTimeoutSeconds * float64(time.Second)),
	}
}

// Verdict is the outcome of judging a step.
type Verdict struct {
	Pass bool
	// Reason names every limit broken, with the figures that broke it.
	Reason  string
	Figures map[string]float64
}

// tolerance keeps a figure of exactly its bound (0.9 - 0.85 as a float)
// within it.
const tolerance = 1e-9

// Judge decides whether a step passed. The candidate fails when
//   - its error rate is above MaxErrorRate;
//   - its p99 latency is above MaxLatencyP99Ms (when set);
//   - the PSI of its predictions against the champion's is above
//     MaxPredictionDrift (when set, and both have MinDriftRows);
//   - once MinLabels of its predictions are labelled, its live accuracy is
//     below the champion's by more than MaxAccuracyDrop. The champion's
//     accuracy is its live accuracy over the same rollout when it has
//     MinLabels labels, else its evaluation accuracy; with neither,
//     accuracy is not judged.
//
// The figures hold every measure, whichever decided.
func Judge(p Policy, s Status, championAccuracy *float64) Verdict {
	f := map[string]float64{
		"requests": float64(s.Requests), "errors": float64(s.Errors),
		"trafficPercent": s.Percent, "meanLatencyMs": s.LatencyMs, "p99LatencyMs": s.P99Ms,
		"championRequests": float64(s.ChampionRequests), "championErrors": float64(s.ChampionErrors),
		"championP99LatencyMs": s.ChampionP99Ms,
		"labelled":             float64(s.Labelled), "championLabelled": float64(s.ChampionLabelled),
	}
	if s.Skipped > 0 {
		f["mirrorSkipped"] = float64(s.Skipped)
	}
	var broken []string
	errorRate := 0.0
	if s.Requests > 0 {
		errorRate = float64(s.Errors) / float64(s.Requests)
	}
	f["errorRate"] = errorRate
	if errorRate > p.MaxErrorRate+tolerance {
		broken = append(broken, fmt.Sprintf("errorRate %.4g > maxErrorRate %.4g (%d of %d requests failed)",
			errorRate, p.MaxErrorRate, s.Errors, s.Requests))
	}
	if p.MaxLatencyP99Ms > 0 && s.Requests > 0 && s.P99Ms > p.MaxLatencyP99Ms+tolerance {
		broken = append(broken, fmt.Sprintf("p99LatencyMs %.4g > maxLatencyP99Ms %.4g (over %d requests; the champion's p99 %.4g ms)",
			s.P99Ms, p.MaxLatencyP99Ms, s.Requests, s.ChampionP99Ms))
	}
	if s.DriftOK {
		f["predictionDrift"] = s.Drift
		f["driftRows"], f["championDriftRows"] = float64(s.DriftRows), float64(s.ChampionDriftRows)
		if p.MaxPredictionDrift > 0 && s.Drift > p.MaxPredictionDrift+tolerance {
			broken = append(broken, fmt.Sprintf("predictionDrift %.4g > maxPredictionDrift %.4g (PSI of %d candidate against %d champion predictions)",
				s.Drift, p.MaxPredictionDrift, s.DriftRows, s.ChampionDriftRows))
		}
	}
	minLabels := int64(max(p.MinLabels, 1))
	if s.Labelled >= minLabels {
		acc := float64(s.Correct) / float64(s.Labelled)
		f["accuracy"] = acc
		base, ok := 0.0, true
		switch {
		case s.ChampionLabelled >= minLabels:
			base = float64(s.ChampionCorrect) / float64(s.ChampionLabelled)
			f["championAccuracy"] = base
		case championAccuracy != nil:
			base = *championAccuracy
			f["baselineAccuracy"] = base
		default:
			ok = false
		}
		if drop := base - acc; ok && drop > p.MaxAccuracyDrop+tolerance {
			broken = append(broken, fmt.Sprintf("accuracy %.4g is %.4g below the champion's %.4g > maxAccuracyDrop %.4g (%d labelled predictions)",
				acc, drop, base, p.MaxAccuracyDrop, s.Labelled))
		}
	}
	return Verdict{Pass: len(broken) == 0, Reason: strings.Join(broken, "; "), Figures: f}
}

// latencyHist is a lock-free log-linear histogram of durations in the
// manner of HdrHistogram: 32 buckets per power of two of microseconds, so
// a quantile read from it is within 1/32 (about 3 %) of the true one.
type latencyHist struct {
	counts [latencyBuckets]atomic.Int64
	n      atomic.Int64
}

const (
	// latencySub is the number of buckets per power of two.
	latencySubBits = 5
	latencySub     = 1 << latencySubBits
	// latencyBuckets covers up to 2^36 µs (19 hours); slower is counted in
	// the last bucket.
	latencyBuckets = latencySub + (36-latencySubBits)*latencySub
)

// latencyBucket returns the bucket of a duration of us microseconds.
func latencyBucket(us uint64) int {
	if us < latencySub {
		return int(us)
	}
	e := bits.Len64(us) - 1 // us is in [2^e, 2^(e+1))
	i := latencySub + (e-latencySubBits)*latencySub + int((us>>(e-latencySubBits))&(latencySub-1))
	return min(i, latencyBuckets-1)
}

// latencyUpper returns the upper bound (exclusive) of a bucket, in µs.
func latencyUpper(i int) float64 {
	if i < latencySub {
		return float64(i + 1)
	}
	e := (i-latencySub)/latencySub + latencySubBits
	sub := (i - latencySub) % latencySub
	width := uint64(1) << (e - latencySubBits)
	return float64((uint64(latencySub)+uint64(sub))*width + width)
}

func (h *latencyHist) observe(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.counts[latencyBucket(us)].Add(1)
	h.n.Add(1)
}

// quantileMs returns the q-quantile in milliseconds — the upper bound of
// the bucket it falls in, so never below the true value by more than the
// microsecond resolution — or 0 when nothing was observed.
func (h *latencyHist) quantileMs(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return latencyUpper(i) / 1000
		}
	}
	// Counts still arriving: the last bucket with any.
	for i := len(h.counts) - 1; i >= 0; i-- {
		if h.counts[i].Load() > 0 {
			return latencyUpper(i) / 1000
		}
	}
	return 0
}

// predictionSample is a bounded uniform sample (reservoir) of one
// variant's predictions: class labels for a classifier, values for a
// regressor.
type predictionSample struct {
	mu         sync.Mutex
	n          int64
	regression bool
	labels     []string
	values     []float64
}

// predictionSampleSize bounds each sample.
const predictionSampleSize = 4096

func (s *predictionSample) add(p *bundle.Predictions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.regression = p.Task == ml.Regression
	for i := range p.Labels {
		s.n++
		j := int(s.n - 1)
		if j >= predictionSampleSize {
			// Algorithm R: the row replaces a kept one with probability
			// size/n, so that every row seen is kept alike.
			j = int(rand.Int64N(s.n))
			if j >= predictionSampleSize {
				continue
			}
		}
		if s.regression {
			if j == len(s.values) {
				s.values = append(s.values, p.Values[i])
			} else {
				s.values[j] = p.Values[i]
			}
			continue
		}
		if j == len(s.labels) {
			s.labels = append(s.labels, p.Labels[i])
		} else {
			s.labels[j] = p.Labels[i]
		}
	}
}

// snapshot returns a copy of the sample.
func (s *predictionSample) snapshot() (labels []string, values []float64, regression bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.labels...), append([]float64(nil), s.values...), s.regression
}

// predictionDrift is the PSI of the candidate's sampled predictions against
// the champion's: over the predicted classes for a classifier, over the
// champion's decile bins of the predicted values for a regressor.
func predictionDrift(champion, candidate *predictionSample) (psi float64, rows, champRows int64, ok bool) {
	cl, cv, creg := candidate.snapshot()
	bl, bv, breg := champion.snapshot()
	rows, champRows = int64(max(len(cl), len(cv))), int64(max(len(bl), len(bv)))
	if rows < MinDriftRows || champRows < MinDriftRows || creg != breg {
		return 0, rows, champRows, false
	}
	var ref drift.Reference
	var cur drift.Sample
	var err error
	if breg {
		ref, err = drift.NewReference(bv)
		cur.Values = cv
	} else {
		ref, err = drift.NewCategoricalReference(bl)
		cur.Categories = cl
	}
	if err != nil {
		return 0, rows, champRows, false
	}
	score, err := drift.MeasureSample(drift.PSI, ref, cur)
	if err != nil {
		return 0, rows, champRows, false
	}
	return score.Value, rows, champRows, true
}

// labelTracker joins a rollout's predictions with their labels. A
// prediction id may carry two outputs — the answer and a mirror's score of
// the same row — and each counts once, for its variant, however often the
// label comes and whichever arrives first. It is bounded; the oldest
// predictions are forgotten first.
type labelTracker struct {
	limit int

	mu    sync.Mutex
	preds map[string]*tracked
	order []string
	head  int
	// labelled and correct per side: [0] champion, [1] candidate.
	labelled, correct [2]int64
}

type tracked struct {
	output   [2]string
	has      [2]bool
	label    string
	labelled bool
}

func newLabelTracker(limit int) *labelTracker {
	return &labelTracker{limit: max(limit, 1), preds: map[string]*tracked{}}
}

// track remembers the outputs side k gave for ids; a label already come
// for one of them counts at once.
func (t *labelTracker) track(k int, ids, outputs []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, id := range ids {
		p, ok := t.preds[id]
		if !ok {
			p = &tracked{}
			t.preds[id] = p
			t.remember(id)
		}
		if p.has[k] {
			continue
		}
		p.has[k], p.output[k] = true, outputs[i]
		if p.labelled {
			t.count(k, p)
		}
	}
}

// remember appends id to the bounded order, forgetting the oldest.
func (t *labelTracker) remember(id string) {
	if len(t.order) < t.limit {
		t.order = append(t.order, id)
		return
	}
	delete(t.preds, t.order[t.head])
	t.order[t.head] = id
	t.head = (t.head + 1) % len(t.order)
}

func (t *labelTracker) count(k int, p *tracked) {
	t.labelled[k]++
	if canonical(p.output[k]) == canonical(p.label) {
		t.correct[k]++
	}
}

// label counts the labels of tracked predictions and returns how many it
// took.
func (t *labelTracker) label(labels []Label) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range labels {
		p, ok := t.preds[l.PredictionID]
		if !ok || p.labelled {
			continue
		}
		p.labelled, p.label = true, l.Value
		for k := range p.has {
			if p.has[k] {
				t.count(k, p)
			}
		}
		n++
	}
	return n
}

func (t *labelTracker) counts() (labelled, correct, champLabelled, champCorrect int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.labelled[1], t.correct[1], t.labelled[0], t.correct[0]
}

// Label is the truth of one prediction.
type Label struct {
	PredictionID string
	Value        string
}

func canonical(v string) string {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return v
}
