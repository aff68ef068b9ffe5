package ml

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
)

// The tests below check the fast paths of GBDT training against plain
// reference code: they must give bit-identical results, not just close
// ones, or models would change with the hardware or the number of workers.

func TestHistKernelsMatchGo(t *testing.T) {
	t.Parallel()
	r := newRand(21)
	for _, n := range []int{0, 1, 2, 3, 7, 1000, 4099} {
		col := make([]uint8, n)
		gh := make([]ghPair, n)
		for i := range col {
			// Few distinct bins, so rows often share a bin in a row.
			col[i] = uint8(r.IntN(5) * 60)
			gh[i] = ghPair{r.NormFloat64() * 1e3, r.Float64()}
		}
		var want, got featHist
		histAllGo(&want, col, gh)
		histAll(&got, col, gh)
		if !sameHist(&want, &got) {
			t.Fatalf("n=%d: histAll differs from histAllGo", n)
		}
		// A sorted subset of the rows, as a node holds them.
		var rows []int32
		var og []ghPair
		for i := range n {
			if r.IntN(3) > 0 {
				rows = append(rows, int32(i))
				og = append(og, gh[i])
			}
		}
		want, got = featHist{}, featHist{}
		histRowsGo(&want, col, rows, og)
		histRows(&got, col, rows, og)
		if !sameHist(&want, &got) {
			t.Fatalf("n=%d: histRows differs from histRowsGo", n)
		}
	}
}

func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func sameHist(a, b *featHist) bool {
	for i := range a {
		if !sameBits(a[i].g, b[i].g) || !sameBits(a[i].h, b[i].h) || a[i].n != b[i].n {
			return false
		}
	}
	return true
}

// specialFloats are values binning must order and compare exactly.
var specialFloats = []float64{0, math.Copysign(0, -1), 1, -1, math.Inf(1), math.Inf(-1),
	math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64,
	2.2250738585072014e-308, 0.1, 0.30000000000000004, -1e-300}

// testColumn returns n values of which about every kth is special, with
// `distinct` distinct ordinary values (0 = all distinct).
func testColumn(r *rand.Rand, n, distinct int) []float64 {
	col := make([]float64, n)
	for i := range col {
		switch {
		case r.IntN(50) == 0:
			col[i] = specialFloats[r.IntN(len(specialFloats))]
		case distinct > 0:
			col[i] = float64(r.IntN(distinct))*0.37 - 3
		default:
			col[i] = r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10))
		}
	}
	return col
}

func TestSortFloat64sMatchesSlicesSort(t *testing.T) {
	t.Parallel()
	r := newRand(22)
	for _, n := range []int{0, 1, 2, 255, 256, 257, 5000, 70000} {
		for _, distinct := range []int{0, 3, 300} {
			col := testColumn(r, n, distinct)
			want := slices.Clone(col)
			slices.Sort(want)
			got := slices.Clone(col)
			sortFloat64s(got)
			negZeros := 0
			for i := range got {
				// slices.Sort may order -0 and +0 either way.
				if got[i] != want[i] || (got[i] != 0 && !sameBits(got[i], want[i])) {
					t.Fatalf("n=%d distinct=%d: at %d got %v, want %v", n, distinct, i, got[i], want[i])
				}
				if i > 0 && got[i-1] == 0 && got[i] == 0 && math.Signbit(got[i]) && !math.Signbit(got[i-1]) {
					t.Fatalf("n=%d: +0 before -0", n)
				}
				if got[i] == 0 && math.Signbit(got[i]) {
					negZeros++
				}
			}
			for _, v := range col {
				if v == 0 && math.Signbit(v) {
					negZeros--
				}
			}
			if negZeros != 0 {
				t.Fatalf("n=%d: the sort lost or made -0s", n)
			}
		}
	}
}

