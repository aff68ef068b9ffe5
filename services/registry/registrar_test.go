package registry_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/registry"
)

func startRegistry(t *testing.T, env *looptest.Env) *registry.Service {
	t.Helper()
	cfg := registry.DefaultConfig()
	cfg.NATSURL = env.Server.URL
	cfg.SigningKey = looptest.SigningKeyFile(t)
	svc, err := registry.New(cfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	env.Run(svc)
	return svc
}

// evaluated is a model.evaluated of a request with a verdict.
func evaluated(p, requestID, verdict string, accuracy float64) *gyrev1.ModelEvaluated {
	return &gyrev1.ModelEvaluated{
		Pipeline: p, RequestId: requestID, JobId: "job-" + requestID, Verdict: verdict,
		Reason:            fmt.Sprintf("accuracy %.2f", accuracy),
		CandidateArtifact: &gyrev1.ObjectRef{Bucket: events.ObjectModels, Key: p + "/" + requestID + ".bundle", Sha256: digestOf(p + requestID)},
		Reference:         &gyrev1.ObjectRef{Bucket: events.ObjectModels, Key: p + "/" + requestID + ".reference.json"},
		CandidateMetrics:  map[string]float64{"accuracy": accuracy},
		TrainingMetrics:   map[string]float64{"accuracy": accuracy + 0.01},
		Algorithm:         "gbdt",
		EvalBatchId:       "b9",
		Gates:             []*gyrev1.Gate{{Metric: "accuracy", Kind: "min", Threshold: 0.5, Value: accuracy, Passed: verdict == models.VerdictBlessed}},
		Schema:            &gyrev1.ModelSchema{Features: []string{"x1"}, Label: "class", Classes: []string{"0", "1"}, Task: "classification"},
		Lineage: &gyrev1.Lineage{
			BatchIds: []string{"b1", "b2"}, FeatureSetVersion: "fs1", DatasetVersion: "dv-" + requestID,
			TrainingRequestId: requestID, Reason: "drift",
			EventIds: []string{"drift-" + requestID, "requested-" + requestID, "completed-" + requestID, "evaluated-" + requestID},
		},
	}
}

// digestOf is a stand-in artifact digest.
func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestRegistrationIsIdempotent: the same evaluation delivered twice (as
// two events, as after a crash of the evaluator) is one version, one
// model.registered and one model.promoted.
func TestRegistrationIsIdempotent(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	startRegistry(t, env)
	const p = "idem"
	first := env.Emit("/gyre/evaluator", p, evaluated(p, "r1", models.VerdictBlessed, 0.8))
	env.Emit("/gyre/evaluator", p, evaluated(p, "r1", models.VerdictBlessed, 0.8))
	env.WaitConsumed(events.EventConsumer(registry.Name, "model-evaluated", events.ModelEvaluated))

	rec, _, _, err := models.Get(env.Ctx(), env.Buckets.Registry, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Versions) != 1 || rec.Requests["r1"] != 1 || rec.Aliases[models.AliasChampion] != 1 {
		t.Fatalf("record %+v, want one version, champion", rec)
	}
	v := rec.Versions[0]
	if v.Lineage.CorrelationID != first.ID() || v.Lineage.CausationID != "" || v.Reference == nil || v.Artifact.Key != p+"/r1.bundle" ||
		v.Metrics["accuracy"] != 0.8 || len(v.Gates) != 1 || v.Schema.Label != "class" || v.Lineage.FeatureSetVersion != "fs1" {
		t.Fatalf("version %+v", v)
	}
	registered := env.WaitEvents(p, events.ModelRegistered, 1)
	promoted := env.WaitEvents(p, events.ModelPromoted, 1)
	if len(registered) != 1 || len(promoted) != 1 {
		t.Fatalf("%d model.registered, %d model.promoted; want 1 each", len(registered), len(promoted))
	}
	reg := looptest.Decode(t, registered[0], &gyrev1.ModelRegistered{})
	if reg.GetModelVersion() != 1 || !slices.Equal(reg.GetAliases(), []string{models.AliasChampion}) || bus.Ext(registered[0], bus.ExtModelVersion) != "1" ||
		bus.Ext(registered[0], bus.ExtCausationID) != first.ID() {
		t.Fatalf("model.registered %+v", reg)
	}
	prom := looptest.Decode(t, promoted[0], &gyrev1.ModelPromoted{})
	if prom.GetModelVersion() != 1 || prom.GetAlias() != models.AliasChampion || prom.GetReason() != models.ReasonBlessed ||
		prom.GetPreviousVersion() != 0 || prom.GetMetrics()["accuracy"] != 0.8 || prom.GetArtifact().GetKey() == "" ||
		prom.GetReference().GetKey() == "" || prom.GetSchema().GetLabel() != "class" || prom.GetLineage().GetTrainingRequestId() != "r1" {
		t.Fatalf("model.promoted %+v", prom)
	}
}

// TestVersionsAreMonotonic: concurrent registrations get distinct versions
// from 1 with no gap; blessed ones move champion and previous.
func TestVersionsAreMonotonic(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	const p = "mono"
	r := registry.NewRegistrar(env.Buckets.Registry, env.Pub)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := r.Register(env.Ctx(), registry.Evaluation{EventID: fmt.Sprintf("ev-%d", i), Evaluated: evaluated(p, fmt.Sprintf("r%d", i), models.VerdictRejected, 0.5)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rec, err := r.Get(env.Ctx(), p)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range rec.Versions {
		if v.Version != int64(i+1) || rec.Requests[v.RequestID] != v.Version {
			t.Fatalf("version %d at %d (request %s → %d)", v.Version, i, v.RequestID, rec.Requests[v.RequestID])
		}
	}
	if len(rec.Versions) != 8 || len(rec.Aliases) != 0 {
		t.Fatalf("%d versions, aliases %v; want 8 rejected, no alias", len(rec.Versions), rec.Aliases)
	}
	for i, id := range []string{"b1", "b2"} {
		ev := evaluated(p, id, models.VerdictBlessed, 0.9)
		ev.ChampionAtEvaluation = proto.Int64(int64(8 + i)) // none, then b1's version
		if i == 0 {
			ev.ChampionAtEvaluation = proto.Int64(0)
		}
		reg, err := r.Register(env.Ctx(), registry.Evaluation{EventID: "ev-" + id, Evaluated: ev})
		if err != nil || !reg.Created || reg.Promoted == nil {
			t.Fatalf("Register %s = %+v, %v", id, reg, err)
		}
		// The deployer rolled it out: it served, and is what a rollback
		// returns to once another is champion.
		if err := r.Completed(env.Ctx(), registry.Deployed{Pipeline: p, Version: reg.Version.Version, Generation: reg.Promoted.Seq}); err != nil {
			t.Fatal(err)
		}
	}
	rec, _ = r.Get(env.Ctx(), p)
	if rec.Aliases[models.AliasChampion] != 10 || rec.Aliases[models.AliasPrevious] != 9 {
		t.Fatalf("aliases %v, want champion 10, previous 9", rec.Aliases)
	}
	// A redelivery of the first blessed one changes nothing and does not
	// announce a promotion that is no longer true.
	first := evaluated(p, "b1", models.VerdictBlessed, 0.9)
	first.ChampionAtEvaluation = proto.Int64(0)
	again, err := r.Register(env.Ctx(), registry.Evaluation{EventID: "ev-b1", Evaluated: first})
	if err != nil || again.Created || again.Version.Version != 9 {
		t.Fatalf("redelivered Register = %+v, %v", again, err)
	}
	if n := len(env.Events(p, events.ModelPromoted)); n != 2 {
		t.Fatalf("%d model.promoted, want 2", n)
	}
	if n := len(env.Events(p, events.ModelRegistered)); n != 10 {
		t.Fatalf("%d model.registered, want 10", n)
	}
}

// TestPromoteAndRollback moves the champion by hand through the HTTP API
// and reads versions and lineage back.
func TestPromoteAndRollback(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	svc := startRegistry(t, env)
	const p = "manual"
	r := registry.NewRegistrar(env.Buckets.Registry, env.Pub)
	for i, verdict := range []string{models.VerdictBlessed, models.VerdictBlessed, models.VerdictRejected} {
		ev := evaluated(p, fmt.Sprintf("r%d", i+1), verdict, 0.7+float64(i)/100)
		ev.ChampionAtEvaluation = proto.Int64(int64(min(i, 2)))
		reg, err := r.Register(env.Ctx(), registry.Evaluation{EventID: fmt.Sprintf("evaluated-r%d", i+1), CorrelationID: "corr", CausationID: fmt.Sprintf("completed-r%d", i+1),
			Evaluated: ev})
		if err != nil {
			t.Fatal(err)
		}
		if reg.Promoted != nil {
			if err := r.Completed(env.Ctx(), registry.Deployed{Pipeline: p, Version: reg.Version.Version, Generation: reg.Promoted.Seq}); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := svc.Handler()
	call := func(method, path, body string, wantCode int, into any) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		if rec.Code != wantCode {
			t.Fatalf("%s %s = %d %s, want %d", method, path, rec.Code, rec.Body, wantCode)
		}
		if into != nil {
			if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
	}
	aliases := func() map[string]int64 {
		var list registry.ModelList
		call(http.MethodGet, "/v1/pipelines/manual/models", "", http.StatusOK, &list)
		return list.Aliases
	}
	if a := aliases(); a["champion"] != 2 || a["previous"] != 1 {
		t.Fatalf("aliases %v, want champion 2, previous 1", a)
	}

	steps := []struct {
		name              string
		method, path      string
		body              string
		code              int
		champion, prev    int64
		reason            string
		previousInTheMove int64
	}{
		{"promote a rejected version by hand", "POST", "/v1/pipelines/manual/promote", `{"version": 3}`, 200, 3, 2, models.ReasonManual, 2},
		{"rollback", "POST", "/v1/pipelines/manual/rollback", "", 200, 2, 1, models.ReasonRollback, 3},
		{"rollback again", "POST", "/v1/pipelines/manual/rollback", "", 200, 1, 0, models.ReasonRollback, 2},
		{"nothing left to roll back to", "POST", "/v1/pipelines/manual/rollback", "", 409, 1, 0, "", 0},
		{"unknown version", "POST", "/v1/pipelines/manual/promote", `{"version": 9}`, 404, 1, 0, "", 0},
		{"bad body", "POST", "/v1/pipelines/manual/promote", `{"version": "two"}`, 400, 1, 0, "", 0},
		{"promote v2 again", "POST", "/v1/pipelines/manual/promote", `{"version": 2}`, 200, 2, 1, models.ReasonManual, 1},
		{"unknown pipeline", "POST", "/v1/pipelines/nope/rollback", "", 404, 2, 1, "", 0},
	}
	for _, s := range steps {
		var got registry.Promotion
		var into any = &got
		if s.code != 200 {
			var e map[string]string
			into = &e
			defer func() {
				if e["error"] == "" {
					t.Errorf("%s: no error message", s.name)
				}
			}()
		}
		call(s.method, s.path, s.body, s.code, into)
		if a := aliases(); a["champion"] != s.champion || a["previous"] != s.prev {
			t.Fatalf("%s: aliases %v, want champion %d, previous %d", s.name, a, s.champion, s.prev)
		}
		if s.code == 200 && (got.Move.Reason != s.reason || got.Move.Previous != s.previousInTheMove || got.Move.Version != s.champion) {
			t.Fatalf("%s: move %+v", s.name, got.Move)
		}
	}
	// Each move was announced: two automatic, four by hand.
	promoted := env.Events(p, events.ModelPromoted)
	var reasons []string
	for _, ev := range promoted {
		m := looptest.Decode(t, ev, &gyrev1.ModelPromoted{})
		reasons = append(reasons, fmt.Sprintf("%s:v%d<-v%d", m.GetReason(), m.GetModelVersion(), m.GetPreviousVersion()))
	}
	want := []string{"blessed:v1<-v0", "blessed:v2<-v1", "manual:v3<-v2", "rollback:v2<-v3", "rollback:v1<-v2", "manual:v2<-v1"}
	if !slices.Equal(reasons, want) {
		t.Fatalf("model.promoted %v, want %v", reasons, want)
	}
	// Promoting the champion changes nothing and announces nothing new.
	again, err := r.Promote(env.Ctx(), p, 2)
	if err != nil || !again.Unchanged {
		t.Fatalf("Promote of the champion = %+v, %v", again, err)
	}
	if n := len(env.Events(p, events.ModelPromoted)); n != len(want) {
		t.Fatalf("%d model.promoted after a no-op promote, want %d", n, len(want))
	}
	if _, err := r.Rollback(env.Ctx(), "nothing-here", "test"); !store.IsNotFound(err) {
		t.Fatalf("Rollback of an unknown pipeline = %v", err)
	}
	if _, err := r.Rollback(env.Ctx(), p, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rollback(env.Ctx(), p, "test"); !errors.Is(err, registry.ErrNoPrevious) {
		t.Fatalf("Rollback with no previous = %v", err)
	}

	// Reads.
	var v models.Version
	call(http.MethodGet, "/v1/pipelines/manual/models/3", "", http.StatusOK, &v)
	if v.Version != 3 || v.Verdict != models.VerdictRejected || v.RequestID != "r3" {
		t.Fatalf("version 3: %+v", v)
	}
	call(http.MethodGet, "/v1/pipelines/manual/models/champion", "", http.StatusOK, &v)
	if v.Version != 1 {
		t.Fatalf("champion: v%d", v.Version)
	}
	call(http.MethodGet, "/v1/pipelines/manual/models/7", "", http.StatusNotFound, nil)
	call(http.MethodGet, "/v1/pipelines/Bad.Name/models", "", http.StatusBadRequest, nil)
	var lin registry.LineageView
	call(http.MethodGet, "/v1/pipelines/manual/lineage?version=2", "", http.StatusOK, &lin)
	var chain []string
	for _, e := range lin.Events {
		chain = append(chain, e.Type+"="+e.ID)
	}
	wantChain := []string{"drift.detected=drift-r2", "training.requested=requested-r2", "training.completed=completed-r2",
		"model.evaluated=evaluated-r2", "model.registered=" + bus.StableID(events.ModelRegistered, p, "r2")}
	if !slices.Equal(chain, wantChain) || lin.Trigger == nil || lin.Trigger.ID != "drift-r2" || lin.CorrelationID != "corr" ||
		!slices.Equal(lin.Batches, []string{"b1", "b2"}) || lin.FeatureSetVersion != "fs1" || lin.TrainingRequestID != "r2" {
		t.Fatalf("lineage %+v\nchain %v", lin, chain)
	}
}
