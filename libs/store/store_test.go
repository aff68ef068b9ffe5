package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
)

func open(t *testing.T) *store.Buckets {
	t.Helper()
	_, _, b := servicetest.Provisioned(t)
	return b
}

func TestUpdateJSONUnderContention(t *testing.T) {
	t.Parallel()
	b := open(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := store.UpdateJSON(ctx, b.State, "counter", func(n *int, _ bool) error { *n += i + 1; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	n, _, found, err := store.GetJSON[int](ctx, b.State, "counter")
	if err != nil || !found || n != 210 {
		t.Fatalf("counter = %d, %v, %v; want 210", n, found, err)
	}
}

func TestAppendValidatedIsIdempotent(t *testing.T) {
	t.Parallel()
	b := open(t)
	ctx := context.Background()
	for i := range 3 {
		for range 2 { // every append twice, as a redelivery would
			got, err := store.AppendValidated(ctx, b.State, "p1", store.ValidatedBatch{BatchID: fmt.Sprintf("b%d", i), Rows: 10})
			if err != nil {
				t.Fatal(err)
			}
			if got.Seq != int64(i+1) {
				t.Errorf("b%d seq = %d", i, got.Seq)
			}
		}
	}
	log, err := store.ValidatedBatches(ctx, b.State, "p1")
	if err != nil || len(log) != 3 {
		t.Fatalf("log = %v, %v", log, err)
	}
}

func TestObjectsAndPipelines(t *testing.T) {
	t.Parallel()
	b := open(t)
	ctx := context.Background()
	ref, existed, err := store.PutObject(ctx, b.Batches, "p1/abc.csv", "text/csv", []byte("a,b\n1,2\n"))
	if err != nil || existed {
		t.Fatalf("put: %v, existed=%v", err, existed)
	}
	if ref.GetUri() != "nats-object://gyre-batches/p1/abc.csv" || ref.GetSizeBytes() != 8 {
		t.Errorf("ref = %v", ref)
	}
	if _, existed, err := store.PutObject(ctx, b.Batches, "p1/abc.csv", "text/csv", []byte("a,b\n1,2\n")); err != nil || !existed {
		t.Errorf("second put: %v, existed=%v", err, existed)
	}
	data, err := store.GetObject(ctx, b.Batches, "p1/abc.csv")
	if err != nil || string(data) != "a,b\n1,2\n" {
		t.Errorf("get = %q, %v", data, err)
	}
	if _, err := store.GetObject(ctx, b.Batches, "nope"); !store.IsNotFound(err) || !bus.IsPermanent(err) {
		t.Errorf("missing object: %v", err)
	}
	if _, _, err := store.Pipeline(ctx, b.Pipelines, "ghost"); !store.IsNotFound(err) || !bus.IsPermanent(err) {
		t.Errorf("missing pipeline: %v", err)
	}
}
