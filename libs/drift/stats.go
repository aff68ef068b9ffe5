package drift

import (
	"cmp"
	"math"
	"slices"
	"sort"
)

// Defaults of the options.
const (
	// DefaultHistogramBins is the number of equal-width bins of a
	// NumericStats histogram when no edges are fixed.
	DefaultHistogramBins = 10
	// DefaultBins is the number of equal-probability bins of a numeric
	// Reference (deciles: the bins the usual PSI thresholds were set on).
	DefaultBins = 10
	// DefaultSampleSize is the largest sample a numeric Reference stores.
	DefaultSampleSize = 500
	// DefaultMaxCategories is the largest number of categories counted
	// one by one in CategoricalStats.
	DefaultMaxCategories = 1000
	// DefaultReferenceCategories is the largest number of categories a
	// categorical Reference keeps one by one; fewer than in the statistics,
	// because a reference is stored and compared on every batch.
	DefaultReferenceCategories = 200
	// DefaultTopK is the number of top categories put in a ColumnStats
	// payload (the proto's limit).
	DefaultTopK = 20
)

var defaultQuantiles = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99}

// DefaultQuantiles returns the probabilities at which NumericStats reports
// quantiles unless told otherwise.
func DefaultQuantiles() []float64 { return slices.Clone(defaultQuantiles) }

// config gathers every option; each builder reads the fields it needs.
type config struct {
	probs         []float64
	edges         []float64
	histBins      int
	bins          int
	sampleSize    int
	maxCategories int
}

func newConfig(opts []Option) config {
	c := config{
		probs:      defaultQuantiles,
		histBins:   DefaultHistogramBins,
		bins:       DefaultBins,
		sampleSize: DefaultSampleSize,
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// Option tunes an accumulator or a reference. Options are configuration
// written by programmers, not data, so an invalid value (a probability
// outside [0, 1], a count below 1) is ignored and the default kept, rather
// than making every constructor return an error.
type Option func(*config)

// WithQuantiles sets the probabilities at which NumericStats reports
// quantiles; values outside [0, 1] are dropped.
func WithQuantiles(probs ...float64) Option {
	var ps []float64
	for _, p := range probs {
		if p >= 0 && p <= 1 {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	ps = slices.Compact(ps)
	return func(c *config) { c.probs = ps }
}

// WithHistogramEdges fixes the edges of the NumericStats histogram, typically
// to a Reference's [Reference.HistogramEdges] so that every batch is binned
// alike. Non-finite edges are dropped and the rest sorted; with no edge left
// the histogram falls back to equal-width bins.
func WithHistogramEdges(edges ...float64) Option {
	e := sanitizeEdges(edges)
	return func(c *config) { c.edges = e }
}

// WithHistogramBins sets the number of equal-width histogram bins used when
// no edges are fixed.
func WithHistogramBins(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.histBins = n
		}
	}
}

// WithBins sets the number of equal-probability bins of a numeric Reference.
func WithBins(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.bins = n
		}
	}
}

// WithSampleSize sets the largest sample a numeric Reference stores.
func WithSampleSize(n int) Option {
	return func(c *config) {
		if n >= 2 {
			c.sampleSize = n
		}
	}
}

// WithMaxCategories sets how many categories are counted one by one in
// CategoricalStats (default DefaultMaxCategories) and in a categorical
// Reference (default DefaultReferenceCategories); the rest are counted
// together as Other.
func WithMaxCategories(n int) Option {
	return func(c *config) {
		if n >= 1 {
			c.maxCategories = n
		}
	}
}

