package serving

import (
	"fmt"
	"strings"
	"testing"
)

func ptr(f float64) *float64 { return &f }

func TestJudge(t *testing.T) {
	t.Parallel()
	p := Policy{MaxErrorRate: 0.02, MaxAccuracyDrop: 0.05, MaxLatencyP99Ms: 10, MaxPredictionDrift: 0.2, MinLabels: 10}
	for _, tc := range []struct {
		name     string
		s        Status
		baseline *float64
		pass     bool
		reason   string
	}{
		{name: "no labels, no errors", s: Status{Requests: 100}, pass: true},
		{name: "too many errors", s: Status{Requests: 100, Errors: 3}, reason: "errorRate 0.03 > maxErrorRate 0.02"},
		{name: "errors within bounds", s: Status{Requests: 100, Errors: 2}, pass: true},
		{name: "too few labels to judge accuracy", s: Status{Requests: 100, Labelled: 9, Correct: 0}, baseline: ptr(0.9), pass: true},
		{name: "worse than the champion's live accuracy", s: Status{Requests: 100, Labelled: 20, Correct: 10, ChampionLabelled: 20, ChampionCorrect: 18},
			reason: "accuracy 0.5 is 0.4 below the champion's 0.9"},
		{name: "as good as the champion", s: Status{Requests: 100, Labelled: 20, Correct: 17, ChampionLabelled: 20, ChampionCorrect: 18}, pass: true},
		{name: "worse than the champion's evaluation", s: Status{Requests: 100, Labelled: 20, Correct: 10}, baseline: ptr(0.8),
			reason: "below the champion's 0.8"},
		{name: "no champion accuracy at all", s: Status{Requests: 100, Labelled: 20, Correct: 0}, pass: true},
		{name: "latency SLO broken", s: Status{Requests: 100, P99Ms: 12.5, ChampionP99Ms: 1}, reason: "p99LatencyMs 12.5 > maxLatencyP99Ms 10"},
		{name: "latency SLO kept", s: Status{Requests: 100, P99Ms: 10}, pass: true},
		{name: "predictions drifted", s: Status{Requests: 100, Drift: 0.9, DriftOK: true, DriftRows: 400, ChampionDriftRows: 400},
			reason: "predictionDrift 0.9 > maxPredictionDrift 0.2 (PSI of 400 candidate against 400 champion predictions)"},
		{name: "drift too thinly sampled to count", s: Status{Requests: 100, Drift: 0.9, DriftRows: 10}, pass: true},
		{name: "every limit broken is named", s: Status{Requests: 100, Errors: 50, P99Ms: 50, Drift: 1, DriftOK: true},
			reason: "errorRate 0.5 > maxErrorRate 0.02 (50 of 100 requests failed); p99LatencyMs 50 > maxLatencyP99Ms 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := Judge(p, tc.s, tc.baseline)
			if v.Pass != tc.pass || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("Judge = %v %q, want %v %q", v.Pass, v.Reason, tc.pass, tc.reason)
			}
			if v.Figures["requests"] != float64(tc.s.Requests) {
				t.Errorf("figures %v lack the request count", v.Figures)
			}
		})
	}
}

func TestPickIsStickyAndProportional(t *testing.T) {
	t.Parallel()
	champ, cand := &Model{Version: 1}, &Model{Version: 2}
	for _, percent := range []float64{0, 10, 50, 100} {
		r := &Routing{DeploymentID: "d", Champion: champ, Candidate: cand, Percent: percent}
		canary := 0
		for i := range 10000 {
			key := fmt.Sprint("client-", i)
			m, v := r.pick(key)
			if m2, _ := r.pick(key); m2 != m {
				t.Fatalf("key %s switched variants", key)
			}
			if v == Canary {
				canary++
				// A key on the candidate stays there as its share grows.
				grown := &Routing{DeploymentID: "d", Champion: champ, Candidate: cand, Percent: min(percent+30, 100)}
				if _, gv := grown.pick(key); gv != Canary {
					t.Fatalf("key %s left the candidate when its share grew", key)
				}
			}
		}
		if got := float64(canary) / 100; got < percent-3 || got > percent+3 {
			t.Errorf("%v%%: %.1f%% of keys on the candidate", percent, got)
		}
	}
}

func TestLabelTrackerCountsEachPredictionOnce(t *testing.T) {
	t.Parallel()
	tr := newLabelTracker(4)
	tr.track(0, []string{"a", "b"}, []string{"1", "0"})
	tr.track(1, []string{"c", "d"}, []string{"1", "1"})
	tr.track(0, []string{"e"}, []string{"1"}) // "a" is forgotten: the bound is 4
	labels := []Label{{"a", "1"}, {"b", "0"}, {"c", "1.0"}, {"d", "0"}, {"c", "0"}, {"x", "1"}}
	if n := tr.label(labels); n != 3 {
		t.Errorf("counted %d labels, want 3 (b, c, d)", n)
	}
	if n := tr.label(labels); n != 0 {
		t.Errorf("labels counted again: %d", n)
	}
	l, c, cl, cc := tr.counts()
	if l != 2 || c != 1 || cl != 1 || cc != 1 {
		t.Errorf("counts canary %d/%d, champion %d/%d; want 1/2 and 1/1", c, l, cc, cl)
	}
	// A mirror's output of "e" comes after its label: it counts then, for
	// the candidate, and the champion's answer of "e" counts too.
	if n := tr.label([]Label{{"e", "0"}}); n != 1 {
		t.Errorf("label of e: %d counted", n)
	}
	tr.track(1, []string{"e"}, []string{"0"})
	tr.track(1, []string{"e"}, []string{"1"}) // a second output of the same side is ignored
	l, c, cl, cc = tr.counts()
	if l != 3 || c != 2 || cl != 2 || cc != 1 {
		t.Errorf("after e: canary %d/%d, champion %d/%d; want 2/3 and 1/2", c, l, cc, cl)
	}
}
