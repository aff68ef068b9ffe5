package drift

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Policy is the pipeline spec's drift section, as far as drift is concerned.
type Policy struct {
	// Method measures each feature; auto picks a test per feature (see
	// [Select]).
	Method Method `json:"method"`
	// Threshold is compared with each feature's score (p-value for
	// chisquare and z); 0 means Method.DefaultThreshold. It must be 0 with
	// auto, whose tests have thresholds of their own (below).
	Threshold float64 `json:"threshold,omitempty"`
	// PValueThreshold is the threshold of the tests auto picks that have a
	// p-value (ks, chisquare, z): drifted when the p-value is below it; 0
	// means DefaultPValueThreshold (0.05).
	PValueThreshold float64 `json:"pValueThreshold,omitempty"`
	// DistanceThreshold is the threshold of the distances auto picks
	// (wasserstein, jensenshannon): drifted when the distance is above it;
	// 0 means DefaultDistanceThreshold (0.1).
	DistanceThreshold float64 `json:"distanceThreshold,omitempty"`
	// Features overrides the method or threshold of single features, by
	// name.
	Features map[string]FeaturePolicy `json:"features,omitempty"`
	// ShareOfFeatures is the share of compared features, in [0, 1], that
	// must drift for the dataset to drift; 0 means any one feature.
	ShareOfFeatures float64 `json:"shareOfFeatures,omitempty"`
	// MinRows is the smallest batch that can drift; smaller batches are
	// measured but get no verdict, since a few rows make every score noisy.
	// In a batch that has them, a feature with fewer non-missing values is
	// skipped (too few rows) for the same reason.
	MinRows int `json:"minRows,omitempty"`
}

// FeaturePolicy overrides the policy for one feature.
type FeaturePolicy struct {
	// Method replaces the policy's method; empty keeps it (and Normalize
	// leaves it empty).
	Method Method `json:"method,omitempty"`
	// Threshold replaces the threshold: 0 keeps the policy's when the
	// method is the policy's, and is the method's default otherwise. It
	// must be 0 with auto.
	Threshold float64 `json:"threshold,omitempty"`
}

