package evaluator

import (
	"fmt"

	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// Gate kinds (Gate.kind of model.evaluated).
const (
	KindMin                = "min"
	KindMax                = "max"
	KindMinDeltaVsChampion = "minDeltaVsChampion"
)

// ApplyGates checks a candidate's metrics against the spec's gates, in spec
// order. Absolute gates compare the candidate's value with the bound. A
// delta gate compares the candidate with the champion on the same data:
// its value is candidate minus champion, and it passes when the improvement
// (that difference, or its opposite for metrics where lower is better:
// logloss, rmse, mae) is at least the bound. Without a champion (champion
// nil) a delta gate passes. A metric the candidate lacks fails its gate.
func ApplyGates(gates []pipeline.Gate, candidate, champion map[string]float64) []models.Gate {
	out := make([]models.Gate, 0, len(gates))
	for _, g := range gates {
		out = append(out, applyGate(g, candidate, champion))
	}
	return out
}

func applyGate(g pipeline.Gate, candidate, champion map[string]float64) models.Gate {
	value, ok := candidate[g.Metric]
	switch {
	case g.Min != nil:
		r := models.Gate{Metric: g.Metric, Kind: KindMin, Threshold: *g.Min, Value: value}
		if !ok {
			r.Message = fmt.Sprintf("%s not measured for the candidate", g.Metric)
			return r
		}
		r.Passed = value >= *g.Min
		r.Message = fmt.Sprintf("%s %.4f %s %.4f", g.Metric, value, cmpSign(r.Passed, ">=", "<"), *g.Min)
		return r
	case g.Max != nil:
		r := models.Gate{Metric: g.Metric, Kind: KindMax, Threshold: *g.Max, Value: value}
		if !ok {
			r.Message = fmt.Sprintf("%s not measured for the candidate", g.Metric)
			return r
		}
		r.Passed = value <= *g.Max
		r.Message = fmt.Sprintf("%s %.4f %s %.4f", g.Metric, value, cmpSign(r.Passed, "<=", ">"), *g.Max)
		return r
	case g.MinDeltaVsChampion != nil:
		r := models.Gate{Metric: g.Metric, Kind: KindMinDeltaVsChampion, Threshold: *g.MinDeltaVsChampion}
		if !ok {
			r.Message = fmt.Sprintf("%s not measured for the candidate", g.Metric)
			return r
		}
		if champion == nil {
			r.Passed = true
			r.Message = fmt.Sprintf("%s %.4f; no champion to compare with", g.Metric, value)
			return r
		}
		cv, ok := champion[g.Metric]
		if !ok {
			r.Passed = true
			r.Message = fmt.Sprintf("%s %.4f; the champion has no %s on this batch", g.Metric, value, g.Metric)
			return r
		}
		r.Value, r.ChampionValue = value-cv, cv
		improvement := r.Value
		if g.LowerIsBetter() {
			improvement = -improvement
		}
		r.Passed = improvement >= *g.MinDeltaVsChampion
		r.Message = fmt.Sprintf("%s %.4f vs champion %.4f: improvement %+.4f %s %.4f",
			g.Metric, value, cv, improvement, cmpSign(r.Passed, ">=", "<"), *g.MinDeltaVsChampion)
		return r
	}
	return models.Gate{Metric: g.Metric, Kind: "unknown", Message: "the gate sets no bound"}
}

func cmpSign(passed bool, yes, no string) string {
	if passed {
		return yes
	}
	return no
}

// Verdict is blessed when every gate passed, rejected otherwise.
func Verdict(gates []models.Gate) string {
	for _, g := range gates {
		if !g.Passed {
			return models.VerdictRejected
		}
	}
	return models.VerdictBlessed
}
