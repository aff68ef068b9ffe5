package monitor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// joinStores are the implementations of monitoring.JoinStore that the
// contract holds for: the application's in-memory fake and the gyre-joins
// adapter on a JetStream server.
var joinStores = []struct {
	name string
	open func(t testing.TB) monitoring.JoinStore
}{
	{"memory", func(testing.TB) monitoring.JoinStore { return monitoring.NewMemoryJoins() }},
	{"jetstream-kv", func(t testing.TB) monitoring.JoinStore {
		env := looptest.New(t)
		return kvJoins{lazy: store.NewLazy(env.JS)}
	}},
}

// joinCall is one call of a contract scenario and what it must return.
type joinCall struct {
	pipeline string // "p" when empty
	event    string
	// labels, when true, makes the call JoinLabels; else JoinPredictions
	// of version 7.
	labels bool
	// sides are "id=value": an output or a label.
	sides []string
	// want are the pairs it completes, "id:version:output:label", in
	// order; recorded how many ids it recorded first.
	want     []string
	recorded int
}

func (c joinCall) do(ctx context.Context, s monitoring.JoinStore) (monitoring.Joined, error) {
	pipeline := c.pipeline
	if pipeline == "" {
		pipeline = "p"
	}
	if c.labels {
		ls := make([]monitoring.Label, len(c.sides))
		for i, sd := range c.sides {
			id, v, _ := strings.Cut(sd, "=")
			ls[i] = monitoring.Label{PredictionID: id, Value: v}
		}
		return s.JoinLabels(ctx, pipeline, c.event, ls)
	}
	rows := make([]monitoring.Prediction, len(c.sides))
	for i, sd := range c.sides {
		id, v, _ := strings.Cut(sd, "=")
		rows[i] = monitoring.Prediction{ID: id, Output: v}
	}
	return s.JoinPredictions(ctx, pipeline, c.event, 7, rows)
}

func pairStrings(ps []monitoring.Pair) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s:%d:%s:%s", p.PredictionID, p.Version, p.Output, p.Label)
	}
	return out
}

func label(event string, sides []string, recorded int, want ...string) joinCall {
	return joinCall{event: event, labels: true, sides: sides, want: want, recorded: recorded}
}

func predict(event string, sides []string, recorded int, want ...string) joinCall {
	return joinCall{event: event, sides: sides, want: want, recorded: recorded}
}

func ids(s ...string) []string { return s }

var longID = strings.Repeat("order-42/", 40) // 360 characters

var joinScenarios = []struct {
	name  string
	calls []joinCall
}{
	{"label first", []joinCall{
		label("L1", ids("a=1"), 1),
		predict("P1", ids("a=1"), 1, "a:7:1:1"),
	}},
	{"prediction first", []joinCall{
		predict("P1", ids("a=1", "b=0"), 2),
		label("L1", ids("b=1", "a=1"), 2, "b:7:0:1", "a:7:1:1"), // the labels' order
	}},
	{"duplicates of either side are ignored", []joinCall{
		predict("P1", ids("a=1"), 1),
		predict("P2", ids("a=0"), 0),
		label("L1", ids("a=1"), 1, "a:7:1:1"),
		label("L2", ids("a=0"), 0),
		predict("P3", ids("a=0"), 0),
		label("L3", ids("b=1"), 1),
		label("L4", ids("b=0"), 0), // a second label waiting: the first stays
		predict("P4", ids("b=1"), 1, "b:7:1:1"),
	}},
	{"a redelivery returns the same pairs", []joinCall{
		predict("P1", ids("a=1", "b=1"), 2),
		label("L1", ids("a=1", "b=0"), 2, "a:7:1:1", "b:7:1:0"),
		label("L1", ids("a=1", "b=0"), 2, "a:7:1:1", "b:7:1:0"),
		predict("P1", ids("a=1", "b=1"), 2), // P1 completed nothing
	}},
	{"the completing prediction's redelivery returns its pair", []joinCall{
		label("L1", ids("a=0"), 1),
		predict("P1", ids("a=1", "b=1"), 2, "a:7:1:0"),
		predict("P1", ids("a=1", "b=1"), 2, "a:7:1:0"),
		label("L1", ids("a=0"), 1),
	}},
	{"another event gets nothing", []joinCall{
		predict("P1", ids("a=1"), 1),
		label("L1", ids("a=1"), 1, "a:7:1:1"),
		label("L2", ids("a=1"), 0),
		predict("P2", ids("a=1"), 0),
	}},
	{"an id twice in one event pairs once", []joinCall{
		predict("P1", ids("a=1", "a=0"), 1),
		label("L1", ids("a=1", "a=0", "a=1"), 1, "a:7:1:1"),
		label("L1", ids("a=1", "a=0", "a=1"), 1, "a:7:1:1"),
	}},
	{"pipelines do not meet", []joinCall{
		predict("P1", ids("a=1"), 1),
		{pipeline: "other", event: "L1", labels: true, sides: ids("a=1"), recorded: 1},
	}},
	{"ids of any shape; empty ones skipped", []joinCall{
		label("L1", ids("order:42/x.y=1", "=1", "é *>=0", longID+"=1", longID+"x=0"), 4),
		predict("P1", ids("é *>=0", "=1", longID+"=1", "order:42/x.y=0", longID+"x=0"), 4,
			"é *>:7:0:0", longID+":7:1:1", "order:42/x.y:7:0:1", longID+"x:7:0:0"),
	}},
}

