// Package barehttp is the peer the serving benchmarks measure the
// deployer's /infer route against (make bench-serving, and
// BenchmarkInfer in services/deployer): what a minimal Go model server does,
// with none of the protocol, routing, rollout or logging work.
package barehttp

import (
	"encoding/json"
	"net/http"

	"github.com/gyrehq/gyre/libs/ml"
)

// Handler decodes {"rows": [[...], ...]} with encoding/json, calls m and
// answers {"predictions": [class, ...], "probabilities": [[...], ...]}. It
// answers on any path and method; mount it where the benchmark wants it.
func Handler(m ml.Model) http.Handler {
	classes := m.Signature().Classes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Rows [][]float64 `json:"rows"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		proba := m.PredictProba(req.Rows)
		resp := struct {
			Predictions   []string    `json:"predictions"`
			Probabilities [][]float64 `json:"probabilities"`
		}{Predictions: make([]string, len(proba)), Probabilities: proba}
		for i, p := range proba {
			resp.Predictions[i] = classes[argmax(p)]
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// argmax returns the index of the largest value, the lowest on ties.
func argmax(xs []float64) int {
	best := 0
	for i, v := range xs {
		if v > xs[best] {
			best = i
		}
	}
	return best
}
