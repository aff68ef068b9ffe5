package main

import (
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/services/evaluator"
	"github.com/gyrehq/gyre/services/registry"
	"github.com/gyrehq/gyre/services/trainer"
)

const cascadeSpec = `  evaluation:
    gates:
      - {metric: accuracy, min: 0.6}
      - {metric: accuracy, minDeltaVsChampion: -1}
`

// TestModelPathCascade runs the model path of the loop in one process —
// trainer (scheduler and worker), evaluator, registry — from a drift signal
// to a promoted champion: every event of the cascade carries the trigger's
// correlationid and names its cause in causationid, and the registry's
// lineage of the version tells the same story.
func TestModelPathCascade(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	tcfg := trainer.DefaultConfig()
	tcfg.NATSURL, tcfg.Worker = env.Server.URL, "cascade"
	tr, err := trainer.New(tcfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	ecfg := evaluator.DefaultConfig()
	ecfg.NATSURL = env.Server.URL
	ev, err := evaluator.New(ecfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := registry.DefaultConfig()
	rcfg.NATSURL = env.Server.URL
	rcfg.SigningKey = looptest.SigningKeyFile(t)
	reg, err := registry.New(rcfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	env.Run(tr)
	env.Run(ev)
	env.Run(reg)

	const p = "cascade"
	env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, params: {trees: 30, maxDepth: 4}, window: {batches: 3}, cooldownBatches: 0}", cascadeSpec))
	for i, id := range []string{"b1", "b2", "b3", "b4"} {
		env.AddBatch(p, id, looptest.CSV(uint64(i+1), 400, 0))
	}
	drift := env.Emit("/gyre/monitor", p, driftDetected(p, "b4"))

	promotedEv := env.WaitEvents(p, events.ModelPromoted, 1)[0]
	chain := []event.Event{
		drift,
		only(t, env, p, events.TrainingRequested, "/gyre/trainer"),
		only(t, env, p, events.TrainingCompleted, ""),
		only(t, env, p, events.ModelEvaluated, ""),
		only(t, env, p, events.ModelRegistered, ""),
	}
	for i, e := range chain[1:] {
		cause := chain[i]
		if c := bus.Ext(e, bus.ExtCorrelationID); c != drift.ID() {
			t.Errorf("%s: correlationid %q, want the drift's %q", e.Type(), c, drift.ID())
		}
		if c := bus.Ext(e, bus.ExtCausationID); c != cause.ID() {
			t.Errorf("%s: causationid %q, want its cause %s %q", e.Type(), c, cause.Type(), cause.ID())
		}
	}
	if bus.Ext(promotedEv, bus.ExtCorrelationID) != drift.ID() || bus.Ext(promotedEv, bus.ExtCausationID) != chain[3].ID() {
		t.Errorf("model.promoted: correlationid %q causationid %q, want %q and the model.evaluated %q",
			bus.Ext(promotedEv, bus.ExtCorrelationID), bus.Ext(promotedEv, bus.ExtCausationID), drift.ID(), chain[3].ID())
	}

	req := looptest.Decode(t, chain[1], &gyrev1.TrainingRequested{})
	evaluated := looptest.Decode(t, chain[3], &gyrev1.ModelEvaluated{})
	promoted := looptest.Decode(t, promotedEv, &gyrev1.ModelPromoted{})
	if strings.Join(req.GetWindowBatchIds(), ",") != "b1,b2,b3" || req.GetReason() != trainer.ReasonDrift || req.GetCauseEventId() != drift.ID() {
		t.Fatalf("training.requested %+v", req)
	}
	if evaluated.GetVerdict() != models.VerdictBlessed || evaluated.GetEvalBatchId() != "b4" {
		t.Fatalf("model.evaluated %s on %s: %s", evaluated.GetVerdict(), evaluated.GetEvalBatchId(), evaluated.GetReason())
	}
	if promoted.GetModelVersion() != 1 || promoted.GetReason() != models.ReasonBlessed || promoted.GetMetrics()["accuracy"] != evaluated.GetCandidateMetrics()["accuracy"] ||
		promoted.GetReference().GetKey() == "" || promoted.GetArtifact().GetKey() == "" {
		t.Fatalf("model.promoted %+v", promoted)
	}

	// The registry's lineage names the same chain.
	out, _, err := execute(t, "lineage", p, "--nats="+env.Server.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range chain {
		if !strings.Contains(out, spec(e)+"  ") || !strings.Contains(out, e.ID()) {
			t.Fatalf("gyre lineage lacks %s %s:\n%s", spec(e), e.ID(), out)
		}
	}
	if !strings.Contains(out, "triggered by:") || !strings.Contains(out, "drift — drift.detected "+drift.ID()) {
		t.Fatalf("gyre lineage lacks the trigger:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "correlation id:") && !strings.HasSuffix(line, drift.ID()) {
			t.Fatalf("gyre lineage: %q, want the drift's id", line)
		}
	}

	// More data and another drift: a second version, judged against the
	// first.
	env.AddBatch(p, "b5", looptest.CSV(5, 400, 0))
	env.Emit("/gyre/monitor", p, driftDetected(p, "b5"))
	regs := env.WaitEvents(p, events.ModelRegistered, 2)
	second := looptest.Decode(t, regs[1], &gyrev1.ModelRegistered{})
	evals := env.Events(p, events.ModelEvaluated)
	if second.GetModelVersion() != 2 || len(evals) != 2 || looptest.Decode(t, evals[1], &gyrev1.ModelEvaluated{}).GetChampionVersion() != 1 {
		t.Fatalf("second version %+v, %d evaluations", second, len(evals))
	}
}

// driftDetected is a drift.detected of a batch as the monitor sends it: the
// payload contract (events/contracts.go) refuses a trigger without the
// measurement that justifies it.
func driftDetected(p, batchID string) *gyrev1.DriftDetected {
	return &gyrev1.DriftDetected{Pipeline: p, BatchId: batchID, ReferenceModelVersion: 1, Method: "psi", Threshold: 0.2,
		Features:        []*gyrev1.FeatureDrift{{Feature: "x1", Score: 0.5, Threshold: 0.2, Drifted: true, Rows: 400}},
		DriftedFeatures: []string{"x1"}, ShareDrifted: 1, ShareThreshold: 0.5, Rows: 400}
}

// only returns the one event of a name (from source, when given).
func only(t *testing.T, env *looptest.Env, p, name, source string) event.Event {
	t.Helper()
	var out []event.Event
	for _, e := range env.WaitEvents(p, name, 1) {
		if source == "" || e.Source() == source {
			out = append(out, e)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d %s events, want 1", len(out), name)
	}
	return out[0]
}

// spec returns the catalog name of an event.
func spec(e event.Event) string {
	s, _ := events.LookupType(e.Type())
	return s.Name
}
