package drift

import (
	"cmp"
	"fmt"
	"math"
	"sort"
)

// Kind tells numeric and categorical features apart.
type Kind string

// Kinds of Reference.
const (
	KindNumeric     Kind = "numeric"
	KindCategorical Kind = "categorical"
)

// Reference is what the monitor remembers of one feature of the reference
// data (the champion's training window), enough to run every method without
// the raw data. It is plain data so it can be stored as JSON (a KV value) and
// its size does not grow with the window: at most WithSampleSize numbers
// (DefaultSampleSize, 500) plus about 2·WithBins bin edges and counts for a
// numeric feature of more than AutoSmallRows (1,000) rows, every value for a
// smaller one, at most WithMaxCategories categories for a categorical one —
// under 12 KB of JSON with the defaults for a large window, about 20 KB for
// a window of 1,000 rows.
//
// Build one with [NewReference], [NewCategoricalReference], or from
// accumulators merged over several batches with [Numeric.Reference] and
// [Categorical.Reference].
type Reference struct {
	// Kind is "numeric" or "categorical".
	Kind Kind `json:"kind"`
	// Rows is the number of non-missing reference values.
	Rows int64 `json:"rows"`
	// Missing is the number of missing reference values.
	Missing int64 `json:"missing,omitempty"`

	// Mean, Std (sample standard deviation), Min and Max of the values;
	// numeric only. Std scales the Wasserstein distance.
	Mean float64 `json:"mean,omitempty"`
	Std  float64 `json:"std,omitempty"`
	Min  float64 `json:"min,omitempty"`
	Max  float64 `json:"max,omitempty"`
	// Edges are the bin edges, ascending, from Min to Max (a constant
	// reference has the single bin [Min, Max] with Min = Max); numeric only.
	Edges []float64 `json:"edges,omitempty"`
	// Sample is sorted: the values themselves when len(Sample) == Rows,
	// otherwise the quantiles at levels (i+0.5)/len(Sample); numeric only.
	Sample []float64 `json:"sample,omitempty"`
	// Values are the distinct values, ascending, when there are no more of
	// them than bins (one bin per value: Counts[i] counts Values[i]);
	// numeric only. Method auto reads them to count the distinct values of
	// the reference and a batch together.
	Values []float64 `json:"values,omitempty"`
	// Distinct is the number of distinct non-missing values (categories
	// folded into Other included); 0 in a reference stored before it was
	// recorded.
	Distinct int64 `json:"distinct,omitempty"`

	// Categories are the most frequent categories, most frequent first;
	// categorical only.
	Categories []string `json:"categories,omitempty"`
	// Other is the number of values whose category is not in Categories;
	// categorical only.
	Other int64 `json:"other,omitempty"`

	// Counts[i] is the number of reference values in the bin
	// [Edges[i], Edges[i+1]) (numeric) or of category Categories[i]
	// (categorical).
	Counts []int64 `json:"counts"`
}

// Exact reports whether a numeric reference's Sample holds every reference
// value (and not quantiles of them).
func (r Reference) Exact() bool { return r.Kind == KindNumeric && int64(len(r.Sample)) == r.Rows }

// HistogramEdges returns the reference's bin edges, to be passed to
// [WithHistogramEdges] so that batch statistics are binned like the
// reference; nil for a categorical reference.
func (r Reference) HistogramEdges() []float64 {
	if r.Kind != KindNumeric {
		return nil
	}
	return append([]float64(nil), r.Edges...)
}

// NewReference builds a numeric reference from values (NaN and ±Inf are
// missing). Options: WithBins, WithSampleSize.
//
// The sample is exact (every value) when there are at most
// max(WithSampleSize, [AutoSmallRows]) values: method auto judges such a
// reference with the KS test's p-value, which needs the values themselves.
func NewReference(values []float64, opts ...Option) (Reference, error) {
	a := NewNumeric(opts...)
	a.AddAll(values)
	return a.Reference()
}

