package drift

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/gyrehq/gyre/events/gyrev1"
)

// ErrInvalidProto: a payload whose numbers contradict each other.
var ErrInvalidProto = errors.New("drift: invalid payload")

// ToProto converts s to the ColumnStats of column name, of type typ ("float"
// when empty). The payload carries the population standard deviation (see
// NumericStats.PopulationStd), not the sample one; the histogram's Under and
// Over counts have no field there and are dropped.
func (s NumericStats) ToProto(name, typ string) *gyrev1.ColumnStats {
	c := &gyrev1.ColumnStats{
		Name: name, Type: cmp.Or(typ, "float"),
		Count: s.Count, Missing: s.Missing, Distinct: s.Distinct,
		Mean: s.Mean, Std: s.PopulationStd(), Min: s.Min, Max: s.Max,
	}
	for _, q := range s.Quantiles {
		c.Quantiles = append(c.Quantiles, &gyrev1.Quantile{Q: q.Q, Value: q.Value})
	}
	if len(s.Histogram.Edges) > 0 {
		c.Histogram = &gyrev1.Histogram{
			Edges:  append([]float64(nil), s.Histogram.Edges...),
			Counts: append([]int64(nil), s.Histogram.Counts...),
		}
	}
	return c
}

// NumericStatsFromProto converts a numeric ColumnStats back, turning its
// population standard deviation into the sample one.
func NumericStatsFromProto(c *gyrev1.ColumnStats) (NumericStats, error) {
	if c == nil {
		return NumericStats{}, fmt.Errorf("%w: no column stats", ErrInvalidProto)
	}
	if c.Count < 0 || c.Missing < 0 || c.Distinct < 0 {
		return NumericStats{}, fmt.Errorf("%w: column %q has a negative count", ErrInvalidProto, c.Name)
	}
	s := NumericStats{
		Count: c.Count, Missing: c.Missing, Distinct: c.Distinct,
		Mean: c.Mean, Min: c.Min, Max: c.Max,
	}
	if c.Count > 1 {
		n := float64(c.Count)
		s.Std = c.Std * math.Sqrt(n/(n-1))
	}
	for _, q := range c.Quantiles {
		s.Quantiles = append(s.Quantiles, Quantile{Q: q.GetQ(), Value: q.GetValue()})
	}
	if h := c.GetHistogram(); h != nil && (len(h.Edges) > 0 || len(h.Counts) > 0) {
		if len(h.Edges) != len(h.Counts)+1 {
			return NumericStats{}, fmt.Errorf("%w: column %q has %d histogram edges for %d counts", ErrInvalidProto, c.Name, len(h.Edges), len(h.Counts))
		}
		s.Histogram = Histogram{
			Edges:  append([]float64(nil), h.Edges...),
			Counts: append([]int64(nil), h.Counts...),
		}
	}
	return s, nil
}

// ToProto converts s to the ColumnStats of column name, of type typ
// ("string" when empty), with the DefaultTopK most frequent categories (the
// payload's limit).
func (s CategoricalStats) ToProto(name, typ string) *gyrev1.ColumnStats {
	c := &gyrev1.ColumnStats{
		Name: name, Type: cmp.Or(typ, "string"),
		Count: s.Count, Missing: s.Missing, Distinct: s.Distinct,
	}
	for _, cc := range s.Top(DefaultTopK) {
		c.TopCategories = append(c.TopCategories, &gyrev1.CategoryCount{Value: cc.Value, Count: cc.Count})
	}
	return c
}

// CategoricalStatsFromProto converts a categorical ColumnStats back; the
// values beyond its top categories are counted in Other.
func CategoricalStatsFromProto(c *gyrev1.ColumnStats) (CategoricalStats, error) {
	if c == nil {
		return CategoricalStats{}, fmt.Errorf("%w: no column stats", ErrInvalidProto)
	}
	s := CategoricalStats{Count: c.Count, Missing: c.Missing, Distinct: c.Distinct}
	var top int64
	for _, cc := range c.TopCategories {
		if cc.GetCount() < 0 {
			return CategoricalStats{}, fmt.Errorf("%w: column %q has a negative count", ErrInvalidProto, c.Name)
		}
		s.Counts = append(s.Counts, CategoryCount{Value: cc.GetValue(), Count: cc.GetCount()})
		top += cc.GetCount()
	}
	if c.Count < 0 || c.Missing < 0 || c.Distinct < 0 || top > c.Count {
		return CategoricalStats{}, fmt.Errorf("%w: column %q has %d values but its top categories %d", ErrInvalidProto, c.Name, c.Count, top)
	}
	s.Other = c.Count - top
	return s, nil
}

