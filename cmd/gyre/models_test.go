package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/services/registry"
)

// registered seeds a pipeline's registry with versions of the given
// verdicts, as the registry service records them.
func registered(t *testing.T, env *looptest.Env, p string, verdicts ...string) {
	t.Helper()
	r := registry.NewRegistrar(env.Buckets.Registry, env.Pub)
	champion := int64(0)
	for i, verdict := range verdicts {
		rid := fmt.Sprintf("req-%d", i+1)
		reg, err := r.Register(env.Ctx(), registry.Evaluation{
			EventID: "evaluated-" + rid, CorrelationID: "corr-" + rid,
			Evaluated: &gyrev1.ModelEvaluated{
				Pipeline: p, RequestId: rid, Verdict: verdict, Algorithm: "gbdt",
				CandidateArtifact: &gyrev1.ObjectRef{Bucket: events.ObjectModels, Key: p + "/" + rid + ".bundle", Uri: "nats-object://gyre-models/" + p + "/" + rid + ".bundle"},
				CandidateMetrics:  map[string]float64{"accuracy": 0.7 + float64(i)/100},
				EvalBatchId:       "b9",
				Lineage: &gyrev1.Lineage{BatchIds: []string{"b1", "b2"}, FeatureSetVersion: "fs-1", TrainingRequestId: rid, Reason: "drift",
					EventIds: []string{"drift-" + rid, "requested-" + rid, "completed-" + rid, "evaluated-" + rid}},
				ChampionAtEvaluation: proto.Int64(champion),
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if reg.Promoted != nil {
			// The deployer rolled it out: it served all traffic.
			champion = reg.Version.Version
			if err := r.Completed(env.Ctx(), registry.Deployed{Pipeline: p, Version: champion, Generation: reg.Promoted.Seq}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestModelsLineagePromoteRollback(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	registered(t, env, "alpha", models.VerdictBlessed, models.VerdictRejected, models.VerdictBlessed)
	registered(t, env, "beta", models.VerdictBlessed)
	nats := "--nats=" + env.Server.URL

	out, _, err := execute(t, "models", "alpha", nats)
	if err != nil {
		t.Fatalf("gyre models: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "VERSION") || !strings.Contains(lines[0], "ACCURACY") {
		t.Fatalf("gyre models alpha:\n%s", out)
	}
	for i, want := range []string{"3 blessed champion 0.7200 gbdt", "2 rejected - 0.7100 gbdt", "1 blessed previous 0.7000 gbdt"} {
		fields := strings.Fields(lines[i+1])
		if got := strings.Join(fields[:5], " "); got != want || fields[len(fields)-1] != fmt.Sprintf("req-%d", 3-i) {
			t.Fatalf("line %d %q, want it to start with %q\n%s", i+2, lines[i+1], want, out)
		}
	}
	out, _, err = execute(t, "models", nats)
	if err != nil || !strings.HasPrefix(out, "PIPELINE") || !strings.Contains(out, "beta") || strings.Count(out, "\n") != 5 {
		t.Fatalf("gyre models (every pipeline): %v\n%s", err, out)
	}
	out, _, err = execute(t, "models", "beta", "-o", "json", nats)
	var list registry.ModelList
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || list.Aliases["champion"] != 1 || len(list.Versions) != 1 {
		t.Fatalf("gyre models -o json: %v\n%s", err, out)
	}

	out, _, err = execute(t, "lineage", "alpha@2", nats)
	if err != nil {
		t.Fatalf("gyre lineage: %v", err)
	}
	for _, want := range []string{"alpha v2", "rejected", "b1, b2", "fs-1", "req-2", "drift — drift.detected drift-req-2",
		"corr-req-2", "completed-req-2", bus.StableID(events.ModelRegistered, "alpha", "req-2")} {
		if !strings.Contains(out, want) {
			t.Fatalf("gyre lineage alpha@2 lacks %q:\n%s", want, out)
		}
	}
	if out, _, err = execute(t, "lineage", "alpha", nats); err != nil || !strings.Contains(out, "alpha v3 (champion)") {
		t.Fatalf("gyre lineage alpha (the champion): %v\n%s", err, out)
	}

	out, _, err = execute(t, "promote", "alpha", "2", nats)
	if err != nil || !strings.Contains(out, "champion is v2 (was v3, reason manual)") {
		t.Fatalf("gyre promote: %v\n%s", err, out)
	}
	if out, _, err = execute(t, "promote", "alpha", "2", nats); err != nil || !strings.Contains(out, "already champion") {
		t.Fatalf("gyre promote (again): %v\n%s", err, out)
	}
	out, _, err = execute(t, "rollback", "alpha", nats)
	if err != nil || !strings.Contains(out, "champion is v3 (was v2, reason rollback)") {
		t.Fatalf("gyre rollback: %v\n%s", err, out)
	}
	// The version rolled back from is withdrawn: the list says so.
	if out, _, err = execute(t, "models", "alpha", nats); err != nil || !strings.Contains(out, "rejected,withdrawn") {
		t.Fatalf("gyre models alpha after the rollback: %v\n%s", err, out)
	}
	promoted := env.Events("alpha", events.ModelPromoted)
	last := looptest.Decode(t, promoted[len(promoted)-1], &gyrev1.ModelPromoted{})
	if len(promoted) != 4 || last.GetReason() != models.ReasonRollback || last.GetModelVersion() != 3 || last.GetPreviousVersion() != 2 {
		t.Fatalf("%d model.promoted, last %+v", len(promoted), last)
	}

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"models", "nope"}, "has no model yet"},
		{[]string{"models", "Bad.Name"}, "invalid name"},
		{[]string{"lineage", "alpha@9"}, "version 9"},
		{[]string{"promote", "alpha", "x"}, "want a version number"},
		{[]string{"promote", "alpha", "9"}, "version 9"},
		{[]string{"rollback", "beta"}, "no previous version"},
		{[]string{"models", "-o", "yaml"}, "want table or json"},
	}
	for _, tt := range tests {
		if _, _, err := execute(t, append(tt.args, nats)...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("gyre %v = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
}

func TestModelsWithNoModel(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	out, errOut, err := execute(t, "models", "--nats="+env.Server.URL)
	if err != nil || out != "" || !strings.Contains(errOut, "No models registered yet") {
		t.Fatalf("gyre models on an empty registry: %q, %q, %v", out, errOut, err)
	}
}
