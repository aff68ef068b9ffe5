// Package schemacompat finds breaking changes between two versions of the
// event payload schemas (package gyre.v1): the baseline, the schemas of the
// last release checked in as schemas/baseline/gyre-v1.json, and the
// schemas compiled into events/gyrev1.
//
// It is the subset of `buf breaking` (categories WIRE_JSON plus
// MESSAGE_NO_DELETE) that Gyre's payloads need, with no binary to install:
// payloads travel as protojson by default and binary protobuf on request,
// so a change is breaking when either encoding of a message would be read
// differently by a consumer built on the other version. Breaking:
//
//   - a message or enum removed (or moved to another package or name);
//   - a field removed, unless its number and name are both reserved and its
//     message is not public (the public payloads' JSON names never change
//     within v1; other payloads may retire a field the way common.proto
//     says, reserving it);
//   - a field renumbered, renamed, or given another JSON name;
//   - a field's type changed (scalar kind, or message or enum type);
//   - a field's cardinality changed: singular, repeated or map, explicit
//     presence (proto3 optional) or not, in a oneof or not;
//   - an enum value removed or renamed (JSON carries enum names).
//
// Adding messages, fields, enums and enum values is compatible.
package schemacompat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/gyrehq/gyre/events"
	// The payloads: registered in protoregistry.GlobalFiles.
	_ "github.com/gyrehq/gyre/events/gyrev1"
)

// Package is the protobuf package of the payloads.
const Package = "gyre.v1"

// Current returns the payload schemas compiled into this binary: every file
// of package gyre.v1, sorted by path. Imports of other packages
// (google/protobuf/struct.proto) are not Gyre's to keep and are left out;
// fields that use their types are compared by type name.
func Current() *descriptorpb.FileDescriptorSet {
	var files []*descriptorpb.FileDescriptorProto
	protoregistry.GlobalFiles.RangeFilesByPackage(Package, func(fd protoreflect.FileDescriptor) bool {
		files = append(files, protodesc.ToFileDescriptorProto(fd))
		return true
	})
	sort.Slice(files, func(i, j int) bool { return files[i].GetName() < files[j].GetName() })
	return &descriptorpb.FileDescriptorSet{File: files}
}

