package drift

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"gonum.org/v1/gonum/stat/distuv"
)

// Errors of the package, to be matched with errors.Is. Every one of them
// comes from the input (a spec, a reference, a batch), never from a transient
// condition: retrying cannot fix it.
var (
	// ErrUnknownMethod: a method name outside psi, ks, wasserstein,
	// jensenshannon, chisquare, z, auto.
	ErrUnknownMethod = errors.New("drift: unknown method")
	// ErrNoValues: a reference or a batch column with no non-missing value.
	ErrNoValues = errors.New("drift: no values")
	// ErrInvalidReference: a reference that breaks its invariants (see
	// Reference.Validate), e.g. corrupted in storage.
	ErrInvalidReference = errors.New("drift: invalid reference")
	// ErrNotApplicable: the method or the sample does not fit the feature's
	// kind (ks on a categorical feature, z on one with more than two
	// values, numbers for a categorical one).
	ErrNotApplicable = errors.New("drift: not applicable")
	// ErrOutOfRange: values so far apart (near ±1.8e308) that a statistic
	// overflows.
	ErrOutOfRange = errors.New("drift: values out of range")
	// ErrInvalidPolicy: a policy with a threshold, share or minimum out of
	// range.
	ErrInvalidPolicy = errors.New("drift: invalid policy")
	// ErrInvalidBatch: batch columns of different lengths.
	ErrInvalidBatch = errors.New("drift: invalid batch")
)

// Method is a drift measure, named as in the pipeline spec's drift.method.
type Method string

// The methods of the pipeline spec.
const (
	PSI           Method = "psi"
	KS            Method = "ks"
	Wasserstein   Method = "wasserstein"
	JensenShannon Method = "jensenshannon"
	ChiSquare     Method = "chisquare"
	// ZTest is the two-proportion Z-test of a binary feature.
	ZTest Method = "z"
	// Auto picks one of the others per feature (see [Select]).
	Auto Method = "auto"
)

// PSIEpsilon is the share given to a bin that is empty on one side when
// computing PSI, which is otherwise infinite (see the package doc).
const PSIEpsilon = 1e-4

var methods = []Method{PSI, KS, Wasserstein, JensenShannon, ChiSquare, ZTest, Auto}

// Methods returns every method, in the spec's order.
func Methods() []Method { return slices.Clone(methods) }

// ParseMethod parses a spec's method name (case and surrounding spaces
// ignored).
func ParseMethod(s string) (Method, error) {
	m := Method(strings.ToLower(strings.TrimSpace(s)))
	if slices.Contains(methods, m) {
		return m, nil
	}
	return "", fmt.Errorf("%w %q: want one of psi, ks, wasserstein, jensenshannon, chisquare, z, auto", ErrUnknownMethod, s)
}

// UnmarshalText parses a method, so that decoding a spec rejects unknown
// names.
func (m *Method) UnmarshalText(b []byte) error {
	p, err := ParseMethod(string(b))
	if err != nil {
		return err
	}
	*m = p
	return nil
}

// DefaultThreshold is the threshold used when a policy gives 0 (see the
// package doc): 0.2 for psi, 0.1 for ks, wasserstein and jensenshannon, and
// the p-value 0.05 for chisquare and z; 0 for auto, whose thresholds are per
// test (Policy.PValueThreshold, Policy.DistanceThreshold), and for an
// unknown method.
func (m Method) DefaultThreshold() float64 {
	switch m {
	case PSI:
		return 0.2
	case KS, Wasserstein, JensenShannon:
		return 0.1
	case ChiSquare, ZTest:
		return 0.05
	}
	return 0
}

// UsesPValue reports whether the verdict compares the p-value with the
// threshold (drifted when below) rather than the score (drifted when above)
// when the method is named in a policy: true for chisquare and z. (ks named
// in a policy is judged on D; auto judges the ks it picks on its p-value,
// see Score.ByPValue.)
func (m Method) UsesPValue() bool { return m == ChiSquare || m == ZTest }

// HasPValue reports whether the method reports a p-value.
func (m Method) HasPValue() bool { return m == KS || m == ChiSquare || m == ZTest }

// Drifted applies the method's verdict to a score: p-value below threshold
// for chisquare and z, score above threshold for the others, and for auto
// the verdict of the test it picked (Score.ByPValue).
func (m Method) Drifted(s Score, threshold float64) bool {
	if m.UsesPValue() || m == Auto && s.ByPValue {
		return s.PValue < threshold
	}
	return s.Value > threshold
}

// Score is a method's measure of one feature of a batch.
type Score struct {
	// Method is the test that was run: the one asked for, or the one auto
	// picked.
	Method Method `json:"method"`
	// Value is the method's score; higher means more drift (for z, |z|).
	Value float64 `json:"value"`
	// PValue is the test's p-value for ks, chisquare and z, 0 otherwise.
	PValue float64 `json:"pValue"`
	// ByPValue says that the verdict reads PValue (drifted when below the
	// threshold) rather than Value (drifted when above): chisquare and z,
	// and the ks that auto picks.
	ByPValue bool `json:"byPValue,omitempty"`
	// Rows and Missing count the batch's non-missing and missing values.
	Rows    int64 `json:"rows"`
	Missing int64 `json:"missing,omitempty"`
}