// sanitizeEdges keeps finite edges, sorted and without repeats. A single
// remaining edge c becomes [c, c]: the one zero-width bin of a constant
// reference.
func sanitizeEdges(edges []float64) []float64 {
	var e []float64
	for _, x := range edges {
		if finite(x) {
			e = append(e, x)
		}
	}
	slices.Sort(e)
	e = slices.Compact(e)
	if len(e) == 1 {
		e = append(e, e[0])
	}
	return e
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Quantile is the value of a column at probability Q.
type Quantile struct {
	Q     float64 `json:"q"`
	Value float64 `json:"value"`
}

// Histogram counts values per bin: Counts[i] is the number of values in
// [Edges[i], Edges[i+1]), the last bin also holding its upper edge. Values
// below the first edge or above the last are counted in Under and Over, which
// matters when the edges are fixed by a reference and a batch leaves its
// range.
type Histogram struct {
	Edges  []float64 `json:"edges,omitempty"`
	Counts []int64   `json:"counts,omitempty"`
	Under  int64     `json:"under,omitempty"`
	Over   int64     `json:"over,omitempty"`
}

// NumericStats summarises a numeric column.
type NumericStats struct {
	// Count is the number of non-missing values.
	Count int64 `json:"count"`
	// Missing is the number of missing values (NaN, ±Inf, empty cells).
	Missing int64 `json:"missing"`
	// Distinct is the exact number of distinct values.
	Distinct int64 `json:"distinct"`
	// Mean of the values; 0 when Count is 0.
	Mean float64 `json:"mean"`
	// Std is the sample standard deviation (divisor Count-1); 0 when Count
	// is below 2. See [NumericStats.PopulationStd] for the proto's.
	Std float64 `json:"std"`
	// Min and Max are the extreme values; 0 when Count is 0.
	Min float64 `json:"min"`
	Max float64 `json:"max"`
	// Quantiles at the configured probabilities, ascending.
	Quantiles []Quantile `json:"quantiles,omitempty"`
	// Histogram on the fixed edges, or on equal-width bins over [Min, Max].
	Histogram Histogram `json:"histogram"`
}

// PopulationStd is the standard deviation with divisor Count, the one the
// gyre.v1.ColumnStats payload carries.
func (s NumericStats) PopulationStd() float64 {
	if s.Count < 2 {
		return 0
	}
	n := float64(s.Count)
	return s.Std * math.Sqrt((n-1)/n)
}

// Numeric accumulates a numeric column. Mean and variance use Welford's
// streaming update (and Chan's formula to merge), which stays accurate where
// the naive sum of squares cancels. Quantiles are exact: the accumulator keeps
// every value and sorts them when asked, which costs 8 bytes a value and is
// fine for batches up to about a million values; an approximate sketch would
// save memory but make references depend on the order batches arrived in.
// The zero value is not ready: use [NewNumeric].
type Numeric struct {
	cfg     config
	n       int64
	missing int64
	mean    float64
	m2      float64
	min     float64
	max     float64
	values  []float64
	sorted  bool
}

// NewNumeric returns an empty numeric accumulator.
func NewNumeric(opts ...Option) *Numeric {
	return &Numeric{cfg: newConfig(opts), sorted: true}
}

// Add adds one value; NaN and ±Inf count as missing.
func (a *Numeric) Add(v float64) {
	if !finite(v) {
		a.missing++
		return
	}
	a.n++
	if a.n == 1 {
		a.mean, a.min, a.max = v, v, v
	} else {
		d := v - a.mean
		a.mean += d / float64(a.n)
		a.m2 += d * (v - a.mean)
		a.min = min(a.min, v)
		a.max = max(a.max, v)
	}
	if a.sorted && len(a.values) > 0 && v < a.values[len(a.values)-1] {
		a.sorted = false
	}
	a.values = append(a.values, v)
}

// AddAll adds every value of vs.
func (a *Numeric) AddAll(vs []float64) {
	a.values = slices.Grow(a.values, len(vs))
	for _, v := range vs {
		a.Add(v)
	}
}

// AddMissing counts one missing value (an empty cell, a JSON null).
func (a *Numeric) AddMissing() { a.missing++ }

// Count is the number of non-missing values added.
func (a *Numeric) Count() int64 { return a.n }

// Merge adds every value of b to a, as if they had been added to a one by
// one. b is left unchanged; a keeps its own options.
func (a *Numeric) Merge(b *Numeric) {
	if b == nil {
		return
	}
	// Copy b first: a and b may be the same accumulator.
	bn, bmean, bm2, bmin, bmax, bmiss, bvals := b.n, b.mean, b.m2, b.min, b.max, b.missing, b.values
	a.missing += bmiss
	if bn == 0 {
		return
	}
	if a.n == 0 {
		a.mean, a.m2, a.min, a.max = bmean, bm2, bmin, bmax
	} else {
		n := a.n + bn
		d := bmean - a.mean
		a.mean += d * float64(bn) / float64(n)
		a.m2 += bm2 + d*d*float64(a.n)*float64(bn)/float64(n)
		a.min = min(a.min, bmin)
		a.max = max(a.max, bmax)
	}
	a.sorted = len(a.values) == 0 && b.sorted
	a.n += bn
	a.values = append(a.values, bvals...)
}

func (a *Numeric) sort() []float64 {
	if !a.sorted {
		slices.Sort(a.values)
		a.sorted = true
	}
	return a.values
}

// Stats summarises the values added so far.
func (a *Numeric) Stats() NumericStats {
	s := NumericStats{Count: a.n, Missing: a.missing}
	if a.n == 0 {
		if len(a.cfg.edges) >= 2 {
			s.Histogram = Histogram{Edges: slices.Clone(a.cfg.edges), Counts: make([]int64, len(a.cfg.edges)-1)}
		}
		return s
	}
	s.Mean, s.Min, s.Max = a.mean, a.min, a.max
	if a.n > 1 {
		s.Std = math.Sqrt(a.m2 / float64(a.n-1))
	}
	xs := a.sort()
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			s.Distinct++
		}
	}
	s.Quantiles = make([]Quantile, len(a.cfg.probs))
	for i, p := range a.cfg.probs {
		s.Quantiles[i] = Quantile{Q: p, Value: quantileSorted(xs, p)}
	}
	edges := a.cfg.edges
	if len(edges) < 2 {
		edges = equalWidthEdges(a.min, a.max, a.cfg.histBins)
	}
	s.Histogram = histogramSorted(xs, edges)
	return s
}

