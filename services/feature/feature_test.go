package feature_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/feature"
)

// TestSkeletonRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestSkeletonRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := feature.DefaultConfig()
		cfg.NATSURL = url
		return feature.New(cfg, deps)
	}, events.ServiceConsumers()[feature.Name])
}

const spec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: class
    schema:
      - {name: x, type: float}
      - {name: c, type: category}
      - {name: class, type: category}
    maxRowErrors: 5
  features:
    - {name: x, transform: standardize}
    - {name: c, transform: onehot}
  model: {algorithm: logreg, window: {batches: 2}}
`

var batches = []string{
	"x,c,class\n1,a,0\n2,b,1\n3,a,0\n",
	"x,c,class\n4,b,1\n5,c,0\n6,a,1\n",
	"x,c,class\n100,a,1\n200,b,0\n",
}

func startFeature(t *testing.T, redisURL string) *servicetest.Running {
	t.Helper()
	return servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := feature.DefaultConfig()
		cfg.NATSURL = url
		cfg.RedisURL = redisURL
		return feature.New(cfg, deps)
	})
}

// validate stores a batch and appends it to the validated-batch log as
// validation does, and returns its object.
func validate(t *testing.T, r *servicetest.Running, pipeline, batchID, csv string) *gyrev1.ObjectRef {
	t.Helper()
	ctx := context.Background()
	sum := sha256.Sum256([]byte(csv))
	digest := hex.EncodeToString(sum[:])
	ref, _, err := store.PutObject(ctx, r.Buckets.Batches, pipeline+"/"+digest+".csv", "text/csv", []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendValidated(ctx, r.Buckets.State, pipeline, store.ValidatedBatch{
		BatchID: batchID, ObjectKey: ref.Key, Format: "csv", Sha256: digest,
	}); err != nil {
		t.Fatal(err)
	}
	return ref
}

func announce(t *testing.T, r *servicetest.Running, pipeline, batchID string, ref *gyrev1.ObjectRef) event.Event {
	t.Helper()
	return r.Publish(t, pipeline, &gyrev1.DataBatchValidated{
		Pipeline: pipeline, BatchId: batchID, Object: ref, Format: "csv", ChecksPassed: true,
		LabelColumn: "class", Labelled: true,
	})
}

func materialized(t *testing.T, r *servicetest.Running, pipeline string, n int) ([]*gyrev1.FeaturesMaterialized, []event.Event) {
	t.Helper()
	evs := r.WaitEvents(t, pipeline, events.FeaturesMaterialized, n)
	var out []*gyrev1.FeaturesMaterialized
	for _, ev := range evs {
		var m gyrev1.FeaturesMaterialized
		if err := events.Decode(ev, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, &m)
	}
	return out, evs
}

func parse(t *testing.T, csv string) *table.Table {
	t.Helper()
	tb, err := table.Read("csv", []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestMaterializeHappyPath: a validated batch is transformed with the set
// fitted on its window, its snapshot and online rows are written, and
// features.materialized names them, caused by the validated event.
func TestMaterializeHappyPath(t *testing.T) {
	t.Parallel()
	r := startFeature(t, "")
	p := r.Apply(t, fmt.Sprintf(spec, "p1"))
	ref0 := validate(t, r, "p1", "b0", batches[0])
	ref1 := validate(t, r, "p1", "b1", batches[1])
	announce(t, r, "p1", "b0", ref0)
	cause := announce(t, r, "p1", "b1", ref1)
	got, evs := materialized(t, r, "p1", 2)
	m := got[1]

	want, err := features.Fit(p, parse(t, batches[0]), parse(t, batches[1]))
	if err != nil {
		t.Fatal(err)
	}
	snapKey := "p1/b1/" + want.Version + ".parquet"
	if m.BatchId != "b1" || m.FeatureSetVersion != want.Version || m.Rows != 3 || m.OnlineRowsWritten != 3 ||
		m.OnlineStore != feature.OnlineJetStreamKV || m.LabelColumn != "class" || m.Snapshot.GetKey() != snapKey ||
		m.Snapshot.GetBucket() != events.ObjectFeatures || m.Source.GetKey() != ref1.Key {
		t.Errorf("features.materialized = %v", m)
	}
	var names []string
	for _, c := range m.Columns {
		names = append(names, c.Name+":"+c.Transform)
	}
	if strings.Join(names, ",") != "x:standardize,c=a:onehot,c=b:onehot,c=c:onehot" {
		t.Errorf("columns = %v", names)
	}
	if got[0].FeatureSetVersion == m.FeatureSetVersion {
		t.Errorf("b0 (window b0) and b1 (window b0, b1) have the same feature-set version")
	}
	if c := bus.Ext(evs[1], bus.ExtCausationID); c != cause.ID() {
		t.Errorf("causationid = %q, want %q", c, cause.ID())
	}

	ctx := context.Background()
	data, err := store.GetObject(ctx, r.Buckets.Features, snapKey)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := table.Read("parquet", data)
	if err != nil {
		t.Fatal(err)
	}
	x := snap.Index("x")
	if snap.Len() != 3 || x < 0 || snap.Index("class") < 0 || snap.Index("c=c") < 0 {
		t.Fatalf("snapshot columns %v, %d rows", snap.Columns, snap.Len())
	}
	// x = 4 standardized on the window 1..6: (4 - 3.5) / std.
	if v, _ := strconv.ParseFloat(snap.Rows[0][x], 64); math.Abs(v-(4-3.5)/want.Columns[0].Std) > 1e-9 {
		t.Errorf("snapshot x[0] = %s", snap.Rows[0][x])
	}
	if snap.Rows[1][snap.Index("class")] != "0" || snap.Rows[1][snap.Index("c=c")] != "1" {
		t.Errorf("snapshot row 2 = %v (columns %v)", snap.Rows[1], snap.Columns)
	}

	e, err := r.Buckets.Online.Get(ctx, store.OnlineKey("p1", "b1", 2))
	if err != nil {
		t.Fatal(err)
	}
	var row struct {
		FeatureSetVersion string             `json:"featureSetVersion"`
		Row               int                `json:"row"`
		Features          map[string]float64 `json:"features"`
		Label             string             `json:"label"`
	}
	if err := json.Unmarshal(e.Value(), &row); err != nil {
		t.Fatal(err)
	}
	if row.FeatureSetVersion != want.Version || row.Row != 2 || row.Features["c=c"] != 1 || row.Label != "0" || len(row.Features) != 4 {
		t.Errorf("online row = %s", e.Value())
	}
}

// TestWindowEndsAtTheBatch: the window is the newest window.batches entries
// of the log up to the batch, whatever came after it (a redelivery fits the
// same set).
func TestWindowEndsAtTheBatch(t *testing.T) {
	t.Parallel()
	r := startFeature(t, "")
	p := r.Apply(t, fmt.Sprintf(spec, "p1"))
	var refs []*gyrev1.ObjectRef
	for i, b := range batches {
		refs = append(refs, validate(t, r, "p1", fmt.Sprint("b", i), b))
	}
	announce(t, r, "p1", "b1", refs[1]) // b2 is in the log already
	announce(t, r, "p1", "b2", refs[2])
	got, _ := materialized(t, r, "p1", 2)
	w1, _ := features.Fit(p, parse(t, batches[0]), parse(t, batches[1]))
	w2, _ := features.Fit(p, parse(t, batches[1]), parse(t, batches[2]))
	if got[0].FeatureSetVersion != w1.Version || got[1].FeatureSetVersion != w2.Version {
		t.Errorf("versions %s, %s; want %s (b0, b1) and %s (b1, b2)", got[0].FeatureSetVersion, got[1].FeatureSetVersion, w1.Version, w2.Version)
	}
}

// TestLateBatchKeepsWindowsStable: a batch validated late is inserted
// before one already materialised; that one's redelivery fits the same
// window as its first delivery (same feature set, same event, stored once),
// and the late batch's own window ends at it in arrival order.
func TestLateBatchKeepsWindowsStable(t *testing.T) {
	t.Parallel()
	r := startFeature(t, "")
	p := r.Apply(t, fmt.Sprintf(spec, "late"))
	ctx := context.Background()
	csv := map[string]string{"a": batches[0], "b": batches[1], "c": batches[2], "d": batches[0] + "7,c,1\n"}
	refs := map[string]*gyrev1.ObjectRef{}
	appendAt := func(id string, arrival uint64) {
		sum := sha256.Sum256([]byte(csv[id]))
		ref, _, err := store.PutObject(ctx, r.Buckets.Batches, "late/"+hex.EncodeToString(sum[:])+".csv", "text/csv", []byte(csv[id]))
		if err != nil {
			t.Fatal(err)
		}
		refs[id] = ref
		if _, err := store.AppendValidated(ctx, r.Buckets.State, "late", store.ValidatedBatch{
			BatchID: id, ObjectKey: ref.Key, Format: "csv", Sha256: ref.Sha256, ArrivalSeq: arrival,
		}); err != nil {
			t.Fatal(err)
		}
	}
	appendAt("a", 10)
	appendAt("c", 30)
	announce(t, r, "late", "c", refs["c"])
	materialized(t, r, "late", 1)
	appendAt("b", 20) // arrived before c, validated after it
	announce(t, r, "late", "b", refs["b"])
	announce(t, r, "late", "c", refs["c"]) // a redelivery of c's cause
	appendAt("d", 40)
	announce(t, r, "late", "d", refs["d"])
	// d's cause is handled after everything before it (the consumer is
	// ordered): once d is materialised, so is c's redelivery.
	deadline := time.Now().Add(servicetest.WaitTimeout)
	for ms, _ := materialized(t, r, "late", 1); ms[len(ms)-1].BatchId != "d"; ms, _ = materialized(t, r, "late", 1) {
		if time.Now().After(deadline) {
			t.Fatalf("d not materialised after %s", servicetest.WaitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}

	fit := func(ids ...string) string {
		var tabs []*table.Table
		for _, id := range ids {
			tabs = append(tabs, parse(t, csv[id]))
		}
		set, err := features.Fit(p, tabs...)
		if err != nil {
			t.Fatal(err)
		}
		return set.Version
	}
	want := map[string]string{"c": fit("a", "c"), "b": fit("a", "b"), "d": fit("c", "d")}
	got, _ := materialized(t, r, "late", 1)
	if len(got) != 3 {
		t.Fatalf("%d features.materialized, want 3 (the redelivery of c's is the same event)", len(got))
	}
	for _, m := range got {
		if m.FeatureSetVersion != want[m.BatchId] {
			t.Errorf("%s materialised with feature set %s, want %s", m.BatchId, m.FeatureSetVersion, want[m.BatchId])
		}
	}
}

// TestTransformErrorsAndUnknownGoToDLQ: what cannot be materialised — an
// unknown pipeline, a batch not in the validated-batch log — is dead-lettered
// with its reason, and the service goes on.
func TestUnprocessableGoesToDLQ(t *testing.T) {
	t.Parallel()
	r := startFeature(t, "")
	r.Apply(t, fmt.Sprintf(spec, "p1"))
	ref := &gyrev1.ObjectRef{Bucket: events.ObjectBatches, Key: "p1/x.csv"}
	announce(t, r, "nope", "b0", ref)
	announce(t, r, "p1", "not-logged", ref)
	dead := r.WaitDeadLetters(t, feature.Name, 2)
	for i, want := range []string{`pipeline "nope"`, "not in the validated-batch log"} {
		if reason := dead[i].Header.Get(bus.HeaderDLQReason); !strings.Contains(reason, want) {
			t.Errorf("dead letter %d: %q lacks %q", i, reason, want)
		}
	}
	announce(t, r, "p1", "b0", validate(t, r, "p1", "b0", batches[0]))
	materialized(t, r, "p1", 1)
}

// TestTolerableBadCells: a batch validated with bad rows tolerated
// (maxRowErrors) gets missing features for its unreadable cells.
func TestTolerableBadCells(t *testing.T) {
	t.Parallel()
	r := startFeature(t, "")
	r.Apply(t, fmt.Sprintf(spec, "p1"))
	announce(t, r, "p1", "b0", validate(t, r, "p1", "b0", "x,c,class\n1,a,0\noops,b,1\n3,a,0\n"))
	got, _ := materialized(t, r, "p1", 1)
	e, err := r.Buckets.Online.Get(context.Background(), store.OnlineKey("p1", "b0", 2))
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Rows != 3 || !strings.Contains(string(e.Value()), `"x":null`) {
		t.Errorf("rows %d, online row 2 = %s", got[0].Rows, e.Value())
	}
}

// TestKVOnlineIsFast: 1000 rows reach the JetStream KV well under a second.
func TestKVOnlineIsFast(t *testing.T) {
	t.Parallel()
	r := startFeature(t, "")
	rows := make([]feature.OnlineRow, 1000)
	for i := range rows {
		rows[i] = feature.OnlineRow{Key: store.OnlineKey("p1", "b0", i+1), Value: []byte(`{"features":{"x":1.5,"y":2.5}}`)}
	}
	start := time.Now()
	if err := feature.NewKVOnline(r.JS).Put(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("1000 online rows written in %s", took)
	// The budget is a second; the margin is for a loaded test machine.
	if took > 2*time.Second {
		t.Errorf("1000 online rows took %s", took)
	}
	st, err := r.Buckets.Online.Status(context.Background())
	if err != nil || st.Values() != 1000 {
		t.Errorf("gyre-online holds %v values, %v", st, err)
	}
}

// TestRedisOnline: with --redis the online rows go to Redis, and the event
// says so.
func TestRedisOnline(t *testing.T) {
	t.Parallel()
	rd := startRedis(t)
	rc := rd.Client()
	name := "rt"
	r := startFeature(t, rd.URL())
	r.Apply(t, fmt.Sprintf(spec, name))
	announce(t, r, name, "b0", validate(t, r, name, "b0", batches[0]))
	got, _ := materialized(t, r, name, 1)
	if got[0].OnlineStore != feature.OnlineRedis || got[0].OnlineRowsWritten != 3 {
		t.Errorf("features.materialized = %v", got[0])
	}
	ctx := context.Background()
	var keys []string
	for i := 1; i <= 3; i++ {
		keys = append(keys, feature.RedisKeyPrefix+store.OnlineKey(name, "b0", i))
	}
	v, err := rc.Get(ctx, keys[2]).Result()
	if err != nil || !strings.Contains(v, `"row":3`) || !strings.Contains(v, got[0].FeatureSetVersion) {
		t.Errorf("redis %s = %q, %v", keys[2], v, err)
	}
}

// TestRedisBreakerOpens: while Redis is unreachable, writes fail — as
// transient errors, to be retried — and after a few failures the breaker
// opens and they fail at once.
func TestRedisBreakerOpens(t *testing.T) {
	t.Parallel()
	s, err := feature.NewRedisOnline("redis://127.0.0.1:1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows := []feature.OnlineRow{{Key: "p.b.1", Value: []byte("{}")}}
	for i := range 3 {
		err := s.Put(context.Background(), rows)
		if err == nil || bus.IsPermanent(err) {
			t.Fatalf("write %d to a dead redis: %v (permanent %v)", i, err, bus.IsPermanent(err))
		}
	}
	start := time.Now()
	err = s.Put(context.Background(), rows)
	if err == nil || !strings.Contains(err.Error(), "circuit breaker is open") || bus.IsPermanent(err) {
		t.Fatalf("write with the breaker open: %v", err)
	}
	if time.Since(start) > 100*time.Millisecond || s.State() != "open" {
		t.Errorf("open breaker took %s, state %s", time.Since(start), s.State())
	}
}
