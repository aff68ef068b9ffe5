package serving

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// doubling is a model call that answers 2x for each row's first value and
// records the rows it saw; with a gate, the first call waits on it, holding
// the model busy until the test lets it go.
type doubling struct {
	mu    sync.Mutex
	seen  []float64
	calls [][]float64
	// gate, when set, holds the first call until it is closed; entered
	// is closed when that call has begun.
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
	// poison makes a call that sees it panic.
	poison float64
}

func (d *doubling) call(x [][]float64) scores {
	if d.gate != nil {
		first := false
		d.once.Do(func() { first = true })
		if first {
			close(d.entered)
			<-d.gate
		}
	}
	out := make([]float64, len(x))
	var batch []float64
	for i, r := range x {
		if d.poison != 0 && r[0] == d.poison {
			panic(fmt.Sprintf("cannot score %v", r[0]))
		}
		out[i] = 2 * r[0]
		batch = append(batch, r[0])
	}
	d.mu.Lock()
	d.seen = append(d.seen, batch...)
	d.calls = append(d.calls, batch)
	d.mu.Unlock()
	return scores{values: out}
}

func rows(vs ...float64) [][]float64 {
	x := make([][]float64, len(vs))
	for i, v := range vs {
		x[i] = []float64{v}
	}
	return x
}

// waitQueued polls until n requests are queued.
func waitQueued(t *testing.T, b *batcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", b.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type answer struct {
	out scores
	err error
}

func async(ctx context.Context, b *batcher, x [][]float64) <-chan answer {
	c := make(chan answer, 1)
	go func() {
		out, err := b.do(ctx, x)
		c <- answer{out, err}
	}()
	return c
}

func checkDoubled(t *testing.T, a answer, x [][]float64) {
	t.Helper()
	if a.err != nil {
		t.Fatalf("do(%v): %v", x, a.err)
	}
	if len(a.out.values) != len(x) {
		t.Fatalf("do(%v) = %v: %d values, want %d", x, a.out.values, len(a.out.values), len(x))
	}
	for i, r := range x {
		if a.out.values[i] != 2*r[0] {
			t.Fatalf("do(%v) = %v: row %d is another request's", x, a.out.values, i)
		}
	}
}

// TestBatcherGroupsWhatQueuesWhileBusy: the first request runs alone at
// once; those that arrive while it runs go together in the next calls, up
// to maxRows rows each, oldest first, and each gets its own rows back.
func TestBatcherGroupsWhatQueuesWhileBusy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		maxRows int
		queued  [][]float64
		// calls are the rows of each call after the first.
		calls [][]float64
	}{
		{name: "one batch", maxRows: 64, queued: [][]float64{{1}, {2, 3}, {4}}, calls: [][]float64{{1, 2, 3, 4}}},
		{name: "split at maxRows", maxRows: 3, queued: [][]float64{{1}, {2, 3}, {4}, {5, 6}}, calls: [][]float64{{1, 2, 3}, {4, 5, 6}}},
		{name: "a full request goes alone", maxRows: 3, queued: [][]float64{{1, 2}, {3, 4}, {5}}, calls: [][]float64{{1, 2}, {3, 4, 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := &doubling{gate: make(chan struct{}), entered: make(chan struct{})}
			b := newBatcher(tc.maxRows, 0, 1, d.call, nil)
			ctx := context.Background()
			first := async(ctx, b, rows(100))
			<-d.entered
			var waits []<-chan answer
			for i, vs := range tc.queued {
				waits = append(waits, async(ctx, b, rows(vs...)))
				waitQueued(t, b, i+1)
			}
			close(d.gate)
			checkDoubled(t, <-first, rows(100))
			for i, w := range waits {
				checkDoubled(t, <-w, rows(tc.queued[i]...))
			}
			want := append([][]float64{{100}}, tc.calls...)
			if !slices.EqualFunc(d.calls, want, slices.Equal) {
				t.Errorf("calls %v, want %v", d.calls, want)
			}
			if !b.idle() {
				t.Error("batcher not idle after every request was answered")
			}
		})
	}
}

