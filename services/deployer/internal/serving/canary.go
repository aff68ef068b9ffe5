package serving

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Rollout counts one step of a canary: the requests each variant served
// and failed, and — shared by every step of the rollout — the labelled
// predictions of each variant.
type Rollout struct {
	DeploymentID string
	// Step is the 1-based index of the step in force; Percent its share.
	Step    int
	Percent float64
	// StepRequests candidate requests end the step.
	StepRequests int
	Started      time.Time

	candidate, champion counters
	labels              *labelTracker
	// due is called once, when the candidate has served StepRequests.
	due     func()
	dueOnce sync.Once
}

type counters struct {
	requests, errors, latencyNs atomic.Int64
}

func newRollout(deploymentID string, step int, percent float64, stepRequests int, labels *labelTracker, due func()) *Rollout {
	return &Rollout{
		DeploymentID: deploymentID, Step: step, Percent: percent, StepRequests: max(stepRequests, 1),
		Started: time.Now(), labels: labels, due: due,
	}
}

// next returns the rollout's following step; labels carry over.
func (r *Rollout) next(percent float64) *Rollout {
	return newRollout(r.DeploymentID, r.Step+1, percent, r.StepRequests, r.labels, r.due)
}

// record counts one request of a variant; the predictions it made are
// remembered so that their labels can be counted.
func (r *Rollout) record(v Variant, failed bool, latency time.Duration, ids, outputs []string) {
	c := &r.champion
	if v == Canary {
		c = &r.candidate
	}
	n := c.requests.Add(1)
	if failed {
		c.errors.Add(1)
	}
	c.latencyNs.Add(int64(latency))
	if len(ids) > 0 {
		r.labels.track(v, ids, outputs)
	}
	if v == Canary && n >= int64(r.StepRequests) {
		r.dueOnce.Do(func() {
			if r.due != nil {
				r.due()
			}
		})
	}
}

// Due reports whether the candidate has served the step's requests.
func (r *Rollout) Due() bool { return r.candidate.requests.Load() >= int64(r.StepRequests) }

// Status is a snapshot of a rollout, for judging and for operators.
type Status struct {
	Step             int     `json:"step"`
	Percent          float64 `json:"trafficPercent"`
	StepRequests     int     `json:"stepRequests"`
	Requests         int64   `json:"requests"`
	Errors           int64   `json:"errors"`
	LatencyMs        float64 `json:"meanLatencyMs"`
	ChampionRequests int64   `json:"championRequests"`
	ChampionErrors   int64   `json:"championErrors"`
	Labelled         int64   `json:"labelled"`
	Correct          int64   `json:"correct"`
	ChampionLabelled int64   `json:"championLabelled"`
	ChampionCorrect  int64   `json:"championCorrect"`
}

// Status returns the counts so far.
func (r *Rollout) Status() Status {
	s := Status{
		Step: r.Step, Percent: r.Percent, StepRequests: r.StepRequests,
		Requests: r.candidate.requests.Load(), Errors: r.candidate.errors.Load(),
		ChampionRequests: r.champion.requests.Load(), ChampionErrors: r.champion.errors.Load(),
	}
	if s.Requests > 0 {
		s.LatencyMs = float64(r.candidate.latencyNs.Load()) / float64(s.Requests) / 1e6
	}
	s.Labelled, s.Correct, s.ChampionLabelled, s.ChampionCorrect = r.labels.counts()
	return s
}

// Policy is how a canary step is judged.
type Policy struct {
	// MaxErrorRate bounds the candidate's share of failed requests.
	MaxErrorRate float64
	// MaxAccuracyDrop bounds how far the candidate's live accuracy may
	// fall below the champion's.
	MaxAccuracyDrop float64
	// MinLabels is how many labelled predictions a variant needs before
	// its live accuracy is trusted.
	MinLabels int
}

// Verdict is the outcome of judging a step.
type Verdict struct {
	Pass    bool
	Reason  string
	Figures map[string]float64
}

