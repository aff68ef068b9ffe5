package ml

import (
	"sync"
	"sync/atomic"
)

// forEach calls fn(i) for every i in [0, n) using up to workers goroutines.
//
// Determinism rule for callers: fn(i) must write only to state owned by i
// (its own output slot), and any floating-point reduction over i must be done
// afterwards, by the caller, in index order. Which goroutine runs which i then
// cannot change a result.
func forEach(n, workers int, fn func(i int)) {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// forChunks splits [0, n) into consecutive chunks of size chunk and calls
// fn(c, lo, hi) for chunk c covering [lo, hi), using up to workers
// goroutines. Chunk boundaries depend only on n and chunk, never on workers,
// so per-chunk partial sums combined in chunk order are reproducible.
func forChunks(n, chunk, workers int, fn func(c, lo, hi int)) {
	if n <= 0 {
		return
	}
	chunks := (n + chunk - 1) / chunk
	forEach(chunks, workers, func(c int) {
		lo := c * chunk
		hi := min(lo+chunk, n)
		fn(c, lo, hi)
	})
}
