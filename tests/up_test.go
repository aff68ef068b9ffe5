package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
)

// repoRoot finds the workspace root: the directory of go.work, or the parent
// of this module.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	if err == nil {
		if gowork := strings.TrimSpace(string(out)); gowork != "" && gowork != "off" {
			return filepath.Dir(gowork)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildGyre builds cmd/gyre into dir and returns the binary's path.
func buildGyre(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "gyre")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gyre")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gyre: %v\n%s", err, out)
	}
	return bin
}

// upOnServer starts `gyre up` as its own process against a test server of
// its own, and returns that server's JetStream API, up's HTTP URL, as
// up.json records it, and its data dir (where its tokens are).
func upOnServer(t *testing.T) (jetstream.JetStream, string, string) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	dir := t.TempDir()
	startUp(t, buildGyre(t, dir), "--nats", srv.URL, "--http", "127.0.0.1:0", "--data-dir", dir)
	var state struct {
		HTTPURL string `json:"httpURL"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "up.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &state); err != nil || state.HTTPURL == "" {
		t.Fatalf("up.json %s: %v", b, err)
	}
	return js, state.HTTPURL, dir
}

// upProcess is `gyre up` running as its own OS process.
type upProcess struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout []string
	ready  chan struct{}
	eof    chan struct{}
	stderr strings.Builder
}

func (p *upProcess) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

// startUp starts the binary and returns once it printed that it is ready.
func startUp(t *testing.T, bin string, args ...string) *upProcess {
	t.Helper()
	p := &upProcess{cmd: exec.Command(bin, append([]string{"up"}, args...)...), ready: make(chan struct{}), eof: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start gyre up: %v", err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	go p.read(out)
	select {
	case <-p.ready:
	case <-p.eof:
		_ = p.cmd.Wait()
		t.Fatalf("gyre up exited before it was ready (%v)\nstdout:\n%s\nstderr:\n%s", p.cmd.ProcessState, strings.Join(p.lines(), "\n"), p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("gyre up not ready after 60s\nstdout:\n%s", strings.Join(p.lines(), "\n"))
	}
	return p
}

func (p *upProcess) read(r io.Reader) {
	defer close(p.eof)
	sc := bufio.NewScanner(r)
	readyOnce := sync.OnceFunc(func() { close(p.ready) })
	for sc.Scan() {
		p.mu.Lock()
		p.stdout = append(p.stdout, sc.Text())
		p.mu.Unlock()
		if strings.HasPrefix(sc.Text(), "Ready.") {
			readyOnce()
		}
	}
}

// interrupt sends SIGINT, as Ctrl-C does, and requires exit status 0.
func (p *upProcess) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT: %v", err)
	}
	select {
	case <-p.eof:
	case <-time.After(30 * time.Second):
		t.Fatal("gyre up did not exit within 30s of SIGINT")
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("gyre up after SIGINT: %v (want exit status 0)\nstderr:\n%s", err, p.stderr.String())
	}
}

// report returns the provisioning report: resource → action.
func (p *upProcess) report(t *testing.T) map[string]string {
	t.Helper()
	report := map[string]string{}
	in := false
	for _, l := range p.lines() {
		if strings.HasPrefix(l, "Provisioning the topology on ") {
			in = true
			continue
		}
		if !in {
			continue
		}
		f := strings.Fields(l)
		if len(f) == 0 {
			break
		}
		if len(f) < 3 {
			t.Fatalf("report line %q: want kind, name, action", l)
		}
		report[f[0]+" "+f[1]] = f[2]
	}
	return report
}

// snapshot is what must not change when gyre up runs again.
type snapshot struct {
	streamCreated map[string]time.Time
	consumers     map[string]jetstream.ConsumerConfig
}

func takeSnapshot(t *testing.T, js jetstream.JetStream) snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := snapshot{streamCreated: map[string]time.Time{}, consumers: map[string]jetstream.ConsumerConfig{}}
	for _, name := range []string{events.StreamEvents, events.StreamDLQ, events.StreamJobs, events.StreamPredictions} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		s.streamCreated[name] = st.CachedInfo().Created
	}
	for _, c := range events.DurableConsumers() {
		cons, err := js.Consumer(ctx, c.Stream, c.Durable())
		if err != nil {
			t.Fatalf("consumer %s/%s: %v", c.Stream, c.Durable(), err)
		}
		s.consumers[c.Stream+"/"+c.Durable()] = cons.CachedInfo().Config
	}
	for _, kv := range events.KeyValues() {
		if _, err := js.KeyValue(ctx, kv.Bucket); err != nil {
			t.Fatalf("kv bucket %s: %v", kv.Bucket, err)
		}
	}
	for _, obj := range events.ObjectStores() {
		if _, err := js.ObjectStore(ctx, obj.Bucket); err != nil {
			t.Fatalf("object store %s: %v", obj.Bucket, err)
		}
	}
	return s
}

// TestUpAsProcess runs the gyre binary as its own process against a separate
// server (the real one at NATS_URL in integration runs): it provisions everything, stops cleanly on SIGINT,
// and a second run changes nothing.
func TestUpAsProcess(t *testing.T) {
	// The server of natstest: the real server process when NATS_URL is set
	// (make test-integration, CI), else an embedded one — gyre up runs as its
	// own OS process against it either way.
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	tmp := t.TempDir()
	bin := buildGyre(t, tmp)
	args := []string{"--nats", srv.URL, "--http", "127.0.0.1:0", "--data-dir", tmp}
	topology := bus.FullTopology()
	want := len(topology.Streams) + len(events.DurableConsumers()) + len(topology.KeyValues) + len(topology.ObjectStores)

	first := startUp(t, bin, args...)
	if _, err := os.Stat(filepath.Join(tmp, "up.json")); err != nil {
		t.Errorf("up.json while running: %v", err)
	}
	first.interrupt(t)
	if _, err := os.Stat(filepath.Join(tmp, "up.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("up.json after a clean exit: %v, want it removed", err)
	}
	report := first.report(t)
	if len(report) != want {
		t.Fatalf("first report has %d resources, want %d: %v", len(report), want, report)
	}
	for res, action := range report {
		if action != string(bus.Created) {
			t.Errorf("first run on a reset server: %s %s, want created", res, action)
		}
	}
	before := takeSnapshot(t, js)

	second := startUp(t, bin, args...)
	second.interrupt(t)
	report = second.report(t)
	if len(report) != want {
		t.Fatalf("second report has %d resources, want %d: %v", len(report), want, report)
	}
	for res, action := range report {
		if action != string(bus.Unchanged) {
			t.Errorf("second run: %s %s, want unchanged", res, action)
		}
	}
	after := takeSnapshot(t, js)
	for name, created := range before.streamCreated {
		if !after.streamCreated[name].Equal(created) {
			t.Errorf("stream %s recreated: created %s, then %s", name, created, after.streamCreated[name])
		}
	}
	for name, cfg := range before.consumers {
		if !reflect.DeepEqual(after.consumers[name], cfg) {
			t.Errorf("consumer %s config changed:\nbefore %+v\nafter  %+v", name, cfg, after.consumers[name])
		}
	}
}
