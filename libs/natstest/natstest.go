// Package natstest gives tests a JetStream server: an embedded, in-process
// nats-server with its storage in t.TempDir(), or — when NATS_URL is set —
// the external server at that URL, so that the same tests run as component
// tests and as integration tests against a real server process.
//
// Against an external server, tests that use it run one at a time across
// every test process (a file lock), and each starts from a server without
// Gyre's streams and buckets; the server is never skipped: if NATS_URL is set
// and cannot be reached, the test fails.
package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/embednats"
	"github.com/gyrehq/gyre/libs/natsauth"
)

// EnvURL names the variable that points the tests at an external server.
const EnvURL = "NATS_URL"

// Server is a JetStream server a test can use.
type Server struct {
	// URL is the client URL.
	URL string
	// External is true when the server is the one at NATS_URL.
	External bool
	// Embedded is the in-process server (nil when External).
	Embedded *server.Server
	// StoreDir is the embedded server's JetStream directory.
	StoreDir string
}

// Start returns a server for t; everything it started is stopped at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	if url := os.Getenv(EnvURL); url != "" {
		return external(t, url)
	}
	return StartEmbedded(t, t.TempDir())
}

// StartEmbedded starts an in-process server with JetStream file storage in
// dir on a free loopback port. Restarting with the same dir keeps the data.
func StartEmbedded(t testing.TB, dir string) *Server {
	t.Helper()
	s, err := embednats.Run(embednats.Options{StoreDir: dir})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{URL: s.ClientURL(), Embedded: s, StoreDir: dir}
}

func external(t testing.TB, url string) *Server {
	t.Helper()
	lock := filepath.Join(os.TempDir(), "gyre-natstest.lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("natstest: lock %s: %v", lock, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("natstest: lock %s: %v", lock, err)
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	})
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("natstest: %s=%s is set but the server cannot be reached: %v", EnvURL, url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("natstest: %s has no JetStream: %v", url, err)
	}
	Reset(t, js)
	return &Server{URL: url, External: true}
}

// Reset deletes Gyre's streams and buckets (bus.Teardown) and the TEST_*
// streams of tests, so a test starts from an empty server.
func Reset(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.Teardown(ctx, js); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	names := js.StreamNames(ctx)
	var doomed []string
	for n := range names.Name() {
		if strings.HasPrefix(n, "TEST_") {
			doomed = append(doomed, n)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatalf("natstest: list streams: %v", err)
	}
	for _, n := range doomed {
		if err := js.DeleteStream(ctx, n); err != nil {
			t.Fatalf("natstest: delete stream %s: %v", n, err)
		}
	}
}

// Connect returns a connection and JetStream context to s, closed at cleanup.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", s.URL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return nc, js
}

// StartCluster starts n in-process servers forming one JetStream cluster on
// loopback, each storing in its own t.TempDir(), and returns them once the
// cluster has a JetStream meta leader (it can create replicated streams).
// Every one is stopped at cleanup. Tests of replication use it: a single
// server refuses a stream of more than one replica.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		// A free port for each node's route listener: the routes must be
		// known before the nodes start.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	out := make([]*Server, n)
	for i := range n {
		dir := t.TempDir()
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   dir,
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		})
		if err != nil {
			t.Fatalf("natstest: node %d: %v", i+1, err)
		}
		s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("natstest: node %d did not accept clients in 10s", i+1)
		}
		out[i] = &Server{URL: s.ClientURL(), Embedded: s, StoreDir: dir}
	}
	// The cluster is usable once JetStream has a meta leader: until then
	// every JetStream request fails.
	_, js := out[0].Connect(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: the %d-node cluster has no JetStream leader after 30s: %v", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Secured is an embedded server that accepts Gyre's identities only, as
// `gyre up`'s does: every service, the admin, the reader, a producer of
// every pipeline and one of pipeline elec2, their seeds in SeedDir.
type Secured struct {
	*Server
	// SeedDir holds <identity>.nk for each identity.
	SeedDir string
}

// StartSecured starts an embedded server that requires credentials. It is
// always in-process: the external server of NATS_URL has no users.
func StartSecured(t testing.TB) *Secured {
	t.Helper()
	dir := t.TempDir()
	seeds := filepath.Join(dir, "seeds")
	for _, p := range []string{"", "elec2"} {
		if _, _, err := natsauth.EnsureIdentity(seeds, natsauth.ProducerIdentity(p)); err != nil {
			t.Fatalf("natstest: %v", err)
		}
	}
	users, err := natsauth.EnsureAll(seeds)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	var nkeyUsers []*server.NkeyUser
	for _, u := range users {
		nu, err := u.NkeyUser()
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		nkeyUsers = append(nkeyUsers, nu)
	}
	s, err := embednats.Run(embednats.Options{StoreDir: filepath.Join(dir, "js"), Users: nkeyUsers})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Secured{Server: &Server{URL: s.ClientURL(), Embedded: s, StoreDir: filepath.Join(dir, "js")}, SeedDir: seeds}
}

// Seed returns the seed file of an identity.
func (s *Secured) Seed(identity string) string {
	return filepath.Join(s.SeedDir, identity+natsauth.SeedExt)
}

// ConnectAs connects as an identity (see natsauth.ConnectOptions); the
// connection closes at cleanup.
func (s *Secured) ConnectAs(t testing.TB, identity string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	idOpts, err := natsauth.ConnectOptions(s.Seed(identity))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	nc, err := nats.Connect(s.URL, append(idOpts, opts...)...)
	if err != nil {
		t.Fatalf("natstest: connect as %s: %v", identity, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
