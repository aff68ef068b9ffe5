package feature_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// requireTool returns the path of a program a test runs: $env, else name
// on PATH. Without one the test is skipped with a hint, except in CI (CI
// set), where it fails: CI must run what the test checks.
func requireTool(t *testing.T, env, name, hint string) string {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		name = v
	}
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not available (%v); install it (%s) or set %s", name, err, hint, env)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// redisServer is a redis-server process of the test's own, on a free port,
// that the test stops and starts again (an outage). It keeps its data
// across restarts in an append-only file, as a production Redis would.
type redisServer struct {
	t    *testing.T
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts Debian's redis-server (package redis-server; env
// GYRE_REDIS_SERVER names another binary) and stops it when the test ends.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin := requireTool(t, "GYRE_REDIS_SERVER", "redis-server", "apt-get install redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &redisServer{t: t, bin: bin, dir: t.TempDir(), port: port}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// Addr is host:port.
func (r *redisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// URL is what --redis takes.
func (r *redisServer) URL() string { return "redis://" + r.Addr() }

// Client returns a client of the server, closed when the test ends.
func (r *redisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: time.Second})
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

// start starts the server and waits until it answers PING.
func (r *redisServer) start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		r.t.Fatal("redis-server is running already")
	}
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--protected-mode", "no",
		"--dir", r.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", r.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.cmd, r.done = cmd, done
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			r.t.Fatalf("redis-server exited at start: %s", r.logTail())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s not answering after 15s (%v): %s", r.Addr(), err, r.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts the server down (SIGTERM: it syncs its append-only file and
// exits) and waits until it has exited; a no-op when it is not running.
func (r *redisServer) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}

func (r *redisServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	lines := strings.Split(string(bytes.TrimSpace(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// countKeys counts the keys matching pattern.
func countKeys(t *testing.T, c *redis.Client, pattern string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("redis scan %s: %v", pattern, err)
	}
	return n
}
