package deployer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

// forge moves champion to a version the test makes up, writing the
// registry's record directly as someone with access to its bucket (not the
// registry, not its key) would, with the version's signature as given.
func (h *harness) forge(name string, v models.Version) {
	h.t.Helper()
	if _, err := store.UpdateJSON(h.env.Ctx(), h.env.Buckets.Registry, name, func(rec *models.Registry, _ bool) error {
		rec.Versions = append(rec.Versions, v)
		mv := rec.PromoteTo(v.Version, models.ReasonManual, time.Now().UTC())
		mv.EventID = fmt.Sprintf("forged-%d", mv.Seq)
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

// rolledBack waits for the deployment.rolledback of a version and returns
// its reason.
func (h *harness) rolledBack(name string, version int64) string {
	h.t.Helper()
	var reason string
	looptest.WaitFor(h.t, "deployment.rolledback of the forged version", 20*time.Second, func() bool {
		for _, ev := range h.env.Events(name, events.DeploymentRolledBack) {
			if rb := looptest.Decode(h.t, ev, &gyrev1.DeploymentRolledBack{}); rb.GetModelVersion() == version {
				reason = rb.GetReason()
				return true
			}
		}
		return false
	})
	return reason
}

// TestOnlySignedModelsServe: the deployer serves what the registry signed,
// and nothing else, while the right model keeps serving:
//   - a replayed model.promoted with another version and artifact changes
//     nothing (the deployer follows the registry's record, not events);
//   - a registry record edited to name another artifact, keeping a valid
//     signature of another version, is refused;
//   - an unsigned version is refused;
//   - a version whose artifact's bytes were replaced after it was signed is
//     refused;
//   - a deployment record forged to serve an unsigned artifact is not put in
//     force by a replica.
func TestOnlySignedModelsServe(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "signed"
	h.env.ApplyPipeline(spec(name, "{strategy: immediate}", false))
	h.run(nil)
	good := h.storeBundle(name, "good", false, false)
	h.promote(name, 1, good, 0.9)
	h.waitServing(name, "1")
	evil := h.storeBundle(name, "evil", true, false)

	// A replayed promotion: another version, the attacker's artifact.
	h.env.Emit("/gyre/registry", name, &gyrev1.ModelPromoted{Pipeline: name, ModelVersion: 7, Alias: "champion", Reason: "blessed", Artifact: evil, Generation: 99})
	time.Sleep(time.Second)
	if n := len(h.env.Events(name, events.DeploymentStarted)); n != 1 || h.servingVersion(name) != "1" {
		t.Fatalf("after a replayed promotion: %d deployment.started, serving %s; want 1, v1", n, h.servingVersion(name))
	}

	rec, _, _, err := models.Get(h.env.Ctx(), h.env.Buckets.Registry, name)
	if err != nil {
		t.Fatal(err)
	}
	v1, _ := rec.Version(1)
	cases := []struct {
		name    string
		version models.Version
		want    string
	}{
		{"v1's signature on another artifact", models.Version{Version: 2, Verdict: models.VerdictBlessed,
			Artifact: models.ObjectFromProto(evil), Signature: v1.Signature}, "does not match the record"},
		{"unsigned", models.Version{Version: 3, Verdict: models.VerdictBlessed, Artifact: models.ObjectFromProto(evil)}, "unsigned"},
	}
	for _, c := range cases {
		h.forge(name, c.version)
		if reason := h.rolledBack(name, c.version.Version); !strings.Contains(reason, "refused") || !strings.Contains(reason, c.want) {
			t.Errorf("%s: rolled back with %q, want it refused: %q", c.name, reason, c.want)
		}
		if v := h.servingVersion(name); v != "1" {
			t.Fatalf("%s: serving %s, want v1 to keep serving", c.name, v)
		}
	}

	// A version signed by the registry's key whose artifact is replaced
	// after it was signed: the bytes do not match the signed digest.
	swapped := h.storeBundle(name, "swapped", false, false)
	signed := models.Version{Version: 4, Verdict: models.VerdictBlessed, Artifact: models.ObjectFromProto(swapped)}
	sig, err := looptest.Signer().Sign(signed.Subject(name))
	if err != nil {
		t.Fatal(err)
	}
	signed.Signature = sig
	evilBytes, err := store.GetObject(h.env.Ctx(), h.env.Buckets.Models, evil.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.PutObject(h.env.Ctx(), h.env.Buckets.Models, swapped.GetKey(), bundle.MediaType, evilBytes); err != nil {
		t.Fatal(err)
	}
	h.forge(name, signed)
	if reason := h.rolledBack(name, 4); !strings.Contains(reason, "refused") || !strings.Contains(reason, "the artifact was replaced") {
		t.Errorf("a swapped artifact: rolled back with %q", reason)
	}

	// A deployment record forged to serve the attacker's artifact: a new
	// replica does not put it in force.
	forged := map[string]any{
		"pipeline": name, "deploymentId": "forged", "generation": 1 << 40, "status": "completed", "strategy": "immediate",
		"version": 9, "champion": map[string]any{"version": 9, "artifact": map[string]any{"bucket": evil.GetBucket(), "key": evil.GetKey(), "sha256": evil.GetSha256()}},
	}
	if _, err := store.PutJSON(h.env.Ctx(), h.env.Buckets.Deployments, name, forged); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if v := h.servingVersion(name); v != "1" {
		t.Fatalf("after a forged deployment record: serving %s, want v1", v)
	}
	r := h.startReplica("late")
	if v := r.serving(name); v == "9" {
		t.Fatalf("a new replica serves the forged record's version 9")
	}
	if n := len(h.env.Events(name, events.DeploymentCompleted)); n != 1 {
		t.Errorf("%d deployment.completed, want only v1's", n)
	}
}
