package events

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gyrehq/gyre/events/gyrev1"
)

// validExamples holds, for every event of the catalog, a payload that keeps
// its contract and has an item in every list a rule reaches into.
var validExamples = map[string]func() proto.Message{
	PipelineApplied: func() proto.Message {
		spec := `{"apiVersion":"gyre.dev/v1","kind":"Pipeline","metadata":{"name":"elec2"}}`
		sum := sha256.Sum256([]byte(spec))
		return &gyrev1.PipelineApplied{Pipeline: "elec2", SpecJson: spec, Revision: 2, Sha256: hex.EncodeToString(sum[:]), AppliedBy: "cli"}
	},
	DataBatchArrived: func() proto.Message {
		return &gyrev1.DataBatchArrived{Pipeline: "elec2", BatchId: "b1", Format: "csv", Uri: "nats-object://landing/elec2/b1.csv"}
	},
	DataBatchReceived: func() proto.Message {
		return &gyrev1.DataBatchReceived{Pipeline: "elec2", BatchId: "b1", Object: object("gyre-batches", "elec2/b1.csv"),
			Sha256: hexSum("b1"), Rows: 10, Bytes: 100, Format: "csv", Columns: []string{"x", "class"}}
	},
	DataBatchValidated: func() proto.Message {
		return &gyrev1.DataBatchValidated{Pipeline: "elec2", BatchId: "b1", Object: object("gyre-batches", "elec2/b1.csv"),
			Format: "csv", Rows: 10, Columns: []*gyrev1.ColumnStats{{Name: "x", Type: "float", Count: 10}}, ChecksPassed: true,
			PipelineRevision: 1}
	},
	DataBatchRejected: func() proto.Message {
		return &gyrev1.DataBatchRejected{Pipeline: "elec2", BatchId: "b1", Rows: 10,
			Reasons: []*gyrev1.RejectReason{{Column: "x", Row: 3, Rule: "type", Message: "not a float"}}, ReasonsTotal: 4}
	},
	FeaturesMaterialized: func() proto.Message {
		return &gyrev1.FeaturesMaterialized{Pipeline: "elec2", BatchId: "b1", FeatureSetVersion: "fs1",
			Snapshot: object("gyre-features", "elec2/b1.parquet"), Source: object("gyre-batches", "elec2/b1.csv"), Rows: 10,
			OnlineStore: "jetstream-kv", Columns: []*gyrev1.FeatureColumn{{Name: "x", Source: "x", Transform: "standardize", Type: "float"}}}
	},
	DriftMeasured: func() proto.Message {
		return &gyrev1.DriftMeasured{Pipeline: "elec2", BatchId: "b1", ReferenceModelVersion: 1, Method: "psi", Threshold: 0.2,
			Features: []*gyrev1.FeatureDrift{{Feature: "x", Score: 0.1, Threshold: 0.2}}, ShareThreshold: 0.5, Rows: 10}
	},
	DriftDetected: func() proto.Message {
		return &gyrev1.DriftDetected{Pipeline: "elec2", BatchId: "b1", ReferenceModelVersion: 1, Method: "ks", Threshold: 0.05,
			Features:        []*gyrev1.FeatureDrift{{Feature: "x", Score: 0.4, Drifted: true}, {Feature: "y", Score: 0.01}},
			DriftedFeatures: []string{"x"}, ShareDrifted: 0.5, ShareThreshold: 0.5, Rows: 100}
	},
	PerformanceDegraded: func() proto.Message {
		return &gyrev1.PerformanceDegraded{Pipeline: "elec2", ModelVersion: 3, Metric: "accuracy", BaselineAccuracy: 0.8,
			LiveAccuracy: 0.6, Drop: 0.8 - 0.6, MaxDrop: 0.1, LabelledRows: 200, Predictions: 250}
	},
	TrainingRequested: func() proto.Message {
		return &gyrev1.TrainingRequested{Pipeline: "elec2", RequestId: "r1", Reason: "drift", Pool: "cpu", Algorithm: "gbdt",
			WindowBatchIds: []string{"b1"}, Window: []*gyrev1.BatchRef{{BatchId: "b1", Object: object("gyre-batches", "elec2/b1.csv"), Format: "csv", Rows: 10}},
			DatasetVersion: "ds1", LabelColumn: "class", PipelineRevision: 1}
	},
	TrainingStarted: func() proto.Message {
		return &gyrev1.TrainingStarted{Pipeline: "elec2", RequestId: "r1", JobId: "j1", Worker: "w1", Pool: "cpu", Attempt: 1, Rows: 10}
	},
	TrainingCompleted: func() proto.Message {
		return &gyrev1.TrainingCompleted{Pipeline: "elec2", RequestId: "r1", JobId: "j1", Pool: "cpu", Attempt: 1, Algorithm: "gbdt",
			Artifact: object("gyre-models", "elec2/r1.model"), DurationMs: 80, TrainRows: 800, TestRows: 200}
	},
	TrainingFailed: func() proto.Message {
		return &gyrev1.TrainingFailed{Pipeline: "elec2", RequestId: "r1", JobId: "j1", Attempt: 2, Error: "window batch b1: not found"}
	},
	ModelEvaluated: func() proto.Message {
		at := int64(2)
		return &gyrev1.ModelEvaluated{Pipeline: "elec2", RequestId: "r1", CandidateArtifact: object("gyre-models", "elec2/r1.model"),
			ChampionVersion: 2, EvalRows: 100, CandidateMetrics: map[string]float64{"accuracy": 0.8},
			Gates:   []*gyrev1.Gate{{Metric: "accuracy", Kind: "min", Value: 0.8, Threshold: 0.5, Passed: true}},
			Verdict: "blessed", ChampionAtEvaluation: &at}
	},
	ModelRegistered: func() proto.Message {
		return &gyrev1.ModelRegistered{Pipeline: "elec2", ModelVersion: 3, Verdict: "rejected", Artifact: object("gyre-models", "elec2/r1.model")}
	},
	ModelPromoted: func() proto.Message {
		return &gyrev1.ModelPromoted{Pipeline: "elec2", ModelVersion: 3, Alias: "champion", PreviousVersion: 2, Reason: "blessed",
			Artifact: object("gyre-models", "elec2/r1.model"), Generation: 4}
	},
	DeploymentStarted: func() proto.Message {
		return &gyrev1.DeploymentStarted{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 3, PreviousVersion: 2, Strategy: "canary",
			Steps: []int32{10, 50, 100}, Artifact: object("gyre-models", "elec2/r1.model"), Reason: "promoted", Generation: 4}
	},
	DeploymentProgressed: func() proto.Message {
		return &gyrev1.DeploymentProgressed{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 3, PreviousVersion: 2, Strategy: "canary",
			Step: 2, TrafficPercent: 50, Generation: 4}
	},
	DeploymentCompleted: func() proto.Message {
		return &gyrev1.DeploymentCompleted{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 3, PreviousVersion: 2, Strategy: "immediate",
			TrafficPercent: 100, DurationMs: 5, Generation: 4}
	},
	DeploymentRolledBack: func() proto.Message {
		return &gyrev1.DeploymentRolledBack{Pipeline: "elec2", DeploymentId: "d1", ModelVersion: 3, PreviousVersion: 2, Strategy: "canary",
			Step: 1, TrafficPercent: 10, Reason: "errorRate 0.05 > maxErrorRate 0.02", Generation: 4}
	},
	PredictionLogged: func() proto.Message {
		return &gyrev1.PredictionLogged{Pipeline: "elec2", ModelVersion: 3, Variant: "champion", Features: []string{"x"},
			Rows: []*gyrev1.Prediction{{PredictionId: "p1", Values: []float64{0.5}, Output: "UP"}}, SampleRate: 1, LatencyMs: 0.4}
	},
	LabelReceived: func() proto.Message {
		return &gyrev1.LabelReceived{Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}}}
	},
}

