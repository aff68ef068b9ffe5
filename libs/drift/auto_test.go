package drift

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The reference values of this file were computed with Debian's
// python3-scipy 1.10.1 (/usr/bin/python3) on the same data:
//
//	seqOf(n, mul, mod, div, add) = [((i*mul) % mod)/div + add for i in range(n)]
//	ks:            scipy.stats.ks_2samp(ref, cur)  (method "auto": exact when max(n, m) <= 10000)
//	z:             z = (p1-p2)/sqrt(P(1-P)(1/n1+1/n2)), p = 2*scipy.stats.norm.sf(|z|)
//	               (the same p as scipy.stats.chi2_contingency(table, correction=False))
//	chisquare:     scipy.stats.chi2_contingency(table, correction=False)
//	jensenshannon: scipy.spatial.distance.jensenshannon(p, q, base=2)
//	wasserstein:   scipy.stats.wasserstein_distance(ref, cur) / numpy.std(ref, ddof=1)

// seqOf is ((i·mul) mod m)/div + add for i < n: deterministic data that
// Python reproduces bit for bit.
func seqOf(n, mul, mod int, div, add float64) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64((i*mul)%mod)/div + add
	}
	return xs
}

// pValueNear: within 1e-9, and within a relative 1e-6 when tiny.
func pValueNear(got, want float64) bool {
	d := math.Abs(got - want)
	return d <= 1e-9 && (want >= 1e-6 || d <= 1e-6*want)
}

// catsOf is counts[i] copies of the category "c<i>".
func catsOf(counts ...int) []string {
	var cs []string
	for i, n := range counts {
		cs = append(cs, repeatS("c"+strconv.Itoa(i), n)...)
	}
	return cs
}

func TestKSPValueMatchesSciPy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ref, cur []float64
		d, p     float64
	}{
		{"300 vs 400 shifted", seqOf(300, 37, 997, 10.0, 0.0), seqOf(400, 53, 1009, 10.0, 5.0), 0.08583333333333333, 0.1521215597815589},
		{"1000 vs 1000 close", seqOf(1000, 37, 997, 10.0, 0.0), seqOf(1000, 53, 1009, 10.0, 0.0), 0.012, 0.999999678182},
		{"1000 vs 2500 shift 2", seqOf(1000, 37, 997, 10.0, 0.0), seqOf(2500, 53, 1009, 10.0, 2.0), 0.032, 0.44994000720790484},
		{"ties 200 vs 150", seqOf(200, 1, 7, 1.0, 0.0), seqOf(150, 1, 9, 1.0, 0.0), 0.21333333333333335, 0.0006943885462783837},
		{"50 vs 10000", seqOf(50, 37, 997, 10.0, 0.0), seqOf(10000, 53, 1009, 10.0, 3.0), 0.14, 0.2588400212754406},
		{"999 vs 998 shift 1", seqOf(999, 37, 997, 10.0, 0.0), seqOf(998, 53, 1009, 10.0, 1.0), 0.022074178386803638, 0.9617838419150663},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ref := mustRef(t, tt.ref)
			if !ref.Exact() {
				t.Fatalf("a %d-row reference is not exact", ref.Rows)
			}
			for _, m := range []Method{KS, Auto} {
				s, err := Measure(m, ref, tt.cur)
				if err != nil {
					t.Fatal(err)
				}
				if s.Method != KS || !near(s.Value, tt.d, 1e-12) || !pValueNear(s.PValue, tt.p) {
					t.Errorf("%s: %s D = %v, p = %v; want ks, %v, %v", m, s.Method, s.Value, s.PValue, tt.d, tt.p)
				}
				// Named in a policy, ks is judged on D; picked by auto, on
				// its p-value.
				if s.ByPValue != (m == Auto) {
					t.Errorf("%s: byPValue %v", m, s.ByPValue)
				}
			}
		})
	}
}

