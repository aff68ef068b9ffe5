package validation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
)

// TestLateBatchTakesItsArrivalPlace: the batch that arrived first is
// validated last — its handler waits until the two batches that arrived
// after it are in the log, as a slow replica, a crash or a retry would make
// it — and the log still ends in arrival order, each entry with the stream
// sequence of its data.batch.received. The schema is inferred from the
// batch validated first, and only that one says so.
//
// The service's own consumer is ordered, which rules this out short of a
// redelivery after a dead letter or a consumer configured otherwise; the
// test runs the service's port on an unordered consumer of its own to get
// handling out of order on purpose.
func TestLateBatchTakesItsArrivalPlace(t *testing.T) {
	t.Parallel()
	srv, js, b := servicetest.Provisioned(t)
	env := looptest.Attach(t, srv, js)
	ctx := env.Ctx()
	pub := env.Pub
	p, err := pipeline.Parse([]byte("apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: late}\nspec:\n  dataset: {label: class}\n  model: {algorithm: logreg}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.ApplyPipeline(ctx, js, pub, p, "test"); err != nil {
		t.Fatal(err)
	}
	s := &Service{validator: NewValidator(store.NewLazy(js), pub)}

	inLog := func(ids ...string) bool {
		log, err := store.ValidatedBatches(ctx, b.State, "late")
		if err != nil {
			t.Error(err)
			return false
		}
		for _, id := range ids {
			if !slices.ContainsFunc(log, func(e store.ValidatedBatch) bool { return e.BatchID == id }) {
				return false
			}
		}
		return true
	}
	decl := events.EventConsumer(Name, "batch-received-unordered", events.DataBatchReceived).Unordered(8)
	r, err := bus.NewRouter(js, bus.RouterConfig{Service: Name, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Handle(decl, func(ctx context.Context, ev event.Event) error {
		var msg gyrev1.DataBatchReceived
		if err := events.Decode(ev, &msg); err != nil {
			return err
		}
		if msg.GetBatchId() == "b1" {
			looptest.WaitFor(t, "b2 and b3 validated before b1", looptest.Timeout, func() bool { return inLog("b2", "b3") })
		}
		return s.batchReceived(ctx, ev)
	}, bus.WithConcurrency(4)); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})

	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	subject := fmt.Sprintf("gyre.ev.%s.data.batch.received", "late")
	arrival := map[string]uint64{}
	for i, id := range []string{"b1", "b2", "b3"} {
		csv := fmt.Sprintf("x,class\n0.%d,1\n0.5,0\n", i+1)
		sum := sha256.Sum256([]byte(csv))
		ref, _, err := store.PutObject(ctx, b.Batches, "late/"+hex.EncodeToString(sum[:])+".csv", "text/csv", []byte(csv))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := events.New("/gyre/ingest", "late", &gyrev1.DataBatchReceived{
			Pipeline: "late", BatchId: id, Object: ref, Sha256: ref.GetSha256(), Format: "csv", Rows: 2, Bytes: int64(len(csv)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		last, err := stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		arrival[id] = last.Sequence
	}
	looptest.WaitFor(t, "every batch validated", looptest.Timeout, func() bool { return inLog("b1", "b2", "b3") })

	log, err := store.ValidatedBatches(ctx, b.State, "late")
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range log {
		want := fmt.Sprintf("b%d", i+1)
		if e.BatchID != want || e.Seq != int64(i+1) || e.ArrivalSeq != arrival[want] || e.ArrivedAt.IsZero() {
			t.Errorf("entry %d: %s seq %d arrival %d at %s; want %s seq %d arrival %d", i, e.BatchID, e.Seq, e.ArrivalSeq, e.ArrivedAt, want, i+1, arrival[want])
		}
		if e.BatchID == "b1" && e.AppendSeq != 3 {
			t.Errorf("b1 appended as number %d, want the last, 3", e.AppendSeq)
		}
	}

	// The batch validated first inferred the schema; it is the only one to say so.
	var inferred []string
	for _, ev := range env.WaitEvents("late", events.DataBatchValidated, 3) {
		if m := looptest.Decode(t, ev, &gyrev1.DataBatchValidated{}); m.GetSchemaInferred() {
			inferred = append(inferred, m.GetBatchId())
		}
	}
	first := log[slices.IndexFunc(log, func(e store.ValidatedBatch) bool { return e.AppendSeq == 1 })].BatchID
	if len(inferred) != 1 || inferred[0] != first || first == "b1" {
		t.Errorf("schemaInferred on %v, want only on %s, the first validated", inferred, first)
	}
}