func object(bucket, key string) *gyrev1.ObjectRef {
	return &gyrev1.ObjectRef{Bucket: bucket, Key: key, Uri: ObjectURI(bucket, key), Sha256: hexSum(key)}
}

func hexSum(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func validExample(t *testing.T, name string) proto.Message {
	t.Helper()
	f, ok := validExamples[name]
	if !ok {
		t.Fatalf("no valid example of %s", name)
	}
	return f()
}

// TestContractsCoverTheCatalog: every event of the catalog has a contract
// whose paths name fields of its message, and nothing else has one; the
// examples the other tests start from keep their contracts.
func TestContractsCoverTheCatalog(t *testing.T) {
	t.Parallel()
	for name := range contracts {
		if _, ok := Lookup(name); !ok {
			t.Errorf("contract for %q, which is not an event of the catalog", name)
		}
	}
	for _, s := range Catalog() {
		c, err := compileContract(s)
		if err != nil {
			t.Errorf("%s: %v", s.Name, err)
			continue
		}
		rules := Rules(s.Name)
		if len(rules) < 2 {
			t.Errorf("%s: %d rules; every payload has rules of its own beyond its pipeline", s.Name, len(rules))
		}
		if len(rules) != len(c.rules) {
			t.Errorf("%s: Rules lists %d rules, the contract has %d", s.Name, len(rules), len(c.rules))
		}
		for _, r := range rules {
			if r.Name == "" || r.Doc == "" {
				t.Errorf("%s: rule %+v lacks a name or a doc", s.Name, r)
			}
		}
		if rules[0] != (Rule{Field: "pipeline", Name: "name", Doc: "a pipeline name: 1 to 63 of [a-z0-9-]"}) {
			t.Errorf("%s: first rule %+v, want the pipeline's name", s.Name, rules[0])
		}
		ex := validExample(t, s.Name)
		if got, _ := SpecOf(ex); got.Name != s.Name {
			t.Errorf("example of %s is a %s", s.Name, got.Name)
		}
		if err := Validate(ex); err != nil {
			t.Errorf("example of %s: %v", s.Name, err)
		}
	}
	if Rules("no.such.event") != nil {
		t.Error("Rules of an unknown event")
	}
}

// TestEveryFieldRuleRefusesItsBreakingValue breaks each field rule of each
// contract in turn, in the valid example, with a value the rule exists to
// refuse, and expects that rule, at that field, to be what Validate
// reports.
func TestEveryFieldRuleRefusesItsBreakingValue(t *testing.T) {
	t.Parallel()
	for _, s := range Catalog() {
		for _, r := range compiled()[s.Name].rules {
			if r.path == nil {
				continue
			}
			t.Run(s.Name+"/"+r.Field+"/"+r.Name, func(t *testing.T) {
				t.Parallel()
				msg := validExample(t, s.Name)
				at := breakAt(t, msg.ProtoReflect(), r.path, "", &r.rule)
				err := Validate(msg)
				var ve *ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("broken %s: Validate = %v, want a *ValidationError", at, err)
				}
				if ve.Field != at || ve.Rule != r.Name {
					t.Fatalf("broken %s (rule %s): error names %s (rule %s): %v", at, r.Name, ve.Field, ve.Rule, err)
				}
				if !ve.Permanent() || ve.Reason == "" {
					t.Errorf("error %v: not permanent or no reason", err)
				}
			})
		}
	}
}

