package drift

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"testing"
)

// floats decodes b as little-endian float64s, NaN and ±Inf included.
func floats(b []byte) []float64 {
	xs := make([]float64, 0, len(b)/8)
	for ; len(b) >= 8; b = b[8:] {
		xs = append(xs, math.Float64frombits(binary.LittleEndian.Uint64(b)))
	}
	return xs
}

func fuzzSeed(xs ...float64) []byte {
	b := make([]byte, 0, 8*len(xs))
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

// FuzzMeasure feeds arbitrary references and batches (NaN, ±Inf, huge and
// tiny numbers, ties) to every method, numeric and categorical: Measure must
// never panic and must return finite scores with p-values in [0, 1], or an
// error; references must survive JSON.
func FuzzMeasure(f *testing.F) {
	f.Add(fuzzSeed(0, 1, 2, 3), fuzzSeed(1, 2, 3, 4), uint8(2))
	f.Add(fuzzSeed(1, 1, 1), fuzzSeed(2, math.NaN()), uint8(3))
	f.Add(fuzzSeed(-math.MaxFloat64, 0, math.MaxFloat64), fuzzSeed(math.Inf(1), 5e-324), uint8(2))
	f.Add(fuzzSeed(math.NaN()), fuzzSeed(), uint8(1))
	f.Add(fuzzSeed(1e308, 1e308, -1e308), fuzzSeed(-1e308, 1e308), uint8(1))
	f.Fuzz(func(t *testing.T, refBytes, curBytes []byte, bins uint8) {
		refVals, curVals := floats(refBytes), floats(curBytes)
		ref, err := NewReference(refVals, WithBins(int(bins)), WithSampleSize(int(bins)+2))
		if err == nil {
			checkReference(t, ref)
			for _, m := range Methods() {
				checkScore(t, m, ref, Sample{Values: curVals})
			}
		}
		// The same bits as categories (few distinct values, ties likely).
		refCats, curCats := categories(refVals), categories(curVals)
		cref, err := NewCategoricalReference(refCats, WithMaxCategories(int(bins)+1))
		if err == nil {
			checkReference(t, cref)
			for _, m := range Methods() {
				checkScore(t, m, cref, Sample{Categories: curCats})
			}
		}
		refs := map[string]Reference{"x": ref, "c": cref}
		_, err = EvaluateSamples(Policy{Method: PSI, MinRows: int(bins)}, refs, map[string]Sample{"x": {Values: curVals}})
		if err != nil {
			t.Errorf("Evaluate: %v", err)
		}
	})
}

func categories(xs []float64) []string {
	s := make([]string, len(xs))
	for i, x := range xs {
		if !math.IsNaN(x) {
			s[i] = strconv.Itoa(int(math.Float64bits(x) % 5))
		}
	}
	return s
}

func checkReference(t *testing.T, r Reference) {
	t.Helper()
	if err := r.Validate(); err != nil {
		t.Fatalf("built an invalid reference: %v\n%+v", err, r)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("reference does not encode: %v", err)
	}
}

func checkScore(t *testing.T, m Method, ref Reference, cur Sample) {
	t.Helper()
	s, err := MeasureSample(m, ref, cur)
	if err != nil {
		return
	}
	if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) || s.Value < 0 || !(s.PValue >= 0 && s.PValue <= 1) {
		t.Fatalf("%s: score %+v", m, s)
	}
	if (m == KS || m == JensenShannon) && s.Value > 1+1e-12 {
		t.Fatalf("%s: score %v above 1", m, s.Value)
	}
}