// Sample is one feature of a batch: Values for a numeric feature (NaN and
// ±Inf missing) or Categories for a categorical one ("" missing).
type Sample struct {
	Values     []float64
	Categories []string
}

// Len is the number of rows of the sample, missing values included.
func (s Sample) Len() int { return max(len(s.Values), len(s.Categories)) }

// Measure scores the numeric batch column cur against ref with method m.
func Measure(m Method, ref Reference, cur []float64) (Score, error) {
	return MeasureSample(m, ref, Sample{Values: cur})
}

// MeasureSample scores one feature of a batch against ref with method m.
// ks and wasserstein need a numeric feature, z a binary one (two values in
// the reference and the batch together); psi, jensenshannon and chisquare
// work on both kinds; auto runs the test [Select] picks. The result is
// finite, or an error.
func MeasureSample(m Method, ref Reference, cur Sample) (Score, error) {
	m, err := ParseMethod(string(m))
	if err != nil {
		return Score{}, err
	}
	if err := ref.Validate(); err != nil {
		return Score{}, err
	}
	if len(cur.Values) > 0 && len(cur.Categories) > 0 {
		return Score{}, fmt.Errorf("%w: a sample has values or categories, not both", ErrNotApplicable)
	}
	byP := m.UsesPValue()
	if m == Auto {
		if m, byP, err = Select(ref, cur); err != nil {
			return Score{}, err
		}
	}
	var s Score
	if ref.Kind == KindNumeric {
		s, err = measureNumeric(m, ref, cur)
	} else {
		s, err = measureCategorical(m, ref, cur)
	}
	if err != nil {
		return Score{}, err
	}
	s.Method, s.ByPValue = m, byP
	if !finite(s.Value) || !(s.PValue >= 0 && s.PValue <= 1) {
		return Score{}, fmt.Errorf("%w: %s score %v, p-value %v", ErrOutOfRange, m, s.Value, s.PValue)
	}
	return s, nil
}

func measureNumeric(m Method, ref Reference, cur Sample) (Score, error) {
	if len(cur.Categories) > 0 {
		return Score{}, fmt.Errorf("%w: categories for a numeric feature", ErrNotApplicable)
	}
	xs := make([]float64, 0, len(cur.Values))
	for _, v := range cur.Values {
		if finite(v) {
			xs = append(xs, v)
		}
	}
	s := Score{Rows: int64(len(xs)), Missing: int64(len(cur.Values) - len(xs))}
	if len(xs) == 0 {
		return s, fmt.Errorf("%w: the batch has %d missing values and no other", ErrNoValues, s.Missing)
	}
	switch m {
	case KS, Wasserstein:
		slices.Sort(xs)
		if m == KS {
			s.Value, s.PValue = ks(ref, xs)
		} else {
			s.Value = wasserstein1(ref.Sample, xs) / wassersteinScale(ref)
		}
		return s, nil
	}
	// Binned methods: bin 0 is below the reference minimum, the last bin
	// above its maximum; the reference has nothing there by construction.
	k := len(ref.Counts)
	refc := make([]float64, k+2)
	curc := make([]float64, k+2)
	for i, c := range ref.Counts {
		refc[i+1] = float64(c)
	}
	for _, x := range xs {
		curc[binIndex(ref.Edges, x)+1]++
	}
	return s, binned(m, refc, curc, &s)
}

func measureCategorical(m Method, ref Reference, cur Sample) (Score, error) {
	if m == KS || m == Wasserstein {
		return Score{}, fmt.Errorf("%w: %s needs a numeric feature; use psi, jensenshannon or chisquare for a categorical one", ErrNotApplicable, m)
	}
	if len(cur.Values) > 0 {
		return Score{}, fmt.Errorf("%w: numbers for a categorical feature", ErrNotApplicable)
	}
	// The last bin holds every category outside the reference's list.
	k := len(ref.Categories)
	index := make(map[string]int, k)
	for i, c := range ref.Categories {
		index[c] = i
	}
	refc := make([]float64, k+1)
	curc := make([]float64, k+1)
	for i, c := range ref.Counts {
		refc[i] = float64(c)
	}
	refc[k] = float64(ref.Other)
	var s Score
	for _, v := range cur.Categories {
		if v == "" {
			s.Missing++
			continue
		}
		s.Rows++
		if i, ok := index[v]; ok {
			curc[i]++
		} else {
			curc[k]++
		}
	}
	if s.Rows == 0 {
		return s, fmt.Errorf("%w: the batch has %d missing values and no other", ErrNoValues, s.Missing)
	}
	return s, binned(m, refc, curc, &s)
}