// breakAt walks path through the first item of every list and sets the
// leaf to a value that breaks r; it returns the JSON path broken.
func breakAt(t *testing.T, m protoreflect.Message, path []step, at string, r *rule) string {
	t.Helper()
	st := path[0]
	name := at + st.fd.JSONName()
	if st.each {
		list := m.Mutable(st.fd).List()
		if list.Len() == 0 {
			t.Fatalf("the example has no item in %s to break", name)
		}
		name += "[0]"
		if len(path) > 1 {
			return breakAt(t, list.Get(0).Message(), path[1:], name+".", r)
		}
		list.Set(0, breaking(t, st.fd, r, true))
		return name
	}
	if len(path) > 1 {
		return breakAt(t, m.Mutable(st.fd).Message(), path[1:], name+".", r)
	}
	if r.Name == "required" {
		m.Clear(st.fd)
		return name
	}
	m.Set(st.fd, breaking(t, st.fd, r, false))
	return name
}

// breaking is a value of fd's kind that breaks r.
func breaking(t *testing.T, fd protoreflect.FieldDescriptor, r *rule, item bool) protoreflect.Value {
	t.Helper()
	number := func(f float64) protoreflect.Value {
		switch fd.Kind() {
		case protoreflect.Int32Kind:
			return protoreflect.ValueOfInt32(int32(f))
		case protoreflect.Int64Kind:
			return protoreflect.ValueOfInt64(int64(f))
		case protoreflect.DoubleKind:
			return protoreflect.ValueOfFloat64(f)
		}
		t.Fatalf("rule %s on %s: unhandled kind %s", r.Name, fd.FullName(), fd.Kind())
		return protoreflect.Value{}
	}
	switch r.Name {
	case "required":
		if item && fd.Kind() == protoreflect.StringKind {
			return protoreflect.ValueOfString("")
		}
	case "name":
		return protoreflect.ValueOfString("Not.A.Name")
	case "id":
		return protoreflect.ValueOfString(strings.Repeat("x", MaxBatchIDLen+1))
	case "enum":
		return protoreflect.ValueOfString("not-a-value")
	case "sha256":
		return protoreflect.ValueOfString("ABC")
	case "min":
		var min float64
		if _, err := fmt.Sscanf(r.Doc, ">= %g", &min); err != nil {
			t.Fatalf("rule %s: doc %q", r.Name, r.Doc)
		}
		return number(min - 1)
	case "range":
		var lo, hi float64
		if _, err := fmt.Sscanf(strings.Trim(strings.TrimPrefix(r.Doc, "in "), "[]()"), "%g, %g", &lo, &hi); err != nil {
			t.Fatalf("rule %s: doc %q: %v", r.Name, r.Doc, err)
		}
		return number(hi + 1)
	}
	t.Fatalf("no breaking value for rule %s on %s", r.Name, fd.FullName())
	return protoreflect.Value{}
}

