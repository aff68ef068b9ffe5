package serving

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/ml"
)

// TestLatencyHistQuantiles: the histogram's quantiles are within its
// resolution (1/32 relative, 1 µs absolute) of the exact ones, never below.
func TestLatencyHistQuantiles(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		draw func() time.Duration
	}{
		{"lognormal around 1ms", func() time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*0.8) * float64(time.Millisecond))
		}},
		{"bimodal 200µs and 40ms", func() time.Duration {
			if r.IntN(100) < 3 {
				return 40*time.Millisecond + time.Duration(r.IntN(5000))*time.Microsecond
			}
			return 200*time.Microsecond + time.Duration(r.IntN(50))*time.Microsecond
		}},
		{"sub-microsecond to tens of µs", func() time.Duration { return time.Duration(r.IntN(40_000)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h latencyHist
			xs := make([]float64, 20_000)
			for i := range xs {
				d := tc.draw()
				h.observe(d)
				xs[i] = float64(d/time.Microsecond) / 1000
			}
			slices.Sort(xs)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
				exact := xs[int(math.Ceil(q*float64(len(xs))))-1]
				got := h.quantileMs(q)
				if got < exact || got > exact*(1+1.0/latencySub)+0.001 {
					t.Errorf("q%.3f = %.4f ms, exact %.4f ms", q, got, exact)
				}
			}
		})
	}
	var empty latencyHist
	if q := empty.quantileMs(0.99); q != 0 {
		t.Errorf("empty histogram p99 = %v", q)
	}
}

func TestLatencyBucketsAreContiguous(t *testing.T) {
	t.Parallel()
	for us := uint64(0); us < 1<<20; us = us + 1 + us/64 {
		i := latencyBucket(us)
		if float64(us) >= latencyUpper(i) {
			t.Fatalf("%d µs in bucket %d whose upper bound is %v", us, i, latencyUpper(i))
		}
		if i > 0 && float64(us) < latencyUpper(i-1) {
			t.Fatalf("%d µs in bucket %d, below the upper bound %v of the bucket before", us, i, latencyUpper(i-1))
		}
	}
	if latencyBucket(math.MaxUint64) != latencyBuckets-1 {
		t.Errorf("the slowest duration is not in the last bucket")
	}
}

func classes(labels ...string) *bundle.Predictions {
	return &bundle.Predictions{Task: ml.Classification, Labels: labels}
}

func repeat(n int, pattern ...string) []string {
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, pattern[i%len(pattern)])
	}
	return out
}

func TestPredictionDrift(t *testing.T) {
	t.Parallel()
	values := func(n int, shift float64) *bundle.Predictions {
		r := rand.New(rand.NewPCG(3, uint64(n)))
		p := &bundle.Predictions{Task: ml.Regression}
		for range n {
			v := r.NormFloat64() + shift
			p.Values = append(p.Values, v)
			p.Labels = append(p.Labels, strconv.FormatFloat(v, 'g', -1, 64))
		}
		return p
	}
	for _, tc := range []struct {
		name                string
		champion, candidate *bundle.Predictions
		measured            bool
		min, max            float64
	}{
		{"same classes", classes(repeat(400, "0", "1")...), classes(repeat(400, "1", "0")...), true, 0, 0.001},
		// 50/50 against 90/10: 0.4·ln(1.8) + 0.4·ln(5) = 0.879.
		{"one class taking over", classes(repeat(400, "0", "1")...), classes(repeat(400, "1", "1", "1", "1", "1", "1", "1", "1", "1", "0")...), true, 0.87, 0.89},
		{"a class the champion never predicts", classes(repeat(400, "0")...), classes(repeat(400, "0", "2")...), true, 2, 10},
		{"too few candidate rows", classes(repeat(400, "0", "1")...), classes(repeat(MinDriftRows-1, "1")...), false, 0, 0},
		{"same values", values(2000, 0), values(1999, 0), true, 0, 0.05},
		{"shifted values", values(2000, 0), values(2001, 1), true, 0.5, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ch, ca predictionSample
			ch.add(tc.champion)
			ca.add(tc.candidate)
			psi, _, _, ok := predictionDrift(&ch, &ca)
			if ok != tc.measured || psi < tc.min || psi > tc.max {
				t.Errorf("PSI %.4f measured %v, want %v in [%v, %v]", psi, ok, tc.measured, tc.min, tc.max)
			}
		})
	}
}

// TestPredictionSampleIsBoundedAndUniform: past its size the sample keeps
// each prediction alike, so a late change of class mix shows in proportion.
func TestPredictionSampleIsBoundedAndUniform(t *testing.T) {
	t.Parallel()
	var s predictionSample
	for range 3 * predictionSampleSize / 100 {
		s.add(classes(repeat(100, "a")...))
	}
	s.add(classes(repeat(predictionSampleSize, "b")...))
	labels, _, _ := s.snapshot()
	if len(labels) != predictionSampleSize {
		t.Fatalf("sample of %d, want %d", len(labels), predictionSampleSize)
	}
	b := 0
	for _, l := range labels {
		if l == "b" {
			b++
		}
	}
	// b is a quarter of what was seen: 1024 expected, sd ≈ 28.
	if b < 850 || b > 1200 {
		t.Errorf("%d of %d sampled are b, want about a quarter", b, len(labels))
	}
}

func TestRecentRowsKeepsTheLast(t *testing.T) {
	t.Parallel()
	var r recentRows
	if n := len(r.snapshot()); n != 0 {
		t.Fatalf("empty ring returned %d", n)
	}
	for i := range recentKept + 10 {
		r.add(&Request{Pipeline: strconv.Itoa(i)})
	}
	got := r.snapshot()
	if len(got) != recentKept || got[0].Pipeline != "10" || got[len(got)-1].Pipeline != strconv.Itoa(recentKept+9) {
		t.Errorf("kept %d, from %s to %s", len(got), got[0].Pipeline, got[len(got)-1].Pipeline)
	}
}
