package drift

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// normal returns n draws of N(mean, 1) from a fixed seed.
func normal(seed uint64, n int, mean float64) []float64 {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = mean + r.NormFloat64()
	}
	return xs
}

func near(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func TestSummarizeKnownValues(t *testing.T) {
	t.Parallel()
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name   string
		values []float64
		want   NumericStats
	}{
		{
			name:   "four values and missing ones",
			values: []float64{4, nan, 1, 3, inf, 2, math.Inf(-1)},
			want: NumericStats{
				Count: 4, Missing: 3, Distinct: 4, Mean: 2.5,
				Std: math.Sqrt(5.0 / 3), // Σ(x-2.5)² = 5, divided by n-1 = 3
				Min: 1, Max: 4,
				// NumPy's linear quantiles: h = 3p, e.g. p=0.25 → 1.75.
				Quantiles: []Quantile{{0.25, 1.75}, {0.5, 2.5}, {1, 4}},
				// Ten equal-width bins on [1, 4]: 2 falls in [1.9, 2.2), 3 in [2.8, 3.1).
				Histogram: Histogram{
					Edges:  []float64{1, 1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3.1, 3.4, 3.7, 4},
					Counts: []int64{1, 0, 0, 1, 0, 0, 1, 0, 0, 1},
				},
			},
		},
		{
			name:   "one value",
			values: []float64{7},
			want: NumericStats{
				Count: 1, Distinct: 1, Mean: 7, Min: 7, Max: 7,
				Quantiles: []Quantile{{0.25, 7}, {0.5, 7}, {1, 7}},
				Histogram: Histogram{Edges: []float64{7, 7}, Counts: []int64{1}},
			},
		},
		{
			name:   "only missing",
			values: []float64{nan, nan},
			want:   NumericStats{Missing: 2},
		},
		{
			name: "empty",
			want: NumericStats{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Summarize(tt.values, WithQuantiles(0.5, 0.25, 1, 2, math.NaN()))
			if !near(got.Std, tt.want.Std, 1e-12) || !near(got.Mean, tt.want.Mean, 1e-12) {
				t.Errorf("mean, std = %v, %v; want %v, %v", got.Mean, got.Std, tt.want.Mean, tt.want.Std)
			}
			got.Std, got.Mean = tt.want.Std, tt.want.Mean
			for i, e := range got.Histogram.Edges {
				if i < len(tt.want.Histogram.Edges) && near(e, tt.want.Histogram.Edges[i], 1e-12) {
					got.Histogram.Edges[i] = tt.want.Histogram.Edges[i]
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Summarize =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestSummarizeDefaultQuantiles(t *testing.T) {
	t.Parallel()
	xs := make([]float64, 101)
	for i := range xs {
		xs[i] = float64(100 - i) // 0..100, added in reverse
	}
	s := Summarize(xs)
	if len(s.Quantiles) != len(DefaultQuantiles()) {
		t.Fatalf("got %d quantiles, want %d", len(s.Quantiles), len(DefaultQuantiles()))
	}
	for _, q := range s.Quantiles {
		if !near(q.Value, 100*q.Q, 1e-12) {
			t.Errorf("quantile %v = %v, want %v", q.Q, q.Value, 100*q.Q)
		}
	}
}

func TestMergeEqualsConcatenation(t *testing.T) {
	t.Parallel()
	var batches [][]float64
	for i := range 5 {
		b := normal(uint64(i+1), 200+37*i, float64(i)/3)
		b[i] = math.NaN() // missing values must add up too
		batches = append(batches, b)
	}
	batches = append(batches, nil, []float64{math.NaN()}) // empty ones merge as no-ops
	var all []float64
	merged := NewNumeric()
	for _, b := range batches {
		all = append(all, b...)
		a := NewNumeric()
		a.AddAll(b)
		merged.Merge(a)
	}
	want := Summarize(all)
	got := merged.Stats()
	if !near(got.Mean, want.Mean, 1e-12) || !near(got.Std, want.Std, 1e-12) {
		t.Errorf("merged mean, std = %v, %v; concatenation %v, %v", got.Mean, got.Std, want.Mean, want.Std)
	}
	got.Mean, got.Std = want.Mean, want.Std
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged stats =\n%+v\nconcatenation\n%+v", got, want)
	}

	// References built both ways are equal too.
	refMerged, err := merged.Reference()
	if err != nil {
		t.Fatal(err)
	}
	refAll, err := NewReference(all)
	if err != nil {
		t.Fatal(err)
	}
	refMerged.Mean, refMerged.Std = refAll.Mean, refAll.Std
	if !reflect.DeepEqual(refMerged, refAll) {
		t.Errorf("reference from merged batches differs from the concatenation's")
	}
}

func TestMergeSelfAndNil(t *testing.T) {
	t.Parallel()
	xs := []float64{3, 1, 2, math.NaN()}
	a := NewNumeric()
	a.AddAll(xs)
	a.Merge(a)
	a.Merge(nil)
	want := Summarize(append(slices.Clone(xs), xs...))
	got := a.Stats()
	if !near(got.Std, want.Std, 1e-12) {
		t.Errorf("std %v, want %v", got.Std, want.Std)
	}
	got.Std = want.Std
	if !reflect.DeepEqual(got, want) {
		t.Errorf("self-merge =\n%+v\nwant\n%+v", got, want)
	}

	c := NewCategorical()
	c.AddAll([]string{"a", "b", "a", ""})
	c.Merge(c)
	c.Merge(nil)
	if got, want := c.Stats(), SummarizeCategories([]string{"a", "b", "a", "", "a", "b", "a", ""}); !reflect.DeepEqual(got, want) {
		t.Errorf("categorical self-merge = %+v, want %+v", got, want)
	}
}

func TestHistogramOnReferenceEdges(t *testing.T) {
	t.Parallel()
	ref, err := NewReference([]float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	if err != nil {
		t.Fatal(err)
	}
	edges := ref.HistogramEdges()
	if edges[0] != 0 || edges[len(edges)-1] != 11 {
		t.Fatalf("edges %v do not span the reference", edges)
	}
	s := Summarize([]float64{-5, 0, 11, 11, 12, math.NaN()}, WithHistogramEdges(edges...))
	h := s.Histogram
	if !reflect.DeepEqual(h.Edges, edges) || h.Under != 1 || h.Over != 1 || h.Counts[0] != 1 || h.Counts[len(h.Counts)-1] != 2 {
		t.Errorf("histogram %+v on edges %v: want 1 under, 1 over, 0 in the first bin, both 11s in the last", h, edges)
	}
	empty := Summarize(nil, WithHistogramEdges(edges...))
	if !reflect.DeepEqual(empty.Histogram.Edges, edges) || len(empty.Histogram.Counts) != len(edges)-1 {
		t.Errorf("empty batch histogram %+v, want zero counts on the fixed edges", empty.Histogram)
	}
}

func TestCategoricalStats(t *testing.T) {
	t.Parallel()
	values := []string{"b", "a", "", "c", "a", "b", "d", "a", ""}
	tests := []struct {
		name string
		opts []Option
		want CategoricalStats
	}{
		{
			name: "uncapped",
			want: CategoricalStats{
				Count: 7, Missing: 2, Distinct: 4,
				// Most frequent first, ties by value.
				Counts: []CategoryCount{{"a", 3}, {"b", 2}, {"c", 1}, {"d", 1}},
			},
		},
		{
			name: "capped",
			opts: []Option{WithMaxCategories(2)},
			want: CategoricalStats{
				Count: 7, Missing: 2, Distinct: 4,
				Counts: []CategoryCount{{"a", 3}, {"b", 2}},
				Other:  2,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := SummarizeCategories(values, tt.opts...); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SummarizeCategories = %+v, want %+v", got, tt.want)
			}
			// Merging two halves gives the same.
			a, b := NewCategorical(tt.opts...), NewCategorical(tt.opts...)
			a.AddAll(values[:4])
			b.AddAll(values[4:])
			a.Merge(b)
			if got := a.Stats(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("merged = %+v, want %+v", got, tt.want)
			}
		})
	}
	if top := SummarizeCategories(values).Top(1); !reflect.DeepEqual(top, []CategoryCount{{"a", 3}}) {
		t.Errorf("Top(1) = %v", top)
	}
}

func nan() float64 { return math.NaN() }