// NewCategoricalReference builds a categorical reference from values ("" is
// missing). Option: WithMaxCategories.
func NewCategoricalReference(values []string, opts ...Option) (Reference, error) {
	a := NewCategorical(opts...)
	a.AddAll(values)
	return a.Reference()
}

// Reference builds a numeric reference from the values added so far, for
// instance the merged accumulators of a training window's batches.
func (a *Numeric) Reference() (Reference, error) {
	if a.n == 0 {
		return Reference{}, fmt.Errorf("%w: the reference has %d missing values and no other", ErrNoValues, a.missing)
	}
	std := 0.0
	if a.n > 1 {
		std = math.Sqrt(a.m2 / float64(a.n-1))
	}
	if !finite(a.mean) || !finite(std) {
		return Reference{}, fmt.Errorf("%w: the reference's mean or standard deviation overflows", ErrOutOfRange)
	}
	xs := a.sort()
	r := Reference{
		Kind: KindNumeric, Rows: a.n, Missing: a.missing,
		Mean: a.mean, Std: std, Min: a.min, Max: a.max,
		Edges: referenceEdges(xs, a.cfg.bins),
	}
	r.Counts = histogramSorted(xs, r.Edges).Counts
	var distinct []float64
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			r.Distinct++
			if len(distinct) <= a.cfg.bins {
				distinct = append(distinct, x)
			}
		}
	}
	if int(r.Distinct) == len(r.Counts) && len(distinct) == len(r.Counts) {
		// One bin per value (referenceEdges' first case).
		r.Values = distinct
	}
	if len(xs) <= max(a.cfg.sampleSize, AutoSmallRows) {
		r.Sample = append([]float64(nil), xs...)
	} else {
		size := a.cfg.sampleSize
		r.Sample = make([]float64, size)
		for i := range r.Sample {
			r.Sample[i] = quantileSorted(xs, (float64(i)+0.5)/float64(size))
		}
	}
	return r, nil
}

// Reference builds a categorical reference from the values added so far.
func (a *Categorical) Reference() (Reference, error) {
	if a.n == 0 {
		return Reference{}, fmt.Errorf("%w: the reference has %d missing values and no other", ErrNoValues, a.missing)
	}
	cs := a.sortedCounts()
	keep := min(len(cs), cmp.Or(a.cfg.maxCategories, DefaultReferenceCategories))
	r := Reference{
		Kind: KindCategorical, Rows: a.n, Missing: a.missing, Distinct: int64(len(cs)),
		Categories: make([]string, keep), Counts: make([]int64, keep),
	}
	for i, c := range cs[:keep] {
		r.Categories[i], r.Counts[i] = c.Value, c.Count
	}
	for _, c := range cs[keep:] {
		r.Other += c.Count
	}
	return r, nil
}

// referenceEdges returns the bin edges of sorted, non-empty xs: one bin per
// distinct value when there are at most bins of them, else equal-probability
// bins. Cut points lie half-way between neighbouring distinct values so that
// no reference value sits on one (see the package doc).
func referenceEdges(xs []float64, bins int) []float64 {
	n := len(xs)
	lo, hi := xs[0], xs[n-1]
	if lo == hi {
		return []float64{lo, hi}
	}
	var distinct []float64
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			if distinct = append(distinct, x); len(distinct) > bins {
				break
			}
		}
	}
	edges := []float64{lo}
	add := func(c float64) {
		if c > edges[len(edges)-1] && c < hi {
			edges = append(edges, c)
		}
	}
	if len(distinct) <= bins {
		for i := 1; i < len(distinct); i++ {
			add(cutBetween(distinct[i-1], distinct[i]))
		}
	} else {
		for i := 1; i < bins; i++ {
			// The order statistic where the empirical CDF reaches i/bins,
			// in integers to avoid rounding: ceil(i·n/bins) - 1.
			k := (i*n+bins-1)/bins - 1
			x := xs[k]
			j := sort.Search(n, func(j int) bool { return xs[j] > x })
			if j == n {
				break
			}
			add(cutBetween(x, xs[j]))
		}
	}
	return append(edges, hi)
}

