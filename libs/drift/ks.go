package drift

import "math"

// ksExactMaxN is the largest sample size for which the two-sample
// Kolmogorov–Smirnov p-value is computed exactly: SciPy's ks_2samp (method
// "auto") is exact when max(n, m) <= 10000 and asymptotic beyond.
const ksExactMaxN = 10000

// ks returns the two-sample Kolmogorov–Smirnov D of the reference sample and
// sorted, non-empty xs, and its two-sided p-value. The p-value is exact (as
// SciPy's ks_2samp computes it) when the reference sample holds every
// reference value and both samples have at most ksExactMaxN values;
// otherwise it comes from the Kolmogorov distribution, counting the
// reference as ref.Rows values even when its sample is a quantile sketch.
func ks(ref Reference, xs []float64) (d, p float64) {
	a := ref.Sample
	na, nb := int64(len(a)), int64(len(xs))
	// D·na·nb as an integer: the exact p-value compares lattice paths
	// against it and must not suffer rounding.
	g := ksGap(a, xs)
	d = float64(g) / (float64(na) * float64(nb))
	n := ref.Rows
	if ref.Exact() && max(n, nb) <= ksExactMaxN {
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

// ksExact is P(D >= g/(n·m)) under the null hypothesis: one minus the
// probability that a path drawn uniformly among the C(n+m, n) lattice paths
// from (0,0) to (n,m) keeps |i·m - j·n| < g at every point. It walks the
// lattice with v(i,j) = (paths inside to (i,j)) / C(i+j, i), which obeys
// v(i,j) = v(i-1,j)·i/(i+j) + v(i,j-1)·j/(i+j) and stays in [0, 1], so the
// counts never overflow (they reach C(20000, 10000) ≈ 10^6019 at SciPy's
// limit). Only the band of points inside is visited: O((n+m)·g/n) work
// rather than O(n·m) when D is small.
func ksExact(g, n, m int64) float64 {
	if g <= 0 {
		return 1
	}
	// Row i holds the points (i, j) with |i·m - j·n| < g, that is
	// j in (i·m - g)/n < j < (i·m + g)/n.
	lo := func(i int64) int64 { return max(0, floorDiv(i*m-g, n)+1) }
	hi := func(i int64) int64 { return min(m, ceilDiv(i*m+g, n)-1) }
	v := make([]float64, m+1)
	// Row 0: v(0,j) = 1 while inside (one path, C(j,0) = 1).
	for j := int64(0); j <= hi(0); j++ {
		v[j] = 1
	}
	prevLo, prevHi := lo(0), hi(0)
	for i := int64(1); i <= n; i++ {
		l, h := lo(i), hi(i)
		fi := float64(i)
		// Bands move right as i grows; v[j] still holds row i-1 until it
		// is overwritten, and is read only inside that row's band.
		for j := l; j <= h; j++ {
			up := 0.0 // v(i-1, j)
			if j >= prevLo && j <= prevHi {
				up = v[j]
			}
			left := 0.0 // v(i, j-1)
			if j > l {
				left = v[j-1]
			}
			fj := float64(j)
			v[j] = (up*fi + left*fj) / (fi + fj)
		}
		prevLo, prevHi = l, h
	}
	inside := 0.0
	if m >= prevLo && m <= prevHi {
		inside = v[m]
	}
	return min(max(1-inside, 0), 1)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

// ksAsymptotic is the two-sided p-value of D from the Kolmogorov
// distribution with Stephens' small-sample correction of the argument
// (Numerical Recipes' probks), used past ksExactMaxN or with a sketched
// reference. SciPy uses the one-sample exact distribution at n·m/(n+m)
// there instead; the two differ by well under 0.01.
func ksAsymptotic(d float64, n, m int64) float64 {
	en := float64(n) * float64(m) / (float64(n) + float64(m))
	s := math.Sqrt(en)
	return kolmogorovQ((s + 0.12 + 0.11/s) * d)
}

// kolmogorovQ is the survival function of the Kolmogorov distribution,
// Q(λ) = 2 Σ_{k>=1} (-1)^(k-1) exp(-2k²λ²) (SciPy's kstwobign.sf). The
// alternating series converges slowly for small λ, where the equivalent
// theta-function form 1 - √(2π)/λ Σ exp(-(2k-1)²π²/(8λ²)) is used instead.
// Gonum has no Kolmogorov distribution, hence this one.
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
