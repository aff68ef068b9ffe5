package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// invocation is a gyre command running in-process.
type invocation struct {
	stdout, stderr syncBuffer
	done           chan struct{} // closed when the command returned; err is set then
	err            error
}

// start runs `gyre args...` in-process until ctx ends or it returns.
func start(ctx context.Context, args ...string) *invocation {
	inv := &invocation{done: make(chan struct{})}
	cmd := newRootCmd(&inv.stdout, &inv.stderr)
	cmd.SetArgs(args)
	go func() {
		inv.err = cmd.ExecuteContext(ctx)
		close(inv.done)
	}()
	return inv
}

// execute runs `gyre args...` to completion (bounded by a minute).
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inv := start(ctx, args...)
	<-inv.done
	return inv.stdout.String(), inv.stderr.String(), inv.err
}

func TestVersion(t *testing.T) {
	t.Parallel()
	out, _, err := execute(t, "version")
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	for _, want := range []string{"gyre dev", "go: go1.", "module: github.com/gyrehq/gyre/cmd/gyre"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

func TestHelpTeaches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"continuous-ML", "gyre up", "gyre events -f"}},
		{[]string{"up", "--help"}, []string{"--nats-listen", "/services/<name>/", "up.json", "unchanged", "Examples:"}},
		{[]string{"events", "--help"}, []string{"--follow", "model.promoted", "-o json", "Examples:"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			out, _, err := execute(t, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v", tt.args, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("%v output lacks %q", tt.args, w)
				}
			}
		})
	}
}
