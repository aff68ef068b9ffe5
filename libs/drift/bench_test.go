package drift

import "testing"

// BenchmarkEvaluate is the monitor's work for one batch: 6 features of
// 1,000 rows against 5,000-row references.
func BenchmarkEvaluate(b *testing.B) {
	refs, batch := sixFeatures(b, 3)
	for _, m := range append(numericMethods(), Auto) {
		b.Run(string(m), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Evaluate(Policy{Method: m}, refs, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/6/1000, "µs/feature")
		})
	}
}

// BenchmarkNewReference builds one feature's reference from a 5-batch
// training window of 1,000 rows each.
func BenchmarkNewReference(b *testing.B) {
	var batches [][]float64
	for i := range 5 {
		batches = append(batches, normal(uint64(i), 1000, 0))
	}
	b.ReportAllocs()
	for b.Loop() {
		a := NewNumeric()
		for _, x := range batches {
			n := NewNumeric()
			n.AddAll(x)
			a.Merge(n)
		}
		if _, err := a.Reference(); err != nil {
			b.Fatal(err)
		}
	}
}
