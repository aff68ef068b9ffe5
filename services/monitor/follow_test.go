package monitor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

const staleSeries = `gyre_stale_ignored_total{kind="model.promoted",service="monitor"}`

// rollBack plays the registry rolling champion back to version to: the
// move in the gyre-registry record (models.Registry.RollBackTo, a new
// generation), then its model.promoted, as env.Promote does for a
// promotion. It returns the move's generation.
func rollBack(h *harness, name string, to int64) int64 {
	h.t.Helper()
	var mv models.Move
	rec, err := store.UpdateJSON(h.env.Ctx(), h.env.Buckets.Registry, name, func(rec *models.Registry, found bool) error {
		if !found {
			return fmt.Errorf("no registry record of %s", name)
		}
		m := rec.RollBackTo(to, models.ReasonRollback, "test: rolled back", time.Now().UTC())
		m.EventID = bus.StableID(events.ModelPromoted, name, strconv.FormatInt(m.Seq, 10))
		mv = *m
		return nil
	})
	if err != nil {
		h.t.Fatalf("roll %s back to v%d: %v", name, to, err)
	}
	v, ok := rec.Version(to)
	if !ok {
		h.t.Fatalf("registry of %s has no v%d", name, to)
	}
	ev, err := events.New("/gyre/registry", name, &gyrev1.ModelPromoted{
		Pipeline: name, ModelVersion: to, Alias: models.AliasChampion, PreviousVersion: mv.Previous,
		Reason: mv.Reason, Metrics: v.Metrics, Lineage: v.Lineage.Proto(), Generation: mv.Seq,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ev.SetID(mv.EventID)
	ev.SetExtension(bus.ExtModelVersion, strconv.FormatInt(to, 10))
	if err := h.env.Pub.Publish(context.Background(), ev); err != nil {
		h.t.Fatal(err)
	}
	return mv.Seq
}

// waitFollowing waits until the monitor's reference is version v of
// registry generation g, with baseline accuracy baseline.
func (h *harness) waitFollowing(name string, v, g int64, baseline float64) {
	h.t.Helper()
	looptest.WaitFor(h.t, fmt.Sprintf("reference of v%d (generation %d)", v, g), 20*time.Second, func() bool {
		ref := h.state(name).Reference
		return ref != nil && ref.ModelVersion == v && ref.Generation == g &&
			ref.BaselineAccuracy != nil && *ref.BaselineAccuracy == baseline
	})
}

// TestFollowsTheRegistry: the reference follows the registry's champion
// by generation: a promotion older than the one applied (an event of
// before, delivered late or replayed) changes nothing and is counted as
// stale, and a rollback in the registry, a newer generation, takes the
// reference back to the older version.
func TestFollowsTheRegistry(t *testing.T) {
	t.Parallel()
	h := start(t)
	const name = "follow"
	h.env.ApplyPipeline(spec(name, 10, 0))
	r := rand.New(rand.NewPCG(9, 9))
	var ids []string
	for i := range 2 {
		id := fmt.Sprintf("ref-%d", i+1)
		h.env.AddBatch(name, id, batchCSV(r, 400, 0, cats))
		ids = append(ids, id)
	}
	lineage := &gyrev1.Lineage{BatchIds: ids, FeatureSetVersion: "fs1"}
	first, g1 := h.env.Promote(looptest.Promotion{Pipeline: name, Version: 1, Metrics: map[string]float64{"accuracy": 0.8}, Lineage: lineage})
	h.waitFollowing(name, 1, g1, 0.8)
	_, g2 := h.env.Promote(looptest.Promotion{Pipeline: name, Version: 2, Metrics: map[string]float64{"accuracy": 0.9}, Lineage: lineage})
	h.waitFollowing(name, 2, g2, 0.9)
	if g2 <= g1 {
		t.Fatalf("generations %d then %d: the registry's must grow", g1, g2)
	}
	if n := h.mon.scrape(t, staleSeries); n != 0 {
		t.Fatalf("%s = %v before any stale promotion", staleSeries, n)
	}

	// v1's promotion again, under another id (JetStream would drop the
	// same id as a duplicate): generation g1, older than the applied g2.
	stale := first.Clone()
	stale.SetID(bus.StableID("stale", first.ID()))
	if err := h.env.Pub.Publish(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	looptest.WaitFor(t, staleSeries+" = 1", 20*time.Second, func() bool { return h.mon.scrape(t, staleSeries) == 1 })
	if ref := h.state(name).Reference; ref.ModelVersion != 2 || ref.Generation != g2 || ref.EventID == stale.ID() {
		t.Errorf("after a stale promotion the reference is v%d of generation %d (event %s), want v2 of %d",
			ref.ModelVersion, ref.Generation, ref.EventID, g2)
	}

	// The registry rolls v2 back: v1 is champion again, a newer generation.
	g3 := rollBack(h, name, 1)
	if g3 <= g2 {
		t.Fatalf("rollback generation %d, want more than %d", g3, g2)
	}
	h.waitFollowing(name, 1, g3, 0.8)
	st := h.state(name)
	if l := st.Live["1"]; l == nil || l.Labelled != 0 {
		t.Errorf("live counters of v1 after the rollback %+v, want fresh: it is judged on its predictions from now", l)
	}
	if n := h.mon.scrape(t, staleSeries); n != 1 {
		t.Errorf("%s = %v after the rollback, want still 1", staleSeries, n)
	}
}