// Judge decides whether a step passed: the candidate's error rate within
// bounds and — once labels for its predictions have come — its live
// accuracy not below the champion's by more than MaxAccuracyDrop. The
// champion's accuracy is its live accuracy over the same rollout when it
// has enough labels, else its evaluation accuracy; with neither, accuracy
// is not judged.
func Judge(p Policy, s Status, championAccuracy *float64) Verdict {
	f := map[string]float64{
		"requests": float64(s.Requests), "errors": float64(s.Errors),
		"trafficPercent": s.Percent, "meanLatencyMs": s.LatencyMs,
		"labelled": float64(s.Labelled), "championLabelled": float64(s.ChampionLabelled),
	}
	errorRate := 0.0
	if s.Requests > 0 {
		errorRate = float64(s.Errors) / float64(s.Requests)
	}
	f["errorRate"] = errorRate
	// A small tolerance keeps a rate of exactly the bound within it.
	if errorRate > p.MaxErrorRate+1e-9 {
		return Verdict{Reason: fmt.Sprintf("errorRate %.4g > maxErrorRate %.4g (%d of %d requests failed)",
			errorRate, p.MaxErrorRate, s.Errors, s.Requests), Figures: f}
	}
	minLabels := int64(max(p.MinLabels, 1))
	if s.Labelled < minLabels {
		return Verdict{Pass: true, Figures: f}
	}
	acc := float64(s.Correct) / float64(s.Labelled)
	f["accuracy"] = acc
	var base float64
	switch {
	case s.ChampionLabelled >= minLabels:
		base = float64(s.ChampionCorrect) / float64(s.ChampionLabelled)
		f["championAccuracy"] = base
	case championAccuracy != nil:
		base = *championAccuracy
		f["baselineAccuracy"] = base
	default:
		return Verdict{Pass: true, Figures: f}
	}
	// The tolerance keeps a drop of exactly the bound (0.9 - 0.85) within it.
	if drop := base - acc; drop > p.MaxAccuracyDrop+1e-9 {
		return Verdict{Reason: fmt.Sprintf("accuracy %.4g is %.4g below the champion's %.4g > maxAccuracyDrop %.4g (%d labelled predictions)",
			acc, drop, base, p.MaxAccuracyDrop, s.Labelled), Figures: f}
	}
	return Verdict{Pass: true, Figures: f}
}

// labelTracker joins a rollout's predictions with their labels: each
// prediction counts once, however often its label comes. It is bounded;
// the oldest predictions are forgotten first.
type labelTracker struct {
	limit int

	mu    sync.Mutex
	preds map[string]*tracked
	order []string
	head  int
	// labelled and correct per variant: [0] champion, [1] candidate.
	labelled, correct [2]int64
}

type tracked struct {
	candidate bool
	output    string
	labelled  bool
}

func newLabelTracker(limit int) *labelTracker {
	return &labelTracker{limit: max(limit, 1), preds: map[string]*tracked{}}
}

func (t *labelTracker) track(v Variant, ids, outputs []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, id := range ids {
		if _, ok := t.preds[id]; ok {
			continue
		}
		t.preds[id] = &tracked{candidate: v == Canary, output: outputs[i]}
		if len(t.order) < t.limit {
			t.order = append(t.order, id)
			continue
		}
		delete(t.preds, t.order[t.head])
		t.order[t.head] = id
		t.head = (t.head + 1) % len(t.order)
	}
}

// label counts the labels of tracked predictions and returns how many it
// counted.
func (t *labelTracker) label(labels []Label) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, l := range labels {
		p, ok := t.preds[l.PredictionID]
		if !ok || p.labelled {
			continue
		}
		p.labelled = true
		k := 0
		if p.candidate {
			k = 1
		}
		t.labelled[k]++
		if canonical(p.output) == canonical(l.Value) {
			t.correct[k]++
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
