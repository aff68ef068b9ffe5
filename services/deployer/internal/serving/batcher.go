package serving

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrModelFailed is wrapped by the error of requests whose model call
// failed (the model panicked): only the requests of that call fail.
var ErrModelFailed = errors.New("model call failed")

// scores are the outputs of a model call, one entry per row: a
// classifier's probabilities or a regressor's values.
type scores struct {
	proba  [][]float64
	values []float64
}

// slice returns the scores of rows [lo, hi), sharing their memory.
func (s scores) slice(lo, hi int) scores {
	var out scores
	if s.proba != nil {
		out.proba = s.proba[lo:hi:hi]
	}
	if s.values != nil {
		out.values = s.values[lo:hi:hi]
	}
	return out
}

// batcher groups the concurrent requests of one model into shared model
// calls, adaptively (as Clipper does, rather than always waiting for a
// batch to fill as a fixed dynamic batcher does):
//
//   - a request that finds a model slot free is scored at once, alone: at
//     low load nobody waits. It lingers as a leader does (below) when the
//     last call was shared, and, as a probe, one in probeEvery times
//     otherwise: with one processor, or when requests arrive in step with
//     the calls, nothing can queue during a model call, which does not
//     yield, and without the probe batches would never start;
//   - requests that arrive while every slot is busy queue; when a call ends,
//     the request that ran it scores what queued meanwhile at once, up to
//     maxRows rows a call and maxDrainRounds calls (see handOff); then the
//     oldest request still queued takes the slot and gathers the queue into
//     the next call. Before it does, it yields its processor for
//     as long as requests keep arriving (other requests being decoded reach
//     the queue meanwhile) and no longer than delay (the latency budget, as
//     Triton's max_queue_delay): the batch grows with the load, and a lone
//     request does not wait;
//   - a request of maxRows rows or more is a batch already and skips the
//     queue, as does every request when maxRows is 1 (batching off).
//
// A slot is a model call in flight. One per four processors (at least one)
// keeps a model's calls from queueing behind each other on a large machine
// while leaving the cores to the rest of the request path, which costs more
// than a batched model call.
//
// Each call's outputs are split back to its requests; a call that fails
// fails only its requests; a request whose context ends while it is queued
// leaves the queue and is not scored.
//
// The batcher owns no goroutine: the request that ends a call runs the
// next ones or hands its slot to the oldest request queued, which runs
// them on its own goroutine. So a model swapped out finishes what it was
// given with the goroutines of those requests and leaves nothing behind.
type batcher struct {
	maxRows int
	delay   time.Duration
	slots   int
	call    func(x [][]float64) scores

	mu sync.Mutex
	// inflight counts the slots taken: calls running or being handed over.
	inflight int
	queue    []*job
	head     int
	// rows queued, and rows of the last call led.
	rows, last int
	// lone counts the requests that found a slot free after a call of
	// one row, for the probe.
	lone int

	// stats counts model calls and rows scored, for tests and operators;
	// the model's, which outlive a batcher replaced by new settings.
	stats *batchStats
}

// batchStats counts the model calls a batcher makes and the rows they
// score.
type batchStats struct {
	calls, scored atomic.Int64
}

// Job states, under the batcher's mutex.
const (
	jobQueued = iota
	jobTaken
	jobLeft
)

// job is a queued request.
type job struct {
	x     [][]float64
	state int
	// wake gets one signal: the job's outputs are ready, or (lead) the job
	// has a slot and is to gather and run the next call.
	wake chan struct{}
	lead bool
	out  scores
	err  error
}

// maxLingerRounds bounds how often a leader yields for its batch to grow.
const maxLingerRounds = 16

// probeEvery: one in probeEvery requests that find the model free after a
// lone call lingers, to find out whether others are on their way. Where
// none are, the probe costs a yield of the processor; where they are, the
// batch it gathers makes the next calls shared and lingering.
const probeEvery = 16

// defaultSlots is the model calls in flight at once: one per four
// processors, at least one.
func defaultSlots() int { return max(1, runtime.GOMAXPROCS(0)/4) }

// newBatcher returns a batcher making calls with call, counting them in
// stats (its own counts when stats is nil).
func newBatcher(maxRows int, delay time.Duration, slots int, call func(x [][]float64) scores, stats *batchStats) *batcher {
	if stats == nil {
		stats = new(batchStats)
	}
	return &batcher{maxRows: max(maxRows, 1), delay: max(delay, 0), slots: max(slots, 1), call: call, stats: stats}
}

// do scores x, alone or with concurrent requests.
func (b *batcher) do(ctx context.Context, x [][]float64) (scores, error) {
	if b.maxRows <= 1 || len(x) >= b.maxRows {
		return b.exec(x)
	}
	b.mu.Lock()
	if b.inflight < b.slots {
		b.inflight++
		// Alone on an idle model at low load; when the last call was
		// shared, requests are coming together: let them join.
		shared := b.last > 1
		if !shared {
			b.lone++
			shared = b.lone%probeEvery == 0
		}
		b.mu.Unlock()
		j := &job{x: x}
		b.lead(j, shared)
		return j.out, j.err
	}
	j := &job{x: x, wake: make(chan struct{}, 1)}
	b.queue = append(b.queue, j)
	b.rows += len(x)
	b.mu.Unlock()

	select {
	case <-j.wake:
	case <-ctx.Done():
		b.mu.Lock()
		if j.state == jobQueued {
			j.state = jobLeft
			b.rows -= len(j.x)
			b.mu.Unlock()
			return scores{}, ctx.Err()
		}
		b.mu.Unlock()
		// Taken into a call that is running or about to, or given a
		// slot: it ends within one model call.
		<-j.wake
	}
	if j.lead {
		b.lead(j, true)
	}
	return j.out, j.err
}