// Marshal encodes a set the way the baseline is stored: protojson, indented
// by two spaces, one trailing newline. protojson's own whitespace varies
// from run to run on purpose; it is normalised so that equal sets are
// equal bytes and a new baseline diffs line by line.
func Marshal(set *descriptorpb.FileDescriptorSet) ([]byte, error) {
	raw, err := protojson.Marshal(set)
	if err != nil {
		return nil, err
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, err
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// Unmarshal decodes a stored baseline.
func Unmarshal(data []byte) (*descriptorpb.FileDescriptorSet, error) {
	set := &descriptorpb.FileDescriptorSet{}
	if err := protojson.Unmarshal(data, set); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return set, nil
}

// Public returns the messages whose JSON form producers outside Gyre write:
// the payloads the catalog marks public and every message they contain,
// found in set.
func Public(set *descriptorpb.FileDescriptorSet) map[string]bool {
	msgs := messages(set)
	public := map[string]bool{}
	var mark func(name string)
	mark = func(name string) {
		m, ok := msgs[name]
		if !ok || public[name] {
			return
		}
		public[name] = true
		for _, f := range m.GetField() {
			if f.GetType() == descriptorpb.FieldDescriptorProto_TYPE_MESSAGE {
				mark(strings.TrimPrefix(f.GetTypeName(), "."))
			}
		}
	}
	for _, s := range events.Catalog() {
		if s.Public {
			mark(s.Message)
		}
	}
	return public
}

// Problem is one breaking change: the element (a message, field or enum by
// full name) and what happened to it.
type Problem struct {
	Element string
	Change  string
}

func (p Problem) String() string { return p.Element + ": " + p.Change }

// Check returns the breaking changes from baseline to current, sorted;
// public names the messages whose fields may not be retired even when
// reserved (see Public).
func Check(baseline, current *descriptorpb.FileDescriptorSet, public map[string]bool) []Problem {
	var out []Problem
	add := func(element, format string, args ...any) {
		out = append(out, Problem{Element: element, Change: fmt.Sprintf(format, args...)})
	}
	was, now := messages(baseline), messages(current)
	for name, old := range was {
		cur, ok := now[name]
		if !ok {
			add(name, "message removed (or renamed, or moved to another package)")
			continue
		}
		checkFields(name, old, cur, public[name], add)
	}
	wasEnums, nowEnums := enums(baseline), enums(current)
	for name, old := range wasEnums {
		cur, ok := nowEnums[name]
		if !ok {
			add(name, "enum removed (or renamed, or moved to another package)")
			continue
		}
		for _, v := range old.GetValue() {
			i := slices.IndexFunc(cur.GetValue(), func(c *descriptorpb.EnumValueDescriptorProto) bool { return c.GetNumber() == v.GetNumber() })
			switch {
			case i < 0:
				add(name+"."+v.GetName(), "enum value %d removed", v.GetNumber())
			case cur.GetValue()[i].GetName() != v.GetName():
				add(name+"."+v.GetName(), "enum value %d renamed to %s (JSON carries the name)", v.GetNumber(), cur.GetValue()[i].GetName())
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Element != out[j].Element {
			return out[i].Element < out[j].Element
		}
		return out[i].Change < out[j].Change
	})
	return out
}

func checkFields(msg string, old, cur *descriptorpb.DescriptorProto, public bool, add func(string, string, ...any)) {
	for _, f := range old.GetField() {
		el := msg + "." + f.GetName()
		i := slices.IndexFunc(cur.GetField(), func(c *descriptorpb.FieldDescriptorProto) bool { return c.GetNumber() == f.GetNumber() })
		if i < 0 {
			if j := slices.IndexFunc(cur.GetField(), func(c *descriptorpb.FieldDescriptorProto) bool { return c.GetName() == f.GetName() }); j >= 0 {
				add(el, "renumbered from %d to %d", f.GetNumber(), cur.GetField()[j].GetNumber())
				continue
			}
			switch {
			case public:
				add(el, "field %d removed from a public payload (its JSON names never change within v1)", f.GetNumber())
			case !reserved(cur, f):
				add(el, "field %d removed without reserving its number and name", f.GetNumber())
			}
			continue
		}
		c := cur.GetField()[i]
		if c.GetName() != f.GetName() {
			add(el, "field %d renamed to %s", f.GetNumber(), c.GetName())
		}
		if jsonName(c) != jsonName(f) {
			add(el, "JSON name changed from %s to %s", jsonName(f), jsonName(c))
		}
		if typeOf(c) != typeOf(f) {
			add(el, "type changed from %s to %s", typeOf(f), typeOf(c))
		}
		if cardinality(old, f) != cardinality(cur, c) {
			add(el, "cardinality changed from %s to %s", cardinality(old, f), cardinality(cur, c))
		}
	}
}

// reserved reports whether msg reserves both the number and the name of f.
func reserved(msg *descriptorpb.DescriptorProto, f *descriptorpb.FieldDescriptorProto) bool {
	number := slices.ContainsFunc(msg.GetReservedRange(), func(r *descriptorpb.DescriptorProto_ReservedRange) bool {
		return f.GetNumber() >= r.GetStart() && f.GetNumber() < r.GetEnd() // end is exclusive
	})
	return number && slices.Contains(msg.GetReservedName(), f.GetName())
}

// jsonName is the field's JSON name: json_name, which protoc always fills
// in, or else the lowerCamel form protoc would give it.
func jsonName(f *descriptorpb.FieldDescriptorProto) string {
	if f.JsonName != nil {
		return f.GetJsonName()
	}
	var b strings.Builder
	upper := false
	for _, r := range f.GetName() {
		switch {
		case r == '_':
			upper = true
		case upper && r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			upper = false
		default:
			b.WriteRune(r)
			upper = false
		}
	}
	return b.String()
}

// typeOf names a field's type: the scalar kind, or the message or enum.
func typeOf(f *descriptorpb.FieldDescriptorProto) string {
	kind := strings.ToLower(strings.TrimPrefix(f.GetType().String(), "TYPE_"))
	if n := f.GetTypeName(); n != "" {
		return kind + " " + strings.TrimPrefix(n, ".")
	}
	return kind
}

// cardinality names how many values a field holds and how its absence
// reads: "map", "repeated", "optional (explicit presence)", "oneof NAME",
// "singular".
func cardinality(msg *descriptorpb.DescriptorProto, f *descriptorpb.FieldDescriptorProto) string {
	if f.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REPEATED {
		if isMapEntry(msg, f.GetTypeName()) {
			return "map"
		}
		return "repeated"
	}
	if f.GetProto3Optional() {
		return "optional (explicit presence)"
	}
	if f.OneofIndex != nil {
		return "oneof " + msg.GetOneofDecl()[f.GetOneofIndex()].GetName()
	}
	if f.GetLabel() == descriptorpb.FieldDescriptorProto_LABEL_REQUIRED {
		return "required"
	}
	return "singular"
}

func isMapEntry(msg *descriptorpb.DescriptorProto, typeName string) bool {
	for _, n := range msg.GetNestedType() {
		if strings.HasSuffix(typeName, "."+n.GetName()) && n.GetOptions().GetMapEntry() {
			return true
		}
	}
	return false
}

// messages indexes every message of the set's files (nested ones too) by
// full name.
func messages(set *descriptorpb.FileDescriptorSet) map[string]*descriptorpb.DescriptorProto {
	out := map[string]*descriptorpb.DescriptorProto{}
	var walk func(prefix string, ms []*descriptorpb.DescriptorProto)
	walk = func(prefix string, ms []*descriptorpb.DescriptorProto) {
		for _, m := range ms {
			name := prefix + "." + m.GetName()
			out[name] = m
			walk(name, m.GetNestedType())
		}
	}
	for _, f := range set.GetFile() {
		walk(f.GetPackage(), f.GetMessageType())
	}
	return out
}

// enums indexes every enum of the set's files (nested ones too) by full name.
func enums(set *descriptorpb.FileDescriptorSet) map[string]*descriptorpb.EnumDescriptorProto {
	out := map[string]*descriptorpb.EnumDescriptorProto{}
	var walk func(prefix string, ms []*descriptorpb.DescriptorProto)
	walk = func(prefix string, ms []*descriptorpb.DescriptorProto) {
		for _, m := range ms {
			name := prefix + "." + m.GetName()
			for _, e := range m.GetEnumType() {
				out[name+"."+e.GetName()] = e
			}
			walk(name, m.GetNestedType())
		}
	}
	for _, f := range set.GetFile() {
		for _, e := range f.GetEnumType() {
			out[f.GetPackage()+"."+e.GetName()] = e
		}
		walk(f.GetPackage(), f.GetMessageType())
	}
	return out
}