// TestBatcherCallerScoresWhatQueued: the request whose call ends scores
// what queued meanwhile itself, before it returns, instead of waking a
// queued request to do it (which would hold the slot while that request
// waits for a processor); after maxDrainRounds calls it hands the slot on.
func TestBatcherCallerScoresWhatQueued(t *testing.T) {
	t.Parallel()
	var firstReturned atomic.Bool
	var mu sync.Mutex
	var calls [][]float64
	var returnedAt []bool // whether the first request had returned, per call
	gate, entered := make(chan struct{}), make(chan struct{})
	var once sync.Once
	call := func(x [][]float64) scores {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-gate
		} else {
			// Long enough for the first request to return, had it woken
			// another to make this call.
			time.Sleep(20 * time.Millisecond)
		}
		var batch []float64
		out := make([]float64, len(x))
		for i, r := range x {
			batch = append(batch, r[0])
			out[i] = 2 * r[0]
		}
		mu.Lock()
		calls = append(calls, batch)
		returnedAt = append(returnedAt, firstReturned.Load())
		mu.Unlock()
		return scores{values: out}
	}
	// maxRows 2: the four queued requests take two calls, maxDrainRounds.
	b := newBatcher(2, 0, 1, call, nil)
	ctx := context.Background()
	first := make(chan answer, 1)
	go func() {
		out, err := b.do(ctx, rows(100))
		firstReturned.Store(true)
		first <- answer{out, err}
	}()
	<-entered
	var waits []<-chan answer
	for i := range 4 {
		waits = append(waits, async(ctx, b, rows(float64(i+1))))
		waitQueued(t, b, i+1)
	}
	close(gate)
	checkDoubled(t, <-first, rows(100))
	for i, w := range waits {
		checkDoubled(t, <-w, rows(float64(i+1)))
	}
	mu.Lock()
	defer mu.Unlock()
	if maxDrainRounds != 2 {
		t.Fatalf("maxDrainRounds %d: this test queues for 2", maxDrainRounds)
	}
	want := [][]float64{{100}, {1, 2}, {3, 4}}
	if !slices.EqualFunc(calls, want, slices.Equal) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	if !slices.Equal(returnedAt, []bool{false, false, false}) {
		t.Errorf("the first request had returned before calls %v: another goroutine made them", returnedAt)
	}
	if !b.idle() {
		t.Error("batcher not idle after every request was answered")
	}
}