// lead runs the next call with a slot j holds: j's rows and what is
// queued, after lingering for more when linger is set.
func (b *batcher) lead(j *job, linger bool) {
	if linger {
		b.linger(j)
	}
	b.mu.Lock()
	batch := append([]*job{j}, b.take(b.maxRows-len(j.x), false)...)
	b.last = batchRows(batch)
	b.mu.Unlock()
	b.run(batch, j)
	b.handOff()
}

// linger lets the batch of leader j grow: while requests keep arriving, it
// yields its processor to the goroutines on their way to the queue, until
// the batch is full or it has lingered delay. The time j waited for the
// slot does not count: under load, requests wait for the model anyway, and
// those are the times when batches pay.
func (b *batcher) linger(j *job) {
	if b.delay <= 0 {
		return
	}
	start := time.Now()
	b.mu.Lock()
	n := b.rows
	b.mu.Unlock()
	for range maxLingerRounds {
		if len(j.x)+n >= b.maxRows || time.Since(start) >= b.delay {
			return
		}
		runtime.Gosched()
		b.mu.Lock()
		grown := b.rows > n
		n = b.rows
		b.mu.Unlock()
		if !grown {
			return
		}
	}
}

// handOff ends a call. What queued meanwhile is scored at once by the
// goroutine that ran the call, up to maxDrainRounds calls, rather than by
// the oldest request queued: that request would first have to be woken
// and wait for a processor, holding the slot while every request behind it
// waits too, and under load a woken goroutine waits behind the run queue.
// After maxDrainRounds the slot goes to the oldest request queued, which
// leads the next call, so that no request answers for others
// indefinitely; with nothing queued the slot is free.
func (b *batcher) handOff() {
	for range maxDrainRounds {
		b.mu.Lock()
		batch := b.take(b.maxRows, true)
		if len(batch) == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		b.last = batchRows(batch)
		b.mu.Unlock()
		b.run(batch, nil)
	}
	b.mu.Lock()
	next := b.take(0, true)
	if len(next) == 0 {
		b.inflight--
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	next[0].lead = true
	next[0].wake <- struct{}{}
}

// maxDrainRounds bounds the calls a request makes for others after its
// own (each of at most maxRows rows) before it hands the slot on.
const maxDrainRounds = 2

// take removes queued jobs, oldest first, up to rows rows; with one, at
// least one job when any is queued. b.mu is held.
func (b *batcher) take(rows int, one bool) []*job {
	var batch []*job
	n := 0
	for b.head < len(b.queue) {
		j := b.queue[b.head]
		if j.state != jobQueued {
			b.queue[b.head] = nil
			b.head++
			continue
		}
		if n+len(j.x) > rows && (len(batch) > 0 || !one) {
			break
		}
		j.state = jobTaken
		batch = append(batch, j)
		n += len(j.x)
		b.rows -= len(j.x)
		b.queue[b.head] = nil
		b.head++
	}
	switch {
	case b.head == len(b.queue):
		b.queue, b.head = b.queue[:0], 0
	case b.head > 256 && b.head*2 > len(b.queue):
		// A queue that never empties under steady load would only grow.
		k := copy(b.queue, b.queue[b.head:])
		clear(b.queue[k:])
		b.queue, b.head = b.queue[:k], 0
	}
	return batch
}

// batchRows returns the rows of a batch's jobs.
func batchRows(batch []*job) int {
	n := 0
	for _, j := range batch {
		n += len(j.x)
	}
	return n
}

// run scores a batch in one call and hands each job its rows, waking all
// but own, the caller's (nil when it has none in the batch).
func (b *batcher) run(batch []*job, own *job) {
	x := batch[0].x
	if len(batch) > 1 {
		x = make([][]float64, 0, batchRows(batch))
		for _, j := range batch {
			x = append(x, j.x...)
		}
	}
	out, err := b.exec(x)
	lo := 0
	for _, j := range batch {
		hi := lo + len(j.x)
		if err != nil {
			j.err = err
		} else {
			j.out = out.slice(lo, hi)
		}
		lo = hi
		if j != own {
			j.wake <- struct{}{}
		}
	}
}

// exec makes one model call; a panic in the model fails the call.
func (b *batcher) exec(x [][]float64) (out scores, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = scores{}, fmt.Errorf("%w: %v", ErrModelFailed, p)
		}
	}()
	b.stats.calls.Add(1)
	b.stats.scored.Add(int64(len(x)))
	return b.call(x), nil
}

// queued returns how many requests wait in the queue.
func (b *batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, j := range b.queue[b.head:] {
		if j.state == jobQueued {
			n++
		}
	}
	return n
}

// idle reports whether no call runs and nothing is queued.
func (b *batcher) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inflight == 0 && b.head == len(b.queue)
}
