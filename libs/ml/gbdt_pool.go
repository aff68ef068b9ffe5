package ml

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// workPool runs the parallel loops of one GBDT fit on long-lived helper
// goroutines. A fit makes thousands of short parallel calls (a few per tree
// node); starting goroutines for each, and waking an OS thread that has gone
// idle for them, can cost tens of microseconds per call, a large share of
// the work of a small node. Between calls the helpers spin for up to
// poolSpin (as the OpenMP threads of scikit-learn do) and then park, so an
// idle pool costs nothing; close ends them.
//
// run has forEach's contract: fn(i) writes only state owned by i, so which
// goroutine runs which i cannot change a result.
type workPool struct {
	helpers int
	job     atomic.Pointer[poolJob]
	mu      sync.Mutex
	cond    sync.Cond // signalled under mu when job changes
	wg      sync.WaitGroup
}

// poolJob is one call of run.
type poolJob struct {
	n        int64
	fn       func(i int)
	next     atomic.Int64
	done     atomic.Int64
	finished chan struct{} // closed when done reaches n
	stop     bool          // the pool is closing
}

// poolSpin is how long an idle helper polls for the next call before it
// parks.
const poolSpin = 500 * time.Microsecond

// newWorkPool starts a pool for up to workers goroutines (the caller of
// run being one of them), never more than GOMAXPROCS: a spinning helper
// without a processor of its own would only delay the others. Close it
// when done.
func newWorkPool(workers int) *workPool {
	p := &workPool{helpers: max(0, min(workers, runtime.GOMAXPROCS(0))-1)}
	p.cond.L = &p.mu
	idle := &poolJob{}
	p.job.Store(idle)
	for range p.helpers {
		p.wg.Add(1)
		go p.helper(idle)
	}
	return p
}

// close stops the helpers and waits for them.
func (p *workPool) close() {
	p.publish(&poolJob{stop: true})
	p.wg.Wait()
}

func (p *workPool) publish(j *poolJob) {
	p.mu.Lock()
	p.job.Store(j)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// helper runs the jobs published after seen (the pool's first, idle job:
// a helper that starts late must not skip the calls made meanwhile).
func (p *workPool) helper(seen *poolJob) {
	defer p.wg.Done()
	for {
		j := p.next(seen)
		if j.stop {
			return
		}
		j.work()
		seen = j
	}
}

// next returns the first job after seen: polled for poolSpin, then waited
// for.
func (p *workPool) next(seen *poolJob) *poolJob {
	start := time.Now()
	for spins := 1; ; spins++ {
		if j := p.job.Load(); j != seen {
			return j
		}
		if spins%64 == 0 {
			if time.Since(start) > poolSpin {
				break
			}
			runtime.Gosched()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if j := p.job.Load(); j != seen {
			return j
		}
		p.cond.Wait()
	}
}

func (j *poolJob) work() {
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return
		}
		j.fn(int(i))
		if j.done.Add(1) == j.n {
			close(j.finished)
		}
	}
}

// run calls fn(i) for every i in [0, n), on the helpers and the calling
// goroutine; with workers ≤ 1 (or no helpers) on the caller alone.
func (p *workPool) run(n, workers int, fn func(i int)) {
	if workers <= 1 || n <= 1 || p.helpers == 0 {
		for i := range n {
			fn(i)
		}
		return
	}
	j := &poolJob{n: int64(n), fn: fn, finished: make(chan struct{})}
	p.publish(j)
	j.work()
	// Every index is taken; wait for those still running elsewhere.
	for spins := 0; spins < 1000; spins++ {
		if j.done.Load() == j.n {
			return
		}
	}
	<-j.finished
}

// chunks is forChunks on the pool: fn(c, lo, hi) for consecutive chunks
// of [0, n) whose bounds depend only on n and chunk.
func (p *workPool) chunks(n, chunk, workers int, fn func(c, lo, hi int)) {
	if n <= 0 {
		return
	}
	p.run((n+chunk-1)/chunk, workers, func(c int) {
		lo := c * chunk
		fn(c, lo, min(lo+chunk, n))
	})
}