// TestJoinStoreContract: every JoinStore follows the same rules, checked
// on the same scenarios.
func TestJoinStoreContract(t *testing.T) {
	t.Parallel()
	for _, impl := range joinStores {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			// One store for every scenario, as a service has, each scenario
			// on a pipeline of its own. They run one after the other: with
			// NATS_URL the store's test holds the shared server, and
			// parallel subtests would wait for slots that tests waiting for
			// the server hold.
			s := impl.open(t)
			for i, sc := range joinScenarios {
				t.Run(sc.name, func(t *testing.T) {
					ctx := context.Background()
					for k, c := range sc.calls {
						if c.pipeline == "" {
							c.pipeline = fmt.Sprintf("s%d", i)
						} else {
							c.pipeline = fmt.Sprintf("s%d-%s", i, c.pipeline)
						}
						got, err := c.do(ctx, s)
						if err != nil {
							t.Fatalf("call %d (%s): %v", k, c.event, err)
						}
						if g, w := fmt.Sprintf("%q", pairStrings(got.Pairs)), fmt.Sprintf("%q", c.want); g != w {
							t.Errorf("call %d (%s): pairs %s, want %s", k, c.event, g, w)
						}
						if got.Recorded != c.recorded {
							t.Errorf("call %d (%s): recorded %d, want %d", k, c.event, got.Recorded, c.recorded)
						}
					}
				})
			}
			t.Run("concurrent callers never both get a pair", func(t *testing.T) {
				testConcurrentJoins(t, s)
			})
		})
	}
}

// testConcurrentJoins: two label events and a prediction event of the
// same ids, each in its own goroutine (replicas handling them at once):
// every id is paired exactly once, by one of them.
func testConcurrentJoins(t *testing.T, s monitoring.JoinStore) {
	const n, rounds = 300, 4
	ctx := context.Background()
	for round := range rounds {
		pipeline := fmt.Sprintf("race-%d", round)
		rows := make([]monitoring.Prediction, n)
		labelsA := make([]monitoring.Label, n)
		labelsB := make([]monitoring.Label, n)
		for i := range n {
			id := fmt.Sprintf("id-%d", i)
			rows[i] = monitoring.Prediction{ID: id, Output: "1"}
			labelsA[i] = monitoring.Label{PredictionID: id, Value: "1"}
			labelsB[i] = monitoring.Label{PredictionID: id, Value: "0"}
		}
		var (
			wg      sync.WaitGroup
			results [3]monitoring.Joined
			errs    [3]error
		)
		wg.Go(func() { results[0], errs[0] = s.JoinPredictions(ctx, pipeline, "P", 1, rows) })
		wg.Go(func() { results[1], errs[1] = s.JoinLabels(ctx, pipeline, "LA", labelsA) })
		wg.Go(func() { results[2], errs[2] = s.JoinLabels(ctx, pipeline, "LB", labelsB) })
		wg.Wait()
		paired := map[string]string{}
		for k, r := range results {
			if errs[k] != nil {
				t.Fatalf("round %d, caller %d: %v", round, k, errs[k])
			}
			for _, p := range r.Pairs {
				if prev, dup := paired[p.PredictionID]; dup {
					t.Fatalf("round %d: %s paired twice (label %s, then %s)", round, p.PredictionID, prev, p.Label)
				}
				paired[p.PredictionID] = p.Label
			}
		}
		if len(paired) != n {
			t.Errorf("round %d: %d of %d ids paired", round, len(paired), n)
		}
		// Of the two labels of an id, the first recorded is the one paired:
		// recorded counts say how many each label event got in first.
		if got := results[1].Recorded + results[2].Recorded; got != n {
			t.Errorf("round %d: %d labels recorded first, want %d", round, got, n)
		}
		if results[0].Recorded != n {
			t.Errorf("round %d: %d predictions recorded, want %d", round, results[0].Recorded, n)
		}
	}
}