func TestZTestMatchesSciPy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, n1, b, n2 int // a of n1 reference rows and b of n2 batch rows are "c0"
		z, p         float64
	}{
		{400, 1000, 450, 1000, 2.261656365159503, 0.023718642632191457},
		{30, 100, 45, 120, 1.1685534824642432, 0.24258357934832098},
		{700, 1000, 100, 200, 5.477225575051659, 4.320463057827522e-08},
		{500, 1000, 500, 1000, 0, 1},
		{10, 900, 3, 80, 1.9770400966194408, 0.048037098044966385},
	}
	for _, tt := range tests {
		ref := mustCatRef(t, catsOf(tt.a, tt.n1-tt.a))
		cur := Sample{Categories: catsOf(tt.b, tt.n2-tt.b)}
		for _, m := range []Method{ZTest, Auto} {
			s, err := MeasureSample(m, ref, cur)
			if err != nil {
				t.Fatal(err)
			}
			if s.Method != ZTest || !s.ByPValue || !near(s.Value, tt.z, 1e-9) || !pValueNear(s.PValue, tt.p) {
				t.Errorf("%s on %d/%d vs %d/%d: %+v, want |z| %v, p %v", m, tt.a, tt.n1, tt.b, tt.n2, s, tt.z, tt.p)
			}
		}
	}
	// The same on a numeric binary feature.
	ref := mustRef(t, cat(repeat(0, 400), repeat(1, 600)))
	s, err := Measure(Auto, ref, cat(repeat(0, 450), repeat(1, 550)))
	if err != nil || s.Method != ZTest || !near(s.Value, 2.261656365159503, 1e-9) || !pValueNear(s.PValue, 0.023718642632191457) {
		t.Errorf("numeric binary: %+v, %v", s, err)
	}
	// z needs two values at most.
	if _, err := MeasureSample(ZTest, ref, Sample{Values: []float64{0, 1, 2}}); !errors.Is(err, ErrNotApplicable) {
		t.Errorf("z on three values: %v", err)
	}
}

func TestChiSquareMatchesSciPy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref, cur []int
		stat, p  float64
	}{
		{[]int{100, 200, 300}, []int{150, 150, 100}, 80.35714285714286, 3.553596699287661e-18},
		{[]int{50, 60, 70, 80}, []int{55, 65, 60, 90}, 1.6074543076051375, 0.6577007890614213},
		// c4 is new in the batch: its column has no reference rows.
		{[]int{400, 300, 200, 100, 0}, []int{80, 70, 60, 50, 40}, 156.93693693693695, 6.633946793918703e-33},
	}
	for _, tt := range tests {
		ref := mustCatRef(t, catsOf(tt.ref...))
		cur := Sample{Categories: catsOf(tt.cur...)}
		for _, m := range []Method{ChiSquare, Auto} {
			s, err := MeasureSample(m, ref, cur)
			if err != nil {
				t.Fatal(err)
			}
			if s.Method != ChiSquare || !s.ByPValue || !near(s.Value, tt.stat, 1e-9) || !pValueNear(s.PValue, tt.p) {
				t.Errorf("%s on %v vs %v: %+v, want χ² %v, p %v", m, tt.ref, tt.cur, s, tt.stat, tt.p)
			}
		}
	}
}

func TestJensenShannonMatchesSciPy(t *testing.T) {
	t.Parallel()
	// References of more than 1,000 rows: auto picks jensenshannon for a
	// categorical feature, even a binary one.
	tests := []struct {
		ref, cur []int
		want     float64
	}{
		{[]int{200, 400, 600}, []int{150, 150, 100}, 0.24735013880002696},
		{[]int{800, 600, 400, 200, 0}, []int{80, 70, 60, 50, 40}, 0.2922990921097473},
		{[]int{2000, 0}, []int{0, 10}, 1},
	}
	for _, tt := range tests {
		ref := mustCatRef(t, catsOf(tt.ref...))
		cur := Sample{Categories: catsOf(tt.cur...)}
		for _, m := range []Method{JensenShannon, Auto} {
			s, err := MeasureSample(m, ref, cur)
			if err != nil {
				t.Fatal(err)
			}
			if s.Method != JensenShannon || s.ByPValue || !near(s.Value, tt.want, 1e-9) {
				t.Errorf("%s on %v vs %v: %+v, want %v", m, tt.ref, tt.cur, s, tt.want)
			}
		}
	}
}

