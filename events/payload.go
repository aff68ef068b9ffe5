package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/gyrehq/gyre/events/gyrev1"
)

// Data content types of event payloads. JSON (protojson) is the default on
// the wire so that any client can read it; binary protobuf is accepted too.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeProtobuf = "application/protobuf"
)

// DataSchemaPrefix prefixes the protobuf message name in an event's
// dataschema when no schema base URL is configured (see DataSchema):
// "urn:gyre:proto:gyre.v1.DataBatchArrived".
const DataSchemaPrefix = "urn:gyre:proto:"

// ExtensionPipeline is the CloudEvents extension attribute that carries the
// pipeline name (also the event's subject).
const ExtensionPipeline = "pipeline"

// MaxBatchIDLen is the longest batch id a producer may give.
const MaxBatchIDLen = 200

// ObjectURIScheme is the URI scheme of JetStream object store objects:
// nats-object://BUCKET/KEY.
const ObjectURIScheme = "nats-object"

// Batch formats accepted in DataBatchArrived.format.
const (
	FormatCSV     = "csv"
	FormatJSONL   = "jsonl"
	FormatParquet = "parquet"
)

// byMessage indexes the catalog by protobuf message name. It is built on
// first use, after the catalog's init has filled in every Spec.Type.
var byMessage = sync.OnceValue(func() map[protoreflect.FullName]Spec {
	m := make(map[protoreflect.FullName]Spec, len(catalog))
	for _, s := range catalog {
		m[protoreflect.FullName(s.Message)] = s
	}
	return m
})

// Make sure the generated payload types are registered in
// protoregistry.GlobalTypes wherever this package is used.
var _ = gyrev1.File_gyre_v1_data_proto

// SpecOf returns the catalog entry whose payload message is msg's type, e.g.
// the data.batch.arrived spec for a *gyrev1.DataBatchArrived. Messages that
// are not an event payload (sub-messages, other packages) are an error.
func SpecOf(msg proto.Message) (Spec, error) {
	if msg == nil {
		return Spec{}, fmt.Errorf("nil message is not an event payload")
	}
	name := msg.ProtoReflect().Descriptor().FullName()
	s, ok := byMessage()[name]
	if !ok {
		return Spec{}, fmt.Errorf("message %s is not the payload of any event type of the catalog", name)
	}
	return s, nil
}

// NewPayload returns an empty payload message of a CloudEvents type
// ("dev.gyre.data.batch.arrived.v1" gives a *gyrev1.DataBatchArrived), ready
// for Decode. Unknown types are an error.
func NewPayload(ceType string) (proto.Message, error) {
	s, ok := LookupType(ceType)
	if !ok {
		return nil, fmt.Errorf("unknown event type %q", ceType)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(s.Message))
	if err != nil {
		return nil, fmt.Errorf("event type %s: payload message %s is not registered: %w", ceType, s.Message, err)
	}
	return mt.New().Interface(), nil
}

// New builds a CloudEvent carrying msg as JSON (protojson, lowerCamel field
// names, unpopulated fields omitted): specversion 1.0, id a UUIDv7, the given
// source ("/gyre/<service>"), type from the catalog entry of msg's message,
// subject and "pipeline" extension the pipeline, time now (UTC),
// datacontenttype application/json and dataschema DataSchema(message,
// application/json): "<base>/<message>.json" where a schema base URL is
// configured (GYRE_SCHEMA_BASE_URL, SetSchemaBaseURL), else
// "urn:gyre:proto:<message>".
//
// msg must be a catalog payload and pipeline a valid pipeline name; when msg
// has a pipeline field that is set, it must equal pipeline. New does not
// Validate msg's other fields.
func New(source, pipeline string, msg proto.Message) (event.Event, error) {
	spec, err := checkNew(pipeline, msg)
	if err != nil {
		return event.Event{}, err
	}
	raw, err := protojson.MarshalOptions{}.Marshal(msg)
	if err != nil {
		return event.Event{}, fmt.Errorf("%s: encode %s as JSON: %w", spec.Type, spec.Message, err)
	}
	// protojson output is deliberately unstable in its whitespace; compact
	// it so that equal payloads are equal bytes.
	var data bytes.Buffer
	if err := json.Compact(&data, raw); err != nil {
		return event.Event{}, fmt.Errorf("%s: compact JSON of %s: %w", spec.Type, spec.Message, err)
	}
	return build(source, pipeline, spec, ContentTypeJSON, data.Bytes())
}

