package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/dlq"
	"github.com/gyrehq/gyre/libs/natsauth"
)

// TestDlqFlagErrorsNameTheFlag: every mistake is caught before connecting
// (the data dir has no up.json) and names the flag or argument at fault.
func TestDlqFlagErrorsNameTheFlag(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", "-o", "xml"}, `-o "xml"`},
		{[]string{"ls", "--limit", "-1"}, `--limit "-1"`},
		{[]string{"ls", "--since", "yesterday"}, `--since "yesterday": want a duration ago`},
		{[]string{"ls", "--until", "-5m"}, `--until "-5m"`},
		{[]string{"ls", "--kind", "boom"}, `--kind "boom": want one of malformed`},
		{[]string{"ls", "--service", "Ingest"}, `--service "Ingest"`},
		{[]string{"ls", "--pipeline", "a.b"}, `--pipeline "a.b"`},
		{[]string{"ls", "--since", "1h", "--until", "2h"}, `--until`},
		{[]string{"show"}, "accepts 1 arg(s)"},
		{[]string{"show", "abc"}, `SEQ "abc"`},
		{[]string{"show", "1", "-o", "yaml"}, `-o "yaml"`},
		{[]string{"redrive"}, "which dead letters?"},
		{[]string{"redrive", "0"}, `SEQ "0"`},
		{[]string{"redrive", "1", "--all"}, "not both"},
		{[]string{"redrive", "1", "--service", "ingest"}, "not both"},
		{[]string{"redrive", "--all", "--kind", "boom"}, `--kind "boom"`},
		{[]string{"purge", "1"}, "--yes"},
		{[]string{"purge", "--all"}, "--yes"},
		{[]string{"purge", "--yes"}, "which dead letters?"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			args := append([]string{"dlq"}, tt.args...)
			_, _, err := execute(t, append(args, "--data-dir", t.TempDir())...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v: error %v, want it to contain %q", args, err, tt.want)
			}
		})
	}
}

func TestDlqHelpTeaches(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"dlq", "--help"}, []string{"GYRE_DLQ", "gyre dlq redrive", "/v1/dlq/{seq}/redrive", "--again", "Examples:"}},
		{[]string{"dlq", "ls", "--help"}, []string{"SEQ", "REDRIVEN", "--reason", "--since", "-o json", "Examples:"}},
		{[]string{"dlq", "show", "--help"}, []string{"headers", "bodyBase64", "Examples:"}},
		{[]string{"dlq", "redrive", "--help"}, []string{"Gyre-Redrive-Attempt", "already redriven", "--again", "--dry-run", "idempotent", "Examples:"}},
		{[]string{"dlq", "purge", "--help"}, []string{"--yes", "for good", "Examples:"}},
	} {
		out, _, err := execute(t, tt.args...)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v output lacks %q", tt.args, w)
			}
		}
	}
}

