package dlq_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/dlq"
	"github.com/gyrehq/gyre/libs/httpauth"
)

func TestHTTPRoutes(t *testing.T) {
	js := newJS(t)
	seq := strconv.FormatUint(forge(t, js, "gyre.ev.p1.data.batch.arrived", events.StreamEvents), 10)

	tokens := filepath.Join(t.TempDir(), "tokens.json")
	read, _, err := httpauth.CreateToken(tokens, "reader", []httpauth.Scope{httpauth.ScopeRead}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	admin, _, err := httpauth.CreateToken(tokens, "admin", []httpauth.Scope{httpauth.ScopeAdmin}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := httpauth.New(httpauth.Config{TokenFile: tokens, CheckInterval: -1, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	dlq.Mount(mux, js, auth)

	// In order: the redrives depend on what came before.
	for _, tt := range []struct {
		method, path, token string
		code                int
		contains            string
	}{
		{"GET", "/v1/dlq", "", 401, "no credentials"},
		{"GET", "/v1/dlq", read, 200, `"matched":1`},
		{"GET", "/v1/dlq?service=" + "dlqtest" + "&pipeline=p1&kind=permanent&reason=FORGED&since=1h", read, 200, `"seq":` + seq},
		{"GET", "/v1/dlq?pipeline=p2", read, 200, `{"deadLetters":[],"matched":0}`},
		{"GET", "/v1/dlq?since=yesterday", read, 400, `since \"yesterday\"`},
		{"GET", "/v1/dlq?limit=0", read, 400, `limit \"0\"`},
		{"GET", "/v1/dlq?limit=5000", read, 400, `limit \"5000\": at most 1000`},
		{"GET", "/v1/dlq/" + seq, "", 401, ""},
		{"GET", "/v1/dlq/" + seq, read, 200, `"body":{"x":1}`},
		{"GET", "/v1/dlq/abc", read, 400, `seq \"abc\"`},
		{"GET", "/v1/dlq/999", read, 404, "dead letter not found"},
		{"POST", "/v1/dlq/" + seq + "/redrive", "", 401, ""},
		{"POST", "/v1/dlq/" + seq + "/redrive", read, 403, "needs scope admin"},
		{"POST", "/v1/dlq/" + seq + "/redrive?again=maybe", admin, 400, "again"},
		{"POST", "/v1/dlq/" + seq + "/redrive?dryRun=true", admin, 200, `"attempt":1`},
		{"POST", "/v1/dlq/" + seq + "/redrive", admin, 200, `"msgId":"redrive-` + seq + `-1"`},
		{"POST", "/v1/dlq/" + seq + "/redrive", admin, 409, "?again=true"},
		{"POST", "/v1/dlq/" + seq + "/redrive?again=true", admin, 200, `"attempt":2`},
		{"GET", "/v1/dlq/" + seq, read, 200, `"redriven":{"seq":` + seq + `,"attempt":2`},
		{"POST", "/v1/dlq/999/redrive", admin, 404, ""},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.contains) {
			t.Errorf("%s %s = %d %s, want %d containing %s", tt.method, tt.path, rec.Code, rec.Body.String(), tt.code, tt.contains)
		}
		if rec.Code < 300 && !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s %s: not JSON: %s", tt.method, tt.path, rec.Body.String())
		}
	}
}
