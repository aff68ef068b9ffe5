package tests

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/natstest"
)

// slowSpec trains a model big enough (thousands of deep trees) that a worker
// can be killed while it trains.
const slowSpec = `
apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: slow}
spec:
  dataset: {label: class}
  model:
    algorithm: gbdt
    params: {trees: 2500, maxDepth: 10, maxLeaves: 255, minSamplesLeaf: 2, learningRate: 0.01}
  evaluation:
    gates: [{metric: accuracy, min: 0.5}]
`

// TestTrainerKilledMidTraining SIGKILLs the trainer while it trains: the job
// is redelivered to a new trainer process, completes once, and the registry
// holds one version for it.
func TestTrainerKilledMidTraining(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services; waits for a redelivery")
	}
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	dir := t.TempDir()
	var trainerBin string
	for _, name := range loopServices {
		bin := buildService(t, dir, name)
		if name == events.ServiceTrainer {
			trainerBin = bin
			continue
		}
		startService(t, name, bin, srv.URL)
	}
	first := startService(t, "trainer-1", trainerBin, srv.URL)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := feedPipeline(ctx, t, js, []byte(slowSpec), elec2Slice(t, 3, 2000))

	started := waitEvent(t, js, "slow", events.TrainingStarted, 2*time.Minute)
	var st gyrev1.TrainingStarted
	if err := events.Decode(started, &st); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // well inside a multi-second training run
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	for _, ev := range storedEvents(t, js, "slow") {
		if ev.Type() == events.Type(events.TrainingCompleted) {
			t.Fatal("training completed before the worker was killed: make the test's model bigger")
		}
	}
	t.Logf("killed trainer-1 while it trained request %s; starting trainer-2", st.GetRequestId())
	startService(t, "trainer-2", trainerBin, srv.URL)

	// The job comes back after the consumer's AckWait and completes once.
	waitEvent(t, js, "slow", events.ModelRegistered, 3*time.Minute)
	time.Sleep(2 * time.Second) // let any duplicate show itself
	completed := 0
	for _, ev := range storedEvents(t, js, "slow") {
		if ev.Type() != events.Type(events.TrainingCompleted) {
			continue
		}
		var m gyrev1.TrainingCompleted
		if err := events.Decode(ev, &m); err != nil {
			t.Fatal(err)
		}
		if m.GetRequestId() == st.GetRequestId() {
			completed++
		}
	}
	if completed != 1 {
		t.Errorf("request %s completed %d times, want once", st.GetRequestId(), completed)
	}
	reg, _, found, err := models.Get(ctx, b.Registry, "slow")
	if err != nil || !found {
		t.Fatalf("registry: %v (found %v)", err, found)
	}
	versions := 0
	for _, v := range reg.Versions {
		if v.RequestID == st.GetRequestId() {
			versions++
		}
	}
	if versions != 1 {
		t.Errorf("registry holds %d versions for request %s, want 1", versions, st.GetRequestId())
	}
}