// cutBetween is a point in (x, y], the midpoint unless rounding puts it on x.
// x/2 + y/2 rather than (x+y)/2, which overflows near the float64 limits.
func cutBetween(x, y float64) float64 {
	c := x/2 + y/2
	if c <= x || c > y {
		return y
	}
	return c
}

// Validate checks that r is well formed, for a reference read back from
// storage: every method relies on these invariants.
func (r Reference) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidReference, fmt.Sprintf(format, args...))
	}
	if r.Rows <= 0 {
		return bad("rows is %d, want > 0", r.Rows)
	}
	if r.Missing < 0 || r.Other < 0 || r.Distinct < 0 || r.Distinct > r.Rows {
		return bad("negative missing, other or distinct count, or more distinct values than rows")
	}
	var total int64
	for _, c := range r.Counts {
		if c < 0 {
			return bad("negative count %d", c)
		}
		total += c
	}
	switch r.Kind {
	case KindNumeric:
		for _, x := range []float64{r.Mean, r.Std, r.Min, r.Max} {
			if !finite(x) {
				return bad("non-finite statistic %v", x)
			}
		}
		if r.Std < 0 || r.Min > r.Max {
			return bad("std %v < 0 or min %v > max %v", r.Std, r.Min, r.Max)
		}
		if len(r.Edges) < 2 || len(r.Counts) != len(r.Edges)-1 {
			return bad("%d edges for %d counts, want counts+1 >= 2", len(r.Edges), len(r.Counts))
		}
		for i, e := range r.Edges {
			if !finite(e) {
				return bad("non-finite edge %v", e)
			}
			if i == 0 {
				continue
			}
			// Strictly ascending, but for the [c, c] bin of a constant.
			if e < r.Edges[i-1] || e == r.Edges[i-1] && len(r.Edges) > 2 {
				return bad("edges not ascending at %d", i)
			}
		}
		if len(r.Sample) == 0 || int64(len(r.Sample)) > r.Rows {
			return bad("sample of %d values for %d rows", len(r.Sample), r.Rows)
		}
		for i, x := range r.Sample {
			if !finite(x) || i > 0 && x < r.Sample[i-1] {
				return bad("sample not finite and sorted at %d", i)
			}
		}
		if r.Other != 0 || len(r.Categories) != 0 {
			return bad("numeric reference with categories")
		}
		if len(r.Values) > 0 {
			if len(r.Values) != len(r.Counts) || r.Distinct != 0 && int64(len(r.Values)) != r.Distinct {
				return bad("%d values for %d counts and %d distinct values", len(r.Values), len(r.Counts), r.Distinct)
			}
			for i, x := range r.Values {
				if !finite(x) || x < r.Min || x > r.Max || i > 0 && x <= r.Values[i-1] {
					return bad("values not finite, ascending and within [min, max] at %d", i)
				}
			}
		}
	case KindCategorical:
		if len(r.Categories) != len(r.Counts) {
			return bad("%d categories for %d counts", len(r.Categories), len(r.Counts))
		}
		seen := make(map[string]struct{}, len(r.Categories))
		for _, c := range r.Categories {
			if _, dup := seen[c]; dup || c == "" {
				return bad("category %q empty or repeated", c)
			}
			seen[c] = struct{}{}
		}
		total += r.Other
		if len(r.Edges) != 0 || len(r.Sample) != 0 || len(r.Values) != 0 {
			return bad("categorical reference with bins, sample or values")
		}
		if r.Distinct != 0 && r.Distinct < int64(len(r.Categories)) {
			return bad("%d distinct values for %d categories", r.Distinct, len(r.Categories))
		}
	default:
		return bad("kind %q, want %q or %q", r.Kind, KindNumeric, KindCategorical)
	}
	if total <= 0 {
		return bad("no reference value in any bin")
	}
	return nil
}
