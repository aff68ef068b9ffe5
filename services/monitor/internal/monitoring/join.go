package monitoring

import (
	"math"
	"strconv"
	"strings"
	"sync"
)

// joiner pairs logged predictions with their labels, in memory, per
// pipeline. Either side may come first: prediction.logged and
// label.received travel on different streams and are consumed
// independently, and the deployer logs predictions asynchronously, so a
// label often arrives before its prediction. Both sides are bounded (the
// oldest entries are forgotten first), and a prediction is paired once:
// at-least-once delivery makes duplicates of both events normal.
type joiner struct {
	maxPredictions, maxLabels int

	mu        sync.Mutex
	pipelines map[string]*pipelineJoin
}

type pipelineJoin struct {
	preds     map[string]*pred
	predOrder ring
	labels    map[string]string
	lblOrder  ring
	// logged counts the predictions logged per model version.
	logged map[int64]int64
}

type pred struct {
	version  int64
	output   string
	labelled bool
}

// outcome is one labelled prediction.
type outcome struct {
	id      string
	version int64
	label   string
	correct bool
}

func newJoiner(maxPredictions, maxLabels int) *joiner {
	return &joiner{maxPredictions: max(maxPredictions, 1), maxLabels: max(maxLabels, 1), pipelines: map[string]*pipelineJoin{}}
}

func (j *joiner) pipeline(name string) *pipelineJoin {
	p := j.pipelines[name]
	if p == nil {
		p = &pipelineJoin{preds: map[string]*pred{}, labels: map[string]string{}, logged: map[int64]int64{}}
		j.pipelines[name] = p
	}
	return p
}

// addPredictions records predictions and returns the outcomes of those
// whose label was waiting. A prediction id seen before is ignored.
func (j *joiner) addPredictions(pipeline string, version int64, rows []Prediction) []outcome {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.pipeline(pipeline)
	var out []outcome
	for _, r := range rows {
		if r.ID == "" {
			continue
		}
		if _, seen := p.preds[r.ID]; seen {
			continue
		}
		pr := &pred{version: version, output: r.Output}
		p.preds[r.ID] = pr
		p.logged[version]++
		if evicted, ok := p.predOrder.push(r.ID, j.maxPredictions); ok {
			delete(p.preds, evicted)
		}
		if label, ok := p.labels[r.ID]; ok {
			delete(p.labels, r.ID)
			pr.labelled = true
			out = append(out, outcome{id: r.ID, version: version, label: label, correct: sameLabel(r.Output, label)})
		}
	}
	return out
}

// addLabels pairs labels with known predictions and returns their
// outcomes; a label of a prediction not seen yet waits for it. A label of
// a prediction already paired is ignored.
func (j *joiner) addLabels(pipeline string, labels []Label) []outcome {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.pipeline(pipeline)
	var out []outcome
	for _, l := range labels {
		if l.PredictionID == "" {
			continue
		}
		pr, ok := p.preds[l.PredictionID]
		if !ok {
			if _, waiting := p.labels[l.PredictionID]; !waiting {
				p.labels[l.PredictionID] = l.Value
				if evicted, ok := p.lblOrder.push(l.PredictionID, j.maxLabels); ok {
					delete(p.labels, evicted)
				}
			}
			continue
		}
		delete(p.labels, l.PredictionID)
		if pr.labelled {
			continue
		}
		pr.labelled = true
		out = append(out, outcome{id: l.PredictionID, version: pr.version, label: l.Value, correct: sameLabel(pr.output, l.Value)})
	}
	return out
}

// undo forgets that the outcomes were paired, so that a retry of the event
// that paired them pairs them again: their counting failed.
func (j *joiner) undo(pipeline string, out []outcome) {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.pipeline(pipeline)
	for _, o := range out {
		if pr, ok := p.preds[o.id]; ok {
			pr.labelled = false
		}
	}
}

// logged returns the number of predictions of a version logged so far.
func (j *joiner) loggedCount(pipeline string, version int64) int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.pipeline(pipeline).logged[version]
}

// ring remembers insertion order for first-in-first-out eviction.
type ring struct {
	ids  []string
	head int
}

// push appends id and, when more than limit ids are held, drops and
// returns the oldest.
func (r *ring) push(id string, limit int) (string, bool) {
	if len(r.ids) < limit {
		r.ids = append(r.ids, id)
		return "", false
	}
	old := r.ids[r.head]
	r.ids[r.head] = id
	r.head = (r.head + 1) % len(r.ids)
	return old, true
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