// NewProtobuf is New with the payload in binary protobuf (deterministic
// encoding) and datacontenttype application/protobuf.
func NewProtobuf(source, pipeline string, msg proto.Message) (event.Event, error) {
	spec, err := checkNew(pipeline, msg)
	if err != nil {
		return event.Event{}, err
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return event.Event{}, fmt.Errorf("%s: encode %s as protobuf: %w", spec.Type, spec.Message, err)
	}
	return build(source, pipeline, spec, ContentTypeProtobuf, data)
}

// NewJSON is New for a payload encoded already: data must be what New
// would put in the event, the compact protojson encoding of a payload of
// the event named name (a catalog name such as PredictionLogged) whose
// pipeline field, if set, is pipeline. It is for a hot path that encodes
// its payloads faster than protojson does (the deployer's prediction log):
// such an encoder must be tested byte for byte against protojson. NewJSON
// checks the name and the pipeline, not data.
func NewJSON(source, pipeline, name string, data []byte) (event.Event, error) {
	spec, ok := Lookup(name)
	if !ok {
		return event.Event{}, fmt.Errorf("new event: unknown event name %q", name)
	}
	if err := ValidatePipeline(pipeline); err != nil {
		return event.Event{}, fmt.Errorf("new %s event: %w", spec.Type, err)
	}
	return build(source, pipeline, spec, ContentTypeJSON, data)
}

func checkNew(pipeline string, msg proto.Message) (Spec, error) {
	if msg == nil || !msg.ProtoReflect().IsValid() {
		return Spec{}, fmt.Errorf("new event: nil payload message")
	}
	spec, err := SpecOf(msg)
	if err != nil {
		return Spec{}, fmt.Errorf("new event: %w", err)
	}
	if err := ValidatePipeline(pipeline); err != nil {
		return Spec{}, fmt.Errorf("new %s event: %w", spec.Type, err)
	}
	if got, ok := pipelineField(msg); ok && got != "" && got != pipeline {
		return Spec{}, fmt.Errorf("new %s event: payload pipeline %q differs from the event's pipeline %q", spec.Type, got, pipeline)
	}
	return spec, nil
}

func build(source, pipeline string, spec Spec, contentType string, data []byte) (event.Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return event.Event{}, fmt.Errorf("new %s event: id: %w", spec.Type, err)
	}
	ev := event.New(event.CloudEventsVersionV1)
	ev.SetID(id.String())
	ev.SetSource(source)
	ev.SetType(spec.Type)
	ev.SetSubject(pipeline)
	ev.SetTime(time.Now().UTC())
	ev.SetDataSchema(DataSchema(spec.Message, contentType))
	ev.SetExtension(ExtensionPipeline, pipeline)
	ev.SetDataContentType(contentType)
	ev.DataEncoded = data
	// Binary payloads travel as data_base64 in structured mode; JSON ones
	// are embedded as a JSON value.
	ev.DataBase64 = contentType != ContentTypeJSON
	if err := ev.Validate(); err != nil {
		return event.Event{}, fmt.Errorf("new %s event: %w", spec.Type, err)
	}
	return ev, nil
}

// DecodeError reports an event whose payload cannot be decoded: unknown or
// unexpected type, unsupported content type, malformed data. Decoding the
// same bytes again fails the same way, so it is permanent: the bus sends the
// message straight to the dead-letter stream.
type DecodeError struct {
	// Type is the event's CloudEvents type.
	Type string
	// Reason says what is wrong, e.g. "invalid JSON data for gyre.v1.DataBatchArrived".
	Reason string
	// Err is the underlying error, if any (protojson's names the field).
	Err error
}

// Error implements error: "decode event dev.gyre…v1: <reason>: <cause>".
func (e *DecodeError) Error() string {
	typ := e.Type
	if typ == "" {
		typ = "(no type)"
	}
	msg := "decode event " + typ + ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Permanent reports that retrying cannot help; always true.
func (e *DecodeError) Permanent() bool { return true }

// Decode decodes ev's data into dst, which must be the payload message of
// ev's type. The data is read according to datacontenttype: JSON
// ("application/json", "text/json", any "+json" type, or none) with
// protojson, ignoring unknown fields; binary protobuf ("application/protobuf",
// "application/x-protobuf"). Every failure is a *DecodeError. Decode does not
// check the payload's contract: it is for reading events (dashboards, the
// CLI, tests); a consumer that acts on a payload uses DecodeChecked (in a
// handler, bus.DecodePayload), which does. Unknown fields are dropped on
// purpose: see contract.go.
func Decode(ev event.Event, dst proto.Message) error {
	typ := ev.Type()
	if dst == nil {
		return &DecodeError{Type: typ, Reason: "nil destination message"}
	}
	spec, err := SpecOf(dst)
	if err != nil {
		return &DecodeError{Type: typ, Reason: "destination is not an event payload", Err: err}
	}
	if typ != spec.Type {
		return &DecodeError{Type: typ, Reason: fmt.Sprintf("event type is not %s (the type of %s)", spec.Type, spec.Message)}
	}
	data := ev.Data()
	ct := ev.DataContentType()
	switch media := mediaType(ct); {
	case isJSONMedia(media):
		if len(bytes.TrimSpace(data)) == 0 {
			return &DecodeError{Type: typ, Reason: fmt.Sprintf("no data; want a JSON %s", spec.Message)}
		}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, dst); err != nil {
			return &DecodeError{Type: typ, Reason: "invalid JSON data for " + spec.Message, Err: err}
		}
	case media == ContentTypeProtobuf || media == "application/x-protobuf":
		if err := proto.Unmarshal(data, dst); err != nil {
			return &DecodeError{Type: typ, Reason: "invalid protobuf data for " + spec.Message, Err: err}
		}
	default:
		return &DecodeError{Type: typ, Reason: fmt.Sprintf("unsupported datacontenttype %q (want %s or %s)", ct, ContentTypeJSON, ContentTypeProtobuf)}
	}
	return nil
}

