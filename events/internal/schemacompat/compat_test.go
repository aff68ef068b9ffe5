package schemacompat

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// baselinePath is the checked-in baseline, from this package's directory.
var baselinePath = filepath.Join("..", "..", "..", "schemas", "baseline", "gyre-v1.json")

// TestSchemasKeepTheBaseline is the CI check (scripts/check-breaking.sh):
// the payload schemas compiled into events/gyrev1 break nothing a consumer
// of the last release relies on.
func TestSchemasKeepTheBaseline(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(baselinePath)
	if err != nil {
		t.Fatalf("read the baseline: %v (write it with make schema-baseline)", err)
	}
	baseline, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	// A baseline without the public payloads would let anything pass.
	was := messages(baseline)
	for _, m := range []string{"gyre.v1.DataBatchArrived", "gyre.v1.LabelReceived"} {
		if _, ok := was[m]; !ok {
			t.Fatalf("the baseline %s lacks %s: it is not a baseline of the payloads", baselinePath, m)
		}
	}
	current := Current()
	if problems := Check(baseline, current, Public(baseline)); len(problems) > 0 {
		var b strings.Builder
		for _, p := range problems {
			b.WriteString("\n  " + p.String())
		}
		t.Errorf("breaking changes to the published payloads since the baseline (%s):%s\n"+
			"Add a field instead of changing one; retire a field of a non-public payload by reserving its number and name. "+
			"A deliberate break needs a new version of the payload; the baseline moves only on a release (make schema-baseline).",
			baselinePath, b.String())
	}
}

func TestMarshalIsStable(t *testing.T) {
	t.Parallel()
	a, err := Marshal(Current())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Marshal(Current())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same schemas differ")
	}
	back, err := Unmarshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, Current()) {
		t.Fatal("the baseline encoding does not decode to the schemas it encodes")
	}
	if len(back.GetFile()) == 0 {
		t.Fatal("no payload files compiled in")
	}
}