// Summarize returns the statistics of values (NaN and ±Inf are missing).
func Summarize(values []float64, opts ...Option) NumericStats {
	a := NewNumeric(opts...)
	a.AddAll(values)
	return a.Stats()
}

// quantileSorted is the quantile at p of sorted, non-empty xs with linear
// interpolation between order statistics (NumPy's default, type 7).
func quantileSorted(xs []float64, p float64) float64 {
	h := float64(len(xs)-1) * p
	lo := int(math.Floor(h))
	if lo >= len(xs)-1 {
		return xs[len(xs)-1]
	}
	return lerp(xs[lo], xs[lo+1], h-float64(lo))
}

// lerp interpolates without computing b-a, which overflows for values of
// opposite signs near the float64 limits.
func lerp(a, b, t float64) float64 {
	if a == b || t == 0 {
		return a
	}
	return a*(1-t) + b*t
}

func equalWidthEdges(lo, hi float64, bins int) []float64 {
	if lo == hi {
		return []float64{lo, hi}
	}
	e := make([]float64, bins+1)
	for i := range e {
		e[i] = lerp(lo, hi, float64(i)/float64(bins))
	}
	e[bins] = hi
	return sanitizeEdges(e)
}

// binIndex places x on edges: -1 below the first edge, len(edges)-1 above the
// last, otherwise the bin i with edges[i] <= x < edges[i+1] (the last bin is
// closed).
func binIndex(edges []float64, x float64) int {
	k := len(edges) - 1
	switch {
	case x < edges[0]:
		return -1
	case x > edges[k]:
		return k
	case x == edges[k]:
		return k - 1
	}
	// First edge greater than x, minus one.
	return sort.Search(len(edges), func(i int) bool { return edges[i] > x }) - 1
}

