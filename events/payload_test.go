package events

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gyrehq/gyre/events/gyrev1"
)

const testSource = "/gyre/test"

// fill sets every field of m (recursively, to a bounded depth) to a
// deterministic non-zero value, so that round trips exercise every field.
func fill(t *testing.T, m protoreflect.Message, depth int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for j := 0; j < 2; j++ {
				key := protoreflect.ValueOfString(fmt.Sprintf("k%d", j)).MapKey()
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					if depth <= 0 {
						break
					}
					v := mp.NewValue()
					fill(t, v.Message(), depth-1)
					mp.Set(key, v)
					continue
				}
				mp.Set(key, scalar(t, fd.MapValue(), j))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := 0; j < 2; j++ {
				if fd.Kind() == protoreflect.MessageKind {
					if depth <= 0 {
						break
					}
					v := l.NewElement()
					fill(t, v.Message(), depth-1)
					l.Append(v)
					continue
				}
				l.Append(scalar(t, fd, j))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if fd.Message().FullName() == "google.protobuf.Struct" {
				s, err := structpb.NewStruct(map[string]any{"trees": 100, "learningRate": 0.1, "name": "x", "on": true})
				if err != nil {
					t.Fatal(err)
				}
				m.Set(fd, protoreflect.ValueOfMessage(s.ProtoReflect()))
				continue
			}
			if depth <= 0 {
				continue
			}
			fill(t, m.Mutable(fd).Message(), depth-1)
		default:
			if fd.Name() == "pipeline" {
				m.Set(fd, protoreflect.ValueOfString("elec2"))
				continue
			}
			m.Set(fd, scalar(t, fd, 0))
		}
	}
}

func scalar(t *testing.T, fd protoreflect.FieldDescriptor, j int) protoreflect.Value {
	t.Helper()
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d", fd.Name(), j))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{0, 1, 2, byte(j), 0xff})
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(7 + j))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(1<<40 + j))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(7 + j))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(1<<40 + j))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5 + float64(j))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(2.5 + float32(j))
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	}
	t.Fatalf("field %s: unhandled kind %s", fd.FullName(), fd.Kind())
	return protoreflect.Value{}
}

// filled returns a message of the catalog spec's type with every field set.
func filled(t *testing.T, s Spec) proto.Message {
	t.Helper()
	msg, err := NewPayload(s.Type)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, msg.ProtoReflect(), 3)
	return msg
}

func TestEveryCatalogMessageIsRegistered(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, s := range Catalog() {
		if seen[s.Message] {
			t.Errorf("%s: message %s is used by two event types", s.Name, s.Message)
		}
		seen[s.Message] = true
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(s.Message))
		if err != nil {
			t.Errorf("%s: message %s is not registered: %v", s.Name, s.Message, err)
			continue
		}
		if got := mt.Descriptor().ParentFile().Package(); got != "gyre.v1" {
			t.Errorf("%s: message %s is in package %s, want gyre.v1", s.Name, s.Message, got)
		}
		msg, err := NewPayload(s.Type)
		if err != nil {
			t.Errorf("NewPayload(%s): %v", s.Type, err)
			continue
		}
		if got := string(msg.ProtoReflect().Descriptor().FullName()); got != s.Message {
			t.Errorf("NewPayload(%s) = %s, want %s", s.Type, got, s.Message)
		}
		back, err := SpecOf(msg)
		if err != nil || back.Type != s.Type || back.Name != s.Name {
			t.Errorf("SpecOf(%s) = %+v, %v; want the %s spec", s.Message, back, err, s.Name)
		}
		if _, ok := pipelineField(msg); !ok {
			t.Errorf("%s: message %s has no string field pipeline", s.Name, s.Message)
		}
	}
	if len(seen) != len(Catalog()) {
		t.Errorf("%d messages for %d event types", len(seen), len(Catalog()))
	}
}