// TestDlqRedriveUnderUp is issue #15's acceptance end to end, on a running
// `gyre up`: ingest dead-letters a batch of a pipeline not applied yet; the
// CLI (as the admin up.json names) and the HTTP API list it; once the
// pipeline is applied, the redriven batch is ingested exactly once, and a
// second redrive is refused.
func TestDlqRedriveUnderUp(t *testing.T) {
	dir := t.TempDir()
	_, state, stop := runUpWith(t, dir, "--nats-listen", "127.0.0.1:0")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	opts, err := natsauth.ConnectOptions(state.NATSSeed)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(state.NATSURL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Columns elec2 does not have: validation rejects the batch at once,
	// rather than starting the loop's training.
	ev, err := events.New("/test/producer", "elec2", &gyrev1.DataBatchArrived{
		Pipeline: "elec2", BatchId: "b-1", Format: "csv", Content: []byte("a,b\n1,2\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.NewPublisher(js, "test").Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	ingestOnly := dlq.Filter{Service: events.ServiceIngest}
	deadline := time.Now().Add(30 * time.Second)
	for {
		page, err := dlq.List(ctx, js, ingestOnly)
		if err != nil {
			t.Fatal(err)
		}
		if page.Matched > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest dead-lettered nothing in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The CLI lists it, as the admin up.json names.
	out, stderr, err := execute(t, "dlq", "ls", "--service", "ingest", "-o", "json", "--data-dir", dir)
	if err != nil {
		t.Fatalf("dlq ls: %v\n%s", err, stderr)
	}
	var page dlq.Page
	if err := json.Unmarshal([]byte(out), &page); err != nil || page.Matched != 1 {
		t.Fatalf("dlq ls -o json: %v, %d matched:\n%s", err, page.Matched, out)
	}
	e := page.DeadLetters[0]
	if e.Kind != "permanent" || e.Pipeline != "elec2" || e.EventID != ev.ID() || !strings.Contains(e.Reason, "not found") ||
		e.Subject != "gyre.ev.elec2.data.batch.arrived" || e.Redriven != nil {
		t.Fatalf("dead letter %+v", e)
	}
	seq := strconv.FormatUint(e.Seq, 10)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--reason", "NOT FOUND", "--pipeline", "elec2", "--since", "10m"}, "data.batch.arrived"},
		{[]string{"--service", "validation"}, ""},
		{[]string{"--kind", "contract"}, ""},
	} {
		out, stderr, err := execute(t, append([]string{"dlq", "ls", "--data-dir", dir}, tt.args...)...)
		if err != nil {
			t.Fatalf("dlq ls %v: %v\n%s", tt.args, err, stderr)
		}
		if tt.want == "" {
			if out != "" || !strings.Contains(stderr, "match the filters") {
				t.Errorf("dlq ls %v: %q %q, want no line and a note", tt.args, out, stderr)
			}
			continue
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "SEQ") || !strings.HasPrefix(lines[1], seq+" ") ||
			!strings.Contains(lines[1], tt.want) || !strings.HasSuffix(lines[1], " -") {
			t.Errorf("dlq ls %v:\n%s", tt.args, out)
		}
	}

	// The reader's identity lists dead letters, and cannot redrive one.
	reader := seedFile(filepath.Join(dir, natsAuthDir), events.IdentityReader)
	if out, stderr, err := execute(t, "dlq", "ls", "--data-dir", dir, "--nats-nkey", reader); err != nil || !strings.Contains(out, seq+" ") {
		t.Fatalf("dlq ls as the reader: %v\n%s%s", err, out, stderr)
	}
	if out, _, err := execute(t, "dlq", "redrive", seq, "--data-dir", dir, "--nats-nkey", reader); err == nil {
		t.Fatalf("the reader redrove a dead letter: %s", out)
	}

	// The HTTP API: read with a read token, redrive only with an admin one.
	secret := func(file string) string {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	do := func(method, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, state.HTTPURL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	for _, tt := range []struct {
		method, path, token string
		code                int
		contains            string
	}{
		{http.MethodGet, "/v1/dlq", "", http.StatusUnauthorized, ""},
		{http.MethodGet, "/v1/dlq?service=ingest", secret(readTokenFile), http.StatusOK, `"seq":` + seq},
		{http.MethodGet, "/v1/dlq/" + seq, secret(readTokenFile), http.StatusOK, `"ceId":"` + ev.ID() + `"`},
		{http.MethodGet, "/v1/dlq?limit=lots", secret(readTokenFile), http.StatusBadRequest, "limit"},
		{http.MethodPost, "/v1/dlq/" + seq + "/redrive", secret(readTokenFile), http.StatusForbidden, "admin"},
	} {
		if code, body := do(tt.method, tt.path, tt.token); code != tt.code || !strings.Contains(body, tt.contains) {
			t.Errorf("%s %s = %d %s, want %d containing %q", tt.method, tt.path, code, body, tt.code, tt.contains)
		}
	}

	// Fix the cause, then redrive: ingest takes the batch, once.
	if out, stderr, err := execute(t, "apply", "-f", "../../examples/elec2/pipeline.yaml", "--data-dir", dir); err != nil {
		t.Fatalf("apply: %v\n%s%s", err, out, stderr)
	}
	out, stderr, err = execute(t, "dlq", "redrive", seq, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "redriven "+seq+" → gyre.ev.elec2.data.batch.arrived") || !strings.Contains(out, "attempt 1") {
		t.Fatalf("dlq redrive: %v\n%s%s", err, out, stderr)
	}
	received, _ := events.Subject("elec2", events.DataBatchReceived)
	stream, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	count := func() uint64 {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(received))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[received]
	}
	for deadline := time.Now().Add(30 * time.Second); count() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the redriven batch was not ingested in 30s")
		}
	}

	// A second redrive is refused, by the CLI and by the API.
	_, _, err = execute(t, "dlq", "redrive", seq, "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "already redriven at") || !strings.Contains(err.Error(), "--again") {
		t.Fatalf("second dlq redrive: %v, want already redriven", err)
	}
	if code, body := do(http.MethodPost, "/v1/dlq/"+seq+"/redrive", secret(adminTokenFile)); code != http.StatusConflict {
		t.Errorf("POST redrive with the admin token after a redrive = %d %s, want 409", code, body)
	}
	time.Sleep(500 * time.Millisecond)
	if n := count(); n != 1 {
		t.Fatalf("%d %s events, want the batch ingested once", n, received)
	}
	if p, err := dlq.List(ctx, js, ingestOnly); err != nil || p.Matched != 1 || p.DeadLetters[0].Redriven == nil {
		t.Fatalf("ingest's dead letters after the redrive: %+v, %v; want the one, redriven", p, err)
	}
	out, stderr, err = execute(t, "dlq", "show", seq, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "attempt 1 at") || !strings.Contains(out, `"batchId": "b-1"`) {
		t.Errorf("dlq show: %v\n%s%s", err, out, stderr)
	}

	// Purge wants --yes, and then deletes it.
	if _, _, err := execute(t, "dlq", "purge", seq, "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("purge without --yes: %v", err)
	}
	if out, stderr, err := execute(t, "dlq", "purge", seq, "--yes", "--data-dir", dir); err != nil || !strings.Contains(out, "Deleted 1") {
		t.Fatalf("purge: %v\n%s%s", err, out, stderr)
	}
	if p, err := dlq.List(ctx, js, ingestOnly); err != nil || p.Matched != 0 {
		t.Fatalf("ingest's dead letters after the purge: %+v, %v; want none", p, err)
	}
}
