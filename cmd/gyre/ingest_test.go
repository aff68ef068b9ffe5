package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/services/feature"
	"github.com/gyrehq/gyre/services/ingest"
	"github.com/gyrehq/gyre/services/validation"
)

// dataPath runs the services of the data path — ingest, validation,
// feature — on a test server of their own.
func dataPath(t *testing.T) *servicetest.Running {
	t.Helper()
	return servicetest.Start(t,
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := ingest.DefaultConfig()
			cfg.NATSURL = url
			return ingest.New(cfg, deps)
		},
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := validation.DefaultConfig()
			cfg.NATSURL = url
			return validation.New(cfg, deps)
		},
		func(url string, deps service.Deps) (service.Runner, error) {
			cfg := feature.DefaultConfig()
			cfg.NATSURL = url
			return feature.New(cfg, deps)
		})
}

// elec2Head writes the header and the first n rows of the Elec2 example.
func elec2Head(t *testing.T, n int) string {
	t.Helper()
	f, err := os.Open("../../examples/elec2/elec2.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for i := 0; i <= n && sc.Scan(); i++ {
		b.WriteString(sc.Text() + "\n")
	}
	path := filepath.Join(t.TempDir(), "batch.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestApplyAndIngestThroughTheDataPath: gyre apply, then gyre ingest of the
// first 1000 Elec2 rows, flows through ingest, validation and feature as one
// cascade: received → validated → materialized under the arrival's
// correlation id. The same file again is the same batch.
func TestApplyAndIngestThroughTheDataPath(t *testing.T) {
	t.Parallel()
	r := dataPath(t)
	if out, _, err := execute(t, "apply", "-f", "../../examples/elec2/pipeline.yaml", "--nats", r.URL); err != nil || !strings.Contains(out, "pipeline/elec2 created") {
		t.Fatalf("apply: %q, %v", out, err)
	}
	file := elec2Head(t, 1000)
	out, _, err := execute(t, "ingest", "elec2", file, "--nats", r.URL)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	batchID := strings.TrimSpace(out)
	if len(batchID) != 16 {
		t.Fatalf("ingest printed %q, want a 16-digit batch id", out)
	}
	mat := r.WaitEvents(t, "elec2", events.FeaturesMaterialized, 1)[0]
	arrived := r.Events(t, "elec2", events.DataBatchArrived)[0]
	received := r.Events(t, "elec2", events.DataBatchReceived)[0]
	validated := r.Events(t, "elec2", events.DataBatchValidated)[0]
	for _, ev := range []struct {
		name  string
		id    string
		cause string
		corr  string
	}{
		{"received", received.ID(), bus.Ext(received, bus.ExtCausationID), bus.Ext(received, bus.ExtCorrelationID)},
		{"validated", validated.ID(), bus.Ext(validated, bus.ExtCausationID), bus.Ext(validated, bus.ExtCorrelationID)},
		{"materialized", mat.ID(), bus.Ext(mat, bus.ExtCausationID), bus.Ext(mat, bus.ExtCorrelationID)},
	} {
		if ev.corr != arrived.ID() {
			t.Errorf("%s: correlationid %q, want the arrival's %q", ev.name, ev.corr, arrived.ID())
		}
	}
	if bus.Ext(validated, bus.ExtCausationID) != received.ID() || bus.Ext(mat, bus.ExtCausationID) != validated.ID() {
		t.Errorf("causation chain broken")
	}
	var m gyrev1.FeaturesMaterialized
	if err := events.Decode(mat, &m); err != nil {
		t.Fatal(err)
	}
	if m.BatchId != batchID || m.Rows != 1000 || m.OnlineRowsWritten != 1000 || m.LabelColumn != "class" {
		t.Errorf("features.materialized = %v", &m)
	}

	// The same file again: the same id, and nothing new downstream.
	out, _, err = execute(t, "ingest", "elec2", file, "--nats", r.URL)
	if err != nil || strings.TrimSpace(out) != batchID {
		t.Fatalf("second ingest: %q, %v", out, err)
	}
	r.WaitEvents(t, "elec2", events.DataBatchArrived, 2)
	// A different batch after it: once it is materialized, the duplicate
	// was handled before it.
	if _, _, err := execute(t, "ingest", "elec2", elec2Head(t, 10), "--nats", r.URL); err != nil {
		t.Fatal(err)
	}
	r.WaitEvents(t, "elec2", events.FeaturesMaterialized, 2)
	if n := len(r.Events(t, "elec2", events.DataBatchReceived)); n != 2 {
		t.Errorf("%d data.batch.received, want 2 (the duplicate emits nothing)", n)
	}
}

// TestIngestErrors: what ingest would refuse is refused by the command,
// naming the problem, before anything is published.
func TestIngestErrors(t *testing.T) {
	t.Parallel()
	srv := provisioned(t)
	if _, _, err := execute(t, "apply", "-f", "../../examples/elec2/pipeline.yaml", "--nats", srv.URL); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.csv", "a,b\n1,2\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown pipeline", []string{"ingest", "nope", good}, `pipeline "nope"`},
		{"bad pipeline name", []string{"ingest", "No_Pe", good}, "PIPELINE"},
		{"malformed csv", []string{"ingest", "elec2", file("bad.csv", "a,b\n1,2\n3\n")}, "row 2"},
		{"unknown extension", []string{"ingest", "elec2", file("rows.txt", "a\n1\n")}, "--format"},
		{"wrong format", []string{"ingest", "elec2", good, "--format", "jsonl"}, "row 1"},
		{"unknown format", []string{"ingest", "elec2", good, "--format", "xlsx"}, "xlsx"},
		{"missing file", []string{"ingest", "elec2", filepath.Join(dir, "none.csv")}, "no such file"},
		{"bad batch id", []string{"ingest", "elec2", good, "--batch-id", "a\tb"}, "batchId"},
		{"one argument", []string{"ingest", "elec2"}, "accepts 2 arg(s)"},
		{"too large to send inline", []string{"ingest", "elec2", file("big.csv", "a,b\n"+strings.Repeat("1,2\n", 7<<18))}, "too large to send inline"},
	}
	for _, tt := range tests {
		_, _, err := execute(t, append(tt.args, "--nats", srv.URL)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one naming %q", tt.name, err, tt.want)
		}
	}
	_, js := srv.Connect(t)
	s, err := js.Stream(t.Context(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(t.Context()); err != nil || info.State.Msgs != 1 {
		t.Errorf("GYRE_EVENTS holds %d messages, want only the pipeline.applied (%v)", info.State.Msgs, err)
	}
}
