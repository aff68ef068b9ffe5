package drift

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func seq(from, to float64) []float64 {
	var xs []float64
	for x := from; x <= to; x++ {
		xs = append(xs, x)
	}
	return xs
}

func repeat(v float64, n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = v
	}
	return xs
}

func repeatS(v string, n int) []string {
	xs := make([]string, n)
	for i := range xs {
		xs[i] = v
	}
	return xs
}

func cat(parts ...[]float64) []float64 {
	var xs []float64
	for _, p := range parts {
		xs = append(xs, p...)
	}
	return xs
}

func catS(parts ...[]string) []string {
	var xs []string
	for _, p := range parts {
		xs = append(xs, p...)
	}
	return xs
}

// numericMethods are the methods that measure any numeric feature: z needs
// a binary one, and auto picks one of these.
func numericMethods() []Method { return []Method{PSI, KS, Wasserstein, JensenShannon, ChiSquare} }

func mustRef(t *testing.T, values []float64, opts ...Option) Reference {
	t.Helper()
	r, err := NewReference(values, opts...)
	if err != nil {
		t.Fatalf("NewReference: %v", err)
	}
	return r
}

func mustCatRef(t *testing.T, values []string) Reference {
	t.Helper()
	r, err := NewCategoricalReference(values)
	if err != nil {
		t.Fatalf("NewCategoricalReference: %v", err)
	}
	return r
}

func TestParseMethod(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Method
		err  bool
	}{
		{"psi", PSI, false},
		{"ks", KS, false},
		{"wasserstein", Wasserstein, false},
		{"jensenshannon", JensenShannon, false},
		{"chisquare", ChiSquare, false},
		{" PSI ", PSI, false},
		{"", "", true},
		{"kl", "", true},
		{"jensen-shannon", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseMethod(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseMethod(%q) = %q, %v", tt.in, got, err)
			}
			if err != nil {
				if !errors.Is(err, ErrUnknownMethod) {
					t.Errorf("error %v is not ErrUnknownMethod", err)
				}
				for _, m := range Methods() {
					if !strings.Contains(err.Error(), string(m)) {
						t.Errorf("error %q does not name %s", err, m)
					}
				}
			}
		})
	}
	var p Policy
	if err := json.Unmarshal([]byte(`{"method":"nope"}`), &p); !errors.Is(err, ErrUnknownMethod) {
		t.Errorf("decoding an unknown method: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"method":"KS","threshold":0.2}`), &p); err != nil || p.Method != KS {
		t.Errorf("decoding ks: %+v, %v", p, err)
	}
}

func TestPSIKnownValues(t *testing.T) {
	t.Parallel()
	ref := mustRef(t, cat(repeat(0, 50), repeat(1, 50)))
	if want := []float64{0, 0.5, 1}; !reflect.DeepEqual(ref.Edges, want) {
		t.Fatalf("binary feature edges %v, want one bin per value %v", ref.Edges, want)
	}
	catRef := mustCatRef(t, catS(repeatS("a", 50), repeatS("b", 50)))
	tests := []struct {
		name string
		ref  Reference
		cur  Sample
		want float64
	}{
		{"identical", ref, Sample{Values: cat(repeat(0, 50), repeat(1, 50))}, 0},
		{"same shares", ref, Sample{Values: cat(repeat(1, 7), repeat(0, 7))}, 0},
		// Shares 0.5/0.5 against 0.8/0.2:
		// (0.8-0.5)·ln(0.8/0.5) + (0.2-0.5)·ln(0.2/0.5) = 0.3·ln 4.
		{"two bins by hand", ref, Sample{Values: cat(repeat(0, 80), repeat(1, 20))}, 0.3 * math.Log(4)},
		{"two categories by hand", catRef, Sample{Categories: catS(repeatS("a", 8), repeatS("b", 2))}, 0.3 * math.Log(4)},
		// All mass in a bin the reference has empty: shares floored at ε.
		// Bins a and b: (ε-0.5)·ln(ε/0.5) twice; the other bin: (1-ε)·ln(1/ε).
		{"unseen category", catRef, Sample{Categories: []string{"z"}},
			2*(PSIEpsilon-0.5)*math.Log(PSIEpsilon/0.5) + (1-PSIEpsilon)*math.Log(1/PSIEpsilon)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := MeasureSample(PSI, tt.ref, tt.cur)
			if err != nil {
				t.Fatal(err)
			}
			if !near(s.Value, tt.want, 1e-12) || s.PValue != 0 {
				t.Errorf("PSI = %v (p %v), want %v", s.Value, s.PValue, tt.want)
			}
		})
	}
}

func TestKSKnownValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ref, cur []float64
		d, p     float64
	}{
		// Exact two-sided p-values: completely separated samples of sizes
		// n, m are 2 of the C(n+m, n) orderings, so p = 2/C(n+m, n). SciPy's
		// ks_2samp([1,2,3],[4,5,6]) reports D=1, p=0.1, and
		// ks_2samp(range(1,6), range(6,11)) D=1, p=0.007936507936507936.
		{"separated 3+3", seq(1, 3), seq(4, 6), 1, 2.0 / 20},
		{"separated 5+5", seq(1, 5), seq(6, 10), 1, 2.0 / 252},
		{"identical", seq(1, 5), seq(1, 5), 0, 1},
		// Ties: {1,1,2} vs {1,2,2}: the CDFs are 2/3 and 1/3 after 1.
		{"ties", []float64{1, 1, 2}, []float64{1, 2, 2}, 1.0 / 3, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Measure(KS, mustRef(t, tt.ref), tt.cur)
			if err != nil {
				t.Fatal(err)
			}
			if !near(s.Value, tt.d, 1e-12) {
				t.Errorf("D = %v, want %v", s.Value, tt.d)
			}
			if tt.p >= 0 && !near(s.PValue, tt.p, 1e-12) {
				t.Errorf("p = %v, want %v", s.PValue, tt.p)
			}
		})
	}
}

// TestKSExactAgainstEnumeration checks the lattice-path p-value against the
// definition: the share of all C(n+m, n) ways to split the pooled sample
// into groups of n and m whose D is at least the observed one.
func TestKSExactAgainstEnumeration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ref, cur []float64
	}{
		{"4 vs 5 interleaved", []float64{1, 3, 4, 8}, []float64{2, 5, 6, 7, 9}},
		{"6 vs 4 shifted", []float64{1, 2, 3, 5, 7, 8}, []float64{4, 6, 9, 10}},
		{"5 vs 5 close", []float64{1, 4, 5, 8, 9}, []float64{2, 3, 6, 7, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Measure(KS, mustRef(t, tt.ref), tt.cur)
			if err != nil {
				t.Fatal(err)
			}
			pooled := cat(tt.ref, tt.cur) // distinct values: ranks suffice
			n, total := len(pooled), 0
			extreme := 0
			for mask := 0; mask < 1<<n; mask++ {
				var a, b []float64
				for i, x := range pooled {
					if mask&(1<<i) != 0 {
						a = append(a, x)
					} else {
						b = append(b, x)
					}
				}
				if len(a) != len(tt.ref) {
					continue
				}
				total++
				ra := mustRef(t, a)
				d, err := Measure(KS, ra, b)
				if err != nil {
					t.Fatal(err)
				}
				if d.Value >= s.Value-1e-12 {
					extreme++
				}
			}
			if want := float64(extreme) / float64(total); !near(s.PValue, want, 1e-12) {
				t.Errorf("p = %v, enumeration gives %d/%d = %v", s.PValue, extreme, total, want)
			}
		})
	}
}

