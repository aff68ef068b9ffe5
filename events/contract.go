package events

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gyrehq/gyre/events/gyrev1"
)

// Contracts. Every payload a Gyre service consumes is decoded as the catalog
// message of its type and checked against that message's contract before any
// handler acts on it (libs/bus runs DecodeDelivered on every delivery). A
// contract is the list of rules declared for the event in contracts.go, one
// entry per catalog name, plus what every payload shares: its pipeline is a
// valid name and is the pipeline of the subject it travels on.
//
// Unknown JSON fields are accepted and dropped. The compatibility rules of
// v1 let a producer add fields, and producers are deployed apart from their
// consumers (producers outside Gyre publish data.batch.arrived and
// label.received on their own schedule): refusing unknown fields would make
// every addition a breaking change that dead-letters a newer producer's
// events in an older consumer. A field a consumer needs is never silently
// lost that way, because its rule ("required", "min", …) then fails: a
// misspelt batchId is refused as "batchId: empty". (protojson takes the
// lowerCamel JSON name and the snake_case proto name of each field.)
//
// A value of the wrong JSON type ("modelVersion": "abc", "rows": 1.5, a
// string where a list is due) is refused: it cannot be read as the field's
// type without guessing, and a producer that sends it is broken, not newer.
// Integers may be JSON numbers or decimal strings (protojson's own form for
// 64-bit integers); floats may be "NaN", "Infinity" or "-Infinity".

// ContractError reports a consumed event that breaks its contract: it does
// not decode as its catalog message, it travels on a subject that is not
// its own, or a field breaks a rule. The same bytes break it on every
// delivery, so it is permanent: the bus dead-letters the message with kind
// "contract" and never hands it to a handler.
type ContractError struct {
	// Type is the event's CloudEvents type.
	Type string
	// Field is what is at fault: a payload field as written in JSON, with
	// indices for list items ("labels[3].predictionId"), a context
	// attribute ("ce.subject", "ce.pipeline", "ce.type"), or "" for the
	// payload as a whole.
	Field string
	// Rule names the rule broken: "decode", "subject", "required", "min",
	// "range", "enum", … (see Rules).
	Rule string
	// Reason says how, e.g. "0, want >= 1".
	Reason string
	// Err is the underlying error: a *DecodeError, a *ValidationError, or nil.
	Err error
}