func TestSpecOfAndNewPayloadErrors(t *testing.T) {
	t.Parallel()
	if _, err := SpecOf(&gyrev1.ObjectRef{}); err == nil || !strings.Contains(err.Error(), "gyre.v1.ObjectRef") {
		t.Errorf("SpecOf(ObjectRef) error = %v, want one naming the message", err)
	}
	if _, err := SpecOf(nil); err == nil {
		t.Error("SpecOf(nil): no error")
	}
	for _, typ := range []string{"", "data.batch.arrived", "dev.gyre.nope.v1"} {
		if _, err := NewPayload(typ); err == nil {
			t.Errorf("NewPayload(%q): no error", typ)
		}
	}
}

func TestRoundTripEveryMessage(t *testing.T) {
	t.Parallel()
	constructors := []struct {
		name        string
		new         func(source, pipeline string, msg proto.Message) (event.Event, error)
		contentType string
	}{
		{"json", New, ContentTypeJSON},
		{"protobuf", NewProtobuf, ContentTypeProtobuf},
	}
	for _, s := range Catalog() {
		for _, c := range constructors {
			t.Run(s.Name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				msg := filled(t, s)
				before := time.Now().UTC()
				ev, err := c.new(testSource, "elec2", msg)
				if err != nil {
					t.Fatal(err)
				}
				checkAttributes(t, ev, s, c.contentType, before)

				// Straight.
				got, err := NewPayload(s.Type)
				if err != nil {
					t.Fatal(err)
				}
				if err := Decode(ev, got); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, msg) {
					t.Fatalf("decoded payload differs:\n got %v\nwant %v", got, msg)
				}

				// Through structured mode (application/cloudevents+json).
				wire, err := json.Marshal(ev)
				if err != nil {
					t.Fatal(err)
				}
				if c.contentType == ContentTypeJSON && !strings.Contains(string(wire), `"data":{`) {
					t.Errorf("structured JSON does not embed the data as an object: %s", wire)
				}
				var back event.Event
				if err := json.Unmarshal(wire, &back); err != nil {
					t.Fatal(err)
				}
				decoded, err := DecodeAny(back)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(decoded, msg) {
					t.Fatalf("payload after structured round trip differs:\n got %v\nwant %v", decoded, msg)
				}
			})
		}
	}
}

func checkAttributes(t *testing.T, ev event.Event, s Spec, contentType string, before time.Time) {
	t.Helper()
	if err := ev.Validate(); err != nil {
		t.Errorf("event invalid: %v", err)
	}
	id, err := uuid.Parse(ev.ID())
	if err != nil || id.Version() != 7 {
		t.Errorf("id %q is not a UUIDv7 (%v)", ev.ID(), err)
	}
	checks := []struct{ attr, got, want string }{
		{"specversion", ev.SpecVersion(), SpecVersion},
		{"source", ev.Source(), testSource},
		{"type", ev.Type(), s.Type},
		{"subject", ev.Subject(), "elec2"},
		{"datacontenttype", ev.DataContentType(), contentType},
		{"dataschema", ev.DataSchema(), "urn:gyre:proto:" + s.Message},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.attr, c.got, c.want)
		}
	}
	if p, ok := ev.Extensions()[ExtensionPipeline]; !ok || p != "elec2" {
		t.Errorf("extension pipeline = %v, want elec2", p)
	}
	tm := ev.Time()
	if tm.Location() != time.UTC || tm.Before(before) || tm.After(time.Now().UTC()) {
		t.Errorf("time %v is not now in UTC", tm)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		source   string
		pipeline string
		msg      proto.Message
		want     string
	}{
		{"not a payload", testSource, "elec2", &gyrev1.ObjectRef{}, "gyre.v1.ObjectRef"},
		{"nil", testSource, "elec2", nil, "nil"},
		{"typed nil", testSource, "elec2", (*gyrev1.DataBatchArrived)(nil), "nil"},
		{"bad pipeline", testSource, "Elec.2", &gyrev1.LabelReceived{}, "invalid name"},
		{"empty pipeline", testSource, "", &gyrev1.LabelReceived{}, "pipeline name is empty"},
		{"pipeline mismatch", testSource, "elec2", &gyrev1.LabelReceived{Pipeline: "other"}, `"other"`},
		{"empty source", "", "elec2", &gyrev1.LabelReceived{Pipeline: "elec2"}, "source"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range []func(string, string, proto.Message) (event.Event, error){New, NewProtobuf} {
				_, err := f(c.source, c.pipeline, c.msg)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("error = %v, want one containing %q", err, c.want)
				}
			}
		})
	}
}