func histogramSorted(xs []float64, edges []float64) Histogram {
	h := Histogram{Edges: slices.Clone(edges), Counts: make([]int64, len(edges)-1)}
	for _, x := range xs {
		switch i := binIndex(edges, x); {
		case i < 0:
			h.Under++
		case i >= len(h.Counts):
			h.Over++
		default:
			h.Counts[i]++
		}
	}
	return h
}

// CategoryCount is how many values a category has.
type CategoryCount struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// CategoricalStats summarises a categorical column.
type CategoricalStats struct {
	// Count is the number of non-missing values.
	Count int64 `json:"count"`
	// Missing is the number of missing values (empty strings).
	Missing int64 `json:"missing"`
	// Distinct is the exact number of distinct non-missing values.
	Distinct int64 `json:"distinct"`
	// Counts has the most frequent categories, most frequent first (ties by
	// value), at most the configured maximum (DefaultMaxCategories).
	Counts []CategoryCount `json:"counts,omitempty"`
	// Other is the number of values whose category is not in Counts.
	Other int64 `json:"other,omitempty"`
}

// Top returns the k most frequent categories, most frequent first.
func (s CategoricalStats) Top(k int) []CategoryCount {
	if k < 0 {
		k = 0
	}
	return slices.Clone(s.Counts[:min(k, len(s.Counts))])
}

// Categorical accumulates a categorical column. It counts every category
// exactly (the cap applies to the summary, not to the accumulator) so that
// merging batches is exact. The zero value is not ready: use [NewCategorical].
type Categorical struct {
	cfg     config
	counts  map[string]int64
	n       int64
	missing int64
}

// NewCategorical returns an empty categorical accumulator.
func NewCategorical(opts ...Option) *Categorical {
	return &Categorical{cfg: newConfig(opts), counts: map[string]int64{}}
}

// Add adds one value; the empty string counts as missing.
func (a *Categorical) Add(v string) {
	if v == "" {
		a.missing++
		return
	}
	a.n++
	a.counts[v]++
}

// AddAll adds every value of vs.
func (a *Categorical) AddAll(vs []string) {
	for _, v := range vs {
		a.Add(v)
	}
}

// AddMissing counts one missing value.
func (a *Categorical) AddMissing() { a.missing++ }

// Count is the number of non-missing values added.
func (a *Categorical) Count() int64 { return a.n }

// Merge adds every value of b to a. b is left unchanged.
func (a *Categorical) Merge(b *Categorical) {
	if b == nil {
		return
	}
	bn, bmiss := b.n, b.missing
	for v, c := range b.counts { // a == b is fine: only existing keys change
		a.counts[v] += c
	}
	a.n += bn
	a.missing += bmiss
}

// sortedCounts is every category, most frequent first, ties by value so
// that the order (and the JSON) is deterministic.
func (a *Categorical) sortedCounts() []CategoryCount {
	cs := make([]CategoryCount, 0, len(a.counts))
	for v, c := range a.counts {
		cs = append(cs, CategoryCount{Value: v, Count: c})
	}
	slices.SortFunc(cs, func(x, y CategoryCount) int {
		if x.Count != y.Count {
			if x.Count > y.Count {
				return -1
			}
			return 1
		}
		if x.Value < y.Value {
			return -1
		}
		if x.Value > y.Value {
			return 1
		}
		return 0
	})
	return cs
}

// Stats summarises the values added so far.
func (a *Categorical) Stats() CategoricalStats {
	cs := a.sortedCounts()
	s := CategoricalStats{Count: a.n, Missing: a.missing, Distinct: int64(len(cs))}
	keep := min(len(cs), cmp.Or(a.cfg.maxCategories, DefaultMaxCategories))
	if keep > 0 {
		s.Counts = cs[:keep:keep]
	}
	for _, c := range cs[keep:] {
		s.Other += c.Count
	}
	return s
}

// SummarizeCategories returns the statistics of values ("" is missing).
func SummarizeCategories(values []string, opts ...Option) CategoricalStats {
	a := NewCategorical(opts...)
	a.AddAll(values)
	return a.Stats()
}