// TestJoinKey: ids become one token of a valid KV key, readable when they
// can be, and distinct ids never share a key.
func TestJoinKey(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
	seen := map[string]string{}
	for _, tc := range []struct{ id, want string }{
		{"0190b1a2-7c3d-7e4f-8a9b-0c1d2e3f4a5b", "elec2.0190b1a2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"},
		{"p_1", "elec2.p_1"},
		{"a.b", "elec2.=YS5i"},
		{"=YS5i", "elec2.=PVlTNWk"},
		{strings.Repeat("x", maxPlainIDLen), "elec2." + strings.Repeat("x", maxPlainIDLen)},
		{strings.Repeat("x", maxPlainIDLen+1), ""},
		{strings.Repeat(".", maxPlainIDLen+1), ""},
	} {
		got := JoinKey("elec2", tc.id)
		if tc.want != "" && got != tc.want {
			t.Errorf("JoinKey(%q) = %q, want %q", tc.id, got, tc.want)
		}
		if !valid.MatchString(got) || strings.Count(got, ".") != 1 || len(got) > 300 {
			t.Errorf("JoinKey(%q) = %q: not a two-token key of at most 300 characters", tc.id, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("JoinKey(%q) = JoinKey(%q) = %q", tc.id, other, got)
		}
		seen[got] = tc.id
	}
}

// TestForEachLimit: at most limit calls at once, every index once, and the
// first error stops what has not started.
func TestForEachLimit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	inFlight, peak, calls := 0, 0, map[int]int{}
	err := forEachLimit(context.Background(), 100, 7, func(_ context.Context, i int) error {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		calls[i]++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil
	})
	if err != nil || len(calls) != 100 || peak > 7 || peak < 2 {
		t.Errorf("err %v, %d indexes called, peak %d in flight; want nil, 100, 2..7", err, len(calls), peak)
	}
	for i, n := range calls {
		if n != 1 {
			t.Errorf("index %d called %d times", i, n)
		}
	}
	started := 0
	err = forEachLimit(context.Background(), 1000, 2, func(_ context.Context, i int) error {
		mu.Lock()
		started++
		mu.Unlock()
		if i == 3 {
			return fmt.Errorf("boom at %d", i)
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if err == nil || err.Error() != "boom at 3" || started > 10 {
		t.Errorf("err %v after %d started, want boom at 3 with few started", err, started)
	}
	// The caller's ctx ending before every call ran is an error, though
	// no call failed.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = forEachLimit(ctx, 1000, 3, func(_ context.Context, i int) error {
		if i == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v after the caller's cancel, want context.Canceled", err)
	}
	if err := forEachLimit(context.Background(), 0, 3, func(context.Context, int) error { return errors.New("called") }); err != nil {
		t.Errorf("no index: err %v", err)
	}
}

// BenchmarkJoinLabels joins label.received events of 1,000 labels against
// predictions logged before them: the monitor's work per label event.
func BenchmarkJoinLabels(b *testing.B) {
	for _, impl := range joinStores {
		b.Run(impl.name, func(b *testing.B) {
			s := impl.open(b)
			ctx := context.Background()
			const n = 1000
			iter := 0
			for ; b.Loop(); iter++ {
				b.StopTimer()
				rows := make([]monitoring.Prediction, n)
				labels := make([]monitoring.Label, n)
				for i := range n {
					id := fmt.Sprintf("%d-%d", iter, i)
					rows[i] = monitoring.Prediction{ID: id, Output: "1"}
					labels[i] = monitoring.Label{PredictionID: id, Value: "1"}
				}
				if _, err := s.JoinPredictions(ctx, "bench", fmt.Sprint("P", iter), 1, rows); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				j, err := s.JoinLabels(ctx, "bench", fmt.Sprint("L", iter), labels)
				if err != nil || len(j.Pairs) != n {
					b.Fatalf("%d pairs, err %v", len(j.Pairs), err)
				}
			}
			b.ReportMetric(float64(iter*n)/b.Elapsed().Seconds(), "labels/s")
		})
	}
}

// BenchmarkJoinPredictions logs prediction.logged events of 1,000 new
// prediction ids: the monitor's work per prediction event.
func BenchmarkJoinPredictions(b *testing.B) {
	for _, impl := range joinStores {
		b.Run(impl.name, func(b *testing.B) {
			s := impl.open(b)
			ctx := context.Background()
			const n = 1000
			iter := 0
			for ; b.Loop(); iter++ {
				b.StopTimer()
				rows := make([]monitoring.Prediction, n)
				for i := range n {
					rows[i] = monitoring.Prediction{ID: fmt.Sprintf("%d-%d", iter, i), Output: "1"}
				}
				b.StartTimer()
				j, err := s.JoinPredictions(ctx, "bench", fmt.Sprint("P", iter), 1, rows)
				if err != nil || j.Recorded != n {
					b.Fatalf("%d recorded, err %v", j.Recorded, err)
				}
			}
			b.ReportMetric(float64(iter*n)/b.Elapsed().Seconds(), "predictions/s")
		})
	}
}