// binned computes a bin-based method on reference and current counts.
func binned(m Method, refc, curc []float64, s *Score) error {
	switch m {
	case PSI:
		s.Value = psi(refc, curc)
	case JensenShannon:
		s.Value = jensenShannon(refc, curc)
	case ChiSquare:
		s.Value, s.PValue = chiSquare(refc, curc)
	case ZTest:
		var err error
		s.Value, s.PValue, err = zTest(refc, curc)
		return err
	}
	return nil
}

func sum(xs []float64) float64 {
	var t float64
	for _, x := range xs {
		t += x
	}
	return t
}

// psi is Σ (q-p)·ln(q/p) over bins, shares floored at PSIEpsilon.
func psi(refc, curc []float64) float64 {
	nr, nc := sum(refc), sum(curc)
	var v float64
	for i := range refc {
		p, q := refc[i]/nr, curc[i]/nc
		if p == 0 && q == 0 {
			continue
		}
		p, q = max(p, PSIEpsilon), max(q, PSIEpsilon)
		v += (q - p) * math.Log(q/p)
	}
	return v
}

// jensenShannon is the square root of the base-2 Jensen–Shannon divergence,
// a metric in [0, 1]: 0 for equal histograms, 1 for disjoint ones.
func jensenShannon(refc, curc []float64) float64 {
	nr, nc := sum(refc), sum(curc)
	var d float64
	for i := range refc {
		p, q := refc[i]/nr, curc[i]/nc
		mid := (p + q) / 2
		if p > 0 {
			d += p * math.Log2(p/mid)
		}
		if q > 0 {
			d += q * math.Log2(q/mid)
		}
	}
	return math.Sqrt(min(max(d/2, 0), 1))
}

// chiSquare is Pearson's test of homogeneity on the 2×k table of reference
// and current counts, bins empty on both sides dropped, with Yates'
// correction at one degree of freedom. It returns the statistic and p-value.
func chiSquare(refc, curc []float64) (stat, p float64) {
	nr, nc := sum(refc), sum(curc)
	n := nr + nc
	cols := 0
	for i := range refc {
		if refc[i]+curc[i] > 0 {
			cols++
		}
	}
	df := cols - 1
	if df < 1 {
		// Everything in one bin on both sides: nothing differs.
		return 0, 1
	}
	for i := range refc {
		tot := refc[i] + curc[i]
		if tot == 0 {
			continue
		}
		for _, c := range [2][2]float64{{refc[i], nr}, {curc[i], nc}} {
			e := c[1] * tot / n
			d := math.Abs(c[0] - e)
			if df == 1 {
				d -= min(0.5, d)
			}
			stat += d * d / e
		}
	}
	return stat, distuv.ChiSquared{K: float64(df)}.Survival(stat)
}

// zTest is the two-sided two-proportion Z-test with pooled variance
// (Evidently's "z" test, proportions_diff_z_stat_ind) on reference and
// current counts that have at most two non-empty bins (values): with shares
// p1 and p2 of the first bin and pooled share P,
// z = (p1 - p2) / √(P(1-P)(1/n1 + 1/n2)) and p = 2·(1 - Φ(|z|)), computed as
// 2·Φ(-|z|) (gonum's standard normal) so that small p-values keep their
// precision. It returns |z| and p. One non-empty bin on both sides is no
// difference (0, 1); more than two bins is not a binary feature.
func zTest(refc, curc []float64) (z, p float64, err error) {
	var cols []int
	for i := range refc {
		if refc[i]+curc[i] > 0 {
			cols = append(cols, i)
		}
	}
	switch {
	case len(cols) > 2:
		return 0, 0, fmt.Errorf("%w: z needs a binary feature, and the reference and the batch hold %d values (bins) together", ErrNotApplicable, len(cols))
	case len(cols) < 2:
		return 0, 1, nil
	}
	n1, n2 := sum(refc), sum(curc)
	a, b := refc[cols[0]], curc[cols[0]]
	p1, p2 := a/n1, b/n2
	pooled := (a + b) / (n1 + n2)
	z = math.Abs(p1-p2) / math.Sqrt(pooled*(1-pooled)*(1/n1+1/n2))
	return z, 2 * distuv.UnitNormal.Survival(z), nil
}

// wassersteinScale is the divisor of the Wasserstein distance: the
// reference's standard deviation, or 1 for a constant reference.
func wassersteinScale(ref Reference) float64 {
	if ref.Std > 0 {
		return ref.Std
	}
	return 1
}

// wasserstein1 is ∫|F_a(x) - F_b(x)| dx for the empirical distributions of
// sorted, non-empty a and b (each point weighing 1/len), walked once over the
// merged points.
func wasserstein1(a, b []float64) float64 {
	na, nb := len(a), len(b)
	fa, fb := float64(na), float64(nb)
	i, j := 0, 0
	prev := min(a[0], b[0])
	var w float64
	for i < na || j < nb {
		var x float64
		if j >= nb || i < na && a[i] <= b[j] {
			x = a[i]
		} else {
			x = b[j]
		}
		w += math.Abs(float64(i)/fa-float64(j)/fb) * (x - prev)
		for i < na && a[i] == x {
			i++
		}
		for j < nb && b[j] == x {
			j++
		}
		prev = x
	}
	return w
}
