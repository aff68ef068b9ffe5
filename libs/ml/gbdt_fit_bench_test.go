//go:build unix

package ml

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGBDTFitCSV fits the bench-ml GBDT (100 iterations, depth 6, 31
// leaves, 255 bins, 20 rows per leaf) on a training CSV with a "y" label
// column, e.g. one that `scripts/bench_ml.py --keep DIR` wrote:
//
//	GYRE_GBDT_BENCH_CSV=DIR/binary-20f-train.csv go test ./libs/ml -run '^$' -bench GBDTFitCSV
//
// Besides the wall time per fit it reports the process CPU time per fit,
// which a busy machine disturbs less.
func BenchmarkGBDTFitCSV(b *testing.B) {
	path := os.Getenv("GYRE_GBDT_BENCH_CSV")
	if path == "" {
		b.Skip("GYRE_GBDT_BENCH_CSV is not set")
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	d, err := ReadCSV(f, CSVOptions{Label: "y"})
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	params := Params{"trees": 100, "learningRate": 0.1, "maxDepth": 6, "maxLeaves": 31, "maxBins": 255,
		"minSamplesLeaf": 20, "l2": 0, "earlyStopping": false}
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("%s/workers=%d", filepath.Base(path), workers), func(b *testing.B) {
			start := cpuTime()
			for b.Loop() {
				if _, err := Train(context.Background(), "gbdt", params, d, TrainOptions{Seed: 1, Workers: workers}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-start).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
