package ml

import (
	"math"
	"math/bits"
)

// binEdges computes the bin edges of one column: a value x falls in bin
// #{edges < x}, so "bin <= b" is exactly "x <= edges[b]" and a split found on
// bins is reproduced on raw values by the threshold edges[b].
func binEdges(col []float64, rows []int, maxBins int) []float64 {
	vals := make([]float64, 0, len(rows))
	if rows == nil {
		vals = make([]float64, 0, len(col))
		for _, v := range col {
			if v == v { // not NaN
				vals = append(vals, v)
			}
		}
	} else {
		for _, r := range rows {
			if v := col[r]; v == v {
				vals = append(vals, v)
			}
		}
	}
	sortFloat64s(vals)
	distinct := 0
	for i, v := range vals {
		if i == 0 || v != vals[i-1] {
			distinct++
		}
	}
	if distinct <= maxBins {
		// Midpoints between consecutive distinct values. (-0 and +0 are
		// one value here, as for ==; which of them is kept cannot change
		// a midpoint.)
		edges := make([]float64, 0, max(distinct-1, 0))
		for i := 1; i < len(vals); i++ {
			if lo, hi := vals[i-1], vals[i]; hi != lo {
				edges = append(edges, lo+(hi-lo)/2)
			}
		}
		return edges
	}
	// Quantiles at k/maxBins, k = 1..maxBins-1, with midpoint
	// interpolation (numpy's percentile(method="midpoint"), as
	// scikit-learn uses), then duplicates removed.
	n := len(vals)
	edges := make([]float64, 0, maxBins-1)
	for k := 1; k < maxBins; k++ {
		pos := float64(k) / float64(maxBins) * float64(n-1)
		lo, hi := int(math.Floor(pos)), int(math.Ceil(pos))
		e := vals[lo] + (vals[hi]-vals[lo])/2
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	return edges
}

// sortFloat64s sorts non-NaN values in increasing order with an LSD radix
// sort on their bits (several times faster than a comparison sort on the
// column sizes binning sees). The result equals slices.Sort's except that
// -0 comes before +0, which compare equal; binEdges does not depend on
// their order.
func sortFloat64s(vals []float64) {
	n := len(vals)
	if n < 256 {
		insertionSortFloat64s(vals)
		return
	}
	// Map each float to a uint64 whose unsigned order is the float order:
	// negative values have all bits flipped, the others the sign bit set.
	keys := make([]uint64, n)
	var counts [8][256]int
	for i, v := range vals {
		u := math.Float64bits(v)
		u ^= uint64(int64(u)>>63) | 1<<63 // orderKey, keeping -0 apart
		keys[i] = u
		for d := range 8 {
			counts[d][byte(u>>(8*d))]++
		}
	}
	tmp := make([]uint64, n)
	src, dst := keys, tmp
	for d := range 8 {
		c := &counts[d]
		if c[byte(src[0]>>(8*d))] == n {
			continue // every key has the same digit: the pass is the identity
		}
		sum := 0
		for b := range c {
			c[b], sum = sum, sum+c[b]
		}
		shift := uint(8 * d)
		for _, u := range src {
			b := byte(u >> shift)
			dst[c[b]] = u
			c[b]++
		}
		src, dst = dst, src
	}
	for i, u := range src {
		// Undo the mapping: keys with the sign bit set were non-negative.
		u ^= uint64(int64(^u)>>63) | 1<<63
		vals[i] = math.Float64frombits(u)
	}
}

func insertionSortFloat64s(v []float64) {
	for i := 1; i < len(v); i++ {
		x := v[i]
		j := i
		for j > 0 && v[j-1] > x {
			v[j] = v[j-1]
			j--
		}
		v[j] = x
	}
}

// binColumn maps a column to bins; NaN goes to the missing bin len(edges)+1.
// edges has at most 254 entries (maxBins ≤ 255).
func binColumn(col []float64, edges []float64) []uint8 {
	out := make([]uint8, len(col))
	missing := uint8(len(edges) + 1)
	// The search compares order-preserving integer keys (see orderKey),
	// whose comparison is a subtraction's borrow, against the edges padded to 256
	// with the key of +Inf (never < a key), so that a fixed eight-step
	// search counts #{edges < x} without unpredictable branches.
	var e [256]uint64
	for i := range e {
		e[i] = orderKey(math.Inf(1))
	}
	for i, v := range edges {
		e[i] = orderKey(v)
	}
	for i, v := range col {
		if v != v {
			out[i] = missing
			continue
		}
		k := orderKey(v)
		// less(j) is 1 when e[j] < k: the borrow of e[j] - k.
		less := func(j uint64) uint64 {
			_, borrow := bits.Sub64(e[j&255], k, 0)
			return borrow
		}
		pos := less(127) << 7
		pos += less(pos+63) << 6
		pos += less(pos+31) << 5
		pos += less(pos+15) << 4
		pos += less(pos+7) << 3
		pos += less(pos+3) << 2
		pos += less(pos+1) << 1
		pos += less(pos)
		out[i] = uint8(pos)
	}
	return out
}

// orderKey maps a non-NaN float to a uint64 whose unsigned order is the
// float order, -0 and +0 both to the key of +0: negative values get all
// bits flipped, the others the sign bit set.
func orderKey(v float64) uint64 {
	u := math.Float64bits(v + 0) // -0 + 0 = +0
	return u ^ (uint64(int64(u)>>63) | 1<<63)
}