func TestKolmogorovDistribution(t *testing.T) {
	t.Parallel()
	// SciPy: scipy.special.kolmogorov([0.5, 1.0]) (= kstwobign.sf), and the
	// 5% critical value √(ln(40)/2) ≈ 1.3581 of the asymptotic KS test.
	tests := []struct{ lambda, want float64 }{
		{0, 1},
		{0.1, 1},
		{0.5, 0.9639452436648751},
		{1.0, 0.26999967167735456},
		{1.3581, 0.0499996304316674},
		{2.0, 0.0006709252557796953},
		{10, 0},
	}
	for _, tt := range tests {
		if got := kolmogorovQ(tt.lambda); !near(got, tt.want, 1e-12) && math.Abs(got-tt.want) > 1e-15 {
			t.Errorf("Q(%v) = %v, want %v", tt.lambda, got, tt.want)
		}
	}
	// The two series agree where kolmogorovQ switches between them.
	if a, b := kolmogorovQ(math.Nextafter(1.18, 0)), kolmogorovQ(1.18); !near(a, b, 1e-12) {
		t.Errorf("Q is discontinuous at 1.18: %v vs %v", a, b)
	}
	// Exact and asymptotic p-values agree closely at n·m near the cut-over.
	for _, g := range []int64{1800, 2000, 2500} { // D = 0.2 … 0.31 for n = m = 90
		exact, asym := ksExact(g, 90, 90), ksAsymptotic(float64(g)/8100, 90, 90)
		if math.Abs(exact-asym) > 0.01 {
			t.Errorf("D=%v: exact p %v, asymptotic %v", float64(g)/8100, exact, asym)
		}
	}
}

func TestWassersteinKnownValues(t *testing.T) {
	t.Parallel()
	// U{0..499} shifted by 10: every unit of mass moves by 10, so W1 = 10
	// (the reference is stored exactly: 500 values).
	ref := mustRef(t, seq(0, 499))
	if !ref.Exact() {
		t.Fatal("500-value reference not exact")
	}
	tests := []struct {
		name string
		ref  Reference
		cur  []float64
		want float64
	}{
		{"identical", ref, seq(0, 499), 0},
		{"shift 10", ref, seq(10, 509), 10 / ref.Std},
		{"shift -2.5", ref, cat(seq(0, 499), repeat(0, 0)), 0},
		{"constant reference", mustRef(t, repeat(3, 10)), repeat(5, 4), 2}, // scale 1
	}
	for i := range tests[2].cur {
		tests[2].cur[i] -= 2.5
	}
	tests[2].want = 2.5 / ref.Std
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Measure(Wasserstein, tt.ref, tt.cur)
			if err != nil {
				t.Fatal(err)
			}
			if !near(s.Value, tt.want, 1e-9) {
				t.Errorf("W1/std = %v, want %v", s.Value, tt.want)
			}
		})
	}
	// A sketched reference (5000 values, 500 quantiles) is close: U(0,1)
	// on a fine grid shifted by 0.1 gives 0.1/std.
	grid := make([]float64, 5000)
	for i := range grid {
		grid[i] = (float64(i) + 0.5) / 5000
	}
	sk := mustRef(t, grid)
	if sk.Exact() || len(sk.Sample) != DefaultSampleSize {
		t.Fatalf("5000-value reference: exact %v, sample %d", sk.Exact(), len(sk.Sample))
	}
	shifted := make([]float64, 1000)
	for i := range shifted {
		shifted[i] = (float64(i)+0.5)/1000 + 0.1
	}
	s, err := Measure(Wasserstein, sk, shifted)
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.1 / sk.Std; math.Abs(s.Value-want) > 0.01 {
		t.Errorf("sketched W1/std = %v, want about %v", s.Value, want)
	}
}

