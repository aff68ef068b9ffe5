package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/natsauth"
)

// securedServer runs Debian's nats-server (the real server, the version
// operators run) with the configuration `gyre auth config` writes: it
// admits Gyre's identities only, each with its permissions.
type securedServer struct {
	url   string
	seeds string
}

func startSecuredServer(t *testing.T) *securedServer {
	t.Helper()
	bin := requireTool(t, "GYRE_NATS_SERVER", "nats-server", "nats-server")
	dir := t.TempDir()
	seeds := filepath.Join(dir, "nats-auth")
	if _, _, err := natsauth.EnsureIdentity(seeds, natsauth.ProducerIdentity("elec2")); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.EnsureAll(seeds)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := natsauth.ServerConfig(users)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gyre-auth.conf"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := filepath.Join(dir, "nats.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:%d\nmax_payload: 8MB\njetstream { store_dir: %q }\ninclude ./gyre-auth.conf\n", port, filepath.Join(dir, "js"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("--- nats-server ---\n%s", tail(log.String(), 4000))
		}
	})
	s := &securedServer{url: fmt.Sprintf("nats://127.0.0.1:%d", port), seeds: seeds}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := s.connect(events.IdentityAdmin)
		if err == nil {
			nc.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server with Gyre's identities never took the admin: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *securedServer) seed(identity string) string {
	return filepath.Join(s.seeds, identity+natsauth.SeedExt)
}

func (s *securedServer) connect(identity string) (*nats.Conn, error) {
	opts, err := natsauth.ConnectOptions(s.seed(identity))
	if err != nil {
		return nil, err
	}
	return nats.Connect(s.url, opts...)
}

// TestLoopOnASecuredServer runs every service as its own process, each
// with its own identity (--nats-nkey), on the real server configured by
// `gyre auth config`'s output, from an empty server: the services create
// the topology they may create, the admin applies the pipeline, a
// producer's identity publishes the batches, and the loop deploys a model
// without a single permissions violation in any service's log.
func TestLoopOnASecuredServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs eight services")
	}
	srv := startSecuredServer(t)
	if _, err := nats.Connect(srv.url, nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("the secured server admitted a client without credentials")
	}
	dir := t.TempDir()
	var procs []*serviceProcess
	for _, name := range loopServices {
		procs = append(procs, startService(t, name, buildService(t, dir, name), srv.url, "--nats-nkey", srv.seed(name)))
	}
	admin, err := srv.connect(events.IdentityAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	feedElec2(ctx, t, ajs)
	// One more batch from the producer of elec2.
	producer, err := srv.connect(natsauth.ProducerIdentity("elec2"))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	pjs, err := jetstream.New(producer)
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := events.Subject("elec2", events.DataBatchArrived)
	ev := producerBatch(t, "producer-0001", elec2Slice(t, 4, 1000)[3])
	body, err := ev.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pjs.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: nats.Header{"content-type": {"application/cloudevents+json"}}, Data: body}); err != nil {
		t.Fatalf("the producer's batch: %v", err)
	}
	waitEvent(t, ajs, "elec2", events.DeploymentCompleted, 2*time.Minute)
	for _, p := range procs {
		if logs := p.logs(); strings.Contains(strings.ToLower(logs), "permissions violation") {
			t.Errorf("%s was refused something it needs:\n%s", p.name, grepLines(logs, "ermissions"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// producerBatch is a data.batch.arrived of elec2 as a producer outside
// Gyre sends it.
func producerBatch(t *testing.T, id string, content []byte) event.Event {
	t.Helper()
	ev, err := events.New("/producer/secured", "elec2", &gyrev1.DataBatchArrived{
		Pipeline: "elec2", BatchId: id, Format: "csv", Content: content,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
