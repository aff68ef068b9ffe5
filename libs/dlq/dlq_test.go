package dlq_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/dlq"
	"github.com/gyrehq/gyre/libs/natstest"
)

const testService = "dlqtest"

// newJS returns a server holding Gyre's streams and the gyre-state bucket.
func newJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var state []jetstream.KeyValueConfig
	for _, kv := range events.KeyValues() {
		if kv.Bucket == events.BucketState {
			state = append(state, kv)
		}
	}
	if _, err := bus.Provision(ctx, js, bus.Topology{Streams: events.Streams(), KeyValues: state}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return js
}

// flaky is a handler that fails permanently — the cause, say a pipeline
// not applied yet — until fixed, then records what it handles.
type flaky struct {
	fixed   atomic.Bool
	mu      sync.Mutex
	handled []handled
}

// handled is one message the handler handled: its event id and where the
// message is in its stream.
type handled struct {
	id  string
	seq uint64
}

func (f *flaky) handle(ctx context.Context, ev event.Event) error {
	if !f.fixed.Load() {
		return bus.Permanentf("pipeline %s is not applied (apply its spec first)", bus.Ext(ev, bus.ExtPipeline))
	}
	pos, _ := bus.MessagePosition(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handled = append(f.handled, handled{ev.ID(), pos.Seq})
	return nil
}

// of returns the messages of event id the handler handled.
func (f *flaky) of(id string) []handled {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []handled
	for _, h := range f.handled {
		if h.id == id {
			out = append(out, h)
		}
	}
	return out
}

// runRouter runs a bus router of testService with h on data.batch.arrived
// until the test ends.
func runRouter(t *testing.T, js jetstream.JetStream, h bus.Handler) {
	t.Helper()
	r, err := bus.NewRouter(js, bus.RouterConfig{
		Service: testService, RetryInitial: 5 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	decl := events.EventConsumer(testService, "batch-arrived", events.DataBatchArrived)
	decl.MaxDeliver, decl.AckWait = 3, 2*time.Second
	if err := r.Handle(decl, h); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-r.Running():
	case err := <-done:
		t.Fatalf("router stopped at start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("router not running after 20s")
	}
}

// arrived publishes a data.batch.arrived of pipeline with event id id.
func arrived(t *testing.T, js jetstream.JetStream, pipeline, id string) {
	t.Helper()
	ev, err := events.New("/gyre/"+testService, pipeline, &gyrev1.DataBatchArrived{
		Pipeline: pipeline, BatchId: id, Format: "csv", Uri: events.ObjectURI("landing", pipeline+"/"+id+".csv"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ev.SetID(id)
	if err := bus.NewPublisher(js, testService).Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func list(t *testing.T, js jetstream.JetStream, f dlq.Filter) dlq.Page {
	t.Helper()
	page, err := dlq.List(context.Background(), js, f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	return page
}

func getMsg(t *testing.T, js jetstream.JetStream, stream string, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), seq)
	if err != nil {
		t.Fatalf("%s seq %d: %v", stream, seq, err)
	}
	return m
}

// TestRedriveAfterTheCauseIsFixedIsProcessedOnce is the acceptance of
// issue #15: a handler dead-letters a message; once its cause is fixed the
// dead letter is redriven and handled exactly once, intact; a second
// redrive is refused, --again redrives it as attempt 2; purge removes it.
func TestRedriveAfterTheCauseIsFixedIsProcessedOnce(t *testing.T) {
	js := newJS(t)
	ctx := context.Background()
	h := &flaky{}
	runRouter(t, js, h.handle)
	arrived(t, js, "p1", "ev-1")
	arrived(t, js, "p2", "ev-2")
	waitFor(t, "two dead letters", func() bool { return list(t, js, dlq.Filter{}).Matched == 2 })

	all := list(t, js, dlq.Filter{}).DeadLetters
	first, second := all[0], all[1]
	want := dlq.Entry{
		Seq: first.Seq, Time: first.Time, Service: testService, Handler: testService + "_batch-arrived",
		Kind: "permanent", Reason: "pipeline p1 is not applied (apply its spec first)", Deliveries: 1,
		Subject: "gyre.ev.p1.data.batch.arrived", Stream: events.StreamEvents, StreamSeq: 1,
		Pipeline: "p1", EventID: "ev-1", EventType: events.Type(events.DataBatchArrived),
	}
	if first != want {
		t.Fatalf("entry\n%+v, want\n%+v", first, want)
	}

	past, future := first.Time.Add(-time.Hour), time.Now().Add(time.Hour)
	for _, tt := range []struct {
		name string
		f    dlq.Filter
		want []string // event ids
	}{
		{"all", dlq.Filter{}, []string{"ev-1", "ev-2"}},
		{"service", dlq.Filter{Service: testService}, []string{"ev-1", "ev-2"}},
		{"other service", dlq.Filter{Service: "ingest"}, nil},
		{"pipeline", dlq.Filter{Pipeline: "p2"}, []string{"ev-2"}},
		{"reason, any case", dlq.Filter{Reason: "P1 IS NOT"}, []string{"ev-1"}},
		{"kind", dlq.Filter{Kind: "permanent"}, []string{"ev-1", "ev-2"}},
		{"other kind", dlq.Filter{Kind: "contract"}, nil},
		{"since", dlq.Filter{Since: past}, []string{"ev-1", "ev-2"}},
		{"since later", dlq.Filter{Since: future}, nil},
		{"until earlier", dlq.Filter{Until: past}, nil},
		{"until", dlq.Filter{Since: past, Until: future}, []string{"ev-1", "ev-2"}},
		{"limit keeps the newest", dlq.Filter{Limit: 1}, []string{"ev-2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			page := list(t, js, tt.f)
			var ids []string
			for _, e := range page.DeadLetters {
				ids = append(ids, e.EventID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("ids %v, want %v", ids, tt.want)
			}
		})
	}

	// Before the cause is fixed there is nothing to redrive into; now fix it.
	h.fixed.Store(true)
	rec, err := dlq.Redrive(ctx, js, first.Seq, dlq.RedriveOptions{})
	if err != nil {
		t.Fatalf("redrive: %v", err)
	}
	if rec.Attempt != 1 || rec.Subject != first.Subject || rec.Stream != events.StreamEvents || !rec.Done() ||
		rec.MsgID != "redrive-"+strconv.FormatUint(first.Seq, 10)+"-1" {
		t.Fatalf("redrive record %+v", rec)
	}
	waitFor(t, "the redriven message handled", func() bool { return len(h.of("ev-1")) > 0 })

	// Intact: the body byte for byte, every original header, plus the
	// attempt and the dead letter it comes from.
	orig := getMsg(t, js, events.StreamEvents, first.StreamSeq)
	got := getMsg(t, js, events.StreamEvents, h.of("ev-1")[0].seq)
	if string(got.Data) != string(orig.Data) {
		t.Errorf("body %q, want the original's %q", got.Data, orig.Data)
	}
	for k, v := range orig.Header {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		if !slices.Equal(got.Header[k], v) {
			t.Errorf("header %s = %q, want the original's %q", k, got.Header[k], v)
		}
	}
	for k := range got.Header {
		if strings.HasPrefix(strings.ToLower(k), "gyre-dlq-") {
			t.Errorf("redriven message carries dead-letter header %s", k)
		}
	}
	if a, of := got.Header.Get(dlq.HeaderRedriveAttempt), got.Header.Get(dlq.HeaderRedriveOf); a != "1" || of != strconv.FormatUint(first.Seq, 10) {
		t.Errorf("attempt %q of %q, want 1 of %d", a, of, first.Seq)
	}

	// A second redrive is refused; nothing more is handled.
	_, err = dlq.Redrive(ctx, js, first.Seq, dlq.RedriveOptions{})
	if !errors.Is(err, dlq.ErrAlreadyRedriven) || !strings.Contains(err.Error(), "already redriven at") {
		t.Fatalf("second redrive: %v, want already redriven", err)
	}
	page := list(t, js, dlq.Filter{})
	if r := page.DeadLetters[0].Redriven; r == nil || r.Attempt != 1 || r.StreamSeq != h.of("ev-1")[0].seq {
		t.Errorf("listed redrive %+v, want attempt 1 at the handled message", r)
	}
	if page.DeadLetters[1].Redriven != nil {
		t.Errorf("ev-2 listed as redriven: %+v", page.DeadLetters[1].Redriven)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(h.of("ev-1")); n != 1 {
		t.Fatalf("ev-1 handled %d times after a refused second redrive, want once", n)
	}

	// A dry run says what --again would do, and does nothing.
	dry, err := dlq.Redrive(ctx, js, first.Seq, dlq.RedriveOptions{Again: true, DryRun: true})
	if err != nil || dry.Attempt != 2 || dry.Done() {
		t.Fatalf("dry run: %+v, %v", dry, err)
	}
	// Again: attempt 2, handled once more.
	rec, err = dlq.Redrive(ctx, js, first.Seq, dlq.RedriveOptions{Again: true})
	if err != nil || rec.Attempt != 2 {
		t.Fatalf("redrive again: %+v, %v", rec, err)
	}
	waitFor(t, "attempt 2 handled", func() bool { return len(h.of("ev-1")) == 2 })
	if a := getMsg(t, js, events.StreamEvents, h.of("ev-1")[1].seq).Header.Get(dlq.HeaderRedriveAttempt); a != "2" {
		t.Errorf("the handler saw attempt %q, want 2", a)
	}

	// Two redrives at once: one republishes, the other is refused.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = dlq.Redrive(ctx, js, second.Seq, dlq.RedriveOptions{}) })
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), dlq.ErrAlreadyRedriven) {
		t.Fatalf("concurrent redrives: %v, want one to succeed and one refused", errs)
	}
	waitFor(t, "ev-2 handled", func() bool { return len(h.of("ev-2")) > 0 })
	time.Sleep(300 * time.Millisecond)
	if n := len(h.of("ev-2")); n != 1 {
		t.Fatalf("ev-2 handled %d times after two concurrent redrives, want once", n)
	}

	// Purge removes the dead letter and its record.
	purged, err := dlq.Purge(ctx, js, dlq.Filter{Pipeline: "p1"})
	if err != nil || !slices.Equal(purged, []uint64{first.Seq}) {
		t.Fatalf("purge: %v, %v; want [%d]", purged, err, first.Seq)
	}
	if _, err := dlq.Get(ctx, js, first.Seq); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("get of a purged dead letter: %v, want not found", err)
	}
	if _, err := dlq.Redrive(ctx, js, first.Seq, dlq.RedriveOptions{Again: true}); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("redrive of a purged dead letter: %v, want not found", err)
	}
	if err := dlq.Delete(ctx, js, first.Seq); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("delete of a purged dead letter: %v, want not found", err)
	}
	kv, err := js.KeyValue(ctx, events.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, dlq.RedriveKey(first.Seq)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("redrive record of a purged dead letter: %v, want gone", err)
	}
	if left := list(t, js, dlq.Filter{}).DeadLetters; len(left) != 1 || left[0].Seq != second.Seq {
		t.Errorf("left after purge: %+v, want only %d", left, second.Seq)
	}
}

// forge stores a dead letter as a service could publish it, with whatever
// headers it likes, and returns its sequence.
func forge(t *testing.T, js jetstream.JetStream, subject, stream string) uint64 {
	t.Helper()
	dlqSubject, _ := events.DLQSubject(testService)
	m := nats.NewMsg(dlqSubject)
	m.Header.Set(bus.HeaderDLQService, testService)
	m.Header.Set(bus.HeaderDLQKind, "permanent")
	m.Header.Set(bus.HeaderDLQReason, "forged")
	m.Header.Set(bus.HeaderDLQSubject, subject)
	m.Header.Set(bus.HeaderDLQStream, stream)
	m.Header.Set(bus.HeaderID, "forged-"+subject)
	m.Data = []byte(`{"x":1}`)
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestRedriveRefusesSubjectsOutsideGyresStreams: a service may publish its
// own dead letters with any headers, and a redrive publishes as the admin:
// it goes nowhere but to a Gyre stream's subject, the dead letter's own.
func TestRedriveRefusesSubjectsOutsideGyresStreams(t *testing.T) {
	js := newJS(t)
	for _, tt := range []struct{ name, subject, stream string }{
		{"JetStream API", "$JS.API.STREAM.DELETE." + events.StreamEvents, ""},
		{"the DLQ itself", "gyre.dlq.ingest", events.StreamDLQ},
		{"wildcard", "gyre.ev.*.data.batch.arrived", events.StreamEvents},
		{"another stream's subject", "gyre.ev.p1.data.batch.arrived", events.StreamJobs},
		{"no subject", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := forge(t, js, tt.subject, tt.stream)
			if _, err := dlq.Redrive(context.Background(), js, seq, dlq.RedriveOptions{}); !errors.Is(err, dlq.ErrNotRedrivable) {
				t.Fatalf("redrive to %q: %v, want refused", tt.subject, err)
			}
		})
	}
	s, err := js.Stream(context.Background(), events.StreamEvents)
	if err != nil {
		t.Fatalf("GYRE_EVENTS: %v", err)
	}
	if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("GYRE_EVENTS holds %d messages (%v), want none", info.State.Msgs, err)
	}
}

func TestFilterValidationNamesTheSetting(t *testing.T) {
	now := time.Date(2025, 1, 2, 15, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		query, want string
	}{
		{"service=Bad_Name", `service "Bad_Name"`},
		{"pipeline=a.b", `pipeline "a.b"`},
		{"kind=boom", `kind "boom": want one of malformed, contract`},
		{"since=yesterday", `since "yesterday": want a duration ago`},
		{"until=-5m", `until "-5m"`},
		{"limit=0", `limit "0": want a positive integer`},
		{"since=1h&until=2h", `until "2025-01-02T13:00:00Z": is before since`},
	} {
		q, _ := url.ParseQuery(tt.query)
		if _, err := dlq.ParseFilter(q, now); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want it to contain %q", tt.query, err, tt.want)
		}
	}
	q, _ := url.ParseQuery("service=ingest&reason=Not+Found&kind=contract&pipeline=elec2&since=30m&until=2025-01-02T14:59:00Z&limit=5")
	f, err := dlq.ParseFilter(q, now)
	want := dlq.Filter{Service: "ingest", Reason: "Not Found", Kind: "contract", Pipeline: "elec2",
		Since: now.Add(-30 * time.Minute), Until: now.Add(-time.Minute), Limit: 5}
	if err != nil || !f.Since.Equal(want.Since) || !f.Until.Equal(want.Until) || f.Service != want.Service ||
		f.Reason != want.Reason || f.Kind != want.Kind || f.Pipeline != want.Pipeline || f.Limit != want.Limit {
		t.Fatalf("ParseFilter = %+v, %v; want %+v", f, err, want)
	}
}