// Error implements error:
// "contract dev.gyre.…v1: <field>: rule <rule>: <reason>".
func (e *ContractError) Error() string {
	typ := e.Type
	if typ == "" {
		typ = "(no type)"
	}
	var b strings.Builder
	b.WriteString("contract ")
	b.WriteString(typ)
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString("rule ")
	b.WriteString(e.Rule)
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns the underlying error.
func (e *ContractError) Unwrap() error { return e.Err }

// Permanent reports that retrying cannot help; always true.
func (e *ContractError) Permanent() bool { return true }

// Rule is one rule of a payload's contract, as documented: Field is the JSON
// path it applies to ("[]" stands for each item of a list:
// "labels[].predictionId"; "" for a rule across fields), Name its name as
// errors give it, Doc what it demands.
type Rule struct {
	Field string
	Name  string
	Doc   string
}

// Rules returns the contract of an event name ("performance.degraded"), in
// the order the rules are checked; nil for a name outside the catalog.
func Rules(name string) []Rule {
	c, ok := compiled()[name]
	if !ok {
		return nil
	}
	out := make([]Rule, len(c.rules))
	for i, r := range c.rules {
		out[i] = r.Rule
	}
	return out
}

// rule is a Rule with its check. A field rule has check, called with the
// value at each place its path reaches; a rule across fields has whole.
type rule struct {
	Rule
	// check returns why v breaks the rule, "" when it holds.
	check func(v protoreflect.Value) string
	// whole returns the field at fault and why, "" when the rule holds.
	whole func(m protoreflect.Message) (field, reason string)
	// present: the field is always in the JSON form (protojson omits zero
	// values, so a rule refusing zero makes the field required).
	present bool
	// schema holds the JSON Schema keywords of the rule, for the field (or
	// for each item of it, with a "[]" path); "required" has its own,
	// which depend on the field's kind (see jsonschema.go).
	schema map[string]any
}

// step is one field of a compiled path; each descends into every item of a
// list field.
type step struct {
	fd   protoreflect.FieldDescriptor
	each bool
}

// compiledRule is a rule with its path resolved against the message.
type compiledRule struct {
	rule
	path []step
}

// contract is a message's compiled rules.
type contract struct {
	desc  protoreflect.MessageDescriptor
	rules []compiledRule
}

// compiled resolves every contract's paths against its message's descriptor,
// once. A path naming no field is a programming error in contracts.go; it
// panics, and TestContractsCoverTheCatalog makes sure it never ships.
var compiled = sync.OnceValue(func() map[string]*contract {
	out := make(map[string]*contract, len(catalog))
	for _, s := range catalog {
		c, err := compileContract(s)
		if err != nil {
			panic(err)
		}
		out[s.Name] = c
	}
	return out
})

func compileContract(s Spec) (*contract, error) {
	msg, err := NewPayload(s.Type)
	if err != nil {
		return nil, err
	}
	desc := msg.ProtoReflect().Descriptor()
	rules, ok := contracts[s.Name]
	if !ok {
		return nil, fmt.Errorf("events: %s has no contract in contracts.go", s.Name)
	}
	// Every payload names its pipeline; it is checked first, like the
	// subject it must equal.
	all := append([]rule{pipelineName("pipeline")}, rules...)
	c := &contract{desc: desc}
	for _, r := range all {
		cr := compiledRule{rule: r}
		if r.Field != "" && r.whole == nil {
			path, err := resolve(desc, r.Field)
			if err != nil {
				return nil, fmt.Errorf("events: contract of %s: rule %s: %w", s.Name, r.Name, err)
			}
			cr.path = path
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

// resolve turns a JSON path ("window[].object.key") into fields.
func resolve(desc protoreflect.MessageDescriptor, path string) ([]step, error) {
	var out []step
	parts := strings.Split(path, ".")
	for i, part := range parts {
		name, each := strings.CutSuffix(part, "[]")
		if desc == nil {
			return nil, fmt.Errorf("path %q: %s is not a message", path, strings.Join(parts[:i], "."))
		}
		fd := desc.Fields().ByJSONName(name)
		if fd == nil {
			return nil, fmt.Errorf("path %q: %s has no field %q", path, desc.FullName(), name)
		}
		if each && !fd.IsList() {
			return nil, fmt.Errorf("path %q: %s is not a list", path, name)
		}
		if !each && fd.IsList() && i < len(parts)-1 {
			return nil, fmt.Errorf("path %q: list %s needs [] to reach into its items", path, name)
		}
		out = append(out, step{fd: fd, each: each})
		desc = fd.Message()
		if fd.IsMap() {
			desc = nil
		}
	}
	return out, nil
}

// validatePayload checks msg against the contract of its catalog entry and
// returns the first broken rule as a *ValidationError.
func validatePayload(s Spec, msg proto.Message) error {
	c := compiled()[s.Name]
	m := msg.ProtoReflect()
	for _, r := range c.rules {
		if r.whole != nil {
			if field, reason := r.whole(m); reason != "" {
				return &ValidationError{Field: field, Rule: r.Name, Reason: reason}
			}
			continue
		}
		if err := walk(m, r.path, "", &r.rule); err != nil {
			return err
		}
	}
	return nil
}

// walk applies a field rule at every place its path reaches from m; at is
// the JSON path so far.
func walk(m protoreflect.Message, path []step, at string, r *rule) error {
	st := path[0]
	name := at + st.fd.JSONName()
	v := m.Get(st.fd)
	if !st.each {
		if len(path) == 1 {
			return apply(r, name, v)
		}
		return walk(v.Message(), path[1:], name+".", r)
	}
	list := v.List()
	for i := range list.Len() {
		item := fmt.Sprintf("%s[%d]", name, i)
		if len(path) == 1 {
			if err := apply(r, item, list.Get(i)); err != nil {
				return err
			}
			continue
		}
		if err := walk(list.Get(i).Message(), path[1:], item+".", r); err != nil {
			return err
		}
	}
	return nil
}

func apply(r *rule, field string, v protoreflect.Value) error {
	if reason := r.check(v); reason != "" {
		ve := &ValidationError{Field: field, Rule: r.Name, Reason: reason}
		if r.Name == "name" {
			// The reason is ValidatePipeline's (or ValidatePool's) error;
			// keep it reachable for errors.Is(err, ErrInvalidName).
			ve.Err = fmt.Errorf("%w: %s", ErrInvalidName, reason)
		}
		return ve
	}
	return nil
}

// DecodeDelivered decodes the payload of an event delivered on a NATS
// subject as the catalog message of its type and checks it against its
// contract. The subject must be the event's own: gyre.ev.<pipeline>.<name>
// (gyre.pred.… for predictions) with <name> the event's type, or, for a
// training job, gyre.jobs.train.<pool> carrying a training.requested whose
// pool is <pool>. The payload's pipeline must be the subject's, and so must
// the event's subject attribute and "pipeline" extension where they are
// set. Every failure is a *ContractError.
func DecodeDelivered(subject string, ev event.Event) (proto.Message, error) {
	typ := ev.Type()
	spec, ok := LookupType(typ)
	if !ok {
		return nil, &ContractError{Type: typ, Field: "ce.type", Rule: "catalog",
			Reason: fmt.Sprintf("%q is not an event type of the catalog", typ)}
	}
	owner, pool, err := subjectOwner(subject, spec)
	if err != nil {
		return nil, err
	}
	want, err := eventPipeline(ev, owner, subject)
	if err != nil {
		return nil, err
	}
	msg, err := NewPayload(typ)
	if err != nil {
		return nil, &ContractError{Type: typ, Rule: "catalog", Reason: err.Error(), Err: err}
	}
	// A job subject names no pipeline: the event's attributes do.
	from := subject
	if owner == "" {
		from = ""
	}
	if err := checkPayload(spec, ev, msg, want, from); err != nil {
		return nil, err
	}
	if pool != "" {
		if err := checkJob(spec, msg.(*gyrev1.TrainingRequested), pool, subject); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

// DecodeChecked decodes ev's payload into dst, which must be the payload
// message of ev's type, and checks it against its contract: the rules of
// its message, and its pipeline equal to the event's subject attribute and
// "pipeline" extension where they are set. A destination of another type is
// a *DecodeError (the caller's mistake); every other failure is a
// *ContractError.
func DecodeChecked(ev event.Event, dst proto.Message) error {
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
	want, err := eventPipeline(ev, "", "")
	if err != nil {
		return err
	}
	return checkPayload(spec, ev, dst, want, "")
}

// subjectOwner returns the pipeline a delivery subject names ("" for a job
// subject, which names a pool instead) and the pool of a job subject.
func subjectOwner(subject string, spec Spec) (pipeline, pool string, err error) {
	if rest, ok := strings.CutPrefix(subject, JobsPrefix+".train."); ok {
		if spec.Name != TrainingRequested {
			return "", "", &ContractError{Type: spec.Type, Field: "ce.type", Rule: "subject",
				Reason: fmt.Sprintf("subject %s carries training jobs (%s), not %s", subject, Type(TrainingRequested), spec.Type)}
		}
		if err := ValidatePool(rest); err != nil {
			return "", "", &ContractError{Type: spec.Type, Rule: "subject", Reason: fmt.Sprintf("subject %s: %v", subject, err), Err: err}
		}
		return "", rest, nil
	}
	p, sspec, err := ParseSubject(subject)
	if err != nil {
		return "", "", &ContractError{Type: spec.Type, Rule: "subject", Reason: err.Error(), Err: err}
	}
	if sspec.Name != spec.Name {
		return "", "", &ContractError{Type: spec.Type, Field: "ce.type", Rule: "subject",
			Reason: fmt.Sprintf("subject %s carries %s, not %s", subject, sspec.Type, spec.Type)}
	}
	return p, "", nil
}

// eventPipeline checks that the event's subject attribute and "pipeline"
// extension agree with want (the subject's pipeline; "" when unknown) and
// with each other, and returns the pipeline they establish ("" when none
// does).
func eventPipeline(ev event.Event, want, subject string) (string, error) {
	var ext string
	if ec, ok := ev.Context.(*event.EventContextV1); ok {
		ext, _ = ec.Extensions[ExtensionPipeline].(string) // without the copy Extensions makes
	} else {
		ext, _ = ev.Extensions()[ExtensionPipeline].(string)
	}
	for _, c := range []struct{ field, got string }{{"ce.subject", ev.Subject()}, {"ce.pipeline", ext}} {
		switch {
		case c.got == "":
		case want == "":
			want = c.got
		case c.got != want:
			reason := fmt.Sprintf("%q, but the subject %s is pipeline %q's", c.got, subject, want)
			if subject == "" {
				reason = fmt.Sprintf("%q, but the event's subject is pipeline %q", c.got, want)
			}
			return "", &ContractError{Type: ev.Type(), Field: c.field, Rule: "subject", Reason: reason}
		}
	}
	return want, nil
}

// checkPayload decodes ev into msg, applies the message's rules and checks
// its pipeline against want.
func checkPayload(spec Spec, ev event.Event, msg proto.Message, want, subject string) error {
	if err := Decode(ev, msg); err != nil {
		de := err.(*DecodeError)
		reason := de.Reason
		if de.Err != nil {
			reason += ": " + de.Err.Error()
		}
		return &ContractError{Type: spec.Type, Rule: "decode", Reason: reason, Err: err}
	}
	if err := validatePayload(spec, msg); err != nil {
		ve := err.(*ValidationError)
		return &ContractError{Type: spec.Type, Field: ve.Field, Rule: ve.Rule, Reason: ve.Reason, Err: ve}
	}
	got, _ := pipelineField(msg)
	if want != "" && got != want {
		reason := fmt.Sprintf("%q, but the subject %s is pipeline %q's", got, subject, want)
		if subject == "" {
			reason = fmt.Sprintf("%q, but the event's subject is pipeline %q", got, want)
		}
		return &ContractError{Type: spec.Type, Field: "pipeline", Rule: "subject", Reason: reason}
	}
	return nil
}

// checkJob applies what a training job needs beyond a training request: a
// request id and a window (the scheduler's requests have them; a manual
// request on gyre.ev has neither), and the pool of its subject.
func checkJob(spec Spec, job *gyrev1.TrainingRequested, pool, subject string) error {
	switch {
	case job.GetPool() != pool:
		return &ContractError{Type: spec.Type, Field: "pool", Rule: "subject",
			Reason: fmt.Sprintf("%q, but the subject %s is pool %q's queue", job.GetPool(), subject, pool)}
	case job.GetRequestId() == "":
		return &ContractError{Type: spec.Type, Field: "requestId", Rule: "job", Reason: "empty; a training job names its request"}
	case len(job.GetWindow()) == 0:
		return &ContractError{Type: spec.Type, Field: "window", Rule: "job", Reason: "empty; a training job has a window of batches"}
	case job.GetAlgorithm() == "":
		return &ContractError{Type: spec.Type, Field: "algorithm", Rule: "job", Reason: "empty; a training job names its algorithm"}
	}
	return nil
}

// Rule constructors. Each names its rule and documents it; the checks
// read values through protoreflect so that one rule serves every field of
// a kind.

// required: a string or bytes non-empty, a number non-zero, a message set,
// a list or map with an item.
func required(field string) rule {
	return rule{Rule: Rule{Field: field, Name: "required", Doc: "present, not empty"}, present: true,
		check: func(v protoreflect.Value) string {
			switch x := v.Interface().(type) {
			case string:
				if x == "" {
					return "empty"
				}
			case []byte:
				if len(x) == 0 {
					return "empty"
				}
			case protoreflect.Message:
				if !x.IsValid() {
					return "missing"
				}
			case protoreflect.List:
				if x.Len() == 0 {
					return "empty; at least one item is required"
				}
			case protoreflect.Map:
				if x.Len() == 0 {
					return "empty; at least one entry is required"
				}
			default:
				if f, ok := asFloat(v); ok && f == 0 {
					return "missing (0)"
				}
			}
			return ""
		},
	}
}

// pipelineName: a valid pipeline name (ValidatePipeline).
func pipelineName(field string) rule {
	return rule{Rule: Rule{Field: field, Name: "name", Doc: "a pipeline name: 1 to 63 of [a-z0-9-]"}, present: true,
		check: func(v protoreflect.Value) string {
			if err := ValidatePipeline(v.String()); err != nil {
				return strings.TrimPrefix(err.Error(), ErrInvalidName.Error()+": ")
			}
			return ""
		},
		schema: map[string]any{"pattern": "^[a-z0-9-]{1,63}$"},
	}
}

// poolName: a valid worker pool name, or empty when optional.
func poolName(field string, optional bool) rule {
	doc := "a pool name: 1 to 63 of [a-z0-9-]"
	if optional {
		doc += ", or empty"
	}
	return rule{Rule: Rule{Field: field, Name: "name", Doc: doc}, present: !optional,
		check: func(v protoreflect.Value) string {
			if optional && v.String() == "" {
				return ""
			}
			if err := ValidatePool(v.String()); err != nil {
				return strings.TrimPrefix(err.Error(), ErrInvalidName.Error()+": ")
			}
			return ""
		},
		schema: map[string]any{"pattern": "^[a-z0-9-]{1,63}$"},
	}
}

// identifier: a producer-chosen id (batch id, request id, deployment id):
// non-empty, at most MaxBatchIDLen characters, no control characters.
func identifier(field string) rule {
	return rule{Rule: Rule{Field: field, Name: "id", Doc: fmt.Sprintf("1 to %d characters, no control characters", MaxBatchIDLen)}, present: true,
		check: func(v protoreflect.Value) string {
			id := v.String()
			switch {
			case id == "":
				return "empty"
			case len(id) > MaxBatchIDLen:
				return fmt.Sprintf("%d characters long, at most %d allowed", len(id), MaxBatchIDLen)
			case strings.IndexFunc(id, unicode.IsControl) >= 0:
				return fmt.Sprintf("%q has control characters", id)
			}
			return ""
		},
		schema: map[string]any{"minLength": 1, "maxLength": MaxBatchIDLen},
	}
}

// atLeast: a number >= min; NaN is refused.
func atLeast(field string, min int64) rule {
	return rule{Rule: Rule{Field: field, Name: "min", Doc: fmt.Sprintf(">= %d", min)}, present: min > 0,
		check: func(v protoreflect.Value) string {
			if f, ok := asFloat(v); ok && (math.IsNaN(f) || f < float64(min)) {
				return fmt.Sprintf("%v, want >= %d", v.Interface(), min)
			}
			return ""
		},
		schema: map[string]any{"minimum": min},
	}
}

// between: a number in [lo, hi]; NaN is refused.
func between(field string, lo, hi float64) rule {
	return rule{Rule: Rule{Field: field, Name: "range", Doc: fmt.Sprintf("in [%g, %g]", lo, hi)}, present: lo > 0 || hi < 0,
		check: func(v protoreflect.Value) string {
			if f, ok := asFloat(v); ok && (math.IsNaN(f) || f < lo || f > hi) {
				return fmt.Sprintf("%g, want a value in [%g, %g]", f, lo, hi)
			}
			return ""
		},
		schema: map[string]any{"minimum": lo, "maximum": hi},
	}
}

// above: a number in (lo, hi]; NaN is refused. Zero is out of range, so the
// field is always present.
func above(field string, lo, hi float64) rule {
	return rule{Rule: Rule{Field: field, Name: "range", Doc: fmt.Sprintf("in (%g, %g]", lo, hi)}, present: lo >= 0,
		check: func(v protoreflect.Value) string {
			if f, ok := asFloat(v); ok && (math.IsNaN(f) || f <= lo || f > hi) {
				return fmt.Sprintf("%g, want a value in (%g, %g]", f, lo, hi)
			}
			return ""
		},
		schema: map[string]any{"exclusiveMinimum": lo, "maximum": hi},
	}
}

// oneOf: a string among values (an enum kept as a string so that JSON
// producers write "csv", not 1).
func oneOf(field string, values ...string) rule {
	return enum(field, false, values)
}

// oneOfOrEmpty: a string among values, or empty.
func oneOfOrEmpty(field string, values ...string) rule {
	return enum(field, true, values)
}

func enum(field string, orEmpty bool, values []string) rule {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = fmt.Sprintf("%q", v)
	}
	list := strings.Join(quoted, ", ")
	doc := "one of " + strings.Join(values, " | ")
	if orEmpty {
		doc += ", or empty"
	}
	return rule{Rule: Rule{Field: field, Name: "enum", Doc: doc}, present: !orEmpty,
		check: func(v protoreflect.Value) string {
			s := v.String()
			switch {
			case s == "" && orEmpty:
				return ""
			case s == "":
				return "empty; want one of " + list
			case !slices.Contains(values, s):
				return fmt.Sprintf("%q is not one of %s", s, list)
			}
			return ""
		},
		schema: map[string]any{"enum": values},
	}
}

// sha256Hex: lowercase hex SHA-256 (64 characters), or empty when optional.
func sha256Hex(field string, optional bool) rule {
	doc := "64 lowercase hex digits"
	if optional {
		doc += ", or empty"
	}
	return rule{Rule: Rule{Field: field, Name: "sha256", Doc: doc}, present: !optional,
		check: func(v protoreflect.Value) string {
			s := v.String()
			if s == "" && optional {
				return ""
			}
			if len(s) != 64 || strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && (r < 'a' || r > 'f') }) >= 0 {
				return fmt.Sprintf("%q is not a lowercase hex SHA-256", s)
			}
			return ""
		},
		schema: map[string]any{"pattern": "^[0-9a-f]{64}$"},
	}
}

// across is a rule across fields of a message of type M: f returns the
// field at fault and why, "" when the rule holds.
func across[M proto.Message](name, doc string, f func(M) (field, reason string)) rule {
	return rule{Rule: Rule{Name: name, Doc: doc}, whole: func(m protoreflect.Message) (string, string) {
		return f(m.Interface().(M))
	}}
}

// asInt reads an integer value of any width.
func asInt(v protoreflect.Value) (int64, bool) {
	switch x := v.Interface().(type) {
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return math.MaxInt64, true
		}
		return int64(x), true
	}
	return 0, false
}

// asFloat reads a number of any kind.
func asFloat(v protoreflect.Value) (float64, bool) {
	switch x := v.Interface().(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if n, ok := asInt(v); ok {
		return float64(n), true
	}
	return 0, false
}
