// Package serving is the deployer's application: it holds the models that
// serve each pipeline behind an atomically swapped routing table, answers
// inference requests (typed commands the HTTP port decodes), rolls promoted
// models out — at once, or as a canary judged step by step on error rate
// and live accuracy — and restores what served after a restart. It knows no
// transport: state, artifacts, specs and emitted events go through the
// small interfaces in deployer.go.
package serving

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/ml"
)

// Artifact locates a model bundle in the object store.
type Artifact struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Sha256 string `json:"sha256,omitempty"`
}

// Input is one raw feature column a model takes.
type Input struct {
	Name string
	// Numeric is false for text (categorical) columns.
	Numeric bool
}

// Model is a loaded bundle with its version. It is immutable, so any number
// of requests may use it while another model replaces it.
type Model struct {
	Version  int64
	Artifact Artifact
	// Accuracy is the evaluation accuracy the version was promoted with;
	// nil when unknown.
	Accuracy *float64
	bundle   *bundle.Bundle
	inputs   []Input
}

// NewModel wraps a loaded bundle.
func NewModel(version int64, art Artifact, b *bundle.Bundle, accuracy *float64) *Model {
	m := &Model{Version: version, Artifact: art, Accuracy: accuracy, bundle: b}
	for _, c := range b.Features.Columns {
		m.inputs = append(m.inputs, Input{Name: c.Name, Numeric: c.Numeric})
	}
	return m
}

// Inputs returns the raw feature columns the model takes, in order.
func (m *Model) Inputs() []Input { return slices.Clone(m.inputs) }

// Task returns classification or regression.
func (m *Model) Task() ml.Task { return m.bundle.Model.Signature().Task }

// Classes returns the class names in the order of the probabilities.
func (m *Model) Classes() []string { return m.bundle.Classes() }

// predict scores raw records (column → text, absent = missing).
func (m *Model) predict(records []map[string]string) (*bundle.Predictions, error) {
	p, err := m.bundle.PredictRecords(records)
	if err != nil {
		return nil, &InputError{Reason: err.Error()}
	}
	if m.Task() == ml.Classification {
		for i := range p.Labels {
			if p.Labels[i] == "" {
				return nil, &InputError{Reason: fmt.Sprintf("row %d could not be scored: the model cannot handle its missing values", i+1)}
			}
		}
	}
	return p, nil
}

// Variant names the traffic a request was served as; prediction.logged
// carries it.
type Variant string

// Variants.
const (
	// Champion is the model serving all traffic, or what a canary leaves.
	Champion Variant = "champion"
	// Canary is the candidate of a canary rollout.
	Canary Variant = "canary"
)

// Routing is what serves a pipeline: one immutable snapshot, replaced as a
// whole (Server.set) so that a request, which loads it once, finishes on
// the models it started with.
type Routing struct {
	Pipeline     string
	DeploymentID string
	// Champion serves all traffic but the candidate's share; nil when no
	// model serves (never set so).
	Champion *Model
	// Candidate, with Percent of the traffic, during a canary.
	Candidate *Model
	Percent   float64
	// Rollout counts the step in force of a canary; nil otherwise.
	Rollout *Rollout
	// SampleRate is the share of requests logged as prediction.logged.
	SampleRate float64
}

// pick chooses the variant of a request. With a routing key the choice is
// sticky: the same key goes to the same variant throughout a rollout, and a
// key on the candidate at one step stays there as its share grows.
func (r *Routing) pick(routingKey string) (*Model, Variant) {
	if r.Candidate == nil || r.Percent <= 0 {
		return r.Champion, Champion
	}
	var x float64
	if routingKey != "" {
		x = float64(fnv64(r.DeploymentID+"\x00"+routingKey)%10000) / 100
	} else {
		x = rand.Float64() * 100
	}
	if x < r.Percent {
		return r.Candidate, Canary
	}
	return r.Champion, Champion
}

// version returns the serving model of a version, and its variant.
func (r *Routing) version(v int64) (*Model, Variant, bool) {
	switch {
	case r.Champion != nil && r.Champion.Version == v:
		return r.Champion, Champion, true
	case r.Candidate != nil && r.Candidate.Version == v:
		return r.Candidate, Canary, true
	}
	return nil, "", false
}

// Versions returns the versions serving, champion first.
func (r *Routing) Versions() []int64 {
	var vs []int64
	if r.Champion != nil {
		vs = append(vs, r.Champion.Version)
	}
	if r.Candidate != nil {
		vs = append(vs, r.Candidate.Version)
	}
	return vs
}

// accepts reports whether any serving model takes a column.
func (r *Routing) accepts(name string) bool {
	for _, m := range []*Model{r.Champion, r.Candidate} {
		if m == nil {
			continue
		}
		for _, in := range m.inputs {
			if in.Name == name {
				return true
			}
		}
	}
	return false
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
