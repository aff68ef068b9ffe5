package registry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/services/registry"
)

// judgedAgainst is an evaluation judged against champion n (0: none).
func judgedAgainst(p, requestID string, n int64) *gyrev1.ModelEvaluated {
	ev := evaluated(p, requestID, models.VerdictBlessed, 0.8)
	ev.ChampionAtEvaluation = proto.Int64(n)
	return ev
}

func metricsText(t *testing.T, svc *registry.Service) string {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// TestStaleVerdictIsNotPromoted: two candidates judged against the same
// champion; the first is promoted, the second — delivered late, as after a
// registry crash — is registered but never promoted over a champion it was
// not compared with, and the refusal is counted.
func TestStaleVerdictIsNotPromoted(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	svc := startRegistry(t, env)
	const p = "stale"
	env.Emit("/gyre/evaluator", p, judgedAgainst(p, "first", 0))
	env.Emit("/gyre/evaluator", p, judgedAgainst(p, "second", 0))
	env.WaitConsumed(events.EventConsumer(registry.Name, "model-evaluated", events.ModelEvaluated))

	rec, _, _, err := models.Get(env.Ctx(), env.Buckets.Registry, p)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Aliases[models.AliasChampion] != 1 || len(rec.Versions) != 2 {
		t.Fatalf("aliases %v, %d versions; want champion 1 of 2", rec.Aliases, len(rec.Versions))
	}
	// Every version is signed: deployers trust the registry's key.
	keys, err := signing.LoadPublicKeys(looptest.VerifyKeyFile(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range rec.Versions {
		if err := signing.NewVerifier(keys...).Verify(v.Subject(p), v.Signature); err != nil {
			t.Errorf("version %d: %v", v.Version, err)
		}
	}
	v2 := rec.Versions[1]
	last := v2.Gates[len(v2.Gates)-1]
	if v2.Verdict != models.VerdictRejected || !strings.Contains(v2.Reason, "judged against no champion, but v1 is champion now") ||
		last.Metric != registry.GateChampion || last.Passed {
		t.Fatalf("version 2: verdict %s, reason %q, gates %+v", v2.Verdict, v2.Reason, v2.Gates)
	}
	if n := len(env.Events(p, events.ModelPromoted)); n != 1 {
		t.Fatalf("%d model.promoted, want 1", n)
	}
	if m := metricsText(t, svc); !strings.Contains(m, `gyre_stale_ignored_total{kind="verdict",service="registry"} 1`) {
		t.Fatalf("no stale verdict counted:\n%s", grepLines(m, "stale"))
	}
}

// TestRolledBackMovesChampionBack: the deployer rolling a canary back moves
// champion in the registry back to what kept serving, in one model.promoted
// that names the cause and the figures; previous never points at a version
// that failed its rollout; a rollback of a superseded deployment is stale.
func TestRolledBackMovesChampionBack(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	svc := startRegistry(t, env)
	const p = "rb"
	consumed := func(handler, name string) {
		t.Helper()
		env.WaitConsumed(events.EventConsumer(registry.Name, handler, name))
	}
	record := func() *models.Registry {
		t.Helper()
		rec, _, _, err := models.Get(env.Ctx(), env.Buckets.Registry, p)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}

	env.Emit("/gyre/evaluator", p, judgedAgainst(p, "r1", 0))
	consumed("model-evaluated", events.ModelEvaluated)
	env.Emit("/gyre/deployer", p, &gyrev1.DeploymentCompleted{Pipeline: p, DeploymentId: "d1", ModelVersion: 1, Generation: 1})
	consumed("deployment-completed", events.DeploymentCompleted)
	env.Emit("/gyre/evaluator", p, judgedAgainst(p, "r2", 1))
	consumed("model-evaluated", events.ModelEvaluated)
	if rec := record(); rec.Aliases[models.AliasChampion] != 2 || rec.Aliases[models.AliasPrevious] != 1 || rec.Generation() != 2 {
		t.Fatalf("after v2's promotion: aliases %v, generation %d", rec.Aliases, rec.Generation())
	}

	rolledBack := &gyrev1.DeploymentRolledBack{
		Pipeline: p, DeploymentId: "d2", ModelVersion: 2, PreviousVersion: 1, Strategy: "canary", Step: 1, TrafficPercent: 10,
		Reason: "errorRate 0.5 > maxErrorRate 0.02 (10 of 20 requests failed); version 1 keeps serving", Figures: map[string]float64{"errorRate": 0.5},
		Generation: 2,
	}
	env.Emit("/gyre/deployer", p, rolledBack)
	env.Emit("/gyre/deployer", p, rolledBack) // a second delivery: the same move
	consumed("deployment-rolledback", events.DeploymentRolledBack)
	rec := record()
	if rec.Aliases[models.AliasChampion] != 1 || rec.Aliases[models.AliasPrevious] != 0 || rec.Generation() != 3 {
		t.Fatalf("after the rollback: aliases %v, generation %d; want champion 1, no previous, generation 3", rec.Aliases, rec.Generation())
	}
	if v, _ := rec.Version(2); !strings.Contains(v.Withdrawn, "errorRate 0.5") {
		t.Fatalf("version 2 withdrawn %q", v.Withdrawn)
	}
	promoted := env.WaitEvents(p, events.ModelPromoted, 3)
	if len(promoted) != 3 {
		t.Fatalf("%d model.promoted, want 3 (v1, v2, the rollback)", len(promoted))
	}
	back := looptest.Decode(t, promoted[2], &gyrev1.ModelPromoted{})
	if back.GetReason() != models.ReasonRolledBack || back.GetModelVersion() != 1 || back.GetPreviousVersion() != 2 ||
		back.GetGeneration() != 3 || back.GetCause() != rolledBack.Reason || back.GetFigures()["errorRate"] != 0.5 || back.GetDeploymentId() != "d2" {
		t.Fatalf("rollback's model.promoted %+v", back)
	}

	// v3 is promoted over v1 (judged against it); a late rollback of
	// generation 2's deployment changes nothing.
	env.Emit("/gyre/evaluator", p, judgedAgainst(p, "r3", 1))
	consumed("model-evaluated", events.ModelEvaluated)
	late := proto.Clone(rolledBack).(*gyrev1.DeploymentRolledBack)
	late.DeploymentId, late.ModelVersion = "d-old", 3
	env.Emit("/gyre/deployer", p, late)
	consumed("deployment-rolledback", events.DeploymentRolledBack)
	rec = record()
	if rec.Aliases[models.AliasChampion] != 3 || rec.Aliases[models.AliasPrevious] != 1 {
		t.Fatalf("after a stale rollback: aliases %v; want champion 3, previous 1 (never the withdrawn 2)", rec.Aliases)
	}
	if m := metricsText(t, svc); !strings.Contains(m, `gyre_stale_ignored_total{kind="deployment.rolledback",service="registry"} 1`) {
		t.Fatalf("no stale rollback counted:\n%s", grepLines(m, "stale"))
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