// TestRulesAcrossFields: each rule across fields refuses what it exists to
// refuse, naming the field; every such rule of every contract has a case.
func TestRulesAcrossFields(t *testing.T) {
	t.Parallel()
	cases := []struct {
		event  string
		rule   string
		mutate func(m proto.Message)
		field  string
		in     string
	}{
		{PipelineApplied, "json", func(m proto.Message) {
			p := m.(*gyrev1.PipelineApplied)
			p.SpecJson = "{not json"
			p.Sha256 = hexSum(p.SpecJson)
		}, "specJson", "not a JSON document"},
		{PipelineApplied, "digest", func(m proto.Message) { m.(*gyrev1.PipelineApplied).Sha256 = hexSum("other") }, "sha256", "SHA-256 is"},
		{DataBatchArrived, "source", func(m proto.Message) { m.(*gyrev1.DataBatchArrived).Uri = "" }, "uri", "content"},
		{DataBatchArrived, "source", func(m proto.Message) { m.(*gyrev1.DataBatchArrived).Content = []byte("x") }, "content", "exactly one"},
		{DataBatchArrived, "source", func(m proto.Message) { m.(*gyrev1.DataBatchArrived).Uri = "https://example.com/b.csv" }, "uri", "not supported"},
		{DataBatchReceived, "stored", func(m proto.Message) { m.(*gyrev1.DataBatchReceived).Object = nil }, "object.key", "stored"},
		{DataBatchRejected, "reasons", func(m proto.Message) { m.(*gyrev1.DataBatchRejected).ReasonsTotal = 0 }, "reasonsTotal", "fewer than the 1"},
		{DriftDetected, "crossed", func(m proto.Message) { m.(*gyrev1.DriftDetected).ShareDrifted = 0.25 }, "shareDrifted", "under shareThreshold 0.5"},
		{DriftDetected, "drifted", func(m proto.Message) { m.(*gyrev1.DriftDetected).DriftedFeatures = []string{"x", "y"} }, "driftedFeatures[1]", `"y"`},
		{PerformanceDegraded, "drop", func(m proto.Message) { m.(*gyrev1.PerformanceDegraded).Drop = 0.5 }, "drop", "baselineAccuracy - liveAccuracy is 0.2"},
		{PerformanceDegraded, "drop", func(m proto.Message) {
			p := m.(*gyrev1.PerformanceDegraded)
			p.LiveAccuracy, p.Drop = 0.75, 0.8-0.75
		}, "drop", "within maxDrop 0.1"},
		{ModelEvaluated, "verdict", func(m proto.Message) { m.(*gyrev1.ModelEvaluated).Gates[0].Passed = false }, "verdict", "gates[0] (accuracy min) failed"},
		{ModelEvaluated, "verdict", func(m proto.Message) { m.(*gyrev1.ModelEvaluated).CandidateMetrics = nil }, "verdict", "no metrics"},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.event+"/"+c.rule] = true
		t.Run(c.event+"/"+c.rule+"/"+c.field, func(t *testing.T) {
			t.Parallel()
			msg := validExample(t, c.event)
			c.mutate(msg)
			var ve *ValidationError
			if err := Validate(msg); !errors.As(err, &ve) || ve.Field != c.field || ve.Rule != c.rule || !strings.Contains(ve.Reason, c.in) {
				t.Fatalf("Validate = %v, want field %s rule %s with %q", err, c.field, c.rule, c.in)
			}
		})
	}
	for _, s := range Catalog() {
		for _, r := range compiled()[s.Name].rules {
			if r.whole != nil && !covered[s.Name+"/"+r.Name] {
				t.Errorf("%s: rule %s across fields has no case", s.Name, r.Name)
			}
		}
	}
}

