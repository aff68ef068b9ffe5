package drift

import "math"

// ksExactMaxProduct is the largest n·m for which the two-sample KS p-value is
// computed exactly, the same cut-over as SciPy's ks_2samp and R's ks.test.
const ksExactMaxProduct = 10000

// ks returns the two-sample Kolmogorov–Smirnov D of the reference sample and
// sorted, non-empty xs, and its two-sided p-value. The p-value counts the
// reference as ref.Rows values even when its sample is a quantile sketch.
func ks(ref Reference, xs []float64) (d, p float64) {
	a := ref.Sample
	na, nb := int64(len(a)), int64(len(xs))
	// D·na·nb as an integer: the exact p-value compares lattice paths
	// against it and must not suffer rounding.
	g := ksGap(a, xs)
	d = float64(g) / (float64(na) * float64(nb))
	n := ref.Rows
	if ref.Exact() && float64(n)*float64(nb) <= ksExactMaxProduct {
		return d, ksExact(g, n, nb)
	}
	return d, ksAsymptotic(d, n, nb)
}

// ksGap is max over x of |F_a(x) - F_b(x)|·na·nb for sorted a and b. Ties are
// stepped over together so the empirical CDFs are compared only where both
// are defined (right after every distinct value).
func ksGap(a, b []float64) int64 {
	na, nb := int64(len(a)), int64(len(b))
	var i, j, g int64
	for i < na && j < nb {
		x := min(a[i], b[j])
		for i < na && a[i] == x {
			i++
		}
		for j < nb && b[j] == x {
			j++
		}
		diff := i*nb - j*na
		if diff < 0 {
			diff = -diff
		}
		g = max(g, diff)
	}
	// Past this point one CDF is 1 and the other climbs to it: the gap only
	// shrinks.
	return g
}

// ksExact is P(D >= g/(n·m)) under the null hypothesis: one minus the share
// of the C(n+m, n) lattice paths from (0,0) to (n,m) that keep
// |i·m - j·n| < g at every point. Counts stay below C(200,100) ≈ 9e58 for
// n·m <= 10000, well within float64.
func ksExact(g, n, m int64) float64 {
	if g <= 0 {
		return 1
	}
	inside := func(i, j int64) bool {
		d := i*m - j*n
		return d < g && -d < g
	}
	u := make([]float64, m+1)
	for j := int64(0); j <= m; j++ {
		if !inside(0, j) {
			break
		}
		u[j] = 1
	}
	for i := int64(1); i <= n; i++ {
		for j := int64(0); j <= m; j++ {
			if !inside(i, j) {
				u[j] = 0
				continue
			}
			if j > 0 {
				u[j] += u[j-1]
			}
		}
	}
	total := 1.0
	for k := int64(1); k <= n; k++ {
		total = total * float64(m+k) / float64(k)
	}
	return min(max(1-u[m]/total, 0), 1)
}

// ksAsymptotic is the two-sided p-value of D from the Kolmogorov
// distribution with Stephens' small-sample correction of the argument
// (Numerical Recipes' probks), good for n·m > 10000.
func ksAsymptotic(d float64, n, m int64) float64 {
	en := float64(n) * float64(m) / (float64(n) + float64(m))
	s := math.Sqrt(en)
	return kolmogorovQ((s + 0.12 + 0.11/s) * d)
}

// kolmogorovQ is the survival function of the Kolmogorov distribution,
// Q(λ) = 2 Σ_{k>=1} (-1)^(k-1) exp(-2k²λ²) (SciPy's kstwobign.sf). The
// alternating series converges slowly for small λ, where the equivalent
// theta-function form 1 - √(2π)/λ Σ exp(-(2k-1)²π²/(8λ²)) is used instead.
func kolmogorovQ(lambda float64) float64 {
	switch {
	case !(lambda > 0):
		return 1
	case lambda < 0.2:
		return 1 // CDF below 1e-20
	case lambda < 1.18:
		var s float64
		for k := 1; k <= 8; k++ {
			t := float64(2*k - 1)
			s += math.Exp(-t * t * math.Pi * math.Pi / (8 * lambda * lambda))
		}
		return min(max(1-math.Sqrt(2*math.Pi)/lambda*s, 0), 1)
	}
	var s float64
	sign := 1.0
	for k := 1; k <= 100; k++ {
		t := math.Exp(-2 * float64(k*k) * lambda * lambda)
		s += sign * t
		if t < 1e-18 {
			break
		}
		sign = -sign
	}
	return min(max(2*s, 0), 1)
}
