package ingest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/ingest"
)

// TestSkeletonRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestSkeletonRuns(t *testing.T) {
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		cfg.NATSURL = url
		return ingest.New(cfg, deps)
	}, events.ServiceConsumers()[ingest.Name])
}

const spec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p1}
spec:
  dataset: {label: y}
  model: {algorithm: logreg}
`

const goodCSV = "x,y\n1.5,0\n2.5,1\n3.5,0\n"

// maxBytes is the size limit of the service under test: small, so that the
// oversized case is cheap.
const maxBytes = 4096

// start runs the ingest service with the test pipeline applied.
func start(t *testing.T) (*servicetest.Running, *ingest.Service) {
	t.Helper()
	var svc *ingest.Service
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		cfg.NATSURL = url
		cfg.MaxBatchBytes = maxBytes
		// The tests' files live under the system's temporary directory.
		cfg.FileRoot = os.TempDir()
		s, err := ingest.New(cfg, deps)
		svc = s
		return s, err
	})
	r.Apply(t, spec)
	return r, svc
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func received(t *testing.T, r *servicetest.Running, n int) []*gyrev1.DataBatchReceived {
	t.Helper()
	var out []*gyrev1.DataBatchReceived
	for _, ev := range r.WaitEvents(t, "p1", events.DataBatchReceived, n) {
		var m gyrev1.DataBatchReceived
		if err := events.Decode(ev, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, &m)
	}
	return out
}

// TestBatchArrivedHappyPath: an inline batch is stored content-addressed,
// recorded, and announced once with its rows, columns and lineage.
func TestBatchArrivedHappyPath(t *testing.T) {
	t.Parallel()
	r, _ := start(t)
	arrived := r.Publish(t, "p1", &gyrev1.DataBatchArrived{
		Pipeline: "p1", BatchId: "b-1", Format: "csv", Content: []byte(goodCSV), Labels: map[string]string{"source": "test"},
	})
	evs := r.WaitEvents(t, "p1", events.DataBatchReceived, 1)
	ev := evs[0]
	var got gyrev1.DataBatchReceived
	if err := events.Decode(ev, &got); err != nil {
		t.Fatal(err)
	}
	digest := sum([]byte(goodCSV))
	key := "p1/" + digest + ".csv"
	if got.BatchId != "b-1" || got.Rows != 3 || got.Bytes != int64(len(goodCSV)) || got.Format != "csv" ||
		got.Sha256 != digest || got.Object.GetKey() != key || got.Object.GetBucket() != events.ObjectBatches ||
		strings.Join(got.Columns, ",") != "x,y" || got.Labels["source"] != "test" || got.Duplicate {
		t.Errorf("data.batch.received = %+v", &got)
	}
	if c := bus.Ext(ev, bus.ExtCorrelationID); c != arrived.ID() {
		t.Errorf("correlationid = %q, want the arrived event's id %q", c, arrived.ID())
	}
	if c := bus.Ext(ev, bus.ExtCausationID); c != arrived.ID() {
		t.Errorf("causationid = %q, want %q", c, arrived.ID())
	}
	if ev.ID() != bus.StableID(events.DataBatchReceived, "p1", digest) {
		t.Errorf("id %s is not the deterministic one", ev.ID())
	}
	ctx := context.Background()
	data, err := store.GetObject(ctx, r.Buckets.Batches, key)
	if err != nil || string(data) != goodCSV {
		t.Errorf("stored object = %q, %v", data, err)
	}
	rec, _, found, err := store.GetJSON[map[string]any](ctx, r.Buckets.State, store.IngestKey("p1", digest))
	if err != nil || !found || rec["batchId"] != "b-1" || rec["objectKey"] != key || rec["rows"] != 3.0 {
		t.Errorf("ingest record = %v, %v, %v", rec, found, err)
	}
}

// TestSameBatchTwiceIsOneBatch: the same content published twice (two
// arrivals, two ids) gives one data.batch.received and one object.
func TestSameBatchTwiceIsOneBatch(t *testing.T) {
	t.Parallel()
	r, _ := start(t)
	for _, id := range []string{"first", "second"} {
		r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: id, Format: "csv", Content: []byte(goodCSV)})
	}
	// A third, different batch after both: once it is received, the second
	// arrival was handled (one consumer, in order).
	r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "third", Format: "csv", Content: []byte("x,y\n9,1\n")})
	got := received(t, r, 2)
	if len(got) != 2 || got[0].BatchId != "first" || got[1].BatchId != "third" {
		t.Fatalf("received %v, want first and third", got)
	}
	ctx := context.Background()
	objs, err := r.Buckets.Batches.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Errorf("%d objects stored, want 2", len(objs))
	}
}

// TestBadInputGoesToDLQ: each bad data.batch.arrived is dead-lettered with a
// reason naming the problem, and a good batch after them still flows.
func TestBadInputGoesToDLQ(t *testing.T) {
	t.Parallel()
	r, _ := start(t)
	ctx := context.Background()
	landing, err := r.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "landing"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := landing.PutBytes(ctx, "big.csv", bytes.Repeat([]byte("1,2\n"), maxBytes)); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(t.TempDir(), "big.csv")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x,y\n"), maxBytes), 0o600); err != nil {
		t.Fatal(err)
	}
	// One batch id first used for other content.
	r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "taken", Format: "csv", Content: []byte("x,y\n7,0\n")})
	received(t, r, 1)

	tests := []struct {
		name string
		msg  *gyrev1.DataBatchArrived
		want string // in the dead letter's reason
		// kinds are the dead letter kinds accepted: permanent when ingest
		// refuses the batch, contract when the bus refuses the payload
		// before ingest sees it (the payload contract decides which).
		kinds []string
	}{
		{"malformed csv", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "m", Format: "csv", Content: []byte("x,y\n1,2\n3\n")}, "row 2", nil},
		{"unknown pipeline", &gyrev1.DataBatchArrived{Pipeline: "nope", BatchId: "u", Format: "csv", Content: []byte(goodCSV)}, `pipeline "nope" (apply its spec first`, nil},
		{"oversized inline", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "o", Format: "csv", Content: bytes.Repeat([]byte("x"), maxBytes+1)}, "batch too large", nil},
		{"oversized file", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "of", Format: "csv", Uri: "file://" + big}, "batch too large", nil},
		{"oversized object", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "oo", Format: "csv", Uri: "nats-object://landing/big.csv"}, "batch too large", nil},
		{"unknown format", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "f", Format: "xlsx", Content: []byte(goodCSV)}, "format", []string{"permanent", "contract"}},
		{"missing file", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "mf", Format: "csv", Uri: "file:///no/such/file.csv"}, "cannot open the file", nil},
		{"file outside the root", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "fo", Format: "csv", Uri: "file:///etc/hostname"}, "outside --file-root", nil},
		{"missing object", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "mo", Format: "csv", Uri: "nats-object://landing/none.csv"}, `no object "none.csv"`, nil},
		{"missing bucket", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "mb", Format: "csv", Uri: "nats-object://nobucket/x.csv"}, `bucket "nobucket" does not exist`, nil},
		{"bad jsonl", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "j", Format: "jsonl", Content: []byte("{\"x\":1}\n[1]\n")}, "row 2", nil},
		{"batch id reused", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "taken", Format: "csv", Content: []byte(goodCSV)}, "already used for other content", nil},
		{"batch id with a path", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "../../etc/x", Format: "csv", Content: []byte(goodCSV)}, "batchId", []string{"permanent", "contract"}},
	}
	for _, tt := range tests {
		pipeline := tt.msg.Pipeline
		ev, err := events.New("/gyre/test", pipeline, tt.msg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Publisher.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	dead := r.WaitDeadLetters(t, ingest.Name, len(tests))
	for i, tt := range tests {
		reason := dead[i].Header.Get(bus.HeaderDLQReason)
		if !strings.Contains(reason, tt.want) {
			t.Errorf("%s: dead letter reason %q lacks %q", tt.name, reason, tt.want)
		}
		kinds := tt.kinds
		if kinds == nil {
			kinds = []string{"permanent"}
		}
		if kind := dead[i].Header.Get(bus.HeaderDLQKind); !slices.Contains(kinds, kind) {
			t.Errorf("%s: dead letter kind %q, want one of %v", tt.name, kind, kinds)
		}
	}
	// The service keeps going: a good batch after the bad ones flows, and
	// nothing else was received.
	r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "good", Format: "csv", Content: []byte(goodCSV)})
	got := received(t, r, 2)
	if len(got) != 2 || got[1].BatchId != "good" {
		t.Errorf("received %v, want taken and good", got)
	}
}

// TestFileURIsNeedARoot: with no --file-root, file:// URIs are refused, so
// that a producer cannot make ingest read any file the service can open.
func TestFileURIsNeedARoot(t *testing.T) {
	t.Parallel()
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		cfg.NATSURL = url
		return ingest.New(cfg, deps)
	})
	r.Apply(t, spec)
	file := filepath.Join(t.TempDir(), "b.csv")
	if err := os.WriteFile(file, []byte(goodCSV), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "b", Format: "csv", Uri: "file://" + file})
	dead := r.WaitDeadLetters(t, ingest.Name, 1)
	if reason := dead[0].Header.Get(bus.HeaderDLQReason); !strings.Contains(reason, "file:// URIs are refused") {
		t.Errorf("dead letter reason %q", reason)
	}
}

// TestURIs: batches by file:// and nats-object:// URI are read and stored
// like inline ones, and say where they came from.
func TestURIs(t *testing.T) {
	t.Parallel()
	r, _ := start(t)
	ctx := context.Background()
	landing, err := r.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "landing"})
	if err != nil {
		t.Fatal(err)
	}
	jsonl := "{\"x\":1,\"y\":0}\n{\"x\":2,\"y\":1}\n"
	if _, err := landing.PutBytes(ctx, "p1/a.jsonl", []byte(jsonl)); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "b.csv")
	if err := os.WriteFile(file, []byte(goodCSV), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "a", Format: "jsonl", Uri: "nats-object://landing/p1/a.jsonl"})
	r.Publish(t, "p1", &gyrev1.DataBatchArrived{Pipeline: "p1", BatchId: "b", Format: "csv", Uri: "file://" + file})
	got := received(t, r, 2)
	if got[0].Rows != 2 || got[0].SourceUri != "nats-object://landing/p1/a.jsonl" || got[0].Object.GetKey() != "p1/"+sum([]byte(jsonl))+".jsonl" {
		t.Errorf("from object store: %+v", got[0])
	}
	if got[1].Rows != 3 || got[1].SourceUri != "file://"+file {
		t.Errorf("from file: %+v", got[1])
	}
}

// TestUpload: POST /v1/pipelines/{pipeline}/batches answers 202 with the
// batch, and 4xx naming the problem for bad uploads.
func TestUpload(t *testing.T) {
	t.Parallel()
	r, svc := start(t)
	h := svc.Handler()
	post := func(path, contentType, body string) (int, map[string]any) {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s: body %q is not JSON: %v", path, rec.Body.String(), err)
		}
		return rec.Code, out
	}
	tests := []struct {
		name        string
		path        string
		contentType string
		body        string
		code        int
		want        string // in the error, or the batch id
	}{
		{"csv", "/v1/pipelines/p1/batches", "text/csv", goodCSV, 202, sum([]byte(goodCSV))[:16]},
		{"jsonl with id", "/v1/pipelines/p1/batches?batchId=j1", "application/x-ndjson", "{\"x\":1,\"y\":0}\n", 202, "j1"},
		{"format param", "/v1/pipelines/p1/batches?format=jsonl&batchId=j2", "", "{\"x\":2,\"y\":0}\n", 202, "j2"},
		{"unknown pipeline", "/v1/pipelines/nope/batches", "text/csv", goodCSV, 404, `pipeline "nope" (apply its spec first`},
		{"malformed csv", "/v1/pipelines/p1/batches", "text/csv", "x,y\n1,2\n3,4,5\n", 400, "row 2"},
		{"empty", "/v1/pipelines/p1/batches", "text/csv", "", 400, "empty"},
		{"too large", "/v1/pipelines/p1/batches", "text/csv", strings.Repeat("x", maxBytes+1), 413, "batch too large"},
		{"unknown content type", "/v1/pipelines/p1/batches", "application/pdf", goodCSV, 415, "application/pdf"},
		{"unknown format param", "/v1/pipelines/p1/batches?format=xlsx", "", goodCSV, 415, `"xlsx"`},
		{"no format", "/v1/pipelines/p1/batches", "", goodCSV, 415, "no format"},
		{"batch id with a path", "/v1/pipelines/p1/batches?batchId=../../x", "text/csv", goodCSV, 400, "must start with a letter or a digit"},
		{"batch id with a slash", "/v1/pipelines/p1/batches?batchId=a/b", "text/csv", goodCSV, 400, `'/' at position 2`},
	}
	for _, tt := range tests {
		code, out := post(tt.path, tt.contentType, tt.body)
		if code != tt.code {
			t.Errorf("%s: status %d, want %d (%v)", tt.name, code, tt.code, out)
			continue
		}
		if code == 202 {
			if out["batchId"] != tt.want || out["duplicate"] != false || out["pipeline"] != "p1" {
				t.Errorf("%s: %v", tt.name, out)
			}
			continue
		}
		if msg, _ := out["error"].(string); !strings.Contains(msg, tt.want) {
			t.Errorf("%s: error %q lacks %q", tt.name, msg, tt.want)
		}
	}
	// Without a declared length, the limit is found while reading.
	req := httptest.NewRequest(http.MethodPost, "/v1/pipelines/p1/batches", io.MultiReader(strings.NewReader(strings.Repeat("x", maxBytes+1))))
	req.Header.Set("Content-Type", "text/csv")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if req.ContentLength != -1 || rec.Code != 413 || !strings.Contains(rec.Body.String(), "batch too large") {
		t.Errorf("too large, no length: %d %s", rec.Code, rec.Body.String())
	}
	// The same upload again is a duplicate: 202, nothing new.
	code, out := post("/v1/pipelines/p1/batches?batchId=again", "text/csv", goodCSV)
	if code != 202 || out["duplicate"] != true || out["batchId"] != sum([]byte(goodCSV))[:16] || out["rows"] != 3.0 {
		t.Errorf("duplicate upload: %d %v", code, out)
	}
	if got := received(t, r, 3); len(got) != 3 {
		t.Errorf("%d data.batch.received, want 3", len(got))
	}
}

// TestConfig: --max-batch-bytes is a flag of the service, checked.
func TestConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want int
		err  string
	}{
		{nil, ingest.DefaultMaxBatchBytes, ""},
		{[]string{"--max-batch-bytes", "1024"}, 1024, ""},
		{[]string{"--max-batch-bytes", "0"}, 0, "--max-batch-bytes"},
		{[]string{"--max-concurrent-uploads", "0"}, ingest.DefaultMaxBatchBytes, "--max-concurrent-uploads (env GYRE_INGEST_MAX_CONCURRENT_UPLOADS)"},
		{[]string{"--max-batch-bytes", "2048", "--max-upload-buffer-bytes", "1024"}, 2048, "--max-upload-buffer-bytes (env GYRE_INGEST_MAX_UPLOAD_BUFFER_BYTES): \"1024\" must be at least --max-batch-bytes"},
		{[]string{"--http-auth", "none"}, ingest.DefaultMaxBatchBytes, ""},
		{[]string{"--http-auth", "off"}, ingest.DefaultMaxBatchBytes, "--http-auth"},
	}
	for _, tt := range tests {
		cfg := ingest.DefaultConfig()
		fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if cfg.MaxBatchBytes != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%v: MaxBatchBytes %d, err %v", tt.args, cfg.MaxBatchBytes, err)
		}
	}
}

// TestUploadNeedsIngestScope: an upload without a token gets 401, with a
// token of another scope 403, with an ingest or admin token 202; health
// stays open.
func TestUploadNeedsIngestScope(t *testing.T) {
	t.Parallel()
	tokens := servicetest.NewTokens(t)
	var svc *ingest.Service
	r := servicetest.StartWith(t, servicetest.Options{Tokens: tokens}, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		cfg.NATSURL = url
		s, err := ingest.New(cfg, deps)
		svc = s
		return s, err
	})
	r.Apply(t, spec)
	tests := []struct {
		scope service.Scope // "" no token
		body  string
		code  int
		want  string
	}{
		{"", goodCSV, 401, "no credentials"},
		{service.ScopeRead, goodCSV, 403, "needs scope ingest"},
		{service.ScopeInfer, goodCSV, 403, "holds infer"},
		{service.ScopeIngest, goodCSV, 202, ""},
		{service.ScopeAdmin, "x,y\n4,1\n", 202, ""},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodPost, "/v1/pipelines/p1/batches", strings.NewReader(tt.body))
		req.Header.Set("Content-Type", "text/csv")
		if tt.scope != "" {
			tokens.Authorize(req, tt.scope)
		}
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, req)
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) {
			t.Errorf("upload with a %q token: %d %s, want %d %q", tt.scope, rec.Code, rec.Body.String(), tt.code, tt.want)
		}
		if tt.code == 401 && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without a Bearer challenge: %q", rec.Header().Get("WWW-Authenticate"))
		}
	}
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("/healthz without a token: %d", rec.Code)
	}
	if got := received(t, r, 2); len(got) != 2 {
		t.Errorf("%d batches received, want 2", len(got))
	}
}

// TestUploadsAreCapped: beyond --max-concurrent-uploads uploads in
// progress, or --max-upload-buffer-bytes reserved by them, an upload gets
// 429 with Retry-After; once they finish, uploads are taken again.
func TestUploadsAreCapped(t *testing.T) {
	t.Parallel()
	var svc *ingest.Service
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := ingest.DefaultConfig()
		cfg.NATSURL = url
		cfg.MaxBatchBytes = 1000
		cfg.MaxConcurrentUploads = 2
		cfg.MaxUploadBufferBytes = 1500
		s, err := ingest.New(cfg, deps)
		svc = s
		return s, err
	})
	r.Apply(t, spec)
	h := svc.Handler()

	// An upload whose body has not finished arriving holds its place.
	type pending struct {
		w    *io.PipeWriter
		done chan *httptest.ResponseRecorder
	}
	hold := func(contentLength int64) pending {
		pr, pw := io.Pipe()
		req := httptest.NewRequest(http.MethodPost, "/v1/pipelines/p1/batches", pr)
		req.Header.Set("Content-Type", "text/csv")
		req.ContentLength = contentLength
		p := pending{w: pw, done: make(chan *httptest.ResponseRecorder, 1)}
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			p.done <- rec
		}()
		if _, err := io.WriteString(pw, "x,y\n"); err != nil { // read: the upload is in progress
			t.Fatal(err)
		}
		return p
	}
	post := func(body string, contentLength int64) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/v1/pipelines/p1/batches", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/csv")
		req.ContentLength = contentLength
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	finish := func(p pending, rows string) {
		t.Helper()
		if _, err := io.WriteString(p.w, rows); err != nil {
			t.Fatal(err)
		}
		_ = p.w.Close()
		if rec := <-p.done; rec.Code != 202 {
			t.Errorf("held upload: %d %s", rec.Code, rec.Body.String())
		}
	}

	first := hold(-1) // no length: reserves --max-batch-bytes (1000 of 1500)
	if rec := post("x,y\n1,1\n", 600); rec.Code != 429 || rec.Header().Get("Retry-After") == "" || !strings.Contains(rec.Body.String(), "--max-upload-buffer-bytes") {
		t.Errorf("over the byte budget: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	}
	second := hold(100)
	if rec := post("x,y\n1,1\n", 8); rec.Code != 429 || !strings.Contains(rec.Body.String(), "--max-concurrent-uploads") {
		t.Errorf("over the upload count: %d %s", rec.Code, rec.Body.String())
	}
	finish(first, "1,0\n")
	finish(second, "2,0\n")
	if rec := post("x,y\n3,1\n", 8); rec.Code != 202 {
		t.Errorf("after the uploads finished: %d %s", rec.Code, rec.Body.String())
	}
	if m := metricValue(t, h, `gyre_ingest_uploads_refused_total{reason="busy"}`); m != "2" {
		t.Errorf("busy refusals metric = %q, want 2", m)
	}
}

// metricValue returns a sample's value from /metrics, "" if absent.
func metricValue(t *testing.T, h http.Handler, sample string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}
