package monitor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/monitor"
	"github.com/gyrehq/gyre/services/monitor/internal/monitoring"
)

// TestServiceRuns: the service starts on a JetStream server, provisions its
// declared consumers, turns ready, and stops promptly and cleanly.
func TestServiceRuns(t *testing.T) {
	t.Parallel()
	servicetest.Check(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := monitor.DefaultConfig()
		cfg.NATSURL = url
		return monitor.New(cfg, deps)
	}, events.ServiceConsumers()[monitor.Name])
}

// spec is a pipeline with a numeric and a categorical feature; minRows,
// accuracyDrop and cooldown come from the test.
func spec(name string, minRows int, cooldown int) string {
	return fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: y
    schema:
      - {name: x, type: float}
      - {name: c, type: category}
      - {name: y, type: category}
  drift: {method: psi, threshold: 0.2, shareOfFeatures: 0.3, minRows: %d, accuracyDrop: 0.05, cooldownBatches: %d}
`, name, minRows, cooldown)
}

var cats = []string{"a", "b", "c"}

// promote stores a reference window of batches drawn from x ~ N(0, 1) and
// promotes version 1 trained on it with the given accuracy, as the registry
// does (its record, then model.promoted).
func promote(h *harness, name string, r *rand.Rand, accuracy float64) []string {
	var ids []string
	for i := range 2 {
		id := fmt.Sprintf("ref-%d", i+1)
		h.env.AddBatch(name, id, batchCSV(r, 800, 0, cats))
		ids = append(ids, id)
	}
	h.env.Promote(looptest.Promotion{
		Pipeline: name, Version: 1, Metrics: map[string]float64{"accuracy": accuracy},
		Lineage: &gyrev1.Lineage{BatchIds: ids, FeatureSetVersion: "fs1"},
	})
	looptest.WaitFor(h.t, "reference of v1", 20*time.Second, func() bool {
		st := h.state(name)
		return st.Reference != nil && st.Reference.ModelVersion == 1
	})
	return ids
}

// TestPromotionSetsTheReference: the trainer's stored window statistics
// when the promotion names them, else statistics built from the window's
// batches (also when the named object is gone).
func TestPromotionSetsTheReference(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		stored    bool // the trainer's statistics exist
		named     bool // the promotion names them
		wantRows  int64
		wantKinds map[string]string
	}{
		{name: "from batches", wantRows: 1600, wantKinds: map[string]string{"x": "numeric", "c": "categorical"}},
		{name: "from stored statistics", stored: true, named: true, wantRows: 77, wantKinds: map[string]string{"x": "numeric"}},
		{name: "stored statistics gone", named: true, wantRows: 1600, wantKinds: map[string]string{"x": "numeric", "c": "categorical"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t)
			name := "ref-" + strings.ReplaceAll(tc.name, " ", "-")
			h.env.ApplyPipeline(spec(name, 200, 2))
			r := rand.New(rand.NewPCG(1, 1))
			ids := []string{"b1", "b2"}
			for _, id := range ids {
				h.env.AddBatch(name, id, batchCSV(r, 800, 0, cats))
			}
			key := bundle.ReferenceKey(name, "req-1")
			if tc.stored {
				x, err := drift.NewReference([]float64{1, 2, 3})
				if err != nil {
					t.Fatal(err)
				}
				data, err := bundle.MarshalReference(&bundle.Reference{Format: bundle.ReferenceFormat, Pipeline: name,
					RequestID: "req-1", BatchIDs: ids, Rows: 77, Features: map[string]drift.Reference{"x": x}})
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := store.PutObject(context.Background(), h.env.Buckets.Models, key, bundle.ReferenceMediaType, data); err != nil {
					t.Fatal(err)
				}
			}
			promoted := looptest.Promotion{
				Pipeline: name, Version: 1, Metrics: map[string]float64{"accuracy": 0.8}, Lineage: &gyrev1.Lineage{BatchIds: ids},
			}
			if tc.named {
				promoted.Reference = &gyrev1.ObjectRef{Bucket: events.ObjectModels, Key: key}
			}
			h.env.Promote(promoted)
			var ref *monitoring.Reference
			looptest.WaitFor(t, "reference of v1", 20*time.Second, func() bool {
				ref = h.state(name).Reference
				return ref != nil
			})
			if got, want := fmt.Sprint(ref.BatchIDs), fmt.Sprint(ids); got != want {
				t.Errorf("reference batches = %s, want %s", got, want)
			}
			if ref.ModelVersion != 1 || ref.Rows != tc.wantRows || ref.BaselineAccuracy == nil || *ref.BaselineAccuracy != 0.8 {
				t.Errorf("reference v%d of %d rows, baseline %v; want v1, %d rows, 0.8", ref.ModelVersion, ref.Rows, ref.BaselineAccuracy, tc.wantRows)
			}
			kinds := map[string]string{}
			for f, fr := range ref.Features {
				kinds[f] = string(fr.Kind)
			}
			if fmt.Sprint(kinds) != fmt.Sprint(tc.wantKinds) {
				t.Errorf("reference features %v, want %v", kinds, tc.wantKinds)
			}
		})
	}
}

// TestNoReferenceStillMeasures: before any champion a batch is reported
// with no features and reference version 0.
func TestNoReferenceStillMeasures(t *testing.T) {
	t.Parallel()
	h := start(t)
	h.env.ApplyPipeline(spec("noref", 200, 2))
	r := rand.New(rand.NewPCG(2, 2))
	key := h.env.AddBatch("noref", "b1", batchCSV(r, 300, 0, cats)).ObjectKey
	h.materialize("noref", "b1", key, 300)
	m := looptest.Decode(t, h.waitEmitted("noref", events.DriftMeasured, 1)[0], &gyrev1.DriftMeasured{})
	if m.ReferenceModelVersion != 0 || len(m.Features) != 0 || m.Drifted || m.BatchId != "b1" || m.Rows != 300 {
		t.Errorf("drift.measured = %v, want batch b1, 300 rows, reference 0, no features", m)
	}
}

func TestDrift(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		shift        float64
		batches      int
		wantDetected []int // indices of the batches whose drift is emitted
	}{
		// Same distribution: measured, never detected.
		{name: "same", shift: 0, batches: 3},
		// Shifted every time; cooldown 2 lets the 1st and 3rd through.
		{name: "shift", shift: 2, batches: 4, wantDetected: []int{0, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t)
			name := "drift-" + tc.name
			h.env.ApplyPipeline(spec(name, 200, 2))
			r := rand.New(rand.NewPCG(3, 3))
			promote(h, name, r, 0.8)
			var ids []string
			for i := range tc.batches {
				id := fmt.Sprintf("cur-%d", i+1)
				key := h.env.AddBatch(name, id, batchCSV(r, 600, tc.shift, cats)).ObjectKey
				h.materialize(name, id, key, 600)
				ids = append(ids, id)
				// Wait for each batch so that the cooldown sees them in order.
				h.waitEmitted(name, events.DriftMeasured, i+1)
				if i == 0 {
					// The same batch again (a producer's retry, another
					// event id): the monitor's events have deterministic
					// ids, so the stream keeps one of each.
					h.materialize(name, id, key, 600)
				}
			}
			measured := h.waitEmitted(name, events.DriftMeasured, tc.batches)
			if len(measured) != tc.batches {
				t.Fatalf("%d drift.measured, want %d", len(measured), tc.batches)
			}
			for i, ev := range measured {
				m := looptest.Decode(t, ev, &gyrev1.DriftMeasured{})
				if m.ReferenceModelVersion != 1 || len(m.Features) != 2 || m.BatchId != ids[i] {
					t.Errorf("measured[%d] = %v, want batch %s against v1 with 2 features", i, m, ids[i])
				}
				if m.Drifted != (tc.shift != 0) {
					t.Errorf("measured[%d].drifted = %v, want %v (%v)", i, m.Drifted, tc.shift != 0, m.Features)
				}
				if got := bus.Ext(ev, bus.ExtModelVersion); got != "1" {
					t.Errorf("measured[%d] modelversion = %q, want 1", i, got)
				}
			}
			// The latest batch's figures are exported per pipeline and
			// feature (set once its drift.measured is out).
			last := looptest.Decode(t, measured[len(measured)-1], &gyrev1.DriftMeasured{})
			want := map[string]float64{}
			methods := map[string]string{}
			for _, f := range last.Features {
				want[f.Feature] = f.Score
				methods[f.Feature] = f.Method
			}
			looptest.WaitFor(t, "drift gauges", 5*time.Second, func() bool {
				for feature, score := range want {
					got, ok := h.gauge("gyre_monitor_feature_drift_score", map[string]string{"pipeline": name, "feature": feature, "method": methods[feature]})
					if !ok || got != score {
						return false
					}
				}
				got, ok := h.gauge("gyre_monitor_drifted_feature_share", map[string]string{"pipeline": name})
				return ok && got == last.ShareDrifted
			})
			detected := h.env.Events(name, events.DriftDetected)
			if len(detected) != len(tc.wantDetected) {
				t.Fatalf("%d drift.detected, want %d", len(detected), len(tc.wantDetected))
			}
			for k, i := range tc.wantDetected {
				d := looptest.Decode(t, detected[k], &gyrev1.DriftDetected{})
				if d.BatchId != ids[i] || fmt.Sprint(d.DriftedFeatures) != "[x]" || d.ReferenceModelVersion != 1 {
					t.Errorf("detected[%d] = %v, want batch %s with drifted [x]", k, d, ids[i])
				}
			}
		})
	}
}

// TestEveryFeatureIsReported plants drift in a categorical feature. With
// method ks or wasserstein it used to be skipped as "not applicable" and
// left out of drift.measured; now it is measured with the test auto picks
// for it (jensenshannon: the window has more than 1,000 rows), drifts, and
// every feature of the spec is listed: the compared ones in features, the
// one without a reference (z, in no batch) in skippedFeatures, with why.
func TestEveryFeatureIsReported(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method   string
		numeric  string // the test run on x
		byPValue bool
	}{
		{"ks", "ks", false},
		{"wasserstein", "wasserstein", false},
		{"auto", "wasserstein", false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			t.Parallel()
			h := start(t)
			name := "every-" + tc.method
			h.env.ApplyPipeline(fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: y
    schema:
      - {name: x, type: float}
      - {name: c, type: category}
      - {name: z, type: float}
      - {name: y, type: category}
  drift: {method: %s, shareOfFeatures: 0.3, minRows: 200, cooldownBatches: 2}
`, name, tc.method))
			r := rand.New(rand.NewPCG(4, 4))
			promote(h, name, r, 0.8) // 1,600 rows, c uniform over a, b, c
			// c moves to two thirds "a"; x stays.
			key := h.env.AddBatch(name, "cur-1", batchCSV(r, 600, 0, []string{"a", "a", "a", "a", "b", "c"})).ObjectKey
			h.materialize(name, "cur-1", key, 600)
			m := looptest.Decode(t, h.waitEmitted(name, events.DriftMeasured, 1)[0], &gyrev1.DriftMeasured{})
			if m.Method != tc.method || len(m.Features) != 2 || len(m.SkippedFeatures) != 1 {
				t.Fatalf("drift.measured = %v, want x and c compared, z skipped", m)
			}
			byName := map[string]*gyrev1.FeatureDrift{}
			for _, f := range m.Features {
				byName[f.Feature] = f
			}
			if c := byName["c"]; c == nil || c.Method != "jensenshannon" || !c.Drifted || c.Threshold != drift.DefaultDistanceThreshold || c.Rows != 600 {
				t.Errorf("c = %v, want jensenshannon, drifted at 0.1", c)
			}
			if x := byName["x"]; x == nil || x.Method != tc.numeric || x.ByPValue != tc.byPValue || x.Drifted {
				t.Errorf("x = %v, want %s, not drifted", x, tc.numeric)
			}
			if z := m.SkippedFeatures[0]; z.Feature != "z" || !strings.Contains(z.Reason, "no reference") {
				t.Errorf("skipped %v, want z without a reference", z)
			}
			if !m.Drifted || m.ShareDrifted != 0.5 {
				t.Errorf("dataset drifted %v, share %v; want true, 0.5", m.Drifted, m.ShareDrifted)
			}
			d := looptest.Decode(t, h.waitEmitted(name, events.DriftDetected, 1)[0], &gyrev1.DriftDetected{})
			if fmt.Sprint(d.DriftedFeatures) != "[c]" || len(d.SkippedFeatures) != 1 {
				t.Errorf("drift.detected = %v, want c drifted and z skipped", d)
			}
			// The gauge is labelled with the test run on each feature.
			looptest.WaitFor(t, "drift gauge of c", 5*time.Second, func() bool {
				got, ok := h.gauge("gyre_monitor_feature_drift_score", map[string]string{"pipeline": name, "feature": "c", "method": "jensenshannon"})
				return ok && got == byName["c"].Score
			})
		})
	}
}