// Normalize returns p with its methods parsed and its default thresholds
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
	if err := checkThreshold("threshold", m, p.Threshold); err != nil {
		errs = append(errs, err)
	}
	if p.PValueThreshold == 0 {
		p.PValueThreshold = DefaultPValueThreshold
	}
	if p.DistanceThreshold == 0 {
		p.DistanceThreshold = DefaultDistanceThreshold
	}
	if !(p.PValueThreshold > 0 && p.PValueThreshold <= 1) {
		errs = append(errs, fmt.Errorf("pValueThreshold %v, want it in (0, 1]", p.PValueThreshold))
	}
	if !(p.DistanceThreshold > 0) || math.IsInf(p.DistanceThreshold, 0) {
		errs = append(errs, fmt.Errorf("distanceThreshold %v, want a finite number > 0", p.DistanceThreshold))
	}
	if len(p.Features) > 0 {
		fs := make(map[string]FeaturePolicy, len(p.Features))
		for _, name := range sortedKeys(p.Features) {
			f := p.Features[name]
			fm := m
			if f.Method != "" {
				if fm, err = ParseMethod(string(f.Method)); err != nil {
					errs = append(errs, fmt.Errorf("features.%s.method: %w", name, err))
					continue
				}
			}
			if f.Method != "" {
				f.Method = fm
			}
			if f.Threshold == 0 {
				f.Threshold = fm.DefaultThreshold()
				if fm == m {
					f.Threshold = p.Threshold
				}
			}
			if err := checkThreshold("features."+name+".threshold", fm, f.Threshold); err != nil {
				errs = append(errs, err)
			}
			fs[name] = f
		}
		p.Features = fs
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

// checkThreshold checks a (defaulted) threshold of method m.
func checkThreshold(field string, m Method, t float64) error {
	switch {
	case m == Auto:
		if t != 0 {
			return fmt.Errorf("%s %v with method auto, whose tests have thresholds of their own: set pValueThreshold (default %v) and distanceThreshold (default %v) instead",
				field, t, DefaultPValueThreshold, DefaultDistanceThreshold)
		}
	case !(t > 0) || math.IsInf(t, 0):
		return fmt.Errorf("%s %v, want a finite number > 0 (or 0 for the default)", field, t)
	case m.UsesPValue() && t > 1:
		return fmt.Errorf("%s %v is a p-value for %s, want it in [0, 1]", field, t, m)
	}
	return nil
}

// FeatureScore is the outcome for one feature of a batch.
type FeatureScore struct {
	Feature string `json:"feature"`
	// Method is the test run on the feature (the one auto picked, under
	// auto); for a skipped feature, the one that would have run, when
	// known.
	Method Method `json:"method,omitempty"`
	// Score is the method's score (see Score.Value); PValue its p-value
	// for ks, chisquare and z, 0 otherwise.
	Score  float64 `json:"score"`
	PValue float64 `json:"pValue"`
	// ByPValue says the verdict compared PValue with the threshold
	// (drifted when below) rather than Score (drifted when above).
	ByPValue bool `json:"byPValue,omitempty"`
	// Threshold is the one the feature was judged with; 0 when skipped.
	Threshold float64 `json:"threshold"`
	Drifted   bool    `json:"drifted"`
	// Rows is the number of non-missing values of the feature in the batch.
	Rows int64 `json:"rows"`
	// Skipped says why the feature was not measured (absent from the batch,
	// no values, too few rows, constant, a method that does not apply);
	// such a feature counts neither as compared nor as drifted.
	Skipped string `json:"skipped,omitempty"`
}

// Report is the outcome of a policy on a batch.
type Report struct {
	Method Method `json:"method"`
	// Threshold, ShareThreshold and MinRows are the policy's, defaults
	// filled in (Threshold is 0 under auto: see each feature's).
	Threshold      float64 `json:"threshold"`
	ShareThreshold float64 `json:"shareThreshold"`
	MinRows        int     `json:"minRows"`
	// Features has one entry per reference feature, sorted by name:
	// measured or skipped.
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
// cannot be measured) is reported as skipped, with the reason. The dataset
// drifts when the batch has at least MinRows rows, at least one feature
// drifted, and the share of drifted features among those compared is at
// least ShareOfFeatures. It errs only on an invalid policy or on batch
// columns of different lengths; a feature's problem is reported in its
// Skipped.
//
// Each feature is measured with its FeaturePolicy's method and threshold,
// else the policy's. Under auto the test is picked per feature and judged
// with PValueThreshold or DistanceThreshold. A method named for the whole
// policy that does not fit a feature (ks or wasserstein on a categorical
// one, z on one with more than two values) gives way to auto's choice for
// that feature, so that no feature goes unmonitored; a method named for the
// feature itself does not, and the feature is skipped with the reason.
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
		f := p.measure(name, ref, batch, r.Rows)
		if f.Skipped == "" {
			r.Compared++
			if f.Drifted {
				drifted++
			}
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

// measure measures one feature of a batch of rows rows under the
// (normalized) policy.
func (p Policy) measure(name string, ref Reference, batch map[string]Sample, rows int) FeatureScore {
	f := FeatureScore{Feature: name}
	m, threshold := p.Method, p.Threshold
	own, ok := p.Features[name]
	if ok {
		threshold = own.Threshold
	}
	overridden := own.Method != ""
	if overridden {
		m = own.Method
	}
	if m != Auto {
		f.Method = m
	}
	cur, ok := batch[name]
	if !ok {
		f.Skipped = "not in the batch"
		return f
	}
	s, err := MeasureSample(m, ref, cur)
	if errors.Is(err, ErrNotApplicable) && !overridden && m != Auto && kindFits(ref, cur) {
		// The policy's method does not fit this feature: auto's test does.
		m, threshold, f.Method = Auto, 0, ""
		s, err = MeasureSample(Auto, ref, cur)
	}
	if err != nil {
		f.Rows = s.Rows
		f.Skipped = skipReason(err)
		return f
	}
	f.Method, f.Score, f.PValue, f.ByPValue, f.Rows = s.Method, s.Value, s.PValue, s.ByPValue, s.Rows
	if m == Auto {
		threshold = p.DistanceThreshold
		if s.ByPValue {
			threshold = p.PValueThreshold
		}
	}
	if rows >= p.MinRows && s.Rows < int64(p.MinRows) {
		f.Score, f.PValue, f.ByPValue = 0, 0, false
		f.Skipped = fmt.Sprintf("too few rows: %d non-missing values of %d, fewer than minRows %d", s.Rows, rows, p.MinRows)
		return f
	}
	f.Threshold = threshold
	f.Drifted = s.ByPValue && s.PValue < threshold || !s.ByPValue && s.Value > threshold
	return f
}

// kindFits reports whether a sample is of the reference's kind (numbers for
// a numeric one, categories for a categorical one), so that a method that
// does not apply is the method's fault and not the data's.
func kindFits(ref Reference, cur Sample) bool {
	if ref.Kind == KindNumeric {
		return len(cur.Categories) == 0
	}
	return len(cur.Values) == 0
}

// skipReason is the reason a feature is skipped, without the package
// prefix of the error.
func skipReason(err error) string {
	return strings.TrimPrefix(err.Error(), "drift: ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
