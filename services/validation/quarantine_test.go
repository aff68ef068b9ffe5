package validation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/validation"
)

// quarantineSpec tolerates 5 bad rows: x1 and x2 in [0, 1], class 0 or 1.
const quarantineSpec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: class
    maxRowErrors: %d
    schema:
      - {name: x1, type: float, min: 0, max: 1}
      - {name: x2, type: float, min: 0, max: 1}
      - {name: color, type: category}
      - {name: class, type: category, categories: ["0", "1"]}
  model: {algorithm: logreg}
`

// batchCSV is a batch of n good rows with the given rows (1-based) replaced.
func batchCSV(n int, header string, replace map[int]string) string {
	var b strings.Builder
	b.WriteString(header + "\n")
	colors := []string{"red", "green", "blue"}
	extra := strings.Count(header, ",") - 3
	for i := 1; i <= n; i++ {
		if r, ok := replace[i]; ok {
			b.WriteString(r + "\n")
			continue
		}
		x1, x2 := float64(i%97)/97, float64(i%89)/89
		class := 0
		if x1+x2 > 1 {
			class = 1
		}
		fmt.Fprintf(&b, "%.4f,%.4f,%s,%d%s\n", x1, x2, colors[i%3], class, strings.Repeat(",e", extra))
	}
	return b.String()
}

func startQuarantine(t *testing.T) (*servicetest.Running, *validation.Service) {
	t.Helper()
	var svc *validation.Service
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		s, err := validation.New(cfg, deps)
		svc = s
		return s, err
	})
	r.Apply(t, fmt.Sprintf(quarantineSpec, "q", 5))
	r.Apply(t, fmt.Sprintf(quarantineSpec, "many", 200))
	return r, svc
}

func getJSON(t *testing.T, h http.Handler, path string, code int, v any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != code {
		t.Fatalf("GET %s: %d %s, want %d", path, rec.Code, rec.Body.String(), code)
	}
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
}

// TestQuarantine is the case: with maxRowErrors 5, a batch with two
// rows of an impossible class and one far above its max is validated
// without those three rows. data.batch.validated and the validated-batch
// log name a cleaned copy that lacks them (what feature, trainer and
// monitor read), with the counts; the reasons are recorded and served by
// the HTTP routes; a redelivery changes nothing.
func TestQuarantine(t *testing.T) {
	t.Parallel()
	r, svc := startQuarantine(t)
	ctx := context.Background()
	const header = "x1,x2,color,class"
	raw := receive(t, r, "q", "b1", batchCSV(200, header, map[int]string{
		10: "0.5,0.5,red,7", 50: "0.25,0.5,blue,9", 120: "1000000,0.5,green,1",
	}))
	v := validated(t, r, "q", 1)[0]
	if v.GetRowsIn() != 200 || v.GetRowsQuarantined() != 3 || v.GetRows() != 197 || v.GetChecksPassed() || v.GetFormat() != "csv" {
		t.Fatalf("validated: rowsIn %d, quarantined %d, rows %d, checksPassed %v, format %s",
			v.GetRowsIn(), v.GetRowsQuarantined(), v.GetRows(), v.GetChecksPassed(), v.GetFormat())
	}
	if v.GetReceived().GetKey() != raw.GetKey() || !strings.HasPrefix(v.GetObject().GetKey(), "q/validated/") || v.GetObject().GetKey() == raw.GetKey() {
		t.Fatalf("validated names %s, received %s; want a cleaned copy of %s", v.GetObject().GetKey(), v.GetReceived().GetKey(), raw.GetKey())
	}
	var rows []int64
	for _, reason := range v.GetQuarantineReasons() {
		rows = append(rows, reason.GetRow())
	}
	if !slices.Equal(rows, []int64{10, 50, 120}) {
		t.Errorf("quarantine reasons of rows %v, want 10, 50, 120", rows)
	}
	// The statistics are of the rows passed on: the value far above max
	// is not among them.
	if x1 := v.GetColumns()[0]; x1.GetMax() > 1 || x1.GetCount() != 197 {
		t.Errorf("x1 statistics: max %v over %d values", x1.GetMax(), x1.GetCount())
	}

	log, err := store.ValidatedBatches(ctx, r.Buckets.State, "q")
	if err != nil || len(log) != 1 || log[0].ObjectKey != v.GetObject().GetKey() || log[0].Rows != 197 || log[0].Sha256 != v.GetObject().GetSha256() {
		t.Fatalf("validated-batch log %+v, %v; want the cleaned copy", log, err)
	}
	data, err := store.GetObject(ctx, r.Buckets.Batches, log[0].ObjectKey)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := table.Read(log[0].Format, data)
	if err != nil {
		t.Fatal(err)
	}
	classes := map[string]int{}
	for _, row := range tb.Rows {
		classes[row[3]]++
		if row[0] == "1000000" {
			t.Error("the row far above max was passed on")
		}
	}
	if tb.Len() != 197 || len(classes) != 2 || classes["7"]+classes["9"] != 0 {
		t.Errorf("cleaned batch: %d rows, classes %v", tb.Len(), classes)
	}

	h := svc.Handler()
	var list validation.QuarantineList
	getJSON(t, h, "/v1/pipelines/q/rejected", http.StatusOK, &list)
	if len(list.Batches) != 1 || list.Batches[0].BatchID != "b1" || list.Batches[0].Status != validation.StatusValidated ||
		list.Batches[0].RowsIn != 200 || list.Batches[0].RowsQuarantined != 3 || list.Batches[0].Validated != log[0].ObjectKey ||
		list.Batches[0].Object != raw.GetKey() || len(list.Batches[0].Reasons) != 0 {
		t.Fatalf("GET rejected: %+v", list)
	}
	var q validation.Quarantine
	getJSON(t, h, "/v1/pipelines/q/rejected/b1", http.StatusOK, &q)
	want := []validation.Reason{
		{Row: 10, Column: "class", Value: "7", Check: "category", Reason: `value "7" is not one of the categories 0, 1`},
		{Row: 50, Column: "class", Value: "9", Check: "category", Reason: `value "9" is not one of the categories 0, 1`},
		{Row: 120, Column: "x1", Value: "1000000", Check: "range", Reason: "value 1000000 is above max 1"},
	}
	if !slices.Equal(q.Reasons, want) || q.ReasonsTotal != 3 {
		t.Errorf("GET rejected/b1: reasons %+v (total %d), want %+v", q.Reasons, q.ReasonsTotal, want)
	}
	getJSON(t, h, "/v1/pipelines/q/rejected/nope", http.StatusNotFound, nil)
	getJSON(t, h, "/v1/pipelines/Not_A_Name/rejected", http.StatusBadRequest, nil)
	var empty validation.QuarantineList
	getJSON(t, h, "/v1/pipelines/many/rejected", http.StatusOK, &empty)
	if len(empty.Batches) != 0 {
		t.Errorf("a pipeline with nothing kept out lists %+v", empty.Batches)
	}

	// A redelivery of the announcement: the same decision, announced
	// under the same id, recorded once.
	received := r.Events(t, "q", events.DataBatchReceived)[0]
	var msg gyrev1.DataBatchReceived
	if err := events.Decode(received, &msg); err != nil {
		t.Fatal(err)
	}
	r.Publish(t, "q", &msg)
	receive(t, r, "q", "b2", batchCSV(20, header, nil))
	validated(t, r, "q", 2)
	log, err = store.ValidatedBatches(ctx, r.Buckets.State, "q")
	// The validation consumer is ordered: b2 was handled after the
	// redelivery.
	if err != nil || len(log) != 2 || log[0].ObjectKey != v.GetObject().GetKey() || log[1].BatchID != "b2" || log[1].Rows != 20 {
		t.Errorf("log after a redelivery: %+v, %v", log, err)
	}
	if n := len(r.Events(t, "q", events.DataBatchValidated)); n != 2 {
		t.Errorf("%d data.batch.validated, want 2: a redelivery announces the same id", n)
	}
	var again validation.Quarantine
	getJSON(t, h, "/v1/pipelines/q/rejected/b1", http.StatusOK, &again)
	if !again.At.Equal(q.At) {
		t.Errorf("the quarantine was written again on a redelivery: at %s, then %s", q.At, again.At)
	}
	// A clean batch is passed on as received, and keeps out nothing.
	if b2 := validated(t, r, "q", 2)[1]; b2.GetRowsQuarantined() != 0 || b2.GetObject().GetKey() != b2.GetReceived().GetKey() || !b2.GetChecksPassed() {
		t.Errorf("clean batch: %v", b2)
	}
	getJSON(t, h, "/v1/pipelines/q/rejected/b2", http.StatusNotFound, nil)

	// Six bad rows: past maxRowErrors the whole batch is rejected, and
	// listed with the others.
	bad := map[int]string{}
	for i := 1; i <= 6; i++ {
		bad[i] = "0.5,0.5,red,3"
	}
	receive(t, r, "q", "b3", batchCSV(30, header, bad))
	rejected(t, r, "q", 1)
	getJSON(t, h, "/v1/pipelines/q/rejected", http.StatusOK, &list)
	if len(list.Batches) != 2 || list.Batches[1].BatchID != "b3" || list.Batches[1].Status != validation.StatusRejected ||
		list.Batches[1].RowsQuarantined != 30 || list.Batches[1].ReasonsTotal != 6 {
		t.Errorf("GET rejected after a rejection: %+v", list)
	}
}

// TestQuarantineOfManyRows: more reasons than a record carries are kept
// whole in an object, and served in full.
func TestQuarantineOfManyRows(t *testing.T) {
	t.Parallel()
	r, svc := startQuarantine(t)
	bad := map[int]string{}
	for i := 1; i <= 150; i++ {
		bad[2*i] = fmt.Sprintf("0.5,%d,red,1", i+1) // x2 above max 1
	}
	receive(t, r, "many", "big", batchCSV(400, "x1,x2,color,class", bad))
	v := validated(t, r, "many", 1)[0]
	if v.GetRowsQuarantined() != 150 || v.GetRows() != 250 || len(v.GetQuarantineReasons()) != validation.MaxReasons {
		t.Fatalf("validated: quarantined %d, rows %d, %d reasons", v.GetRowsQuarantined(), v.GetRows(), len(v.GetQuarantineReasons()))
	}
	var q validation.Quarantine
	getJSON(t, svc.Handler(), "/v1/pipelines/many/rejected/big", http.StatusOK, &q)
	if len(q.Reasons) != 150 || q.ReasonsTotal != 150 || q.Reasons[149].Row != 300 || q.Reasons[149].Value != "151" {
		t.Fatalf("quarantine: %d reasons (total %d), last %+v", len(q.Reasons), q.ReasonsTotal, q.Reasons[len(q.Reasons)-1])
	}
	rec, _, _, err := store.GetJSON[validation.Rejection](context.Background(), r.Buckets.State, store.RejectedKey("many", "big"))
	if err != nil || len(rec.Reasons) != validation.MaxReasons || rec.QuarantineKey != validation.QuarantineKey("many", v.GetReceived().GetSha256()) {
		t.Errorf("record: %d reasons, object %q, %v", len(rec.Reasons), rec.QuarantineKey, err)
	}
}

// TestUndeclaredColumn: a later batch with a column the schema does not
// declare is validated with a new_column anomaly, and passed on without
// that column; the record says it was dropped.
func TestUndeclaredColumn(t *testing.T) {
	t.Parallel()
	r, svc := startQuarantine(t)
	receive(t, r, "q", "b1", batchCSV(20, "x1,x2,color,class", nil))
	receive(t, r, "q", "b2", batchCSV(20, "x1,x2,color,class,sensor", nil))
	v := validated(t, r, "q", 2)[1]
	a := v.GetAnomalies()
	if len(a) != 1 || a[0].GetColumn() != "sensor" || a[0].GetKind() != validation.AnomalyNewColumn || !strings.Contains(a[0].GetReason(), `column "sensor" is not declared`) {
		t.Fatalf("anomalies %v", a)
	}
	if v.GetRows() != 20 || v.GetRowsQuarantined() != 0 || !v.GetChecksPassed() || v.GetObject().GetKey() == v.GetReceived().GetKey() {
		t.Fatalf("validated %v", v)
	}
	data, err := store.GetObject(context.Background(), r.Buckets.Batches, v.GetObject().GetKey())
	if err != nil {
		t.Fatal(err)
	}
	if first := strings.SplitN(string(data), "\n", 2)[0]; first != "x1,x2,color,class" {
		t.Errorf("the batch passed on has the header %q", first)
	}
	var q validation.Quarantine
	getJSON(t, svc.Handler(), "/v1/pipelines/q/rejected/b2", http.StatusOK, &q)
	if q.Status != validation.StatusValidated || !slices.Equal(q.ColumnsDropped, []string{"sensor"}) || q.RowsQuarantined != 0 || len(q.Anomalies) != 1 {
		t.Errorf("quarantine of b2: %+v", q)
	}
	// Its statistics are reported, for whoever decides to declare it.
	if c := v.GetColumns(); len(c) != 5 || c[4].GetName() != "sensor" || c[4].GetCount() != 20 {
		t.Errorf("columns %v, want the undeclared one's statistics too", c)
	}

	// Once the spec declares it, it is used: the batch is passed on as
	// received.
	r.Apply(t, strings.Replace(fmt.Sprintf(quarantineSpec, "q", 5), "    schema:\n", "    schema:\n      - {name: sensor, type: category}\n", 1))
	receive(t, r, "q", "b3", batchCSV(20, "x1,x2,color,class,sensor", nil))
	b3 := validated(t, r, "q", 3)[2]
	if len(b3.GetAnomalies()) != 0 || b3.GetObject().GetKey() != b3.GetReceived().GetKey() {
		t.Errorf("b3, its column declared: anomalies %v, passed on as %s (received %s)", b3.GetAnomalies(), b3.GetObject().GetKey(), b3.GetReceived().GetKey())
	}
}

// TestRejectedRoutesNeedRead: the quarantine is read with a read token.
func TestRejectedRoutesNeedRead(t *testing.T) {
	t.Parallel()
	tokens := servicetest.NewTokens(t)
	var svc *validation.Service
	servicetest.StartWith(t, servicetest.Options{Tokens: tokens}, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		s, err := validation.New(cfg, deps)
		svc = s
		return s, err
	})
	for _, tt := range []struct {
		scope service.Scope
		code  int
	}{{"", 401}, {service.ScopeIngest, 403}, {service.ScopeRead, 200}, {service.ScopeAdmin, 200}} {
		req := httptest.NewRequest(http.MethodGet, "/v1/pipelines/q/rejected", nil)
		if tt.scope != "" {
			tokens.Authorize(req, tt.scope)
		}
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, req)
		if rec.Code != tt.code {
			t.Errorf("with a %q token: %d %s, want %d", tt.scope, rec.Code, rec.Body.String(), tt.code)
		}
	}
}