// ToProto converts f, a compared feature, to the FeatureDrift payload.
func (f FeatureScore) ToProto() *gyrev1.FeatureDrift {
	return &gyrev1.FeatureDrift{
		Feature: f.Feature, Score: f.Score, PValue: f.PValue,
		Threshold: f.Threshold, Drifted: f.Drifted, Rows: f.Rows,
		Method: string(f.Method), ByPValue: f.ByPValue,
	}
}

// ToSkippedProto converts f, a skipped feature, to the SkippedFeature
// payload.
func (f FeatureScore) ToSkippedProto() *gyrev1.SkippedFeature {
	return &gyrev1.SkippedFeature{Feature: f.Feature, Reason: f.Skipped, Method: string(f.Method), Rows: f.Rows}
}

// FeatureScoreFromProto converts a FeatureDrift payload back.
func FeatureScoreFromProto(p *gyrev1.FeatureDrift) FeatureScore {
	return FeatureScore{
		Feature: p.GetFeature(), Score: p.GetScore(), PValue: p.GetPValue(),
		Threshold: p.GetThreshold(), Drifted: p.GetDrifted(), Rows: p.GetRows(),
		Method: Method(p.GetMethod()), ByPValue: p.GetByPValue(),
	}
}

// SkippedFeatureFromProto converts a SkippedFeature payload back.
func SkippedFeatureFromProto(p *gyrev1.SkippedFeature) FeatureScore {
	return FeatureScore{Feature: p.GetFeature(), Skipped: p.GetReason(), Method: Method(p.GetMethod()), Rows: p.GetRows()}
}

// ToProto converts r to a drift.measured payload: the compared features in
// features, the skipped ones with their reasons in skippedFeatures, so that
// every monitored feature is listed. The caller fills in what the report
// does not know: pipeline, batch id, reference model version, feature-set
// version.
func (r Report) ToProto() *gyrev1.DriftMeasured {
	features, skipped := r.protoFeatures()
	return &gyrev1.DriftMeasured{
		Method: string(r.Method), Threshold: r.Threshold,
		Features: features, SkippedFeatures: skipped,
		ShareDrifted: r.ShareDrifted, ShareThreshold: r.ShareThreshold,
		Drifted: r.Drifted, Rows: int64(r.Rows), MinRows: int64(r.MinRows),
		ReferenceRows: r.ReferenceRows,
	}
}

// ToDetectedProto converts r to a drift.detected payload (meaningful when
// r.Drifted); the caller fills in the same fields as for ToProto.
func (r Report) ToDetectedProto() *gyrev1.DriftDetected {
	features, skipped := r.protoFeatures()
	return &gyrev1.DriftDetected{
		Method: string(r.Method), Threshold: r.Threshold,
		Features: features, SkippedFeatures: skipped,
		ShareDrifted: r.ShareDrifted, ShareThreshold: r.ShareThreshold,
		DriftedFeatures: r.DriftedFeatures(),
		Rows:            int64(r.Rows), ReferenceRows: r.ReferenceRows,
	}
}

func (r Report) protoFeatures() (compared []*gyrev1.FeatureDrift, skipped []*gyrev1.SkippedFeature) {
	for _, f := range r.Features {
		if f.Skipped == "" {
			compared = append(compared, f.ToProto())
		} else {
			skipped = append(skipped, f.ToSkippedProto())
		}
	}
	return compared, skipped
}

// ReportFromProto converts a drift.measured payload back to a report of its
// features, compared and skipped, sorted by name.
func ReportFromProto(m *gyrev1.DriftMeasured) (Report, error) {
	if m == nil {
		return Report{}, fmt.Errorf("%w: no drift.measured payload", ErrInvalidProto)
	}
	method, err := ParseMethod(m.Method)
	if err != nil {
		return Report{}, err
	}
	r := Report{
		Method: method, Threshold: m.Threshold,
		ShareThreshold: m.ShareThreshold, ShareDrifted: m.ShareDrifted,
		Drifted: m.Drifted, Rows: int(m.Rows), MinRows: int(m.MinRows),
		ReferenceRows: m.ReferenceRows,
		Features:      make([]FeatureScore, 0, len(m.Features)+len(m.SkippedFeatures)),
	}
	for _, f := range m.Features {
		r.Features = append(r.Features, FeatureScoreFromProto(f))
	}
	r.Compared = len(r.Features)
	for _, f := range m.SkippedFeatures {
		r.Features = append(r.Features, SkippedFeatureFromProto(f))
	}
	slices.SortStableFunc(r.Features, func(a, b FeatureScore) int { return strings.Compare(a.Feature, b.Feature) })
	return r, nil
}