// DecodeAny decodes ev's payload into a new message of its type (see
// NewPayload and Decode). An unknown type is a *DecodeError too.
func DecodeAny(ev event.Event) (proto.Message, error) {
	msg, err := NewPayload(ev.Type())
	if err != nil {
		return nil, &DecodeError{Type: ev.Type(), Reason: "not an event type of the catalog", Err: err}
	}
	if err := Decode(ev, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// mediaType returns the lowercase media type of a content type, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

func isJSONMedia(media string) bool {
	return media == "" || media == ContentTypeJSON || media == "text/json" || strings.HasSuffix(media, "+json")
}

// ValidationError reports a payload field with a bad value. The data will be
// as bad on every delivery, so it is permanent: the bus sends the message
// straight to the dead-letter stream.
type ValidationError struct {
	// Field is the payload field at fault, as written in JSON, with indices
	// for list items: "batchId", "labels[3].predictionId".
	Field string
	// Rule names the rule broken, e.g. "required", "enum" (see Rules).
	Rule string
	// Reason says what is wrong with it, e.g. "empty".
	Reason string
	// Err is the underlying error, if any (e.g. one wrapping ErrInvalidName).
	Err error
}

// Error implements error: "<field>: <reason>".
func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap returns the underlying error.
func (e *ValidationError) Unwrap() error { return e.Err }

// Permanent reports that retrying cannot help; always true.
func (e *ValidationError) Permanent() bool { return true }

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks a payload against the contract of its event (see Rules
// and contracts.go) and returns the first broken rule as a
// *ValidationError naming the field and the rule. It is what producers run
// before publishing (`gyre ingest` does) and what DecodeChecked and
// DecodeDelivered run on every consumed payload, which adds the checks
// against the event's subject. Messages that are not event payloads are an
// error.
func Validate(msg proto.Message) error {
	if msg == nil {
		return invalid("", "nil message")
	}
	s, err := SpecOf(msg)
	if err != nil {
		return &ValidationError{Reason: err.Error(), Err: err}
	}
	return validatePayload(s, msg)
}

// ObjectURI returns the URI of an object store object: nats-object://BUCKET/KEY.
func ObjectURI(bucket, key string) string {
	return ObjectURIScheme + "://" + bucket + "/" + key
}

// ParseObjectURI splits nats-object://BUCKET/KEY into its bucket and key. The
// key is everything after the bucket's slash, verbatim (it may hold slashes);
// the bucket is a JetStream bucket name ([A-Za-z0-9_-]).
func ParseObjectURI(uri string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(uri, ObjectURIScheme+"://")
	if !ok {
		return "", "", fmt.Errorf("%q is not a %s://BUCKET/KEY URI", uri, ObjectURIScheme)
	}
	bucket, key, ok = strings.Cut(rest, "/")
	if !ok || bucket == "" || key == "" {
		return "", "", fmt.Errorf("%q lacks a bucket or a key (want %s://BUCKET/KEY)", uri, ObjectURIScheme)
	}
	for i := 0; i < len(bucket); i++ {
		c := bucket[i]
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' {
			continue
		}
		return "", "", fmt.Errorf("%q: bucket %q has %q; only A-Z, a-z, 0-9, '-' and '_' are allowed", uri, bucket, rune(c))
	}
	return bucket, key, nil
}

// pipelineField returns the value of msg's string field "pipeline", if it has one.
func pipelineField(msg proto.Message) (string, bool) {
	m := msg.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("pipeline")
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
		return "", false
	}
	return m.Get(fd).String(), true
}