// TestCheckFindsBreakingChanges mutates a copy of the current descriptors
// and expects the check to name each break, and to pass additions.
func TestCheckFindsBreakingChanges(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mutate func(t *testing.T, set *descriptorpb.FileDescriptorSet)
		want   string // substring of the one problem expected; "" = compatible
	}{
		{"field removed", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			m := message(t, set, "PerformanceDegraded")
			removeField(t, m, "model_version")
		}, "gyre.v1.PerformanceDegraded.model_version: field 2 removed without reserving"},
		{"field type changed", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			field(t, message(t, set, "ModelPromoted"), "model_version").Type = descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum()
		}, "gyre.v1.ModelPromoted.model_version: type changed from int64 to int32"},
		{"field message type changed", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			field(t, message(t, set, "ModelPromoted"), "artifact").TypeName = proto.String(".gyre.v1.Lineage")
		}, "type changed from message gyre.v1.ObjectRef to message gyre.v1.Lineage"},
		{"repeated made singular", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			field(t, message(t, set, "LabelReceived"), "labels").Label = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
		}, "gyre.v1.LabelReceived.labels: cardinality changed from repeated to singular"},
		{"explicit presence dropped", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			f := field(t, message(t, set, "ModelEvaluated"), "champion_at_evaluation")
			f.Proto3Optional, f.OneofIndex = nil, nil
		}, "champion_at_evaluation: cardinality changed from optional (explicit presence) to singular"},
		{"field renumbered", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			field(t, message(t, set, "DataBatchArrived"), "batch_id").Number = proto.Int32(20)
		}, "gyre.v1.DataBatchArrived.batch_id: renumbered from 2 to 20"},
		{"field renamed, JSON name kept", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			// protojson reads the proto name too, and Go code uses it.
			field(t, message(t, set, "DriftDetected"), "batch_id").Name = proto.String("batch")
		}, "gyre.v1.DriftDetected.batch_id: field 2 renamed to batch"},
		{"JSON name of a public payload changed", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			field(t, message(t, set, "Label"), "prediction_id").JsonName = proto.String("predictionID")
		}, "gyre.v1.Label.prediction_id: JSON name changed from predictionId to predictionID"},
		{"map value type changed", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			field(t, message(t, set, "ModelPromoted.MetricsEntry"), "value").Type = descriptorpb.FieldDescriptorProto_TYPE_FLOAT.Enum()
		}, "gyre.v1.ModelPromoted.MetricsEntry.value: type changed from double to float"},
		{"message removed", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			for _, f := range set.GetFile() {
				for i, m := range f.GetMessageType() {
					if m.GetName() == "TrainingFailed" {
						f.MessageType = append(f.MessageType[:i], f.MessageType[i+1:]...)
						return
					}
				}
			}
			t.Fatal("no TrainingFailed")
		}, "gyre.v1.TrainingFailed: message removed"},
		{"public field removed though reserved", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			m := message(t, set, "DataBatchArrived")
			removeField(t, m, "labels")
			reserve(m, "labels", 6)
		}, "gyre.v1.DataBatchArrived.labels: field 6 removed from a public payload"},
		{"internal field removed and reserved", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			m := message(t, set, "DriftMeasured")
			removeField(t, m, "feature_set_version")
			reserve(m, "feature_set_version", 13)
		}, ""},
		{"internal field removed, only its number reserved", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			m := message(t, set, "DriftMeasured")
			removeField(t, m, "feature_set_version")
			m.ReservedRange = append(m.ReservedRange, &descriptorpb.DescriptorProto_ReservedRange{Start: proto.Int32(13), End: proto.Int32(14)})
		}, "gyre.v1.DriftMeasured.feature_set_version: field 13 removed without reserving its number and name"},
		{"field added", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			m := message(t, set, "DataBatchArrived")
			m.Field = append(m.Field, &descriptorpb.FieldDescriptorProto{
				Name: proto.String("priority"), JsonName: proto.String("priority"), Number: proto.Int32(7),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum(),
			})
		}, ""},
		{"message added", func(t *testing.T, set *descriptorpb.FileDescriptorSet) {
			set.File[0].MessageType = append(set.File[0].MessageType, &descriptorpb.DescriptorProto{Name: proto.String("Extra")})
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			baseline := Current()
			current := proto.Clone(baseline).(*descriptorpb.FileDescriptorSet)
			c.mutate(t, current)
			problems := Check(baseline, current, Public(baseline))
			if c.want == "" {
				if len(problems) != 0 {
					t.Fatalf("a compatible change reported as breaking: %v", problems)
				}
				return
			}
			if len(problems) != 1 || !strings.Contains(problems[0].String(), c.want) {
				t.Fatalf("problems %v, want exactly one containing %q", problems, c.want)
			}
		})
	}
	if p := Check(Current(), Current(), Public(Current())); len(p) != 0 {
		t.Errorf("the schemas break themselves: %v", p)
	}
}

// message returns a message of set by its name within gyre.v1 ("Label",
// "ModelPromoted.MetricsEntry").
func message(t *testing.T, set *descriptorpb.FileDescriptorSet, name string) *descriptorpb.DescriptorProto {
	t.Helper()
	m, ok := messages(set)[Package+"."+name]
	if !ok {
		t.Fatalf("no message %s", name)
	}
	return m
}

func field(t *testing.T, m *descriptorpb.DescriptorProto, name string) *descriptorpb.FieldDescriptorProto {
	t.Helper()
	for _, f := range m.GetField() {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("%s has no field %s", m.GetName(), name)
	return nil
}

func removeField(t *testing.T, m *descriptorpb.DescriptorProto, name string) {
	t.Helper()
	for i, f := range m.GetField() {
		if f.GetName() == name {
			m.Field = append(m.Field[:i], m.Field[i+1:]...)
			return
		}
	}
	t.Fatalf("%s has no field %s", m.GetName(), name)
}

func reserve(m *descriptorpb.DescriptorProto, name string, number int32) {
	m.ReservedName = append(m.ReservedName, name)
	m.ReservedRange = append(m.ReservedRange, &descriptorpb.DescriptorProto_ReservedRange{Start: proto.Int32(number), End: proto.Int32(number + 1)})
}
