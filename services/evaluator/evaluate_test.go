package evaluator_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/evaluator"
)

const gates = `  evaluation:
    gates:
      - {metric: accuracy, min: %v}
      - {metric: accuracy, minDeltaVsChampion: 0.0}
`

// TestEvaluate scores candidates on the newest batch outside their window,
// against the champion when there is one, and reports every gate.
func TestEvaluate(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	cfg := evaluator.DefaultConfig()
	cfg.NATSURL = env.Server.URL
	svc, err := evaluator.New(cfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	env.Run(svc)

	good := [][]byte{looptest.CSV(1, 300, 0), looptest.CSV(2, 300, 0)}
	// A model of another concept (the boundary moved): worse on today's data.
	stale := [][]byte{looptest.CSV(1, 300, 0.7), looptest.CSV(2, 300, 0.7)}
	tests := []struct {
		name      string
		min       float64
		champion  [][]byte // nil: no champion
		candidate [][]byte
		newest    bool // a validated batch after the window
		verdict   string
		failed    []string // kinds of the failed gates
		reason    string
	}{
		{"first model", 0.55, nil, good, true, models.VerdictBlessed, nil, "no champion on batch b3"},
		{"better than the champion", 0.55, stale, good, true, models.VerdictBlessed, nil, "vs champion v1"},
		{"worse than the champion", 0.55, good, stale, true, models.VerdictRejected, []string{evaluator.KindMinDeltaVsChampion}, "1 of 2 gates failed"},
		{"under the absolute bound", 0.99, nil, good, true, models.VerdictRejected, []string{evaluator.KindMin}, "1 of 2 gates failed"},
		{"in-sample", 0.55, nil, good, false, models.VerdictBlessed, nil, "on batch b2 (300 rows, in-sample"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := fmt.Sprintf("eval-%d", i)
			spec := env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, params: {trees: 20, maxDepth: 3}}", fmt.Sprintf(gates, tt.min)))
			env.AddBatch(p, "b1", looptest.CSV(1, 300, 0))
			env.AddBatch(p, "b2", looptest.CSV(2, 300, 0))
			if tt.newest {
				env.AddBatch(p, "b3", looptest.CSV(3, 300, 0))
			}
			if tt.champion != nil {
				ref := env.StoreBundle(spec, "champion-request", tt.champion...)
				if _, err := store.PutJSON(env.Ctx(), env.Buckets.Registry, p, models.Registry{
					Pipeline: p,
					Versions: []models.Version{{Version: 1, RequestID: "champion-request", Verdict: models.VerdictBlessed, Artifact: models.ObjectFromProto(ref)}},
					Aliases:  map[string]int64{models.AliasChampion: 1},
				}); err != nil {
					t.Fatal(err)
				}
			}
			art := env.StoreBundle(spec, "candidate-request", tt.candidate...)
			completed := env.Emit("/gyre/trainer", p, &gyrev1.TrainingCompleted{
				Pipeline: p, RequestId: "candidate-request", JobId: "job-1", Algorithm: "gbdt",
				Metrics: map[string]float64{"accuracy": 0.9}, Artifact: art,
				Reference: &gyrev1.ObjectRef{Bucket: events.ObjectModels, Key: p + "/candidate-request.reference.json"},
				Schema:    &gyrev1.ModelSchema{Features: []string{"x1", "x2", "color"}, Label: "class"},
				Lineage: &gyrev1.Lineage{BatchIds: []string{"b1", "b2"}, TrainingRequestId: "candidate-request",
					DatasetVersion: "dv", EventIds: []string{"cause", "request"}},
			})
			evs := env.WaitEvents(p, events.ModelEvaluated, 1)
			got := looptest.Decode(t, evs[0], &gyrev1.ModelEvaluated{})
			if got.GetVerdict() != tt.verdict || !strings.Contains(got.GetReason(), tt.reason) {
				t.Fatalf("verdict %q, reason %q; want %q and a reason with %q\ngates: %v", got.GetVerdict(), got.GetReason(), tt.verdict, tt.reason, got.GetGates())
			}
			if len(got.GetGates()) != 2 {
				t.Fatalf("%d gates, want 2", len(got.GetGates()))
			}
			var failed []string
			for _, g := range got.GetGates() {
				if !g.GetPassed() {
					failed = append(failed, g.GetKind())
				}
				if g.GetMessage() == "" {
					t.Fatalf("gate %+v has no message", g)
				}
			}
			if fmt.Sprint(failed) != fmt.Sprint(tt.failed) {
				t.Fatalf("failed gates %v, want %v: %v", failed, tt.failed, got.GetGates())
			}
			acc := got.GetCandidateMetrics()["accuracy"]
			if tt.champion == nil {
				if got.GetChampionVersion() != 0 || len(got.GetChampionMetrics()) != 0 || got.GetGates()[1].GetChampionValue() != 0 {
					t.Fatalf("champion %d %v without a champion", got.GetChampionVersion(), got.GetChampionMetrics())
				}
			} else {
				champ := got.GetChampionMetrics()["accuracy"]
				delta := got.GetGates()[1]
				if got.GetChampionVersion() != 1 || champ == 0 || delta.GetChampionValue() != champ || !near(delta.GetValue(), acc-champ) {
					t.Fatalf("champion v%d %v, delta gate %+v (candidate %v)", got.GetChampionVersion(), got.GetChampionMetrics(), delta, acc)
				}
			}
			wantBatch := "b3"
			if !tt.newest {
				wantBatch = "b2"
			}
			if got.GetEvalBatchId() != wantBatch || got.GetEvalRows() != 300 || acc == 0 {
				t.Fatalf("evaluated on %s (%d rows): %v", got.GetEvalBatchId(), got.GetEvalRows(), got.GetCandidateMetrics())
			}
			// What the registry needs travels with the verdict.
			if got.GetCandidateArtifact().GetSha256() != art.GetSha256() || got.GetReference().GetKey() == "" ||
				got.GetTrainingMetrics()["accuracy"] != 0.9 || got.GetSchema().GetLabel() != "class" || got.GetAlgorithm() != "gbdt" ||
				fmt.Sprint(got.GetLineage().GetEventIds()) != fmt.Sprint([]string{"cause", "request", evs[0].ID()}) {
				t.Fatalf("model.evaluated %+v", got)
			}
			if bus.Ext(evs[0], bus.ExtCausationID) != completed.ID() || evs[0].ID() != bus.StableID(events.ModelEvaluated, p, "candidate-request") {
				t.Fatalf("id %s, causationid %q; want a stable id caused by %s", evs[0].ID(), bus.Ext(evs[0], bus.ExtCausationID), completed.ID())
			}
		})
	}
}