// TestBatcherMatchesUnbatched: many concurrent requests of 1 to 5 rows get
// exactly what a call of their own would give.
func TestBatcherMatchesUnbatched(t *testing.T) {
	t.Parallel()
	d := &doubling{}
	b := newBatcher(16, time.Millisecond, 1, d.call, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 200 {
				x := make([][]float64, 1+r.IntN(5))
				for i := range x {
					x[i] = []float64{r.Float64()}
				}
				out, err := b.do(context.Background(), x)
				if err != nil {
					errs <- err
					return
				}
				for i := range x {
					if out.values[i] != 2*x[i][0] {
						errs <- fmt.Errorf("row %d of %v answered %v", i, x, out.values)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := b.stats.scored.Load(); got != int64(len(d.seen)) || got == 0 {
		t.Errorf("batcher counted %d rows, the model saw %d", got, len(d.seen))
	}
	if !b.idle() {
		t.Error("batcher not idle after the load")
	}
}

// TestBatcherCancelLeavesTheQueue: a request whose context ends while it
// is queued returns at once with the context's error and is never scored;
// the others are.
func TestBatcherCancelLeavesTheQueue(t *testing.T) {
	t.Parallel()
	d := &doubling{gate: make(chan struct{}), entered: make(chan struct{})}
	b := newBatcher(64, 0, 1, d.call, nil)
	first := async(context.Background(), b, rows(1))
	<-d.entered
	ctx, cancel := context.WithCancel(context.Background())
	gone := async(ctx, b, rows(7))
	waitQueued(t, b, 1)
	kept := async(context.Background(), b, rows(3))
	waitQueued(t, b, 2)
	cancel()
	if a := <-gone; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("cancelled request: %v, %v; want context.Canceled", a.out, a.err)
	}
	close(d.gate)
	checkDoubled(t, <-first, rows(1))
	checkDoubled(t, <-kept, rows(3))
	if slices.Contains(d.seen, 7) {
		t.Errorf("the cancelled request was scored: the model saw %v", d.seen)
	}
	if !b.idle() {
		t.Error("batcher not idle")
	}
}

// TestBatcherFailedCallFailsOnlyItsRequests: a call that panics fails the
// requests batched into it, and the model serves the next ones.
func TestBatcherFailedCallFailsOnlyItsRequests(t *testing.T) {
	t.Parallel()
	d := &doubling{gate: make(chan struct{}), entered: make(chan struct{}), poison: 13}
	b := newBatcher(64, 0, 1, d.call, nil)
	first := async(context.Background(), b, rows(1))
	<-d.entered
	bad := async(context.Background(), b, rows(13))
	waitQueued(t, b, 1)
	mate := async(context.Background(), b, rows(2))
	waitQueued(t, b, 2)
	close(d.gate)
	checkDoubled(t, <-first, rows(1))
	for _, w := range []<-chan answer{bad, mate} {
		if a := <-w; !errors.Is(a.err, ErrModelFailed) {
			t.Errorf("request of the failed call: %v, %v; want ErrModelFailed", a.out, a.err)
		}
	}
	out, err := b.do(context.Background(), rows(4))
	checkDoubled(t, answer{out, err}, rows(4))
}

// TestBatcherBypass: with batching off (maxRows 1), a request of maxRows
// rows or more, or one that finds a second slot free, is scored beside a
// busy call rather than after it — here the busy call never ends until
// they have.
func TestBatcherBypass(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		maxRows, slots int
		x              [][]float64
	}{
		{name: "batching off", maxRows: 1, slots: 1, x: rows(5)},
		{name: "a request of maxRows rows", maxRows: 2, slots: 1, x: rows(5, 6)},
		{name: "a second slot", maxRows: 64, slots: 2, x: rows(5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := &doubling{gate: make(chan struct{}), entered: make(chan struct{})}
			b := newBatcher(tc.maxRows, 0, tc.slots, d.call, nil)
			first := async(context.Background(), b, rows(1))
			<-d.entered
			out, err := b.do(context.Background(), tc.x)
			checkDoubled(t, answer{out, err}, tc.x)
			close(d.gate)
			checkDoubled(t, <-first, rows(1))
		})
	}
}

// TestBatcherLoneRequestDoesNotLinger: a queued request that leads the
// next call waits for others only while they arrive — with a budget of an
// hour and nobody else coming, it is scored as soon as the model is free.
func TestBatcherLoneRequestDoesNotLinger(t *testing.T) {
	t.Parallel()
	d := &doubling{gate: make(chan struct{}), entered: make(chan struct{})}
	b := newBatcher(64, time.Hour, 1, d.call, nil)
	first := async(context.Background(), b, rows(1))
	<-d.entered
	lone := async(context.Background(), b, rows(2))
	waitQueued(t, b, 1)
	close(d.gate)
	checkDoubled(t, <-first, rows(1))
	checkDoubled(t, <-lone, rows(2))
}

// TestBatcherLeavesNoGoroutine: the batcher runs on its requests'
// goroutines; once they are answered, none is left.
func TestBatcherLeavesNoGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	d := &doubling{}
	b := newBatcher(8, time.Millisecond, 1, d.call, nil)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				x := rows(float64(w*1000 + i))
				out, err := b.do(context.Background(), x)
				if err != nil || out.values[0] != 2*x[0][0] {
					t.Errorf("do(%v) = %v, %v", x, out.values, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before", runtime.NumGoroutine(), base)
		}
		time.Sleep(time.Millisecond)
	}
	if !b.idle() {
		t.Error("batcher not idle")
	}
}

// TestBatcherProbesOnOneProcessor: with one processor a model call that
// does not yield leaves nobody time to queue, so every request would find
// the model free and be scored alone. The probe, one lone request in
// probeEvery lingering, lets the requests already runnable reach the
// queue and share its call. Not parallel: it sets GOMAXPROCS.
func TestBatcherProbesOnOneProcessor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	d := &doubling{}
	b := newBatcher(64, time.Second, 1, d.call, nil)
	const n = 4 * probeEvery
	start := make(chan struct{})
	answers := make([]<-chan answer, n)
	for i := range n {
		c := make(chan answer, 1)
		answers[i] = c
		go func() {
			<-start
			out, err := b.do(context.Background(), rows(float64(i)))
			c <- answer{out, err}
		}()
	}
	close(start)
	for i, c := range answers {
		checkDoubled(t, <-c, rows(float64(i)))
	}
	calls, scored := b.stats.calls.Load(), b.stats.scored.Load()
	if scored != n {
		t.Fatalf("%d rows scored, want %d", scored, n)
	}
	if calls > n-probeEvery {
		t.Fatalf("%d requests were scored in %d calls: the probe gathered none", n, calls)
	}
}
