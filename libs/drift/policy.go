package drift

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Policy is the pipeline spec's drift section, as far as drift is concerned.
type Policy struct {
	// Method measures each feature.
	Method Method `json:"method"`
	// Threshold is compared with each feature's score (p-value for
	// chisquare); 0 means Method.DefaultThreshold.
	Threshold float64 `json:"threshold,omitempty"`
	// ShareOfFeatures is the share of compared features, in [0, 1], that
	// must drift for the dataset to drift; 0 means any one feature.
	ShareOfFeatures float64 `json:"shareOfFeatures,omitempty"`
	// MinRows is the smallest batch that can drift; smaller batches are
	// measured but get no verdict, since a few rows make every score noisy.
	MinRows int `json:"minRows,omitempty"`
}

// Normalize returns p with its method parsed and its default threshold
// filled in, or an error naming what is out of range.
func (p Policy) Normalize() (Policy, error) {
	m, err := ParseMethod(string(p.Method))
	if err != nil {
		return p, err
	}
	p.Method = m
	var errs []error
	if p.Threshold == 0 {
		p.Threshold = m.DefaultThreshold()
	}
	if !(p.Threshold > 0) || math.IsInf(p.Threshold, 0) {
		errs = append(errs, fmt.Errorf("threshold %v, want a finite number > 0 (or 0 for the default)", p.Threshold))
	} else if m.UsesPValue() && p.Threshold > 1 {
		errs = append(errs, fmt.Errorf("threshold %v is a p-value for %s, want it in [0, 1]", p.Threshold, m))
	}
	if !(p.ShareOfFeatures >= 0 && p.ShareOfFeatures <= 1) {
		errs = append(errs, fmt.Errorf("shareOfFeatures %v, want it in [0, 1]", p.ShareOfFeatures))
	}
	if p.MinRows < 0 {
		errs = append(errs, fmt.Errorf("minRows %d, want >= 0", p.MinRows))
	}
	if err := errors.Join(errs...); err != nil {
		return p, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	return p, nil
}

// FeatureScore is the outcome for one feature of a batch.
type FeatureScore struct {
	Feature string `json:"feature"`
	// Score is the method's score (see Score.Value); PValue its p-value
	// for ks and chisquare, 0 otherwise.
	Score  float64 `json:"score"`
	PValue float64 `json:"pValue"`
	// Threshold is the one the feature was judged with.
	Threshold float64 `json:"threshold"`
	Drifted   bool    `json:"drifted"`
	// Rows is the number of non-missing values of the feature in the batch.
	Rows int64 `json:"rows"`
	// Skipped says why the feature was not measured (absent from the batch,
	// no values, a method that does not apply); such a feature counts
	// neither as compared nor as drifted.
	Skipped string `json:"skipped,omitempty"`
}

// Report is the outcome of a policy on a batch.
type Report struct {
	Method Method `json:"method"`
	// Threshold, ShareThreshold and MinRows are the policy's, defaults
	// filled in.
	Threshold      float64 `json:"threshold"`
	ShareThreshold float64 `json:"shareThreshold"`
	MinRows        int     `json:"minRows"`
	// Features has one entry per reference feature, sorted by name.
	Features []FeatureScore `json:"features"`
	// Compared is the number of features measured (not skipped).
	Compared int `json:"compared"`
	// ShareDrifted is the share of compared features that drifted.
	ShareDrifted float64 `json:"shareDrifted"`
	// Drifted is the dataset verdict.
	Drifted bool `json:"drifted"`
	// Rows is the number of rows of the batch.
	Rows int `json:"rows"`
	// ReferenceRows is the number of rows of the reference (the largest
	// over features, missing values included).
	ReferenceRows int64 `json:"referenceRows"`
	// Skipped says why there is no verdict (too few rows, nothing
	// compared); empty when there is one, drifted or not.
	Skipped string `json:"skipped,omitempty"`
}

// DriftedFeatures returns the names of the drifted features, sorted.
func (r Report) DriftedFeatures() []string {
	var names []string
	for _, f := range r.Features {
		if f.Drifted {
			names = append(names, f.Feature)
		}
	}
	return names
}

// Evaluate applies policy p to a batch of numeric columns; see
// [EvaluateSamples].
func Evaluate(p Policy, refs map[string]Reference, batch map[string][]float64) (Report, error) {
	samples := make(map[string]Sample, len(batch))
	for name, vs := range batch {
		samples[name] = Sample{Values: vs}
	}
	return EvaluateSamples(p, refs, samples)
}

// EvaluateSamples measures every feature of refs in the batch and applies
// the policy. The reference decides what is monitored: batch columns without
// a reference are ignored, and a reference feature the batch lacks (or that
// cannot be measured) is reported as skipped. The dataset drifts when the
// batch has at least MinRows rows, at least one feature drifted, and the
// share of drifted features among those compared is at least
// ShareOfFeatures. It errs only on an invalid policy or on batch columns of
// different lengths; a feature's problem is reported in its Skipped.
func EvaluateSamples(p Policy, refs map[string]Reference, batch map[string]Sample) (Report, error) {
	p, err := p.Normalize()
	if err != nil {
		return Report{}, err
	}
	rows := -1
	for _, name := range sortedKeys(batch) {
		n := batch[name].Len()
		if rows >= 0 && n != rows {
			return Report{}, fmt.Errorf("%w: column %q has %d rows, others %d", ErrInvalidBatch, name, n, rows)
		}
		rows = n
	}
	r := Report{
		Method: p.Method, Threshold: p.Threshold, ShareThreshold: p.ShareOfFeatures,
		MinRows: p.MinRows, Rows: max(rows, 0), Features: make([]FeatureScore, 0, len(refs)),
	}
	drifted := 0
	for _, name := range sortedKeys(refs) {
		ref := refs[name]
		r.ReferenceRows = max(r.ReferenceRows, ref.Rows+ref.Missing)
		f := FeatureScore{Feature: name, Threshold: p.Threshold}
		cur, ok := batch[name]
		if !ok {
			f.Skipped = "not in the batch"
			r.Features = append(r.Features, f)
			continue
		}
		s, err := MeasureSample(p.Method, ref, cur)
		if err != nil {
			f.Rows = s.Rows
			f.Skipped = err.Error()
			r.Features = append(r.Features, f)
			continue
		}
		f.Score, f.PValue, f.Rows = s.Value, s.PValue, s.Rows
		f.Drifted = p.Method.Drifted(s, p.Threshold)
		r.Compared++
		if f.Drifted {
			drifted++
		}
		r.Features = append(r.Features, f)
	}
	if r.Compared > 0 {
		r.ShareDrifted = float64(drifted) / float64(r.Compared)
	}
	switch {
	case r.Rows < p.MinRows:
		r.Skipped = fmt.Sprintf("the batch has %d rows, fewer than minRows %d", r.Rows, p.MinRows)
	case r.Compared == 0:
		r.Skipped = "no feature could be compared"
	default:
		r.Drifted = drifted > 0 && r.ShareDrifted >= p.ShareOfFeatures
	}
	return r, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