// delivered builds the event a producer would send: JSON data, the given
// subject attribute and pipeline extension ("" leaves one out).
func delivered(t *testing.T, name, subjectAttr, pipelineExt, data string) event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID("e1")
	ev.SetSource("/producer")
	ev.SetType(Type(name))
	if subjectAttr != "" {
		ev.SetSubject(subjectAttr)
	}
	if pipelineExt != "" {
		ev.SetExtension(ExtensionPipeline, pipelineExt)
	}
	ev.SetDataContentType(ContentTypeJSON)
	ev.DataEncoded = []byte(data)
	return ev
}

func TestDecodeDelivered(t *testing.T) {
	t.Parallel()
	degraded := `{"pipeline":"elec2","modelVersion":"3","metric":"accuracy","baselineAccuracy":0.8,"liveAccuracy":0.6,` +
		`"drop":0.20000000000000007,"maxDrop":0.1,"labelledRows":"200","predictions":"250"}`
	job := `{"pipeline":"elec2","requestId":"r1","reason":"drift","pool":"cpu","algorithm":"gbdt",` +
		`"window":[{"batchId":"b1","object":{"key":"elec2/b1.csv"},"format":"csv"}]}`
	const degradedSubject = "gyre.ev.elec2.performance.degraded"
	cases := []struct {
		name    string
		subject string
		ev      event.Event
		field   string // "" with rule "" = accepted
		rule    string
		in      string
	}{
		{"degraded", degradedSubject, delivered(t, PerformanceDegraded, "elec2", "elec2", degraded), "", "", ""},
		{"no subject attribute nor extension", degradedSubject, delivered(t, PerformanceDegraded, "", "", degraded), "", "", ""},
		{"unknown field of a newer producer", degradedSubject,
			delivered(t, PerformanceDegraded, "elec2", "elec2", strings.Replace(degraded, "{", `{"window":{"from":1},`, 1)), "", "", ""},
		{"snake_case names", "gyre.ev.elec2.label.received",
			delivered(t, LabelReceived, "elec2", "elec2", `{"pipeline":"elec2","labels":[{"prediction_id":"p1","value":"UP"}]}`), "", "", ""},
		{"degraded with only a pipeline", degradedSubject,
			delivered(t, PerformanceDegraded, "elec2", "elec2", `{"pipeline":"elec2"}`), "modelVersion", "min", "0, want >= 1"},
		{"payload pipeline not the subject's", degradedSubject,
			delivered(t, PerformanceDegraded, "", "", strings.Replace(degraded, `"elec2"`, `"other"`, 1)), "pipeline", "subject", `"other", but the subject gyre.ev.elec2.performance.degraded is pipeline "elec2"'s`},
		{"subject attribute not the subject's", degradedSubject,
			delivered(t, PerformanceDegraded, "other", "", degraded), "ce.subject", "subject", `"other"`},
		{"pipeline extension not the subject's", degradedSubject,
			delivered(t, PerformanceDegraded, "elec2", "other", degraded), "ce.pipeline", "subject", `"other"`},
		{"type not the subject's", "gyre.ev.elec2.drift.detected",
			delivered(t, PerformanceDegraded, "elec2", "elec2", degraded), "ce.type", "subject", "carries dev.gyre.drift.detected.v1, not dev.gyre.performance.degraded.v1"},
		{"not an event subject", "gyre.other.elec2.performance.degraded",
			delivered(t, PerformanceDegraded, "elec2", "elec2", degraded), "", "subject", "not an event subject"},
		{"unknown type", degradedSubject,
			delivered(t, "no.such", "elec2", "elec2", degraded), "ce.type", "catalog", "not an event type of the catalog"},
		{"wrong JSON type", degradedSubject,
			delivered(t, PerformanceDegraded, "elec2", "elec2", strings.Replace(degraded, `"3"`, `"three"`, 1)), "", "decode", "modelVersion"},
		{"JSON array", degradedSubject, delivered(t, PerformanceDegraded, "elec2", "elec2", `[1]`), "", "decode", "invalid JSON"},
		{"no data", degradedSubject, delivered(t, PerformanceDegraded, "elec2", "elec2", ``), "", "decode", "no data"},
		{"job", "gyre.jobs.train.cpu", delivered(t, TrainingRequested, "elec2", "elec2", job), "", "", ""},
		{"job of another pool", "gyre.jobs.train.gpu", delivered(t, TrainingRequested, "elec2", "elec2", job), "pool", "subject", `pool "gpu"'s queue`},
		{"job without a request id", "gyre.jobs.train.cpu",
			delivered(t, TrainingRequested, "elec2", "elec2", strings.Replace(job, `"requestId":"r1",`, "", 1)), "requestId", "job", "empty"},
		{"job without a window", "gyre.jobs.train.cpu",
			delivered(t, TrainingRequested, "elec2", "elec2", `{"pipeline":"elec2","requestId":"r1","reason":"drift","pool":"cpu","algorithm":"gbdt"}`), "window", "job", "empty"},
		{"job pipeline not the event's", "gyre.jobs.train.cpu",
			delivered(t, TrainingRequested, "other", "", job), "pipeline", "subject", `"elec2", but the event's subject is pipeline "other"`},
		{"not a job on the job subject", "gyre.jobs.train.cpu",
			delivered(t, PerformanceDegraded, "elec2", "elec2", degraded), "ce.type", "subject", "carries training jobs"},
		{"manual training request", "gyre.ev.elec2.training.requested",
			delivered(t, TrainingRequested, "elec2", "elec2", `{"pipeline":"elec2","reason":"manual","requestedBy":"cli"}`), "", "", ""},
		{"prediction on its subject", "gyre.pred.elec2.prediction.logged",
			delivered(t, PredictionLogged, "elec2", "elec2", `{"pipeline":"elec2","modelVersion":"1","variant":"champion","rows":[{"predictionId":"p1"}],"sampleRate":1}`), "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			msg, err := DecodeDelivered(c.subject, c.ev)
			if c.rule == "" {
				if err != nil {
					t.Fatalf("DecodeDelivered: %v", err)
				}
				if got, _ := pipelineField(msg); got != "elec2" {
					t.Errorf("decoded pipeline %q", got)
				}
				return
			}
			var ce *ContractError
			if !errors.As(err, &ce) {
				t.Fatalf("DecodeDelivered = %v (%T), want a *ContractError", err, err)
			}
			if msg != nil {
				t.Error("a payload returned with a contract error")
			}
			if ce.Field != c.field || ce.Rule != c.rule || !strings.Contains(ce.Reason, c.in) || !ce.Permanent() {
				t.Fatalf("error %q: field %q rule %q; want field %q rule %q with %q", err, ce.Field, ce.Rule, c.field, c.rule, c.in)
			}
			want := "contract " + c.ev.Type() + ": "
			if c.field != "" {
				want += c.field + ": "
			}
			if !strings.HasPrefix(err.Error(), want+"rule "+c.rule+": ") {
				t.Errorf("error %q does not start with %q", err, want+"rule "+c.rule+": ")
			}
		})
	}
}

