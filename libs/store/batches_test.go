package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/store"
)

// TestAppendValidatedInArrivalOrder: batches appended concurrently, in a
// shuffled order and each twice (redeliveries), end in the log once each,
// in arrival order, numbered 1..n.
func TestAppendValidatedInArrivalOrder(t *testing.T) {
	t.Parallel()
	b := open(t)
	ctx := context.Background()
	const n = 12
	order := rand.New(rand.NewPCG(7, 7)).Perm(n)
	base := time.Now().UTC()
	var wg sync.WaitGroup
	for _, i := range order {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				arrival := uint64(100 + 10*i)
				if _, err := store.AppendValidated(ctx, b.State, "p1", store.ValidatedBatch{
					BatchID: fmt.Sprintf("b%02d", i), ArrivalSeq: arrival, ArrivedAt: base.Add(time.Duration(i) * time.Millisecond),
				}); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	log, err := store.ValidatedBatches(ctx, b.State, "p1")
	if err != nil || len(log) != n {
		t.Fatalf("log has %d entries (%v), want %d", len(log), err, n)
	}
	appends := map[int64]bool{}
	for i, e := range log {
		if want := fmt.Sprintf("b%02d", i); e.BatchID != want || e.Seq != int64(i+1) {
			t.Errorf("entry %d is %s seq %d, want %s seq %d", i, e.BatchID, e.Seq, want, i+1)
		}
		appends[e.AppendSeq] = true
	}
	for k := int64(1); k <= n; k++ {
		if !appends[k] {
			t.Errorf("no entry has AppendSeq %d: %+v", k, log)
		}
	}
}
