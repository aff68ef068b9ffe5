package feature_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/feature"
)

// Environment of TestOnlineStoreOutage.
const (
	// EnvOutage is how long Redis stays down (a Go duration); make test
	// runs the default, make test-outage the 7m.
	envOutage = "GYRE_OUTAGE"
	// EnvOutageRows is the rows of each batch fed.
	envOutageRows = "GYRE_OUTAGE_ROWS"
)

const (
	defaultOutage = 12 * time.Second
	// feedInterval is how often a batch comes during the outage.
	feedInterval = time.Second
)

// replica is one feature service process of its own: its NATS connection,
// its metrics registry, its Run.
type replica struct {
	t      *testing.T
	name   string
	svc    *feature.Service
	proc   *service.Process
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
	once   sync.Once
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startReplica(t *testing.T, name, natsURL, redisURL string) *replica {
	t.Helper()
	cfg := feature.DefaultConfig()
	cfg.NATSURL = natsURL
	cfg.HTTPAuth = service.HTTPAuthNone
	cfg.RedisURL = redisURL
	logs := &syncBuffer{}
	proc, err := service.Connect(context.Background(), cfg.Config, "feature", service.WithLogOutput(logs))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	svc, err := feature.New(cfg, proc.Deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{t: t, name: name, svc: svc, proc: proc, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(r.stop)
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			t.Logf("replica %s, last log lines:\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})
	deadline := time.Now().Add(servicetest.ReadyTimeout)
	for !svc.Readiness().Ready {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready after %s: %+v", name, servicetest.ReadyTimeout, svc.Readiness())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// stop stops the replica as a SIGTERM would: Run drains and returns.
func (r *replica) stop() {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				r.t.Errorf("replica %s: Run: %v", r.name, err)
			}
		case <-time.After(servicetest.StopTimeout):
			r.t.Errorf("replica %s did not stop within %s", r.name, servicetest.StopTimeout)
		}
		ctx, cancel := context.WithTimeout(context.Background(), servicetest.StopTimeout)
		defer cancel()
		_ = r.proc.Close(ctx)
	})
}

// metric sums the samples of a metric on the replica's /metrics whose
// labels include every one of labels (`name="value"`).
func (r *replica) metric(name string, labels ...string) float64 {
	r.t.Helper()
	rec := httptest.NewRecorder()
	r.svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		r.t.Fatalf("replica %s /metrics: %d", r.name, rec.Code)
	}
	sum := 0.0
	sc := bufio.NewScanner(rec.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(series, l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			r.t.Fatalf("replica %s /metrics: %q: %v", r.name, line, err)
		}
		sum += v
	}
	return sum
}

func outageCSV(batch, rows int) string {
	var b strings.Builder
	b.WriteString("x,c,class\n")
	for j := range rows {
		fmt.Fprintf(&b, "%d.5,%c,%d\n", batch*rows+j, "abc"[j%3], j%2)
	}
	return b.String()
}

// TestOnlineStoreOutage is the acceptance test of an online store that is
// off the critical path (issue #15): real Redis (redis-server) behind the
// feature service, a batch written directly, then Redis stopped for
// GYRE_OUTAGE (default 12s; make test-outage: 7m) while a batch a second
// comes. Every batch is materialised (features.materialized, 0 online rows
// written), none is dead-lettered, the lag metrics grow; halfway, the
// replica is restarted and a second one joins (the queue is in gyre-state,
// not in a process). Redis comes back: every row lands (keys counted), both
// replicas' lag goes to 0, and the rows written count matches.
func TestOnlineStoreOutage(t *testing.T) {
	t.Parallel()
	outage := defaultOutage
	if v := os.Getenv(envOutage); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 4*feedInterval {
			t.Fatalf("%s=%q: want a duration of at least %s", envOutage, v, 4*feedInterval)
		}
		outage = d
	}
	rowsPerBatch := 100
	if v := os.Getenv(envOutageRows); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", envOutageRows, v)
		}
		rowsPerBatch = n
	}
	rd := startRedis(t)
	rc := rd.Client()
	srv, js, bk := servicetest.Provisioned(t)
	r := &servicetest.Running{URL: srv.URL, JS: js, Buckets: bk, Publisher: bus.NewPublisher(js, "test")}
	const name = "outage"
	r.Apply(t, fmt.Sprintf(spec, name))
	a := startReplica(t, "a", srv.URL, rd.URL())
	fed := 0
	feed := func() {
		id := fmt.Sprintf("b%04d", fed)
		announce(t, r, name, id, validate(t, r, name, id, outageCSV(fed, rowsPerBatch)))
		fed++
	}
	keys := func() int { return countKeys(t, rc, feature.RedisKeyPrefix+name+".*") }

	// Redis up: the rows are written as the batch is materialised.
	feed()
	ms, _ := materialized(t, r, name, 1)
	if ms[0].OnlineRowsWritten != int64(rowsPerBatch) || ms[0].OnlineStore != feature.OnlineRedis {
		t.Fatalf("before the outage: features.materialized = %v", ms[0])
	}
	if n := keys(); n != rowsPerBatch {
		t.Fatalf("before the outage: %d keys in redis, want %d", n, rowsPerBatch)
	}
	if lag := a.metric("gyre_feature_online_lag_batches", `pipeline="outage"`); lag != 0 {
		t.Fatalf("before the outage: lag %v batches", lag)
	}

	// Redis down: batches keep coming and being materialised.
	rd.stop()
	down := time.Now()
	t.Logf("redis stopped for %s; feeding a batch of %d rows every %s", outage, rowsPerBatch, feedInterval)
	var b *replica
	restarted := false
	lastLag, lastAge := 0.0, 0.0
	for next := down; time.Since(down) < outage; next = next.Add(feedInterval) {
		time.Sleep(time.Until(next))
		feed()
		ms, _ = materialized(t, r, name, fed)
		if m := ms[fed-1]; m.OnlineRowsWritten != 0 || m.Rows != int64(rowsPerBatch) {
			t.Fatalf("batch %s during the outage: rows %d, online rows written %d (want %d, 0)", m.BatchId, m.Rows, m.OnlineRowsWritten, rowsPerBatch)
		}
		if !restarted && time.Since(down) >= outage/2 {
			// Restart the replica mid-outage, and start a second one: the
			// queue is in gyre-state, so the new processes see it all.
			before := a.metric("gyre_feature_online_lag_batches", `pipeline="outage"`)
			a.stop()
			a = startReplica(t, "a2", srv.URL, rd.URL())
			b = startReplica(t, "b", srv.URL, rd.URL())
			waitFor(t, 10*time.Second, "the restarted replicas to see the queue", func() bool {
				return a.metric("gyre_feature_online_lag_batches", `pipeline="outage"`) == before &&
					b.metric("gyre_feature_online_lag_batches", `pipeline="outage"`) == before
			})
			t.Logf("replica restarted %s into the outage with %v batches queued; a second replica joined", time.Since(down).Round(time.Second), before)
			restarted = true
		}
		// The lag grows: a batch more, and older. (The replica that did not
		// queue the batch sees it through its watch, milliseconds later.)
		waitFor(t, 5*time.Second, fmt.Sprintf("a lag of %d batches", fed-1), func() bool {
			return a.metric("gyre_feature_online_lag_batches", `pipeline="outage"`) == float64(fed-1)
		})
		age := a.metric("gyre_feature_online_lag_seconds", `pipeline="outage"`)
		if age < lastAge {
			t.Fatalf("after %d batches in the outage: lag %vs, was %vs", fed-1, age, lastAge)
		}
		lastLag, lastAge = float64(fed-1), age
	}
	if !restarted {
		t.Fatal("the outage ended before the restart")
	}
	if dl := r.DeadLetters(t, feature.Name); len(dl) != 0 {
		t.Fatalf("%d dead letters during the outage, first: %s", len(dl), dl[0].Header.Get(bus.HeaderDLQReason))
	}
	if lastAge < (outage - 3*feedInterval).Seconds() {
		t.Errorf("lag at the end of the outage %vs, want about %s", lastAge, outage)
	}

	// Redis back: the queue drains.
	rd.start()
	back := time.Now()
	want := fed * rowsPerBatch
	waitFor(t, 2*time.Minute, "the online store to catch up", func() bool {
		return keys() == want &&
			a.metric("gyre_feature_online_lag_batches", `pipeline="outage"`) == 0 &&
			b.metric("gyre_feature_online_lag_batches", `pipeline="outage"`) == 0
	})
	caughtUp := time.Since(back)
	for _, rep := range []*replica{a, b} {
		if age := rep.metric("gyre_feature_online_lag_seconds", `pipeline="outage"`); age != 0 {
			t.Errorf("replica %s: lag %vs after the catch-up", rep.name, age)
		}
	}
	catchUpRows := a.metric("gyre_feature_online_rows_written_total", `path="catchup"`, `store="redis"`) +
		b.metric("gyre_feature_online_rows_written_total", `path="catchup"`, `store="redis"`)
	if int(catchUpRows) != (fed-1)*rowsPerBatch {
		t.Errorf("catch-up wrote %v rows, want %d", catchUpRows, (fed-1)*rowsPerBatch)
	}
	// A caught-up row is the one its event names.
	ms, _ = materialized(t, r, name, fed)
	last := ms[len(ms)-1]
	v, err := rc.Get(context.Background(), feature.RedisKeyPrefix+store.OnlineKey(name, last.BatchId, rowsPerBatch)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var row struct {
		FeatureSetVersion string         `json:"featureSetVersion"`
		BatchID           string         `json:"batchId"`
		Row               int            `json:"row"`
		Features          map[string]any `json:"features"`
	}
	if err := json.Unmarshal([]byte(v), &row); err != nil || row.FeatureSetVersion != last.FeatureSetVersion ||
		row.BatchID != last.BatchId || row.Row != rowsPerBatch || len(row.Features) != 4 {
		t.Errorf("caught-up row %s = %s (%v)", last.BatchId, v, err)
	}
	if dl := r.DeadLetters(t, feature.Name); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
	if n := len(r.Events(t, name, events.FeaturesMaterialized)); n != fed {
		t.Errorf("%d features.materialized for %d batches", n, fed)
	}
	// A batch after the catch-up goes straight to the store again.
	feed()
	ms, _ = materialized(t, r, name, fed)
	if m := ms[fed-1]; m.OnlineRowsWritten != int64(rowsPerBatch) {
		t.Errorf("after the catch-up: online rows written %d, want %d", m.OnlineRowsWritten, rowsPerBatch)
	}
	deferred := 0
	for _, m := range ms {
		if m.OnlineRowsWritten == 0 {
			deferred++
		}
	}
	var drains []string
	for _, rep := range []*replica{a, b} {
		for _, line := range strings.Split(rep.logs.String(), "\n") {
			if !strings.Contains(line, `"msg":"online store caught up"`) {
				continue
			}
			var l struct {
				Batches int    `json:"batches"`
				Rows    int    `json:"rows"`
				Took    string `json:"took"`
			}
			if err := json.Unmarshal([]byte(line), &l); err == nil {
				drains = append(drains, fmt.Sprintf("replica %s wrote %d batches (%d rows) in %s", rep.name, l.Batches, l.Rows, l.Took))
			}
		}
	}
	t.Logf("FIGURES outage %s: %d batches fed during it (%d rows each), %d features.materialized with the online rows deferred, "+
		"%d dead letters, peak lag %v batches / %.0fs; redis back: caught up in %s (%s), %d keys in redis (want %d), "+
		"%v rows by the catch-up, lag 0 on both replicas",
		outage, fed-2, rowsPerBatch, deferred, len(r.DeadLetters(t, feature.Name)), lastLag, lastAge,
		caughtUp.Round(10*time.Millisecond), strings.Join(drains, "; "), want, want, catchUpRows)
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
