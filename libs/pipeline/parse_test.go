package pipeline_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/pipeline"
)

const minimal = `
apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: elec2}
spec:
  dataset: {label: class}
`

func TestParseExampleAndDefaults(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../examples/elec2/pipeline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "elec2" || p.Spec.Model.Algorithm != "gbdt" || p.Spec.Model.Window.Batches != 5 {
		t.Errorf("parsed %+v", p.Spec.Model)
	}
	if got := p.Spec.Model.Params["trees"]; got != int64(100) {
		t.Errorf("params.trees = %#v, want int64 100", got)
	}
	if got := p.Spec.Model.Params["learningRate"]; got != 0.1 {
		t.Errorf("params.learningRate = %#v, want 0.1", got)
	}
	if got := strings.Join(p.FeatureNames(), ","); got != "period,nswprice,nswdemand,vicprice,vicdemand,transfer" {
		t.Errorf("features = %s", got)
	}
	if p.RetrainCooldown() != 2 || len(p.Spec.Evaluation.Gates) != 2 {
		t.Errorf("cooldown %d, gates %d", p.RetrainCooldown(), len(p.Spec.Evaluation.Gates))
	}

	m, err := pipeline.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	s := m.Spec
	for _, c := range []struct {
		name string
		got  any
		want any
	}{
		{"algorithm", s.Model.Algorithm, "gbdt"},
		{"pool", s.Model.Pool, "cpu"},
		{"seed", s.Model.Seed, int64(1)},
		{"window", s.Model.Window.Batches, 5},
		{"bootstrap", s.Model.BootstrapBatches, 2},
		{"strategy", s.Deployment.Strategy, "immediate"},
		{"sampleRate", s.Deployment.LogRate(), 1.0},
		{"batching.maxBatchSize", s.Deployment.Batching.MaxBatchSize, 64},
		{"batching.maxQueueDelayMs", s.Deployment.Batching.QueueDelay(), time.Millisecond},
		{"routeHeader", s.Deployment.RouteHeader, "X-Gyre-Route-Key"},
		{"rollback.minLabels", s.Deployment.Rollback.MinLabels, 50},
		{"rollback.maxErrorRate", s.Deployment.Rollback.ErrorRateLimit(), 0.02},
		{"rollback.maxAccuracyDrop", s.Deployment.Rollback.AccuracyDropLimit(), 0.05},
		{"rollback.maxLatencyP99Ms", s.Deployment.Rollback.MaxLatencyP99Ms, 0.0},
		{"rollback.maxPredictionDrift", s.Deployment.Rollback.MaxPredictionDrift, 0.0},
		{"drift.method", s.Drift.Method, "psi"},
		{"drift.threshold", s.Drift.Threshold, 0.2},
		{"drift.minRows", s.Drift.MinRows, 500},
		{"drift.accuracyDrop", s.Drift.AccuracyDrop, 0.05},
		{"cooldown", m.RetrainCooldown(), 2},
		{"maxMissingShare", s.Dataset.MaxMissingShare, 0.5},
	} {
		if c.got != c.want {
			t.Errorf("default %s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	// An explicit zero cooldown is kept.
	z, err := pipeline.Parse([]byte(minimal + "  drift: {cooldownBatches: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if z.RetrainCooldown() != 0 {
		t.Errorf("explicit cooldown 0 became %d", z.RetrainCooldown())
	}
	// Explicit zeros of the serving settings are kept too, through the
	// canonical form: sampleRate 0 logs nothing, maxQueueDelayMs 0 never
	// waits.
	zs, err := pipeline.Parse([]byte(minimal + "  deployment: {sampleRate: 0, batching: {maxQueueDelayMs: 0}, rollback: {maxErrorRate: 0, maxAccuracyDrop: 0}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if zs, err = pipeline.Parse(zs.Canonical()); err != nil {
		t.Fatal(err)
	}
	if d := zs.Spec.Deployment; d.LogRate() != 0 || d.Batching.QueueDelay() != 0 || d.Rollback.ErrorRateLimit() != 0 || d.Rollback.AccuracyDropLimit() != 0 {
		t.Errorf("explicit sampleRate 0, maxQueueDelayMs 0, maxErrorRate 0, maxAccuracyDrop 0 became %v, %v, %v, %v",
			d.LogRate(), d.Batching.QueueDelay(), d.Rollback.ErrorRateLimit(), d.Rollback.AccuracyDropLimit())
	}
	// Canonical form is stable: parse(canonical) gives the same digest.
	for _, p := range []*pipeline.Pipeline{p, m} {
		again, err := pipeline.Parse(p.Canonical())
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, p.Canonical())
		}
		if again.Digest() != p.Digest() {
			t.Errorf("digest changed after a canonical round trip")
		}
	}
}

func TestDriftSection(t *testing.T) {
	t.Parallel()
	spec := func(drift string) string {
		return `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p1}
spec:
  dataset: {label: y, schema: [{name: y, type: int}, {name: a, type: float}, {name: c, type: category}]}
  drift: ` + drift + "\n"
	}
	p, err := pipeline.Parse([]byte(spec("{method: auto, pValueThreshold: 0.01, distanceThreshold: 0.2, features: {a: {method: psi, threshold: 0.3}, c: {method: chisquare}}}")))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Spec.Drift
	if d.Method != "auto" || d.Threshold != 0 || d.PValueThreshold != 0.01 || d.DistanceThreshold != 0.2 ||
		d.Features["a"] != (pipeline.DriftFeature{Method: "psi", Threshold: 0.3}) || d.Features["c"] != (pipeline.DriftFeature{Method: "chisquare"}) {
		t.Errorf("drift %+v", d)
	}
	if again, err := pipeline.Parse(p.Canonical()); err != nil || again.Digest() != p.Digest() {
		t.Errorf("canonical round trip: %v", err)
	}
	// A named method keeps its threshold and its default.
	if p, err := pipeline.Parse([]byte(spec("{method: z}"))); err != nil || p.Spec.Drift.Threshold != 0.05 {
		t.Errorf("z: %+v, %v", p, err)
	}
	for _, c := range []struct {
		name, drift string
		want        []string
	}{
		{"threshold with auto", "{method: auto, threshold: 0.05}", []string{"spec.drift.threshold", "pValueThreshold"}},
		{"p-value above 1", "{method: chisquare, threshold: 2}", []string{"spec.drift.threshold", "p-value"}},
		{"pValueThreshold above 1", "{method: auto, pValueThreshold: 1.5}", []string{"spec.drift.pValueThreshold"}},
		{"unknown feature", "{method: auto, features: {nope: {method: psi}}}", []string{"spec.drift.features.nope", "not a monitored feature"}},
		{"the label is not monitored", "{features: {y: {method: psi}}}", []string{"spec.drift.features.y"}},
		{"feature threshold with auto", "{method: psi, features: {a: {method: auto, threshold: 0.1}}}", []string{"spec.drift.features.a.threshold"}},
		{"feature p-value above 1", "{method: auto, features: {a: {method: z, threshold: 3}}}", []string{"spec.drift.features.a.threshold", "p-value"}},
		{"feature unknown method", "{features: {a: {method: kl}}}", []string{"spec.drift.features.a.method"}},
		{"feature unknown field", "{features: {a: {test: ks}}}", []string{"spec.drift.features.a", "test"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := pipeline.Parse([]byte(spec(c.drift)))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestExamplesParse(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"../../examples/elec2/pipeline.yaml", "../../examples/sensors/pipeline.yaml", "../../examples/command/pipeline.yaml", "../../examples/rollout/pipeline.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pipeline.Parse(data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	t.Parallel()
	withSpec := func(spec string) string {
		return "apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: p1}\nspec:\n" + spec
	}
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"empty", "", []string{"empty"}},
		{"not yaml", "{{{", []string{"not YAML"}},
		{"wrong apiVersion", strings.Replace(minimal, "gyre.dev/v1", "gyre.dev/v2", 1), []string{"apiVersion"}},
		{"bad name", strings.Replace(minimal, "elec2", "Elec.2", 1), []string{"metadata.name"}},
		{"no label", withSpec("  dataset: {}\n"), []string{"spec.dataset", "label"}},
		{"unknown field", withSpec("  dataset: {label: y, lable: x}\n"), []string{"spec.dataset", "lable"}},
		{"bad transform", withSpec("  dataset: {label: y}\n  features: [{name: a}, {name: b, transform: square}]\n"), []string{"spec.features[1].transform"}},
		{"bad threshold", withSpec("  dataset: {label: y}\n  drift: {threshold: -1}\n"), []string{"spec.drift.threshold"}},
		{"bad method", withSpec("  dataset: {label: y}\n  drift: {method: eyeball}\n"), []string{"spec.drift.method"}},
		{"bad algorithm", withSpec("  dataset: {label: y}\n  model: {algorithm: svm}\n"), []string{"spec.model.algorithm"}},
		{"window zero", withSpec("  dataset: {label: y}\n  model: {window: {batches: 0}}\n"), []string{"spec.model.window.batches"}},
		{"label not in schema", withSpec("  dataset: {label: y, schema: [{name: a, type: float}]}\n"), []string{"spec.dataset.label", `"y"`}},
		{"feature not in schema", withSpec("  dataset: {label: y, schema: [{name: y, type: int}, {name: a, type: float}]}\n  features: [{name: b}]\n"), []string{"spec.features[0].name", `"b"`}},
		{"label as feature", withSpec("  dataset: {label: y}\n  features: [{name: y}]\n"), []string{"spec.features[0].name", "label"}},
		{"min > max", withSpec("  dataset: {label: y, schema: [{name: y, type: int}, {name: a, type: float, min: 2, max: 1}]}\n"), []string{"spec.dataset.schema[1]", "min 2"}},
		{"bad CEL", withSpec("  dataset: {label: y, rules: [\"row.a >\"]}\n"), []string{"spec.dataset.rules[0]", "CEL"}},
		{"CEL not bool", withSpec("  dataset: {label: y, rules: [\"1 + 2\"]}\n"), []string{"spec.dataset.rules[0]", "not bool"}},
		{"CEL unknown column", withSpec("  dataset: {label: y, schema: [{name: y, type: int}], rules: [\"row.zz > 1.0\"]}\n"), []string{"spec.dataset.rules[0]", "row.zz"}},
		{"gate with two bounds", withSpec("  dataset: {label: y}\n  evaluation: {gates: [{metric: accuracy, min: 0.5, max: 0.9}]}\n"), []string{"spec.evaluation.gates[0]", "exactly one"}},
		{"steps not ending at 100", withSpec("  dataset: {label: y}\n  deployment: {strategy: canary, steps: [10, 50]}\n"), []string{"spec.deployment.steps", "last step"}},
		{"steps descending", withSpec("  dataset: {label: y}\n  deployment: {strategy: canary, steps: [50, 10, 100]}\n"), []string{"spec.deployment.steps[1]"}},
		{"steps with shadow", withSpec("  dataset: {label: y}\n  deployment: {strategy: shadow, steps: [50, 100]}\n"), []string{"spec.deployment.steps", "canary only"}},
		{"steps with blue-green", withSpec("  dataset: {label: y}\n  deployment: {strategy: blue-green, steps: [100]}\n"), []string{"spec.deployment.steps", "canary only"}},
		{"bad strategy", withSpec("  dataset: {label: y}\n  deployment: {strategy: rainbow}\n"), []string{"spec.deployment.strategy"}},
		{"route header with a space", withSpec("  dataset: {label: y}\n  deployment: {strategy: canary, routeHeader: \"X Tenant\"}\n"), []string{"spec.deployment.routeHeader", "X Tenant"}},
		{"negative latency SLO", withSpec("  dataset: {label: y}\n  deployment: {rollback: {maxLatencyP99Ms: -1}}\n"), []string{"spec.deployment.rollback.maxLatencyP99Ms"}},
		{"minLabels zero", withSpec("  dataset: {label: y}\n  deployment: {rollback: {minLabels: 0}}\n"), []string{"spec.deployment.rollback.minLabels"}},
		{"command without argv", withSpec("  dataset: {label: y}\n  model: {algorithm: command}\n"), []string{"spec.model.command"}},
		{"bucketize without edges", withSpec("  dataset: {label: y}\n  features: [{name: a, transform: bucketize}]\n"), []string{"spec.features[0].buckets"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := pipeline.Parse([]byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			var pe *pipeline.Error
			if !errors.As(err, &pe) || !pe.Permanent() {
				t.Fatalf("error %T is not a permanent *pipeline.Error: %v", err, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestRuleSet(t *testing.T) {
	t.Parallel()
	schema := []pipeline.Column{{Name: "a", Type: "float"}, {Name: "n", Type: "int"}, {Name: "c", Type: "category"}}
	rs, err := pipeline.NewRuleSet([]string{"row.a >= 0.0", "row.n < 10", `row.c in ["x", "y"]`, `has(row.a)`}, schema)
	if err != nil {
		t.Fatal(err)
	}
	if v := rs.Check(map[string]any{"a": 1.5, "n": 3.0, "c": "x"}); len(v) != 0 {
		t.Errorf("good row broke %v", v)
	}
	v := rs.Check(map[string]any{"a": -1.0, "n": 12.0, "c": "z"})
	if len(v) != 3 || v[0].Rule != 0 || v[1].Rule != 1 || v[2].Rule != 2 {
		t.Errorf("violations = %+v", v)
	}
	// A missing value makes has() false and a comparison an error: both are violations.
	v = rs.Check(map[string]any{"n": 1.0, "c": "x"})
	if len(v) != 2 {
		t.Errorf("missing a: %+v", v)
	}
}
