package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
)

// loopServices are the services of the loop, each run as its own process.
var loopServices = []string{
	events.ServiceIngest, events.ServiceValidation, events.ServiceFeature, events.ServiceMonitor,
	events.ServiceTrainer, events.ServiceEvaluator, events.ServiceRegistry, events.ServiceDeployer,
}

// buildService builds one service's command into dir.
func buildService(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./services/"+name+"/cmd/"+name)
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// serviceProcess is one service running as an OS process.
type serviceProcess struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
}

func (p *serviceProcess) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (b lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// startService runs bin against natsURL until the test ends (SIGTERM, then
// a wait), or until the test kills it.
func startService(t *testing.T, name, bin, natsURL string, args ...string) *serviceProcess {
	t.Helper()
	p := &serviceProcess{name: name, log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	// The registry signs every version with the test process's key; the
	// deployer serves only what that key signed.
	switch filepath.Base(bin) {
	case events.ServiceRegistry:
		args = append(args, "--signing-key", looptest.SigningKeyFile(t))
	case events.ServiceDeployer:
		args = append(args, "--verify-keys", looptest.VerifyKeyFile(t))
	}
	// The tests here drive the services' APIs without tokens: HTTP
	// authentication has tests of its own (libs/httpauth, libs/service,
	// services/ingest's process tests).
	p.cmd = exec.Command(bin, append([]string{"--nats", natsURL, "--http", "127.0.0.1:0", "--log-level", "info", "--http-auth", "none"}, args...)...)
	p.cmd.Stdout = lockedBuffer{p.mu, p.log}
	p.cmd.Stderr = lockedBuffer{p.mu, p.log}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState != nil {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- %s logs ---\n%s", name, tail(p.logs(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// elec2Slice reads the first rows of the shipped Elec2 file, cut into batches.
func elec2Slice(t *testing.T, batches, rows int) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "examples", "elec2", "elec2.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	header, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for b := 0; b < batches; b++ {
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		_ = w.Write(header)
		for i := 0; i < rows; i++ {
			rec, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			_ = w.Write(rec)
		}
		w.Flush()
		out = append(out, buf.Bytes())
	}
	return out
}

// feedElec2 applies examples/elec2/pipeline.yaml and publishes three
// batches of 1,000 rows: bootstrap needs spec.model.bootstrapBatches
// validated batches (2) and keeps one more for evaluation.
func feedElec2(ctx context.Context, t *testing.T, js jetstream.JetStream) *store.Buckets {
	t.Helper()
	spec, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "elec2", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return feedPipeline(ctx, t, js, spec, elec2Slice(t, 3, 1000))
}

// feedPipeline waits until the services have provisioned the buckets, applies
// the spec and publishes the batches as data.batch.arrived, in order.
func feedPipeline(ctx context.Context, t *testing.T, js jetstream.JetStream, spec []byte, batches [][]byte) *store.Buckets {
	t.Helper()
	var b *store.Buckets
	for b == nil {
		var err error
		if b, err = store.Open(ctx, js); err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("buckets never provisioned: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	p, err := pipeline.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(js, "e2e")
	if _, err := store.ApplyPipeline(ctx, js, pub, p, "e2e"); err != nil {
		t.Fatal(err)
	}
	for i, content := range batches {
		ev, err := events.New("/e2e/producer", p.Name(), &gyrev1.DataBatchArrived{
			Pipeline: p.Name(), BatchId: fmt.Sprintf("%s-%03d", p.Name(), i+1), Format: "csv", Content: content,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// waitEvent waits for the first stored event of a name for the pipeline.
func waitEvent(t *testing.T, js jetstream.JetStream, pipelineName, name string, timeout time.Duration) event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, ev := range storedEvents(t, js, pipelineName) {
			if ev.Type() == events.Type(name) {
				return ev
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no %s event for %s within %s", name, pipelineName, timeout)
	return event.Event{}
}

// storedEvents returns every lifecycle event of the pipeline, oldest first.
func storedEvents(t *testing.T, js jetstream.JetStream, pipelineName string) []event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	filter, _ := events.FilterSubject(pipelineName, "")
	c, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	for n := int(info.NumPending); len(out) < n; {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			ev, err := bus.Decode(m.Headers(), m.Data())
			if err != nil {
				t.Fatalf("undecodable event on %s: %v", m.Subject(), err)
			}
			out = append(out, ev)
		}
		if got == 0 {
			break
		}
	}
	return out
}

// TestLoopCascadeAcrossProcesses runs each service of the loop as its own OS
// process against the server (the real one at NATS_URL in integration runs),
// streams a slice of Elec2, and follows the cascade the first batches cause:
// trigger → training.completed → model.evaluated → model.promoted →
// deployment.completed, under one correlationid, each causationid naming
// the event before it.
func TestLoopCascadeAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs eight services")
	}
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	dir := t.TempDir()
	for _, name := range loopServices {
		startService(t, name, buildService(t, dir, name), srv.URL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	feedElec2(ctx, t, js)

	deployed := waitEvent(t, js, "elec2", events.DeploymentCompleted, 2*time.Minute)
	all := storedEvents(t, js, "elec2")
	byID := map[string]event.Event{}
	for _, ev := range all {
		byID[ev.ID()] = ev
	}
	// Walk back from deployment.completed along causationid.
	chain := []event.Event{deployed}
	for cur := deployed; ; {
		cause, ok := byID[bus.Ext(cur, bus.ExtCausationID)]
		if !ok {
			break
		}
		chain = append([]event.Event{cause}, chain...)
		cur = cause
	}
	var names []string
	for _, ev := range chain {
		s, _ := events.LookupType(ev.Type())
		names = append(names, s.Name)
	}
	got := strings.Join(names, " → ")
	for _, want := range []string{events.TrainingRequested, events.TrainingCompleted, events.ModelEvaluated, events.ModelPromoted, events.DeploymentCompleted} {
		if !strings.Contains(got, want) {
			t.Errorf("cascade %s lacks %s", got, want)
		}
	}
	if names[0] != events.DataBatchArrived {
		t.Errorf("cascade starts at %s, want the data.batch.arrived that triggered it: %s", names[0], got)
	}
	corr := bus.Ext(chain[0], bus.ExtCorrelationID)
	for _, ev := range chain {
		if c := bus.Ext(ev, bus.ExtCorrelationID); c != corr {
			t.Errorf("%s has correlationid %s, want %s", ev.Type(), c, corr)
		}
	}
	// model.registered is the sibling of model.promoted: same cause.
	registered := false
	for _, ev := range all {
		if ev.Type() == events.Type(events.ModelRegistered) {
			for _, c := range chain {
				if c.Type() == events.Type(events.ModelEvaluated) && bus.Ext(ev, bus.ExtCausationID) == c.ID() {
					registered = true
				}
			}
		}
	}
	if !registered {
		t.Error("no model.registered caused by the cascade's model.evaluated")
	}
	t.Logf("cascade: %s (correlationid %s)", got, corr)
}
