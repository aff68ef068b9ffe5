package events

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// JSONSchema returns the JSON Schema (draft 2020-12) of a payload message's
// JSON form ("gyre.v1.ModelPromoted"), as protojson writes and reads it:
// lowerCamel property names, 64-bit integers as numbers or decimal strings,
// bytes as base64, maps as objects, google.protobuf.Struct as any object.
// The contract's rules are in it: "required", "enum", "minimum", "pattern"
// and the like where a keyword says it, and every rule, with the ones across
// fields, under "x-gyre-rules". Unknown properties are allowed, as
// consumers accept them (see contract.go).
//
// It is built from the compiled descriptor and the rules table on every
// call rather than generated into the tree: the two cannot disagree with
// the code that checks payloads, and there is no generator to pin. The
// output is deterministic (sorted keys).
func JSONSchema(message string) ([]byte, error) {
	spec, ok := specOfMessage(message)
	if !ok {
		return nil, fmt.Errorf("%q is not the payload message of an event of the catalog", message)
	}
	c := compiled()[spec.Name]
	g := &schemaGen{defs: map[string]any{}}
	root := g.object(c.desc)
	root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	if base := SchemaBaseURL(); base != "" {
		root["$id"] = base + "/" + spec.Message + ".json"
	}
	root["title"] = spec.Message
	public := ""
	if spec.Public {
		public = " Public contract: published by producers outside Gyre; its JSON names never change within v1."
	}
	root["description"] = fmt.Sprintf("Payload (data) of the CloudEvents type %s (event %s, emitted by %s), in its JSON form (protojson). "+
		"The protobuf source is %s.proto.%s", spec.Type, spec.Name, spec.EmittedBy, spec.Message, public)
	root["x-gyre-event"] = map[string]any{"name": spec.Name, "type": spec.Type, "stream": spec.Stream, "public": spec.Public}
	var docs []map[string]string
	for _, r := range c.rules {
		d := map[string]string{"rule": r.Name, "doc": r.Doc}
		if r.Field != "" {
			d["field"] = r.Field
		}
		docs = append(docs, d)
		if r.path != nil {
			g.overlay(root, r.path, &r.rule)
		}
	}
	root["x-gyre-rules"] = docs
	if len(g.defs) > 0 {
		root["$defs"] = g.defs
	}
	return json.MarshalIndent(root, "", "  ")
}

// schemaGen builds a JSON Schema; sub-messages go to $defs, once each.
type schemaGen struct {
	defs map[string]any
}

// object is the schema of a message's fields.
func (g *schemaGen) object(md protoreflect.MessageDescriptor) map[string]any {
	props := map[string]any{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		props[fd.JSONName()] = g.field(fd)
	}
	return map[string]any{"type": "object", "properties": props}
}

// field is the schema of a field, list and map included.
func (g *schemaGen) field(fd protoreflect.FieldDescriptor) map[string]any {
	switch {
	case fd.IsMap():
		return map[string]any{"type": "object", "additionalProperties": g.single(fd.MapValue())}
	case fd.IsList():
		return map[string]any{"type": "array", "items": g.single(fd)}
	}
	return g.single(fd)
}

// single is the schema of one value of a field's kind.
func (g *schemaGen) single(fd protoreflect.FieldDescriptor) map[string]any {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return map[string]any{"type": "string"}
	case protoreflect.BytesKind:
		return map[string]any{"type": "string", "contentEncoding": "base64"}
	case protoreflect.BoolKind:
		return map[string]any{"type": "boolean"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return map[string]any{"type": "integer", "minimum": math.MinInt32, "maximum": math.MaxInt32}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return map[string]any{"type": "integer", "minimum": 0, "maximum": math.MaxUint32}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		// protojson writes 64-bit integers as strings (JavaScript numbers
		// lose precision past 2^53) and reads both forms.
		return map[string]any{"type": []string{"integer", "string"}, "pattern": "^-?[0-9]+$"}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return map[string]any{"anyOf": []any{
			map[string]any{"type": "number"},
			map[string]any{"type": "string", "enum": []string{"NaN", "Infinity", "-Infinity"}},
		}}
	case protoreflect.EnumKind:
		var names []string
		values := fd.Enum().Values()
		for i := range values.Len() {
			names = append(names, string(values.Get(i).Name()))
		}
		return map[string]any{"anyOf": []any{
			map[string]any{"type": "string", "enum": names},
			map[string]any{"type": "integer"},
		}}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return g.message(fd.Message())
	}
	return map[string]any{}
}

// message is a reference to a sub-message's schema, or the JSON form of a
// well-known type.
func (g *schemaGen) message(md protoreflect.MessageDescriptor) map[string]any {
	switch md.FullName() {
	case "google.protobuf.Struct":
		return map[string]any{"type": "object"}
	case "google.protobuf.Value":
		return map[string]any{}
	case "google.protobuf.ListValue":
		return map[string]any{"type": "array"}
	case "google.protobuf.Timestamp":
		return map[string]any{"type": "string", "format": "date-time"}
	case "google.protobuf.Duration":
		return map[string]any{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]+)?s$`}
	}
	name := string(md.FullName())
	if _, ok := g.defs[name]; !ok {
		g.defs[name] = nil // a placeholder stops recursion
		def := g.object(md)
		def["title"] = name
		g.defs[name] = def
	}
	return map[string]any{"$ref": "#/$defs/" + name}
}

// overlay adds a rule's keywords at its path. A sub-message's constraints
// sit beside its $ref (2020-12 applies both), so that the shared $defs stay
// free of any one payload's rules. A rule that makes its field always
// present marks the field, and every field on the way to it, required.
func (g *schemaGen) overlay(root map[string]any, path []step, r *rule) {
	node := root
	for i, st := range path {
		props, _ := node["properties"].(map[string]any)
		if props == nil {
			props = map[string]any{}
			node["properties"] = props
		}
		name := st.fd.JSONName()
		prop, _ := props[name].(map[string]any)
		if prop == nil {
			prop = map[string]any{}
			props[name] = prop
		}
		last := i == len(path)-1
		if r.present && !(last && st.each) {
			req, _ := node["required"].([]string)
			if !slices.Contains(req, name) {
				req = append(req, name)
				slices.Sort(req)
				node["required"] = req
			}
		}
		target := prop
		if st.each {
			items, _ := prop["items"].(map[string]any)
			if items == nil {
				items = map[string]any{}
				prop["items"] = items
			}
			target = items
		}
		if last {
			for k, v := range ruleKeywords(st.fd, st.each, r) {
				target[k] = v
			}
			if k := st.fd.Kind(); r.Name == "range" && (k == protoreflect.DoubleKind || k == protoreflect.FloatKind) {
				// A bounded number is never "NaN" or "Infinity".
				delete(target, "anyOf")
				target["type"] = "number"
			}
			return
		}
		node = target
	}
}

// ruleKeywords are the JSON Schema keywords of a rule on a field (or on one
// item of it).
func ruleKeywords(fd protoreflect.FieldDescriptor, item bool, r *rule) map[string]any {
	if r.Name != "required" {
		return r.schema
	}
	switch {
	case fd.IsMap():
		return map[string]any{"minProperties": 1}
	case fd.IsList() && !item:
		return map[string]any{"minItems": 1}
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		return map[string]any{"minLength": 1}
	case protoreflect.MessageKind, protoreflect.GroupKind, protoreflect.BoolKind:
		return nil
	}
	return map[string]any{"not": map[string]any{"const": 0}}
}
