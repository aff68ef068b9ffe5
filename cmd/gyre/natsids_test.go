package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/natstest"
)

// TestUpsEmbeddedServerAdmitsOnlyGyresIdentities: `gyre up` without --nats
// is secure by default — an outsider cannot connect, each service's
// identity is confined to its own events, and the CLI finds the admin's
// seed through up.json.
func TestUpsEmbeddedServerAdmitsOnlyGyresIdentities(t *testing.T) {
	dir := t.TempDir()
	_, state, stop := runUpWith(t, dir, "--nats-listen", "127.0.0.1:0")
	defer stop()

	if _, err := nats.Connect(state.NATSURL, nats.Timeout(2*time.Second)); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("a client without credentials connected to gyre up's NATS (err %v)", err)
	}
	if want := filepath.Join(dir, natsAuthDir, "admin.nk"); state.NATSSeed != want {
		t.Fatalf("up.json names seed %q, want %q", state.NATSSeed, want)
	}
	for _, id := range events.Identities() {
		st, err := os.Stat(seedFile(filepath.Join(dir, natsAuthDir), id))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("seed of %s: %v, %v; want mode 0600", id, st, err)
		}
	}

	// Ingest's identity publishes what ingest emits, and nothing else.
	var mu sync.Mutex
	var denied []string
	opts, err := natsauth.ConnectOptions(seedFile(filepath.Join(dir, natsAuthDir), events.ServiceIngest))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(state.NATSURL, append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			mu.Lock()
			denied = append(denied, err.Error())
			mu.Unlock()
		}
	}))...)
	if err != nil {
		t.Fatalf("connect as ingest: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	received, _ := events.Subject("probe", events.DataBatchReceived)
	if _, err := js.Publish(ctx, received, []byte("{}")); err != nil {
		t.Fatalf("ingest may publish %s: %v", received, err)
	}
	promoted, _ := events.Subject("probe", events.ModelPromoted)
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, err = js.Publish(pctx, promoted, []byte("{}"))
	pcancel()
	if err == nil {
		t.Fatalf("ingest's identity published %s", promoted)
	}
	mu.Lock()
	got := strings.Join(denied, "\n")
	mu.Unlock()
	if !strings.Contains(got, `"`+promoted+`"`) {
		t.Fatalf("no permissions violation for %s from the server; got %q", promoted, got)
	}

	// The CLI connects as the admin up.json names: it applies a pipeline
	// (the bucket only the admin writes, an event only it emits) and reads
	// the event back.
	if out, stderr, err := execute(t, "apply", "-f", "../../examples/elec2/pipeline.yaml", "--data-dir", dir); err != nil || !strings.Contains(out, "pipeline/elec2 created") {
		t.Fatalf("gyre apply as the admin: %v\n%s%s", err, out, stderr)
	}
	stdout, stderr, err := execute(t, "events", "--data-dir", dir, "--pipeline", "elec2")
	if err != nil || !strings.Contains(stdout, events.PipelineApplied) {
		t.Fatalf("gyre events: %v\n%s%s", err, stdout, stderr)
	}
	// The reader's identity reads, and cannot apply.
	reader := seedFile(filepath.Join(dir, natsAuthDir), events.IdentityReader)
	if stdout, stderr, err := execute(t, "events", "--data-dir", dir, "--pipeline", "elec2", "--nats-nkey", reader); err != nil || !strings.Contains(stdout, events.PipelineApplied) {
		t.Fatalf("gyre events as the reader: %v\n%s%s", err, stdout, stderr)
	}
	spec, err := os.ReadFile("../../examples/elec2/pipeline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.yaml")
	if err := os.WriteFile(other, []byte(strings.Replace(string(spec), "name: elec2", "name: other", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := execute(t, "apply", "-f", other, "--data-dir", dir, "--nats-nkey", reader); err == nil {
		t.Fatalf("the reader applied a pipeline: %s", out)
	}
	// Another gyre up pointed at this server without its identities is
	// told what it lacks.
	_, stderr, err = execute(t, "up", "--nats", state.NATSURL, "--http", "127.0.0.1:0", "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--nats-auth-dir") {
		t.Fatalf("gyre up without credentials on a secured server: %v\n%s", err, stderr)
	}
}

// TestAuthConfigAndProducer: `gyre auth config` makes every identity once
// and writes a configuration admitting them; `gyre auth producer` adds a
// producer, which the next configuration admits; no seed is ever replaced.
func TestAuthConfigAndProducer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats-auth")
	conf := filepath.Join(dir, "gyre-auth.conf")
	if _, stderr, err := execute(t, "auth", "config", "--dir", dir, "--out", conf); err != nil || !strings.Contains(stderr, "11 identities") {
		t.Fatalf("auth config: %v %s", err, stderr)
	}
	first, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(conf); st.Mode().Perm() != 0o600 {
		t.Errorf("configuration mode %v, want 0600", st.Mode().Perm())
	}
	out, _, err := execute(t, "auth", "producer", "--pipeline", "elec2", "--dir", dir)
	if err != nil || !strings.Contains(out, "producer-elec2.nk (new)") || !strings.Contains(out, "_INBOX.producer-elec2") {
		t.Fatalf("auth producer: %v %s", err, out)
	}
	if _, _, err := execute(t, "auth", "producer", "--pipeline", "Bad.Name", "--dir", dir); err == nil {
		t.Error("a producer for an invalid pipeline name")
	}
	second, _, err := execute(t, "auth", "config", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.Users(dir)
	if err != nil || len(users) != 12 {
		t.Fatalf("%d users, %v", len(users), err)
	}
	for _, u := range users {
		if !strings.Contains(second, u.PublicKey) {
			t.Errorf("the configuration does not admit %s", u.Identity)
		}
		if u.Identity != natsauth.ProducerIdentity("elec2") && !strings.Contains(string(first), u.PublicKey) {
			t.Errorf("%s's key changed between two runs", u.Identity)
		}
	}
	if !strings.Contains(second, `"gyre.ev.elec2.data.batch.arrived"`) {
		t.Errorf("the producer of elec2 may not publish elec2's batches:\n%s", second)
	}
}

// TestUpOnASecuredOutsideServer: `gyre up --nats URL --nats-auth-dir DIR`
// runs every service with its own identity from DIR on a server that
// requires them, and the CLI gets the admin's from up.json.
func TestUpOnASecuredOutsideServer(t *testing.T) {
	srv := natstest.StartSecured(t)
	dir := t.TempDir()
	_, state, stop := runUpWith(t, dir, "--nats", srv.URL, "--nats-auth-dir", srv.SeedDir)
	defer stop()
	if state.NATSSeed != srv.Seed(events.IdentityAdmin) {
		t.Fatalf("up.json names seed %q, want the admin's %q", state.NATSSeed, srv.Seed(events.IdentityAdmin))
	}
	if out, stderr, err := execute(t, "apply", "-f", "../../examples/elec2/pipeline.yaml", "--data-dir", dir); err != nil || !strings.Contains(out, "pipeline/elec2 created") {
		t.Fatalf("gyre apply: %v\n%s%s", err, out, stderr)
	}
	// The validation service — its own identity — consumed the event.
	nc := srv.ConnectAs(t, events.IdentityAdmin)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := js.Consumer(context.Background(), events.StreamEvents, "validation_pipeline-applied")
		if err == nil && c.CachedInfo().AckFloor.Consumer >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("validation never acknowledged pipeline.applied: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
