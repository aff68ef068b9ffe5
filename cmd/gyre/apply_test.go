package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
)

// executeIn runs `gyre args...` with stdin to completion.
func executeIn(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut syncBuffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// provisioned returns a server with Gyre's topology, as 'gyre up' leaves it.
func provisioned(t *testing.T) *natstest.Server {
	t.Helper()
	srv, _, _ := servicetest.Provisioned(t)
	return srv
}

const applySpec1 = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p1}
spec:
  dataset: {label: y}
  model: {algorithm: logreg}
`

// TestApply: created, unchanged (no new revision, no new event), configured;
// the stored spec is canonical and pipeline.applied carries it.
func TestApply(t *testing.T) {
	t.Parallel()
	srv := provisioned(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "p1.yaml")
	write := func(spec string) {
		if err := os.WriteFile(file, []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		spec, stdin string
		want        string
	}{
		{spec: applySpec1, want: "pipeline/p1 created (revision 1)\n"},
		{spec: applySpec1, want: "pipeline/p1 unchanged (revision 1)\n"},
		// The same spec written differently is the same spec.
		{spec: strings.Replace(applySpec1, "{algorithm: logreg}", "\n    algorithm: logreg", 1), want: "pipeline/p1 unchanged (revision 1)\n"},
		{spec: strings.Replace(applySpec1, "logreg", "gbdt", 1), want: "pipeline/p1 configured (revision 2)\n"},
		{stdin: strings.Replace(applySpec1, "logreg", "mlp", 1), want: "pipeline/p1 configured (revision 3)\n"},
	}
	for i, s := range steps {
		args := []string{"apply", "-f", file, "--nats", srv.URL}
		if s.stdin != "" {
			args[2] = "-"
		} else {
			write(s.spec)
		}
		out, _, err := executeIn(t, s.stdin, args...)
		if err != nil || out != s.want {
			t.Fatalf("step %d: %q, %v; want %q", i, out, err, s.want)
		}
	}
	_, js := srv.Connect(t)
	ctx := context.Background()
	b, err := store.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	p, rev, err := store.Pipeline(ctx, b.Pipelines, "p1")
	if err != nil || p.Spec.Model.Algorithm != "mlp" || rev != 3 {
		t.Fatalf("stored spec: %v, rev %d, %v", p, rev, err)
	}
	s, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	var applied []*gyrev1.PipelineApplied
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			break
		}
		ev, err := bus.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var pa gyrev1.PipelineApplied
		if err := events.Decode(ev, &pa); err != nil {
			t.Fatal(err)
		}
		if ev.Source() != "/gyre/cli" {
			t.Errorf("source %q", ev.Source())
		}
		applied = append(applied, &pa)
	}
	if len(applied) != 3 {
		t.Fatalf("%d pipeline.applied events, want 3 (created, configured, configured)", len(applied))
	}
	first, last := applied[0], applied[2]
	if !first.Created || first.Revision != 1 || first.AppliedBy != "cli" || last.Created || last.Revision != 3 || last.Sha256 != p.Digest() || last.SpecJson != string(p.Canonical()) {
		t.Errorf("pipeline.applied: first %v, last %v", first, last)
	}
}

// TestApplyErrors: a spec that does not check is refused naming its field,
// and nothing is stored; so are a missing file and a missing -f.
func TestApplyErrors(t *testing.T) {
	t.Parallel()
	srv := provisioned(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(applySpec1, "logreg", "forest", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	badName := filepath.Join(dir, "name.yaml")
	if err := os.WriteFile(badName, []byte(strings.Replace(applySpec1, "{name: p1}", "{name: P_1}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  []string
	}{
		{"invalid field", []string{"apply", "-f", bad, "--nats", srv.URL}, "", []string{bad, "spec.model.algorithm"}},
		{"invalid name", []string{"apply", "-f", badName, "--nats", srv.URL}, "", []string{"metadata.name"}},
		{"invalid stdin", []string{"apply", "-f", "-", "--nats", srv.URL}, "kind: Pipeline\n", []string{"stdin", "apiVersion"}},
		{"empty stdin", []string{"apply", "-f", "-", "--nats", srv.URL}, "", []string{"stdin", "empty"}},
		{"missing file", []string{"apply", "-f", filepath.Join(dir, "none.yaml"), "--nats", srv.URL}, "", []string{"none.yaml", "no such file"}},
		{"no -f", []string{"apply", "--nats", srv.URL}, "", []string{`"filename" not set`}},
		{"no server", []string{"apply", "-f", "-", "--data-dir", dir}, applySpec1, []string{"gyre up"}},
	}
	for _, tt := range tests {
		_, _, err := executeIn(t, tt.stdin, tt.args...)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tt.name, err, w)
			}
		}
	}
	_, js := srv.Connect(t)
	kv, err := js.KeyValue(context.Background(), events.BucketPipelines)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Status(context.Background()); err != nil || st.Values() != 0 {
		t.Errorf("gyre-pipelines holds %v values after refused applies, %v", st.Values(), err)
	}
}

// TestApplyIngestHelp: the help of both commands teaches their use.
func TestApplyIngestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"apply", "--help"}, []string{"-f -", "spec.features[2].transform", "unchanged (revision N)", "Examples:"}},
		{[]string{"ingest", "--help"}, []string{"--format", "--batch-id", ".jsonl", "POST /services/ingest/v1/pipelines/PIPELINE/batches", "Examples:"}},
	}
	for _, tt := range tests {
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