// jsonKeys returns the sorted keys of a JSON object.
func jsonKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestPublicContractJSONNames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		msg  proto.Message
		want []string
	}{
		{"DataBatchArrived/uri", &gyrev1.DataBatchArrived{
			Pipeline: "elec2", BatchId: "b1", Format: "csv", Uri: "nats-object://landing/b1.csv",
			Labels: map[string]string{"k": "v"},
		}, []string{"batchId", "format", "labels", "pipeline", "uri"}},
		{"DataBatchArrived/content", &gyrev1.DataBatchArrived{
			Pipeline: "elec2", BatchId: "b1", Format: "csv", Content: []byte("a,b\n1,2\n"),
			Labels: map[string]string{"k": "v"},
		}, []string{"batchId", "content", "format", "labels", "pipeline"}},
		{"LabelReceived", &gyrev1.LabelReceived{
			Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}},
		}, []string{"labels", "pipeline"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ev, err := New(testSource, "elec2", c.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := jsonKeys(t, ev.Data()); strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Errorf("JSON keys = %v, want %v (data %s)", got, c.want, ev.Data())
			}
		})
	}

	// The label items: exactly predictionId and value.
	raw, err := protojson.Marshal(&gyrev1.LabelReceived{
		Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Labels []json.RawMessage `json:"labels"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Labels) != 1 {
		t.Fatalf("labels of %s: %v", raw, err)
	}
	if got := jsonKeys(t, doc.Labels[0]); strings.Join(got, ",") != "predictionId,value" {
		t.Errorf("label keys = %v, want [predictionId value]", got)
	}
}

// producerEvent is an event as an outside JSON producer would build it.
func producerEvent(t *testing.T, typ, contentType, data string) event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID("producer-1")
	ev.SetSource("/producers/elec2-feed")
	ev.SetType(typ)
	if contentType != "" {
		ev.SetDataContentType(contentType)
	}
	ev.DataEncoded = []byte(data)
	return ev
}

func TestDecodeProducerJSON(t *testing.T) {
	t.Parallel()
	csv := "date,class\n0.1,UP\n"
	content := base64.StdEncoding.EncodeToString([]byte(csv))
	cases := []struct {
		name        string
		typ         string
		contentType string
		data        string
		want        proto.Message
	}{
		{"batch inline", Type(DataBatchArrived), "application/json",
			`{"pipeline":"elec2","batchId":"b1","format":"csv","content":"` + content + `","labels":{"k":"v"}}`,
			&gyrev1.DataBatchArrived{Pipeline: "elec2", BatchId: "b1", Format: "csv", Content: []byte(csv), Labels: map[string]string{"k": "v"}}},
		{"batch uri, snake_case names, unknown field, charset", Type(DataBatchArrived), "application/json; charset=utf-8",
			`{"pipeline":"elec2","batch_id":"b2","format":"parquet","uri":"file:///data/b2.parquet","producerVersion":3}`,
			&gyrev1.DataBatchArrived{Pipeline: "elec2", BatchId: "b2", Format: "parquet", Uri: "file:///data/b2.parquet"}},
		{"labels, no content type", Type(LabelReceived), "",
			`{"pipeline":"elec2","labels":[{"predictionId":"p1","value":"UP"},{"predictionId":"p2","value":"DOWN"}]}`,
			&gyrev1.LabelReceived{Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}, {PredictionId: "p2", Value: "DOWN"}}}},
		{"labels, +json content type", Type(LabelReceived), "application/vnd.elec2+json",
			`{"pipeline":"elec2","labels":[{"predictionId":"p1","value":"UP"}]}`,
			&gyrev1.LabelReceived{Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}}}},
		{"labels, text/json", Type(LabelReceived), "text/json",
			`{"pipeline":"elec2","labels":[{"predictionId":"p1","value":"UP"}]}`,
			&gyrev1.LabelReceived{Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeAny(producerEvent(t, c.typ, c.contentType, c.data))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, c.want) {
				t.Errorf("decoded %v, want %v", got, c.want)
			}
			if err := Validate(got); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestDecodeXProtobuf(t *testing.T) {
	t.Parallel()
	want := &gyrev1.LabelReceived{Pipeline: "elec2", Labels: []*gyrev1.Label{{PredictionId: "p1", Value: "UP"}}}
	data, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got := &gyrev1.LabelReceived{Pipeline: "stale"}
	if err := Decode(producerEvent(t, Type(LabelReceived), "application/x-protobuf", string(data)), got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("decoded %v, want %v", got, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	batchType := Type(DataBatchArrived)
	cases := []struct {
		name        string
		typ         string
		contentType string
		data        string
		dst         proto.Message // nil: DecodeAny
		want        []string      // substrings of the error
	}{
		{"wrong type", Type(LabelReceived), "application/json", `{}`, &gyrev1.DataBatchArrived{},
			[]string{Type(LabelReceived), batchType}},
		{"unknown type", "dev.gyre.nope.v1", "application/json", `{}`, nil,
			[]string{"dev.gyre.nope.v1", "not an event type"}},
		{"no type", "", "application/json", `{}`, nil, []string{"(no type)"}},
		{"destination not a payload", batchType, "application/json", `{}`, &gyrev1.ObjectRef{},
			[]string{batchType, "gyre.v1.ObjectRef"}},
		{"bad JSON syntax", batchType, "application/json", `{"pipeline":`, nil,
			[]string{batchType, "invalid JSON data for gyre.v1.DataBatchArrived"}},
		{"wrong JSON field type", batchType, "application/json", `{"pipeline":"elec2","batchId":5}`, nil,
			[]string{batchType, "batchId"}},
		{"bad base64 content", batchType, "application/json", `{"content":"%%%"}`, nil,
			[]string{batchType, "content"}},
		{"JSON array", Type(LabelReceived), "application/json", `[1,2]`, nil,
			[]string{Type(LabelReceived), "invalid JSON"}},
		{"empty JSON data", batchType, "application/json", ``, nil,
			[]string{batchType, "no data"}},
		{"unknown content type", batchType, "text/csv", `a,b`, nil,
			[]string{batchType, `unsupported datacontenttype "text/csv"`}},
		{"bad protobuf", batchType, "application/protobuf", "\xff\xff\xff", nil,
			[]string{batchType, "invalid protobuf data"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ev := producerEvent(t, c.typ, c.contentType, c.data)
			var err error
			if c.dst != nil {
				err = Decode(ev, c.dst)
			} else {
				_, err = DecodeAny(ev)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
			}
			if !de.Permanent() {
				t.Error("DecodeError is not permanent")
			}
			if de.Type != c.typ {
				t.Errorf("DecodeError.Type = %q, want %q", de.Type, c.typ)
			}
			var perm interface{ Permanent() bool }
			if !errors.As(err, &perm) || !perm.Permanent() {
				t.Error("error does not report Permanent() true through errors.As")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	batch := func(mod func(*gyrev1.DataBatchArrived)) *gyrev1.DataBatchArrived {
		m := &gyrev1.DataBatchArrived{Pipeline: "elec2", BatchId: "b1", Format: "csv", Uri: "nats-object://landing/elec2/b1.csv"}
		if mod != nil {
			mod(m)
		}
		return m
	}
	labels := func(ids ...string) *gyrev1.LabelReceived {
		m := &gyrev1.LabelReceived{Pipeline: "elec2"}
		for _, id := range ids {
			m.Labels = append(m.Labels, &gyrev1.Label{PredictionId: id, Value: "UP"})
		}
		return m
	}
	cases := []struct {
		name      string
		msg       proto.Message
		wantField string // "" = valid
		wantIn    string
	}{
		{"batch uri object", batch(nil), "", ""},
		{"batch uri file", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "file:///data/b1.csv" }), "", ""},
		{"batch uri file localhost", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "file://localhost/data/b1.csv" }), "", ""},
		{"batch content", batch(func(m *gyrev1.DataBatchArrived) { m.Uri, m.Content = "", []byte("a\n1\n") }), "", ""},
		{"batch jsonl", batch(func(m *gyrev1.DataBatchArrived) { m.Format = "jsonl" }), "", ""},
		{"batch parquet", batch(func(m *gyrev1.DataBatchArrived) { m.Format = "parquet" }), "", ""},
		{"batch id 200", batch(func(m *gyrev1.DataBatchArrived) { m.BatchId = strings.Repeat("x", 200) }), "", ""},
		{"batch pipeline empty", batch(func(m *gyrev1.DataBatchArrived) { m.Pipeline = "" }), "pipeline", "empty"},
		{"batch pipeline bad", batch(func(m *gyrev1.DataBatchArrived) { m.Pipeline = "a.b" }), "pipeline", "'.'"},
		{"batch id empty", batch(func(m *gyrev1.DataBatchArrived) { m.BatchId = "" }), "batchId", "empty"},
		{"batch id long", batch(func(m *gyrev1.DataBatchArrived) { m.BatchId = strings.Repeat("x", 201) }), "batchId", "201"},
		{"batch id control", batch(func(m *gyrev1.DataBatchArrived) { m.BatchId = "a\nb" }), "batchId", "control"},
		{"batch format empty", batch(func(m *gyrev1.DataBatchArrived) { m.Format = "" }), "format", "empty"},
		{"batch format bad", batch(func(m *gyrev1.DataBatchArrived) { m.Format = "CSV" }), "format", `"CSV"`},
		{"batch neither", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "" }), "uri", "content"},
		{"batch both", batch(func(m *gyrev1.DataBatchArrived) { m.Content = []byte("x") }), "content", "exactly one"},
		{"batch uri http", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "https://example.com/b1.csv" }), "uri", "not supported"},
		{"batch uri relative", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "data/b1.csv" }), "uri", "not supported"},
		{"batch uri file host", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "file://server/b1.csv" }), "uri", "local"},
		{"batch uri file no path", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "file://" }), "uri", "absolute"},
		{"batch uri no key", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "nats-object://landing/" }), "uri", "key"},
		{"batch uri no bucket", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "nats-object:///k" }), "uri", "bucket"},
		{"batch uri bad bucket", batch(func(m *gyrev1.DataBatchArrived) { m.Uri = "nats-object://a.b/k" }), "uri", "bucket"},
		{"labels ok", labels("p1", "p2"), "", ""},
		{"labels pipeline", &gyrev1.LabelReceived{Labels: labels("p1").Labels}, "pipeline", "empty"},
		{"labels none", labels(), "labels", "at least one"},
		{"labels empty id", labels("p0", "p1", "p2", ""), "labels[3].predictionId", "empty"},
		{"other ok", validExample(t, ModelPromoted), "", ""},
		{"other pipeline empty", &gyrev1.ModelPromoted{ModelVersion: 3}, "pipeline", "empty"},
		{"other pipeline bad", &gyrev1.DriftDetected{Pipeline: "Elec2"}, "pipeline", "'E'"},
		{"other rule", &gyrev1.ModelPromoted{Pipeline: "elec2"}, "modelVersion", "want >= 1"},
		{"not a payload", &gyrev1.ObjectRef{}, "", "gyre.v1.ObjectRef"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := Validate(c.msg)
			if c.wantField == "" && c.wantIn == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
			}
			if !ve.Permanent() {
				t.Error("ValidationError is not permanent")
			}
			if ve.Field != c.wantField {
				t.Errorf("Field = %q, want %q (error %q)", ve.Field, c.wantField, err)
			}
			if !strings.HasPrefix(err.Error(), c.wantField+": ") || !strings.Contains(err.Error(), c.wantIn) {
				t.Errorf("error %q does not name %q and contain %q", err, c.wantField, c.wantIn)
			}
		})
	}
	if err := Validate(batch(func(m *gyrev1.DataBatchArrived) { m.Pipeline = "" })); !errors.Is(err, ErrInvalidName) {
		t.Errorf("pipeline error %v does not wrap ErrInvalidName", err)
	}
	if err := Validate(labels("p0", "p1", "p2", "")); err == nil || err.Error() != "labels[3].predictionId: empty" {
		t.Errorf("error = %v, want labels[3].predictionId: empty", err)
	}
}

func TestObjectURI(t *testing.T) {
	t.Parallel()
	cases := []struct{ bucket, key string }{
		{"gyre-batches", "elec2/abc.csv"},
		{"landing_1", "a b?c#d"},
	}
	for _, c := range cases {
		uri := ObjectURI(c.bucket, c.key)
		b, k, err := ParseObjectURI(uri)
		if err != nil || b != c.bucket || k != c.key {
			t.Errorf("ParseObjectURI(%q) = %q, %q, %v; want %q, %q", uri, b, k, err, c.bucket, c.key)
		}
	}
	for _, bad := range []string{"", "file:///x", "nats-object://", "nats-object://b", "nats-object://b/", "nats-object:///k", "nats-object://b*/k"} {
		if _, _, err := ParseObjectURI(bad); err == nil {
			t.Errorf("ParseObjectURI(%q): no error", bad)
		}
	}
}

func TestJSONIsCompactAndStable(t *testing.T) {
	t.Parallel()
	msg := &gyrev1.DataBatchArrived{Pipeline: "elec2", BatchId: "b1", Format: "csv", Uri: "file:///d/b1.csv"}
	a, err := New(testSource, "elec2", msg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(testSource, "elec2", msg)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"pipeline":"elec2","batchId":"b1","format":"csv","uri":"file:///d/b1.csv"}`
	if string(a.Data()) != want || string(b.Data()) != want {
		t.Errorf("data = %s and %s, want %s", a.Data(), b.Data(), want)
	}
	if a.ID() == b.ID() {
		t.Errorf("two events share id %s", a.ID())
	}
}

// TestNewJSON: an event built from encoded JSON is the event New builds
// from the message, id and time aside; a wrong name or pipeline is refused.
func TestNewJSON(t *testing.T) {
	t.Parallel()
	msg := &gyrev1.PredictionLogged{Pipeline: "elec2", ModelVersion: 2, Variant: "champion", SampleRate: 1,
		Rows: []*gyrev1.Prediction{{PredictionId: "p-1", Output: "UP", Values: []float64{0.5}}}}
	want, err := New(testSource, "elec2", msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewJSON(testSource, "elec2", PredictionLogged, want.Data())
	if err != nil {
		t.Fatal(err)
	}
	got.SetID(want.ID())
	got.SetTime(want.Time())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NewJSON = %v, want %v", got, want)
	}
	var back gyrev1.PredictionLogged
	if err := Decode(got, &back); err != nil || !proto.Equal(&back, msg) {
		t.Errorf("decoded %v (%v), want %v", &back, err, msg)
	}
	for _, c := range []struct{ name, pipeline, want string }{
		{"no.such.event", "elec2", `unknown event name "no.such.event"`},
		{PredictionLogged, "Elec.2", "invalid name"},
	} {
		if _, err := NewJSON(testSource, c.pipeline, c.name, want.Data()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewJSON(%q, %q) error = %v, want one containing %q", c.name, c.pipeline, err, c.want)
		}
	}
}
