package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// Header names of the CloudEvents NATS binding (binary mode) and of JetStream.
const (
	HeaderPrefix        = "ce-"
	HeaderSpecVersion   = "ce-specversion"
	HeaderID            = "ce-id"
	HeaderSource        = "ce-source"
	HeaderType          = "ce-type"
	HeaderSubject       = "ce-subject"
	HeaderTime          = "ce-time"
	HeaderDataSchema    = "ce-dataschema"
	HeaderContentType   = "content-type"
	headerDataCT        = "ce-datacontenttype" // sent by the CloudEvents Go SDK's JetStream binding
	HeaderNatsMsgID     = nats.MsgIdHdr
	ContentTypeCEJSON   = "application/cloudevents+json"
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/protobuf"
)

// Extension names Gyre sets on events.
const (
	ExtTraceParent    = "traceparent"
	ExtTraceState     = "tracestate"
	ExtCorrelationID  = "correlationid"
	ExtCausationID    = "causationid"
	ExtPipeline       = "pipeline"
	ExtModelVersion   = "modelversion"
	ExtDatasetVersion = "datasetversion"
)

// EncodeBinary writes ev as a NATS message in CloudEvents binary mode: each
// context attribute and extension in a ce- header, datacontenttype in
// content-type, the data as the body, and Nats-Msg-Id set to the event id so
// that JetStream stores a retried publish once.
func EncodeBinary(subject string, ev *event.Event) (*nats.Msg, error) {
	if err := validate(ev); err != nil {
		return nil, Permanentf("invalid CloudEvent: %w", err)
	}
	exts := extensionsOf(ev)
	h := make(nats.Header, 10+len(exts))
	h[HeaderSpecVersion] = []string{ev.SpecVersion()}
	h[HeaderID] = []string{ev.ID()}
	h[HeaderSource] = []string{ev.Source()}
	h[HeaderType] = []string{ev.Type()}
	if s := ev.Subject(); s != "" {
		h[HeaderSubject] = []string{s}
	}
	if t := ev.Time(); !t.IsZero() {
		h[HeaderTime] = []string{t.UTC().Format(time.RFC3339Nano)}
	}
	if s := ev.DataSchema(); s != "" {
		h[HeaderDataSchema] = []string{s}
	}
	if ct := ev.DataContentType(); ct != "" {
		h[HeaderContentType] = []string{ct}
	}
	for name, v := range exts {
		s, err := types.Format(v)
		if err != nil {
			return nil, Permanentf("extension %q: %w", name, err)
		}
		h[HeaderPrefix+name] = []string{s}
	}
	h[HeaderNatsMsgID] = []string{ev.ID()}
	return &nats.Msg{Subject: subject, Header: h, Data: ev.Data()}, nil
}

// EncodeStructured writes ev as one JSON document
// (application/cloudevents+json), the structured mode of the binding.
func EncodeStructured(subject string, ev *event.Event) (*nats.Msg, error) {
	if err := ev.Validate(); err != nil {
		return nil, Permanentf("invalid CloudEvent: %w", err)
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, Permanentf("encode structured CloudEvent: %w", err)
	}
	h := nats.Header{HeaderContentType: {ContentTypeCEJSON}, HeaderNatsMsgID: {ev.ID()}}
	return &nats.Msg{Subject: subject, Header: h, Data: body}, nil
}

// Decode reads a CloudEvent from a NATS message's headers and body. It takes
// binary mode (ce- headers, with the datacontenttype either in content-type or
// in ce-datacontenttype as the CloudEvents Go SDK's JetStream binding sends
// it) and structured mode (a JSON document, announced by content-type
// application/cloudevents+json or by the absence of ce-specversion). Every
// failure is a *MalformedError naming what is wrong.
func Decode(h nats.Header, data []byte) (event.Event, error) {
	if v := headerValue(h, HeaderSpecVersion); v != "" {
		return decodeBinary(h, data, v)
	}
	ct := headerValue(h, HeaderContentType)
	if ct != "" && !strings.HasPrefix(ct, ContentTypeCEJSON) && !strings.HasPrefix(ct, ContentTypeJSON) {
		return event.Event{}, malformed("no %s header (binary mode) and content-type %q is not %s (structured mode)", HeaderSpecVersion, ct, ContentTypeCEJSON)
	}
	return decodeStructured(data)
}

func decodeStructured(data []byte) (event.Event, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return event.Event{}, malformed("no %s header (binary mode) and the body is not a structured-mode JSON object", HeaderSpecVersion)
	}
	var probe struct {
		SpecVersion *string `json:"specversion"`
	}
	if err := json.Unmarshal(trimmed, &probe); err != nil {
		return event.Event{}, malformed("structured mode: body is not valid JSON: %v", err)
	}
	if probe.SpecVersion == nil {
		return event.Event{}, malformed("structured mode: no specversion attribute")
	}
	if *probe.SpecVersion != event.CloudEventsVersionV1 {
		return event.Event{}, malformed("unsupported specversion %q (want %q)", *probe.SpecVersion, event.CloudEventsVersionV1)
	}
	ev := event.New()
	if err := json.Unmarshal(trimmed, &ev); err != nil {
		return event.Event{}, malformed("structured mode: %v", err)
	}
	if err := ev.Validate(); err != nil {
		return event.Event{}, malformed("structured mode: %v", err)
	}
	return ev, nil
}

