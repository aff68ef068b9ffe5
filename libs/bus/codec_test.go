package bus_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/gyrehq/gyre/libs/bus"
)

func sampleEvent() event.Event {
	ev := event.New()
	ev.SetID("0193a0c4-0000-7000-8000-000000000001")
	ev.SetSource("/gyre/ingest")
	ev.SetType("dev.gyre.data.batch.received.v1")
	ev.SetSubject("elec2")
	ev.SetTime(time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC))
	ev.SetDataSchema("urn:gyre:proto:gyre.v1.DataBatchReceived")
	ev.SetExtension("pipeline", "elec2")
	ev.SetExtension("correlationid", "c-1")
	ev.SetExtension("causationid", "a-1")
	ev.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	_ = ev.SetData("application/json", map[string]any{"batchId": "b1", "rows": 1000})
	return ev
}

func TestEncodeBinaryHeaders(t *testing.T) {
	t.Parallel()
	ev := sampleEvent()
	msg, err := bus.EncodeBinary("gyre.ev.elec2.data.batch.received", &ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ce-specversion":   "1.0",
		"ce-id":            ev.ID(),
		"ce-source":        "/gyre/ingest",
		"ce-type":          "dev.gyre.data.batch.received.v1",
		"ce-subject":       "elec2",
		"ce-time":          "2026-11-22T10:00:00.123456789Z",
		"ce-dataschema":    "urn:gyre:proto:gyre.v1.DataBatchReceived",
		"content-type":     "application/json",
		"ce-pipeline":      "elec2",
		"ce-correlationid": "c-1",
		"ce-causationid":   "a-1",
		"ce-traceparent":   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Nats-Msg-Id":      ev.ID(),
	}
	for k, v := range want {
		if got := msg.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if len(msg.Header) != len(want) {
		t.Errorf("%d headers, want %d: %v", len(msg.Header), len(want), msg.Header)
	}
	if string(msg.Data) != `{"batchId":"b1","rows":1000}` {
		t.Errorf("data = %s", msg.Data)
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	ev := sampleEvent()
	binary, err := bus.EncodeBinary("s", &ev)
	if err != nil {
		t.Fatal(err)
	}
	structured, err := bus.EncodeStructured("s", &ev)
	if err != nil {
		t.Fatal(err)
	}
	// The CloudEvents Go SDK's JetStream binding sends ce-datacontenttype
	// instead of content-type.
	sdkVariant := &nats.Msg{Header: nats.Header{}, Data: binary.Data}
	for k, v := range binary.Header {
		if k == "content-type" {
			k = "ce-datacontenttype"
		}
		sdkVariant.Header[k] = v
	}
	// Producers in other languages may capitalise header names.
	capitalised := &nats.Msg{Header: nats.Header{}, Data: binary.Data}
	for k, v := range binary.Header {
		capitalised.Header[strings.ToUpper(k[:1])+k[1:]] = v
	}
	// Structured mode without a content-type header (a plain nats.go publish).
	bare := &nats.Msg{Data: structured.Data}
	for _, c := range []struct {
		name string
		msg  *nats.Msg
	}{{"binary", binary}, {"structured", structured}, {"sdk header variant", sdkVariant}, {"capitalised headers", capitalised}, {"structured, no headers", bare}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := bus.Decode(c.msg.Header, c.msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			assertSameEvent(t, got, ev)
		})
	}
}

func assertSameEvent(t *testing.T, got, want event.Event) {
	t.Helper()
	if got.ID() != want.ID() || got.Source() != want.Source() || got.Type() != want.Type() ||
		got.Subject() != want.Subject() || !got.Time().Equal(want.Time()) || got.DataSchema() != want.DataSchema() ||
		got.DataContentType() != want.DataContentType() || got.SpecVersion() != want.SpecVersion() {
		t.Errorf("attributes differ:\n got %s\nwant %s", got, want)
	}
	for name, v := range want.Extensions() {
		if g := got.Extensions()[name]; g != v {
			t.Errorf("extension %s = %v, want %v", name, g, v)
		}
	}
	if len(got.Extensions()) != len(want.Extensions()) {
		t.Errorf("extensions %v, want %v", got.Extensions(), want.Extensions())
	}
	var g, w any
	if err := json.Unmarshal(got.Data(), &g); err != nil {
		t.Fatalf("data %q: %v", got.Data(), err)
	}
	_ = json.Unmarshal(want.Data(), &w)
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("data = %s, want %s", gb, wb)
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	ok := func() nats.Header {
		return nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"/s"}, "ce-type": {"t"}}
	}
	without := func(k string) nats.Header { h := ok(); delete(h, k); return h }
	with := func(k, v string) nats.Header { h := ok(); h[k] = []string{v}; return h }
	cases := []struct {
		name   string
		header nats.Header
		data   string
		want   string
	}{
		{"no type", without("ce-type"), "", "type"},
		{"no id", without("ce-id"), "", "id"},
		{"no source", without("ce-source"), "", "source"},
		{"specversion 0.3", with("ce-specversion", "0.3"), "", `unsupported specversion "0.3"`},
		{"specversion garbage", with("ce-specversion", "x"), "", `unsupported specversion "x"`},
		{"bad time", with("ce-time", "noon"), "", "RFC 3339"},
		{"bad extension", with("ce-UPPER_case", "v"), "", "ce-upper_case"},
		{"empty body, no headers", nil, "", "not a structured-mode JSON object"},
		{"binary garbage", nil, "\x00\x01\x02", "not a structured-mode JSON object"},
		{"truncated JSON", nil, `{"specversion":"1.0","id":`, "not valid JSON"},
		{"structured 0.3", nil, `{"specversion":"0.3","id":"1","source":"/s","type":"t"}`, `unsupported specversion "0.3"`},
		{"structured no type", nil, `{"specversion":"1.0","id":"1","source":"/s"}`, "type"},
		{"wrong content-type", nats.Header{"content-type": {"text/csv"}}, "a,b\n1,2", `content-type "text/csv"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := bus.Decode(c.header, []byte(c.data))
			if err == nil {
				t.Fatal("decoded")
			}
			var m *bus.MalformedError
			if !errors.As(err, &m) || !bus.IsPermanent(err) {
				t.Errorf("error %v is not a permanent MalformedError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestIsPermanent(t *testing.T) {
	t.Parallel()
	type domainErr struct{ error }
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("x"), false},
		{"wrapped permanent", errors.Join(errors.New("ctx"), bus.Permanent(errors.New("bad"))), true},
		{"permanentf %w", bus.Permanentf("row %d: %w", 3, errors.New("nan")), true},
		{"malformed", &bus.MalformedError{Reason: "x"}, true},
		{"duck-typed", permanentDomainErr{}, true},
		{"duck-typed false", transientDomainErr{}, false},
		{"unrelated struct", domainErr{errors.New("x")}, false},
	}
	for _, c := range cases {
		if got := bus.IsPermanent(c.err); got != c.want {
			t.Errorf("%s: IsPermanent = %v, want %v", c.name, got, c.want)
		}
	}
}

type permanentDomainErr struct{}

func (permanentDomainErr) Error() string   { return "unknown pipeline" }
func (permanentDomainErr) Permanent() bool { return true }

type transientDomainErr struct{}

func (transientDomainErr) Error() string   { return "busy" }
func (transientDomainErr) Permanent() bool { return false }

// FuzzDecode feeds arbitrary headers and bodies to the decoder: it must never
// panic, and whatever it accepts must be a valid CloudEvent that survives a
// binary encode/decode round trip.
func FuzzDecode(f *testing.F) {
	ev := sampleEvent()
	bin, _ := bus.EncodeBinary("s", &ev)
	st, _ := bus.EncodeStructured("s", &ev)
	f.Add("ce-specversion", "1.0", "ce-id", "1", "ce-type", "t", "/s", bin.Data)
	f.Add("content-type", "application/cloudevents+json", "", "", "", "", "", st.Data)
	f.Add("", "", "", "", "", "", "", st.Data)
	f.Add("ce-specversion", "0.3", "ce-id", "1", "ce-type", "t", "/s", []byte("{}"))
	f.Add("ce-specversion", "1.0", "ce-time", "yesterday", "ce-type", "t", "/s", []byte{})
	f.Add("ce-specversion", "1.0", "ce-Weird_Ext", "v", "ce-type", "t", "/s", []byte("x"))
	f.Add("", "", "", "", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}`))
	f.Add("", "", "", "", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"x"}`))
	f.Add("", "", "", "", "", "", "", []byte("\x00garbage"))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3, source string, body []byte) {
		h := nats.Header{}
		for _, kv := range [][2]string{{k1, v1}, {k2, v2}, {k3, v3}} {
			if kv[0] != "" {
				h[kv[0]] = []string{kv[1]}
			}
		}
		if source != "" {
			h["ce-source"] = []string{source}
		}
		got, err := bus.Decode(h, body)
		if err != nil {
			if !bus.IsPermanent(err) {
				t.Fatalf("decode error %v is not permanent", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
		msg, err := bus.EncodeBinary("s", &got)
		if err != nil {
			t.Fatalf("accepted event does not encode: %v", err)
		}
		again, err := bus.Decode(msg.Header, msg.Data)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.ID() != got.ID() || again.Type() != got.Type() || again.Source() != got.Source() || string(again.Data()) != string(got.Data()) {
			t.Fatalf("round trip changed the event:\n%s\n%s", got, again)
		}
	})
}

func TestStableID(t *testing.T) {
	t.Parallel()
	a := bus.StableID("data.batch.received", "elec2", "abc")
	if a != bus.StableID("data.batch.received", "elec2", "abc") {
		t.Error("not deterministic")
	}
	if a == bus.StableID("data.batch.received", "elec2abc") || a == bus.StableID("data.batch.received", "elec2", "abd") {
		t.Error("different parts gave the same id")
	}
}