// binEdgesReference is binEdges as first written (comparison sort, then
// slices.Compact): the radix sort must not change a single edge.
func binEdgesReference(col []float64, rows []int, maxBins int) []float64 {
	var vals []float64
	if rows == nil {
		for _, v := range col {
			if !math.IsNaN(v) {
				vals = append(vals, v)
			}
		}
	} else {
		for _, r := range rows {
			if v := col[r]; !math.IsNaN(v) {
				vals = append(vals, v)
			}
		}
	}
	slices.Sort(vals)
	distinct := slices.Compact(slices.Clone(vals))
	if len(distinct) <= maxBins {
		edges := make([]float64, 0, max(len(distinct)-1, 0))
		for i := 0; i+1 < len(distinct); i++ {
			edges = append(edges, distinct[i]+(distinct[i+1]-distinct[i])/2)
		}
		return edges
	}
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

func TestBinningMatchesReference(t *testing.T) {
	t.Parallel()
	r := newRand(23)
	for _, n := range []int{0, 1, 10, 300, 20000} {
		for _, distinct := range []int{0, 1, 2, 40, 254, 255, 256, 1000} {
			for _, maxBins := range []int{2, 16, 255} {
				col := testColumn(r, n, distinct)
				for i := range col {
					if r.IntN(10) == 0 {
						col[i] = math.NaN()
					}
				}
				var rows []int
				if n > 0 && r.IntN(2) == 0 {
					rows = r.Perm(n)[:n/2]
					slices.Sort(rows)
				}
				want := binEdgesReference(col, rows, maxBins)
				got := binEdges(col, rows, maxBins)
				if !slices.EqualFunc(got, want, sameBits) {
					t.Fatalf("n=%d distinct=%d maxBins=%d: edges %v, want %v", n, distinct, maxBins, got, want)
				}
				// binColumn against a plain binary search, on the values
				// and on every edge exactly (ties go to the lower bin).
				probe := append(slices.Clone(col), got...)
				probe = append(probe, specialFloats...)
				bins := binColumn(probe, got)
				for i, v := range probe {
					want := len(got) + 1
					if !math.IsNaN(v) {
						want, _ = slices.BinarySearch(got, v) // #{edges < v}
					}
					if int(bins[i]) != want {
						t.Fatalf("value %v: bin %d, want %d (edges %v)", v, bins[i], want, got)
					}
				}
			}
		}
	}
}

func TestPartitionIsStable(t *testing.T) {
	t.Parallel()
	r := newRand(24)
	for _, n := range []int{1, 5, partitionBlock, partitionBlock + 1, 3*partitionBlock + 17} {
		for _, workers := range []int{1, 3} {
			for _, gather := range []int{gatherNone, gatherLeft, gatherRight} {
				col := make([]uint8, n+10)
				gh := make([]ghPair, n+10)
				for i := range col {
					col[i] = uint8(r.IntN(8))
					gh[i] = ghPair{float64(i), -float64(i)}
				}
				var goLeft [256]uint8
				for b := range 8 {
					goLeft[b] = uint8(r.IntN(2))
				}
				pool := newWorkPool(workers)
				gr := newGrower(gbdtConfig{}, [][]uint8{col}, [][]float64{nil}, n+10, workers, pool)
				// A node of n rows at positions [5, 5+n) of idx: an
				// increasing subset of the rows.
				start := 5
				rows := gr.idx[start : start+n]
				for i := range rows {
					rows[i] = int32(i + i*10/n)
				}
				orig := slices.Clone(rows)
				nl := gr.partition(start, start+n, col, &goLeft, gather, gh)
				pool.close()
				var want []int32
				for _, side := range []uint8{1, 0} {
					for _, row := range orig {
						if goLeft[col[row]] == side {
							want = append(want, row)
						}
					}
				}
				if !slices.Equal(rows, want) {
					t.Fatalf("n=%d workers=%d: partition is not the stable one", n, workers)
				}
				wantNL := 0
				for _, row := range orig {
					wantNL += int(goLeft[col[row]])
				}
				if nl != wantNL {
					t.Fatalf("n=%d: %d rows left, want %d", n, nl, wantNL)
				}
				lo, hi := start, start+nl
				if gather == gatherRight {
					lo, hi = start+nl, start+n
				}
				if gather != gatherNone {
					for p := lo; p < hi; p++ {
						if gr.ordered[p] != gh[gr.idx[p]] {
							t.Fatalf("n=%d: ordered[%d] is not the pair of row %d", n, p, gr.idx[p])
						}
					}
				}
			}
		}
	}
}

func TestWorkPoolRunsEveryIndexOnce(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 2, 4, 64} {
		pool := newWorkPool(workers)
		for _, n := range []int{0, 1, 2, 3, 100, 1000} {
			for range 20 {
				counts := make([]atomic.Int32, n)
				pool.run(n, workers, func(i int) { counts[i].Add(1) })
				for i := range counts {
					if c := counts[i].Load(); c != 1 {
						t.Fatalf("workers=%d n=%d: index %d ran %d times", workers, n, i, c)
					}
				}
			}
			var covered atomic.Int64
			pool.chunks(n, 7, workers, func(c, lo, hi int) {
				if lo != 7*c || hi != min(lo+7, n) {
					t.Errorf("chunk %d is [%d, %d)", c, lo, hi)
				}
				covered.Add(int64(hi - lo))
			})
			if covered.Load() != int64(n) {
				t.Fatalf("chunks covered %d of %d", covered.Load(), n)
			}
		}
		pool.close()
	}
}

func TestSigmoidNoBranchIsSigmoid(t *testing.T) {
	t.Parallel()
	r := newRand(25)
	vals := append(slices.Clone(specialFloats), -math.MaxFloat64, 745, -745, 709.8, -709.8, 37, -37)
	for range 100000 {
		vals = append(vals, r.NormFloat64()*math.Pow(2, float64(r.IntN(12))))
	}
	for _, z := range vals {
		if got, want := sigmoidNoBranch(z), sigmoid(z); !sameBits(got, want) {
			t.Fatalf("sigmoidNoBranch(%v) = %v, sigmoid gives %v", z, got, want)
		}
	}
}

func TestSoftmaxGradientsMatchSoftmax(t *testing.T) {
	t.Parallel()
	r := newRand(26)
	const n, outs = 3000, 4
	raw := make([]float64, outs*n)
	y := make([]float64, n)
	for i := range n {
		y[i] = float64(r.IntN(outs))
		for k := range outs {
			switch r.IntN(8) {
			case 0:
				raw[k*n+i] = 0 // ties, including between zeros
			case 1:
				raw[k*n+i] = math.Copysign(0, -1)
			case 2:
				raw[k*n+i] = raw[i] // a tie with class 0
			default:
				raw[k*n+i] = r.NormFloat64() * 5
			}
		}
	}
	gh := make([]ghPair, outs*n)
	softmaxGradients(raw, y, n, outs, 100, n, gh) // a chunk not at 0
	z := make([]float64, outs)
	for i := 100; i < n; i++ {
		for k := range outs {
			z[k] = raw[k*n+i]
		}
		softmaxInPlace(z)
		for k, p := range z {
			g := p
			if int(y[i]) == k {
				g--
			}
			if want, got := (ghPair{g, p * (1 - p)}), gh[k*n+i]; !sameBits(want.g, got.g) || !sameBits(want.h, got.h) {
				t.Fatalf("row %d class %d: %v, want %v", i, k, got, want)
			}
		}
	}
}