func decodeBinary(h nats.Header, data []byte, specVersion string) (event.Event, error) {
	if specVersion != event.CloudEventsVersionV1 {
		return event.Event{}, malformed("unsupported specversion %q (want %q)", specVersion, event.CloudEventsVersionV1)
	}
	// The context is filled field by field rather than through the SDK's
	// setters: this runs for every message a handler takes, and the setters
	// parse, lowercase and copy more than a header needs.
	ec := &event.EventContextV1{}
	var contentType, sdkContentType string
	for key, vals := range h {
		if len(vals) == 0 {
			continue
		}
		v := vals[0]
		if !hasCEPrefix(key) {
			if strings.EqualFold(key, HeaderContentType) {
				contentType = v
			}
			continue // transport headers: Nats-Msg-Id, Nats-Expected-*, …
		}
		k := key
		if hasUpper(k) {
			k = strings.ToLower(k)
		}
		switch name := k[len(HeaderPrefix):]; name {
		case "specversion":
		case "id":
			ec.ID = v
		case "source":
			src, err := parseSource(v)
			if err != nil {
				return event.Event{}, malformed("header %s: %q is not a URI reference", HeaderSource, v)
			}
			ec.Source = src
		case "type":
			ec.Type = v
		case "subject":
			subject := v
			ec.Subject = &subject
		case "dataschema":
			if err := ec.SetDataSchema(v); err != nil {
				return event.Event{}, malformed("header %s: %q is not a URI", HeaderDataSchema, v)
			}
		case "datacontenttype":
			sdkContentType = v
		case "time":
			t, err := types.ParseTime(v)
			if err != nil {
				return event.Event{}, malformed("header %s: %q is not an RFC 3339 time", HeaderTime, v)
			}
			ec.Time = &types.Timestamp{Time: t}
		default:
			if !event.IsExtensionNameValid(name) {
				return event.Event{}, malformed("header %s%s: CloudEvents extension names are 1 to %d letters and digits", HeaderPrefix, name, event.MaxExtensionNameLength)
			}
			if ec.Extensions == nil {
				ec.Extensions = make(map[string]any, len(h))
			}
			ec.Extensions[name] = v
		}
	}
	switch {
	case contentType != "":
		ec.DataContentType = &contentType
	case sdkContentType != "":
		ec.DataContentType = &sdkContentType
	}
	ev := event.Event{Context: ec}
	if len(data) > 0 {
		ev.DataEncoded = data
	}
	if err := validate(&ev); err != nil {
		return event.Event{}, malformed("binary mode: %v", err)
	}
	return ev, nil
}

// sourceCache remembers parsed source attributes: a handful of producers
// send every message, and parsing a URI per message is measurable.
var (
	sourceCache     sync.Map // string → types.URIRef
	sourceCacheSize atomic.Int64
)

const maxSourceCache = 4096

func parseSource(s string) (types.URIRef, error) {
	if u, ok := sourceCache.Load(s); ok {
		return u.(types.URIRef), nil
	}
	pu, err := url.Parse(s)
	if err != nil {
		return types.URIRef{}, err
	}
	ref := types.URIRef{URL: *pu}
	if sourceCacheSize.Load() < maxSourceCache {
		if _, loaded := sourceCache.LoadOrStore(s, ref); !loaded {
			sourceCacheSize.Add(1)
		}
	}
	return ref, nil
}

// validate checks what the CloudEvents SDK's Validate checks, at a fraction
// of its cost on the hot path: the SDK's setters already parse and record a
// bad source, time, dataschema or extension in FieldErrors, so what is left
// is the required attributes. Anything unusual falls back to the full check.
func validate(ev *event.Event) error {
	ec, ok := ev.Context.(*event.EventContextV1)
	if !ok || len(ev.FieldErrors) > 0 {
		return ev.Validate()
	}
	switch {
	case ec.ID == "":
		return errors.New("id: REQUIRED but MISSING")
	case ec.Source.String() == "":
		return errors.New("source: REQUIRED but MISSING")
	case ec.Type == "":
		return errors.New("type: REQUIRED but MISSING")
	case ec.DataContentType != nil && *ec.DataContentType == "":
		return errors.New("datacontenttype: if present, MUST adhere to the format specified in RFC 2046")
	case ec.Subject != nil && *ec.Subject == "":
		return errors.New("subject: if present, MUST be a non-empty string")
	}
	return nil
}

// extensionsOf returns the event's extensions without the copy that
// Event.Extensions makes.
func extensionsOf(ev *event.Event) map[string]any {
	if ec, ok := ev.Context.(*event.EventContextV1); ok {
		return ec.Extensions
	}
	return ev.Extensions()
}

// hasCEPrefix reports whether a header name starts with "ce-", in any case,
// without allocating.
func hasCEPrefix(k string) bool {
	return len(k) > 3 && k[0]|0x20 == 'c' && k[1]|0x20 == 'e' && k[2] == '-'
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// headerValue reads a header case-insensitively: NATS headers keep the case
// their producer wrote, and producers in other languages write Ce-Id or CE-ID.
func headerValue(h nats.Header, key string) string {
	if v, ok := h[key]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}