func TestDecodeChecked(t *testing.T) {
	t.Parallel()
	ok, err := New(testSource, "elec2", validExample(t, PerformanceDegraded))
	if err != nil {
		t.Fatal(err)
	}
	var got gyrev1.PerformanceDegraded
	if err := DecodeChecked(ok, &got); err != nil || got.GetModelVersion() != 3 {
		t.Fatalf("DecodeChecked = %v, %v", err, &got)
	}

	// Another pipeline in the payload than in the event's attributes.
	other := ok.Clone()
	other.SetSubject("other")
	other.SetExtension(ExtensionPipeline, "other")
	var ce *ContractError
	if err := DecodeChecked(other, &got); !errors.As(err, &ce) || ce.Field != "pipeline" || ce.Rule != "subject" {
		t.Errorf("DecodeChecked of a payload of another pipeline = %v, want a contract error of pipeline", err)
	}

	// A rule broken: the *ValidationError is inside.
	only, err := New(testSource, "elec2", &gyrev1.PerformanceDegraded{Pipeline: "elec2"})
	if err != nil {
		t.Fatal(err)
	}
	err = DecodeChecked(only, &got)
	var ve *ValidationError
	if !errors.As(err, &ce) || !errors.As(err, &ve) || ve.Field != "modelVersion" {
		t.Errorf("DecodeChecked of a payload with only a pipeline = %v, want a contract error of modelVersion", err)
	}
	// A pipeline name error still wraps ErrInvalidName.
	bad := delivered(t, PerformanceDegraded, "", "", `{"pipeline":"Elec2"}`)
	if err := DecodeChecked(bad, &got); !errors.Is(err, ErrInvalidName) || !errors.As(err, &ce) || ce.Rule != "name" {
		t.Errorf("DecodeChecked of a bad pipeline name = %v, want a contract error wrapping ErrInvalidName", err)
	}

	// The wrong destination is the caller's mistake, not a contract breach.
	err = DecodeChecked(ok, &gyrev1.ModelPromoted{})
	var de *DecodeError
	if !errors.As(err, &de) || errors.As(err, &ce) {
		t.Errorf("DecodeChecked into another type = %v, want a *DecodeError only", err)
	}
}