func TestWassersteinMatchesSciPy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref, cur []float64
		want     float64
	}{
		{seqOf(1000, 37, 997, 10.0, 0.0), seqOf(1000, 53, 1009, 10.0, 5.0), 0.19132809354800284},
		{seqOf(1000, 37, 997, 10.0, 0.0), seqOf(800, 53, 1009, 10.0, 0.0), 0.03915655218398387},
		{seqOf(700, 1, 13, 1.0, 0.0), seqOf(900, 1, 11, 1.0, 0.5), 0.20000561799413963},
	}
	for _, tt := range tests {
		s, err := Measure(Wasserstein, mustRef(t, tt.ref), tt.cur)
		if err != nil || !near(s.Value, tt.want, 1e-9) {
			t.Errorf("W1/std = %+v, %v; want %v", s, err, tt.want)
		}
	}
	// A reference of more than 1,000 rows is a 500-quantile sketch: close,
	// and auto's choice.
	s, err := Measure(Auto, mustRef(t, seqOf(1500, 37, 997, 10.0, 0.0)), seqOf(1000, 53, 1009, 10.0, 5.0))
	if err != nil || s.Method != Wasserstein || s.ByPValue || math.Abs(s.Value-0.19371845606633434) > 0.005 {
		t.Errorf("sketched: %+v, %v", s, err)
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	many := func(n int) []float64 { return seqOf(n, 37, 997, 10.0, 0.0) }
	levels := func(n, k int) []float64 { return seqOf(n, 1, k, 1.0, 0.0) } // 0..k-1
	legacy := mustRef(t, many(5000))
	legacy.Distinct, legacy.Values = 0, nil
	legacyFew := mustRef(t, levels(5000, 4))
	legacyFew.Distinct, legacyFew.Values = 0, nil
	manyCats := make([]string, 5000)
	for i := range manyCats {
		manyCats[i] = "k" + strconv.Itoa(i%250)
	}
	tests := []struct {
		name   string
		ref    Reference
		cur    Sample
		want   Method
		byP    bool
		errIs  error
		reason string
	}{
		{"numeric, small, many values", mustRef(t, many(300)), Sample{Values: many(100)}, KS, true, nil, ""},
		{"numeric, 1000 rows is small", mustRef(t, many(1000)), Sample{Values: many(100)}, KS, true, nil, ""},
		{"numeric, 1001 rows is large", mustRef(t, many(1001)), Sample{Values: many(100)}, Wasserstein, false, nil, ""},
		{"numeric, large, many values", mustRef(t, many(5000)), Sample{Values: many(100)}, Wasserstein, false, nil, ""},
		{"numeric, small, 4 values", mustRef(t, levels(300, 4)), Sample{Values: levels(100, 4)}, ChiSquare, true, nil, ""},
		{"numeric, small, 5 values together", mustRef(t, levels(300, 4)), Sample{Values: levels(100, 5)}, ChiSquare, true, nil, ""},
		{"numeric, small, 6 values together", mustRef(t, levels(300, 5)), Sample{Values: levels(100, 6)}, KS, true, nil, ""},
		{"numeric, large, 4 values", mustRef(t, levels(5000, 4)), Sample{Values: levels(100, 4)}, JensenShannon, false, nil, ""},
		{"numeric, large, 6 values together", mustRef(t, levels(5000, 5)), Sample{Values: levels(100, 6)}, Wasserstein, false, nil, ""},
		{"numeric, small, binary", mustRef(t, levels(300, 2)), Sample{Values: levels(100, 2)}, ZTest, true, nil, ""},
		{"numeric, small, binary with a new value", mustRef(t, levels(300, 2)), Sample{Values: levels(100, 3)}, ChiSquare, true, nil, ""},
		{"numeric, large, binary", mustRef(t, levels(5000, 2)), Sample{Values: levels(100, 2)}, JensenShannon, false, nil, ""},
		{"legacy reference, many values", legacy, Sample{Values: many(100)}, Wasserstein, false, nil, ""},
		{"legacy reference, 4 bins", legacyFew, Sample{Values: levels(100, 4)}, JensenShannon, false, nil, ""},
		{"legacy reference, 4 bins and 2 new values", legacyFew, Sample{Values: append(levels(100, 4), 7, 9)}, Wasserstein, false, nil, ""},
		{"categorical, small, 3 categories", mustCatRef(t, catsOf(100, 100, 100)), Sample{Categories: catsOf(10, 10, 10)}, ChiSquare, true, nil, ""},
		{"categorical, small, binary", mustCatRef(t, catsOf(100, 100)), Sample{Categories: catsOf(10, 10)}, ZTest, true, nil, ""},
		{"categorical, small, binary with a new category", mustCatRef(t, catsOf(100, 100)), Sample{Categories: catsOf(10, 10, 1)}, ChiSquare, true, nil, ""},
		{"categorical, large, binary", mustCatRef(t, catsOf(1000, 1000)), Sample{Categories: catsOf(10, 10)}, JensenShannon, false, nil, ""},
		{"categorical, large, 250 categories", mustCatRef(t, manyCats), Sample{Categories: manyCats[:100]}, JensenShannon, false, nil, ""},
		{"numeric constant", mustRef(t, repeat(2.5, 50)), Sample{Values: repeat(2.5, 10)}, "", false, ErrConstant, "every value is 2.5"},
		{"categorical constant", mustCatRef(t, catsOf(50)), Sample{Categories: catsOf(10)}, "", false, ErrConstant, `every value is "c0"`},
		{"constant that moved", mustRef(t, repeat(2.5, 50)), Sample{Values: repeat(3, 10)}, ZTest, true, nil, ""},
		{"no values", mustRef(t, many(50)), Sample{Values: []float64{math.NaN()}}, "", false, ErrNoValues, ""},
		{"categories for a numeric feature", mustRef(t, many(50)), Sample{Categories: []string{"a"}}, "", false, ErrNotApplicable, ""},
		{"numbers for a categorical feature", mustCatRef(t, catsOf(5, 5, 5)), Sample{Values: []float64{1}}, "", false, ErrNotApplicable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, byP, err := Select(tt.ref, tt.cur)
			if !errors.Is(err, tt.errIs) || m != tt.want || byP != tt.byP {
				t.Fatalf("Select = %q, %v, %v; want %q, %v, %v", m, byP, err, tt.want, tt.byP, tt.errIs)
			}
			if err != nil && !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
			if err == nil {
				s, err := MeasureSample(Auto, tt.ref, tt.cur)
				if err != nil || s.Method != tt.want || s.ByPValue != tt.byP {
					t.Errorf("MeasureSample(auto) = %+v, %v", s, err)
				}
			}
		})
	}
}