func TestJensenShannonKnownValues(t *testing.T) {
	t.Parallel()
	ref := mustRef(t, seq(0, 99))
	catRef := mustCatRef(t, []string{"a", "b", "b"})
	tests := []struct {
		name string
		ref  Reference
		cur  Sample
		want float64
	}{
		{"identical", ref, Sample{Values: seq(0, 99)}, 0},
		{"disjoint above", ref, Sample{Values: seq(200, 210)}, 1},
		{"disjoint below", ref, Sample{Values: []float64{-1}}, 1},
		{"categorical identical", catRef, Sample{Categories: []string{"b", "a", "b"}}, 0},
		{"categorical disjoint", catRef, Sample{Categories: []string{"c", "d"}}, 1},
		// Shares (1/2, 1/2) against (1, 0): M = (3/4, 1/4);
		// JSD = ½[½·log2(2/3) + ½·log2(2) + 1·log2(4/3)] = ½·log2(4/3) + ¼·log2(2/3)... written out:
		{"half overlap", mustCatRef(t, []string{"a", "b"}), Sample{Categories: []string{"a"}},
			math.Sqrt(0.5 * (0.5*math.Log2(0.5/0.75) + 0.5*math.Log2(0.5/0.25) + math.Log2(1/0.75)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := MeasureSample(JensenShannon, tt.ref, tt.cur)
			if err != nil {
				t.Fatal(err)
			}
			if !near(s.Value, tt.want, 1e-12) {
				t.Errorf("JS = %v, want %v", s.Value, tt.want)
			}
		})
	}
}

func TestChiSquareKnownValues(t *testing.T) {
	t.Parallel()
	ref3 := mustCatRef(t, catS(repeatS("a", 10), repeatS("b", 20), repeatS("c", 30)))
	ref2 := mustCatRef(t, catS(repeatS("a", 10), repeatS("b", 10)))
	tests := []struct {
		name    string
		ref     Reference
		cur     []string
		stat, p float64
	}{
		// Reference (10, 20, 30), batch (30, 20, 10): every column totals 40
		// of 120, so every expected count is 60·40/120 = 20, and
		// χ² = 4·(10²/20) = 20 with 2 degrees of freedom, whose survival
		// function is exp(-x/2): p = e^-10.
		{"3 categories by hand", ref3, catS(repeatS("a", 30), repeatS("b", 20), repeatS("c", 10)), 20, math.Exp(-10)},
		// Reference (10, 10), batch (15, 5): expected 12.5 and 7.5 per row,
		// every |O-E| = 2.5, Yates-corrected to 2: χ² = 2·4/12.5 + 2·4/7.5;
		// 1 degree of freedom: p = erfc(√(χ²/2)) (SciPy's chi2_contingency
		// with correction=True computes the same).
		{"2x2 with Yates", ref2, catS(repeatS("a", 15), repeatS("b", 5)), 8/12.5 + 8/7.5, math.Erfc(math.Sqrt((8/12.5 + 8/7.5) / 2))},
		{"identical shares", ref3, catS(repeatS("c", 3), repeatS("b", 2), repeatS("a", 1)), 0, 1},
		// An unseen category gets its own column with expected counts from
		// the pooled margins: ref (10, 10, 0), batch (0, 0, 20): totals 10, 10,
		// 20 of 40; expected ref row (5, 5, 10), batch row (5, 5, 10);
		// χ² = 5+5+10 + 5+5+10 = 40, df 2, p = e^-20.
		{"unseen category", ref2, repeatS("new", 20), 40, math.Exp(-20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := MeasureSample(ChiSquare, tt.ref, Sample{Categories: tt.cur})
			if err != nil {
				t.Fatal(err)
			}
			if !near(s.Value, tt.stat, 1e-12) || !near(s.PValue, tt.p, 1e-9) {
				t.Errorf("χ² = %v, p = %v; want %v, %v", s.Value, s.PValue, tt.stat, tt.p)
			}
		})
	}
}

func TestSyntheticDrift(t *testing.T) {
	t.Parallel()
	ref := mustRef(t, normal(1, 5000, 0))
	same := normal(2, 1000, 0)
	shifted := normal(3, 1000, 1)
	for _, m := range numericMethods() {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			th := m.DefaultThreshold()
			s, err := Measure(m, ref, same)
			if err != nil {
				t.Fatal(err)
			}
			if m.Drifted(s, th) {
				t.Errorf("N(0,1) vs N(0,1): %+v drifted at threshold %v", s, th)
			}
			s, err = Measure(m, ref, shifted)
			if err != nil {
				t.Fatal(err)
			}
			if !m.Drifted(s, th) {
				t.Errorf("N(0,1) vs N(1,1): %+v not drifted at threshold %v", s, th)
			}
		})
	}
}

