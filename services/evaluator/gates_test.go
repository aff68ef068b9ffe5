package evaluator_test

import (
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/services/evaluator"
)

func f(v float64) *float64 { return &v }

func TestApplyGates(t *testing.T) {
	t.Parallel()
	cand := map[string]float64{"accuracy": 0.80, "logloss": 0.40}
	champ := map[string]float64{"accuracy": 0.78, "logloss": 0.35}
	tests := []struct {
		name     string
		gate     pipeline.Gate
		champion map[string]float64
		passed   bool
		value    float64
		message  string
	}{
		{"min passes", pipeline.Gate{Metric: "accuracy", Min: f(0.55)}, nil, true, 0.80, "accuracy 0.8000 >= 0.5500"},
		{"min fails", pipeline.Gate{Metric: "accuracy", Min: f(0.9)}, nil, false, 0.80, "accuracy 0.8000 < 0.9000"},
		{"max passes", pipeline.Gate{Metric: "logloss", Max: f(0.5)}, nil, true, 0.40, "<= 0.5000"},
		{"max fails", pipeline.Gate{Metric: "logloss", Max: f(0.3)}, nil, false, 0.40, "> 0.3000"},
		{"delta without champion passes", pipeline.Gate{Metric: "accuracy", MinDeltaVsChampion: f(0.05)}, nil, true, 0, "no champion"},
		{"delta passes", pipeline.Gate{Metric: "accuracy", MinDeltaVsChampion: f(0)}, champ, true, 0.02, "vs champion 0.7800"},
		{"delta fails", pipeline.Gate{Metric: "accuracy", MinDeltaVsChampion: f(0.05)}, champ, false, 0.02, "improvement +0.0200 < 0.0500"},
		{"delta of a loss is an improvement when lower", pipeline.Gate{Metric: "logloss", MinDeltaVsChampion: f(0)}, champ, false, 0.05, "improvement -0.0500 < 0.0000"},
		{"metric not measured", pipeline.Gate{Metric: "rmse", Min: f(0)}, nil, false, 0, "rmse not measured"},
		{"champion lacks the metric", pipeline.Gate{Metric: "accuracy", MinDeltaVsChampion: f(0)}, map[string]float64{}, true, 0, "champion has no accuracy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := evaluator.ApplyGates([]pipeline.Gate{tt.gate}, cand, tt.champion)[0]
			if got.Passed != tt.passed || !near(got.Value, tt.value) || !strings.Contains(got.Message, tt.message) {
				t.Fatalf("gate %+v, want passed %v, value %v, message containing %q", got, tt.passed, tt.value, tt.message)
			}
		})
	}
	if v := evaluator.Verdict(nil); v != models.VerdictBlessed {
		t.Fatalf("Verdict of no gates = %q, want blessed", v)
	}
	if v := evaluator.Verdict([]models.Gate{{Passed: true}, {Passed: false}}); v != models.VerdictRejected {
		t.Fatalf("Verdict with a failed gate = %q", v)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