func TestReferenceRecordsValues(t *testing.T) {
	t.Parallel()
	r := mustRef(t, []float64{3, 1, 2, 2, 3, math.NaN()})
	if !reflect.DeepEqual(r.Values, []float64{1, 2, 3}) || !reflect.DeepEqual(r.Counts, []int64{1, 2, 2}) || r.Distinct != 3 {
		t.Errorf("small integers: values %v, counts %v, distinct %d", r.Values, r.Counts, r.Distinct)
	}
	r = mustRef(t, many1200())
	if r.Values != nil || r.Distinct != 997 || r.Exact() {
		t.Errorf("1200 rows: values %v, distinct %d, exact %v", r.Values, r.Distinct, r.Exact())
	}
	// Up to AutoSmallRows values are kept exactly, for auto's ks.
	if r := mustRef(t, seqOf(1000, 37, 997, 10, 0)); !r.Exact() || len(r.Sample) != 1000 {
		t.Errorf("1000 rows: exact %v, sample %d", r.Exact(), len(r.Sample))
	}
	c := mustCatRef(t, []string{"a", "b", "b", "c", ""})
	if c.Distinct != 3 {
		t.Errorf("categorical distinct %d", c.Distinct)
	}
	bad := r
	bad.Values = []float64{5, 4}
	bad.Counts = bad.Counts[:2]
	bad.Edges = bad.Edges[:3]
	if err := bad.Validate(); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("descending values: %v", err)
	}
}

func many1200() []float64 { return seqOf(1200, 37, 997, 10, 0) }

// TestCategoricalDriftIsMeasured plants drift in a categorical feature:
// with method ks (or wasserstein) it used to be skipped as "not
// applicable" and left out of drift.measured; now it is measured with
// auto's test for it and listed, drifted.
func TestCategoricalDriftIsMeasured(t *testing.T) {
	t.Parallel()
	refs := map[string]Reference{
		"x":     mustRef(t, normal(1, 5000, 0)),
		"color": mustCatRef(t, catsOf(2500, 1500, 1000)), // 50%, 30%, 20%
	}
	batch := map[string]Sample{
		"x":     {Values: normal(2, 1000, 0)},
		"color": {Categories: catsOf(200, 300, 500)}, // 20%, 30%, 50%
	}
	for _, m := range []Method{KS, Wasserstein, Auto} {
		r, err := EvaluateSamples(Policy{Method: m, MinRows: 500}, refs, batch)
		if err != nil {
			t.Fatal(err)
		}
		color := r.Features[0]
		if color.Feature != "color" || color.Skipped != "" || color.Method != JensenShannon || !color.Drifted ||
			color.Threshold != DefaultDistanceThreshold || r.Compared != 2 || !reflect.DeepEqual(r.DriftedFeatures(), []string{"color"}) {
			t.Errorf("%s: %+v", m, r)
		}
		p := r.ToProto()
		if len(p.Features) != 2 || p.Features[0].GetFeature() != "color" || p.Features[0].GetMethod() != "jensenshannon" ||
			!p.Features[0].GetDrifted() || len(p.SkippedFeatures) != 0 {
			t.Errorf("%s: drift.measured %v", m, p)
		}
	}
	// A method named for the feature itself is not replaced: the feature
	// is skipped, with the reason.
	r, err := EvaluateSamples(Policy{Method: Auto, Features: map[string]FeaturePolicy{"color": {Method: KS}}}, refs, batch)
	if err != nil {
		t.Fatal(err)
	}
	if f := r.Features[0]; f.Skipped == "" || !strings.Contains(f.Skipped, "ks needs a numeric feature") || f.Method != KS || r.Compared != 1 {
		t.Errorf("ks named for a categorical feature: %+v", r)
	}
}