func TestBinsOfSpecialFeatures(t *testing.T) {
	t.Parallel()
	zeroInflated := cat(repeat(0, 400), seq(1, 600))
	tests := []struct {
		name   string
		values []float64
		edges  []float64
	}{
		{"constant", repeat(4, 10), []float64{4, 4}},
		{"binary", []float64{1, 0, 0, 1, 1}, []float64{0, 0.5, 1}},
		{"small integers", []float64{3, 1, 2, 2, 3}, []float64{1, 1.5, 2.5, 3}},
		// 40% zeros: the first four deciles are all 0 and collapse into one
		// cut just above it, so the zeros keep a bin of their own; the
		// others are the deciles 100, 200, … of the rest.
		{"zero-inflated", zeroInflated, []float64{0, 0.5, 100.5, 200.5, 300.5, 400.5, 500.5, 600}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := mustRef(t, tt.values)
			if !reflect.DeepEqual(r.Edges, tt.edges) {
				t.Errorf("edges %v, want %v", r.Edges, tt.edges)
			}
			if err := r.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
	// A constant feature that moves drifts; one that does not, does not.
	c := mustRef(t, repeat(4, 10))
	for _, m := range numericMethods() {
		same, err := Measure(m, c, repeat(4, 3))
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		moved, err := Measure(m, c, repeat(5, 3))
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		th := m.DefaultThreshold()
		if m.Drifted(same, th) || !m.Drifted(moved, th) && m != ChiSquare {
			t.Errorf("%s on a constant: same %+v, moved %+v", m, same, moved)
		}
	}
	// Auto has nothing to compare on a constant that stays, and a binary
	// feature (two values together) when it moves: the Z-test.
	if _, err := Measure(Auto, c, repeat(4, 3)); !errors.Is(err, ErrConstant) || !strings.Contains(err.Error(), "every value is 4") {
		t.Errorf("auto on a constant that stays: %v", err)
	}
	if s, err := Measure(Auto, c, repeat(5, 3)); err != nil || s.Method != ZTest || !s.ByPValue || !(s.PValue < 0.05) {
		t.Errorf("auto on a constant that moved: %+v, %v", s, err)
	}
}

func TestMissingValuesAreIgnored(t *testing.T) {
	t.Parallel()
	ref := mustRef(t, cat(normal(5, 300, 0), []float64{math.NaN(), math.Inf(1)}))
	if ref.Rows != 300 || ref.Missing != 2 {
		t.Fatalf("reference rows %d, missing %d", ref.Rows, ref.Missing)
	}
	clean := normal(6, 100, 0.3)
	dirty := cat([]float64{math.NaN()}, clean, []float64{math.Inf(-1), math.NaN()})
	for _, m := range append(numericMethods(), Auto) {
		a, err := Measure(m, ref, clean)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Measure(m, ref, dirty)
		if err != nil {
			t.Fatal(err)
		}
		if a.Value != b.Value || a.PValue != b.PValue || b.Rows != 100 || b.Missing != 3 {
			t.Errorf("%s: clean %+v, with missing %+v", m, a, b)
		}
	}
	c := mustCatRef(t, []string{"a", "", "b"})
	s, err := MeasureSample(PSI, c, Sample{Categories: []string{"", "a", "b", ""}})
	if err != nil || s.Value != 0 || s.Rows != 2 || s.Missing != 2 || c.Missing != 1 {
		t.Errorf("categorical missing: %+v, %v", s, err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	num := mustRef(t, seq(1, 20))
	cat := mustCatRef(t, []string{"a", "b"})
	tests := []struct {
		name   string
		method Method
		ref    Reference
		cur    Sample
		want   error
	}{
		{"unknown method", "kl", num, Sample{Values: []float64{1}}, ErrUnknownMethod},
		{"zero reference", PSI, Reference{}, Sample{Values: []float64{1}}, ErrInvalidReference},
		{"empty batch", KS, num, Sample{}, ErrNoValues},
		{"all missing", Wasserstein, num, Sample{Values: []float64{math.NaN(), math.Inf(1)}}, ErrNoValues},
		{"empty categorical batch", ChiSquare, cat, Sample{Categories: []string{""}}, ErrNoValues},
		{"ks on categories", KS, cat, Sample{Categories: []string{"a"}}, ErrNotApplicable},
		{"wasserstein on categories", Wasserstein, cat, Sample{Categories: []string{"a"}}, ErrNotApplicable},
		{"numbers for a categorical", PSI, cat, Sample{Values: []float64{1}}, ErrNotApplicable},
		{"categories for a numeric", PSI, num, Sample{Categories: []string{"a"}}, ErrNotApplicable},
		{"both", PSI, num, Sample{Values: []float64{1}, Categories: []string{"a"}}, ErrNotApplicable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := MeasureSample(tt.method, tt.ref, tt.cur); !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
	for _, vs := range [][]float64{nil, {}, {math.NaN()}} {
		if _, err := NewReference(vs); !errors.Is(err, ErrNoValues) {
			t.Errorf("NewReference(%v): %v", vs, err)
		}
	}
	if _, err := NewCategoricalReference([]string{""}); !errors.Is(err, ErrNoValues) {
		t.Errorf("NewCategoricalReference: %v", err)
	}
	if _, err := NewReference([]float64{-math.MaxFloat64, math.MaxFloat64}); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("overflowing reference: %v", err)
	}
}

func TestReferenceValidateRejectsCorruption(t *testing.T) {
	t.Parallel()
	good := mustRef(t, normal(7, 2000, 0))
	goodCat := mustCatRef(t, []string{"a", "b", "b"})
	tests := []struct {
		name    string
		corrupt func(r *Reference)
		base    Reference
	}{
		{"kind", func(r *Reference) { r.Kind = "text" }, good},
		{"rows", func(r *Reference) { r.Rows = 0 }, good},
		{"edges", func(r *Reference) { r.Edges = r.Edges[:1] }, good},
		{"unsorted edges", func(r *Reference) { r.Edges[1], r.Edges[2] = r.Edges[2], r.Edges[1] }, good},
		{"counts", func(r *Reference) { r.Counts = r.Counts[1:] }, good},
		{"negative count", func(r *Reference) { r.Counts[0] = -1 }, good},
		{"unsorted sample", func(r *Reference) { r.Sample[0] = 1e9 }, good},
		{"empty sample", func(r *Reference) { r.Sample = nil }, good},
		{"nan std", func(r *Reference) { r.Std = math.NaN() }, good},
		{"categories", func(r *Reference) { r.Categories = r.Categories[1:] }, goodCat},
		{"repeated category", func(r *Reference) { r.Categories[1] = r.Categories[0] }, goodCat},
		{"empty counts", func(r *Reference) { r.Counts = []int64{0, 0} }, goodCat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A deep copy through JSON: the cases share their bases.
			b, err := json.Marshal(tt.base)
			if err != nil {
				t.Fatal(err)
			}
			var r Reference
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			tt.corrupt(&r)
			if err := r.Validate(); !errors.Is(err, ErrInvalidReference) {
				t.Errorf("Validate = %v, want ErrInvalidReference", err)
			}
		})
	}
}

func TestReferenceJSONRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ref     Reference
		maxSize int
	}{
		{"exact", mustRef(t, normal(8, 300, 2)), 12000},
		{"sketched 50k", mustRef(t, normal(9, 50000, -1)), 12000},
		{"constant", mustRef(t, repeat(1.5, 9)), 1000},
		{"categorical", mustCatRef(t, []string{"x", "y", "y", "", "z"}), 1000},
	}
	cur := normal(10, 1000, 0.2)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > tt.maxSize {
				t.Errorf("reference is %d bytes of JSON, want at most %d", len(b), tt.maxSize)
			}
			var back Reference
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.ref) {
				t.Errorf("round trip changed the reference:\n%+v\n%+v", back, tt.ref)
			}
			if err := back.Validate(); err != nil {
				t.Fatal(err)
			}
			sample := Sample{Values: cur}
			if back.Kind == KindCategorical {
				sample = Sample{Categories: []string{"x", "y", "w"}}
			}
			for _, m := range []Method{PSI, JensenShannon, ChiSquare} {
				a, err1 := MeasureSample(m, tt.ref, sample)
				b, err2 := MeasureSample(m, back, sample)
				if err1 != nil || err2 != nil || a != b {
					t.Errorf("%s before and after: %+v %v, %+v %v", m, a, err1, b, err2)
				}
			}
		})
	}
}