func TestEvaluateAuto(t *testing.T) {
	t.Parallel()
	refs := map[string]Reference{
		"big":      mustRef(t, normal(1, 5000, 0)),       // wasserstein
		"small":    mustRef(t, normal(2, 400, 0)),        // ks
		"flag":     mustRef(t, levels01(400, 0.3)),       // z
		"grade":    mustCatRef(t, catsOf(100, 200, 100)), // chisquare
		"const":    mustRef(t, repeat(7, 400)),
		"sparse":   mustRef(t, normal(3, 400, 0)),
		"absent":   mustRef(t, normal(4, 400, 0)),
		"override": mustRef(t, normal(5, 5000, 0)),
	}
	sparse := slices1000NaN(normal(6, 100, 0))
	batch := map[string]Sample{
		"big":      {Values: normal(7, 1000, 0.5)},
		"small":    {Values: normal(8, 1000, 0)},
		"flag":     {Values: levels01(1000, 0.5)},
		"grade":    {Categories: catsOf(250, 500, 250)},
		"const":    {Values: repeat(7, 1000)},
		"sparse":   {Values: sparse},
		"override": {Values: normal(9, 1000, 0.1)},
	}
	p := Policy{Method: Auto, MinRows: 500, PValueThreshold: 0.01, DistanceThreshold: 0.2,
		Features: map[string]FeaturePolicy{"override": {Method: PSI, Threshold: 0.5}}}
	r, err := EvaluateSamples(p, refs, batch)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		method    Method
		byP       bool
		threshold float64
		drifted   bool
		skipped   string
	}
	wants := map[string]want{
		"absent":   {skipped: "not in the batch"},
		"big":      {Wasserstein, false, 0.2, true, ""},
		"const":    {skipped: "constant: every value is 7 in the reference and the batch"},
		"flag":     {ZTest, true, 0.01, true, ""},
		"grade":    {ChiSquare, true, 0.01, false, ""},
		"override": {PSI, false, 0.5, false, ""},
		"small":    {KS, true, 0.01, false, ""},
		"sparse":   {KS, false, 0, false, "too few rows: 100 non-missing values of 1000, fewer than minRows 500"},
	}
	if len(r.Features) != len(wants) {
		t.Fatalf("%d features, want %d", len(r.Features), len(wants))
	}
	for _, f := range r.Features {
		w := wants[f.Feature]
		if f.Skipped != w.skipped || f.Method != w.method && w.skipped == "" || f.ByPValue != w.byP ||
			f.Threshold != w.threshold || f.Drifted != w.drifted {
			t.Errorf("%s: %+v, want %+v", f.Feature, f, w)
		}
	}
	if r.Method != Auto || r.Threshold != 0 || r.Compared != 5 || r.ShareDrifted != 0.4 || !r.Drifted {
		t.Errorf("report %+v", r)
	}
	// Every feature is in the payload: compared ones in features, the
	// others in skippedFeatures, each with its reason.
	m := r.ToProto()
	if len(m.Features) != 5 || len(m.SkippedFeatures) != 3 {
		t.Fatalf("drift.measured: %d features, %d skipped", len(m.Features), len(m.SkippedFeatures))
	}
	for _, s := range m.SkippedFeatures {
		if s.GetReason() != wants[s.GetFeature()].skipped {
			t.Errorf("skipped %v", s)
		}
	}
	back, err := ReportFromProto(m)
	if err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("round trip:\n%+v, %v\nwant\n%+v", back, err, r)
	}
}

// levels01 is n values, the first share·n of them 1 and the rest 0.
func levels01(n int, share float64) []float64 {
	xs := make([]float64, n)
	for i := range int(share * float64(n)) {
		xs[i] = 1
	}
	return xs
}

// slices1000NaN pads xs with NaN to 1,000 values.
func slices1000NaN(xs []float64) []float64 {
	return append(xs, repeat(math.NaN(), 1000-len(xs))...)
}
