package ml

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Params holds training hyper-parameters by name, as they arrive from a
// pipeline spec (JSON numbers are float64, YAML integers are int). Train
// validates them against the algorithm's specification: unknown names, wrong
// types and out-of-range values are errors, and missing names take their
// defaults.
type Params map[string]any

type paramKind int

const (
	kindInt paramKind = iota
	kindFloat
	kindBool
	// kindInts is a list of integers, each within [min, max], with at most
	// maxLen elements. It accepts a JSON or YAML array, a single number,
	// or a string such as "64,32" (what a command-line --param gives).
	kindInts
	// kindString is one of the values listed in choices.
	kindString
)

// paramSpec describes one parameter: its type, default and valid range.
type paramSpec struct {
	name string
	kind paramKind
	def  any
	// min and max bound numeric values; minOpen excludes min itself.
	min, max float64
	minOpen  bool
	// check, if set, adds a constraint the range cannot express.
	check func(float64) error
	// maxLen bounds the length of a kindInts value.
	maxLen int
	// choices are the valid values of a kindString param.
	choices []string
	doc     string
}

// ParamInfo describes a parameter for documentation and UIs.
type ParamInfo struct {
	Name    string `json:"name"`
	Type    string `json:"type"` // "int", "float", "bool", "ints" or "string"
	Default any    `json:"default"`
	// Values lists the valid values of a "string" param.
	Values []string `json:"values,omitempty"`
	Doc    string   `json:"doc"`
}

func (s paramSpec) rangeText() string {
	lo := "["
	if s.minOpen {
		lo = "("
	}
	hi := fmt.Sprint(s.max)
	if math.IsInf(s.max, 1) {
		hi = "∞"
	}
	return fmt.Sprintf("%s%v, %s]", lo, s.min, hi)
}

func (k paramKind) String() string {
	switch k {
	case kindInt:
		return "int"
	case kindFloat:
		return "float"
	case kindInts:
		return "ints"
	case kindString:
		return "string"
	default:
		return "bool"
	}
}

// parseParams validates p against specs and returns a complete, normalised
// copy: ints as int, floats as float64, bools as bool, strings as string,
// int lists as []any holding ints (not []int, so that the set stays
// encodable as a protobuf Struct, which the trainer's events carry), every
// known name set.
// Keys are checked in sorted order so that the error for a map with several
// problems is always the same one.
func parseParams(alg string, specs []paramSpec, p Params) (Params, error) {
	byName := make(map[string]paramSpec, len(specs))
	names := make([]string, len(specs))
	for i, s := range specs {
		byName[s.name] = s
		names[i] = s.name
	}
	slices.Sort(names)
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(Params, len(specs))
	for _, s := range specs {
		out[s.name] = cloneParam(s.def)
	}
	for _, k := range keys {
		s, ok := byName[k]
		if !ok {
			return nil, &ParamError{Algorithm: alg, Param: k, Msg: "unknown param (known: " + strings.Join(names, ", ") + ")"}
		}
		v, err := convertParam(s, p[k])
		if err != nil {
			return nil, &ParamError{Algorithm: alg, Param: k, Msg: err.Error()}
		}
		out[k] = v
	}
	return out, nil
}

// cloneParam copies a list default so that no caller can change it.
func cloneParam(v any) any {
	if l, ok := v.([]any); ok {
		return slices.Clone(l)
	}
	return v
}

func convertParam(s paramSpec, raw any) (any, error) {
	switch s.kind {
	case kindBool:
		b, ok := raw.(bool)
		if !ok {
			return nil, fmt.Errorf("must be a bool, got %T %v", raw, raw)
		}
		return b, nil
	case kindString:
		v, ok := raw.(string)
		if !ok || !slices.Contains(s.choices, v) {
			return nil, fmt.Errorf("must be one of %s, got %T %v", strings.Join(s.choices, ", "), raw, raw)
		}
		return v, nil
	case kindInts:
		return convertInts(s, raw)
	}
	return convertNumber(s, raw)
}

// convertInts normalises a list of ints from the forms a spec, a JSON body
// or a command line give: []any or a typed slice of numbers, one number, or
// a comma-separated string with optional brackets ("64,32", "[64, 32]", ""
// for an empty list).
func convertInts(s paramSpec, raw any) (any, error) {
	var elems []any
	switch v := raw.(type) {
	case []any:
		elems = v
	case []int:
		for _, e := range v {
			elems = append(elems, e)
		}
	case []int64:
		for _, e := range v {
			elems = append(elems, e)
		}
	case []float64:
		for _, e := range v {
			elems = append(elems, e)
		}
	case string:
		t := strings.TrimSpace(v)
		t = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(t, "["), "]"))
		if t != "" {
			for _, part := range strings.Split(t, ",") {
				part = strings.TrimSpace(part)
				n, err := strconv.ParseInt(part, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("must be a list of integers such as \"64,32\", got %q", v)
				}
				elems = append(elems, n)
			}
		}
	case nil:
		return nil, fmt.Errorf("must be a list of integers, got null")
	default:
		elems = []any{raw}
	}
	if len(elems) > s.maxLen {
		return nil, fmt.Errorf("must have at most %d values, got %d", s.maxLen, len(elems))
	}
	out := make([]any, len(elems))
	for i, e := range elems {
		n, err := convertNumber(paramSpec{kind: kindInt, min: s.min, max: s.max, minOpen: s.minOpen, check: s.check}, e)
		if err != nil {
			return nil, fmt.Errorf("value %d: %w", i+1, err)
		}
		out[i] = n
	}
	return out, nil
}

func convertNumber(s paramSpec, raw any) (any, error) {
	var f float64
	switch v := raw.(type) {
	case int:
		f = float64(v)
	case int8:
		f = float64(v)
	case int16:
		f = float64(v)
	case int32:
		f = float64(v)
	case int64:
		f = float64(v)
	case uint:
		f = float64(v)
	case uint8:
		f = float64(v)
	case uint16:
		f = float64(v)
	case uint32:
		f = float64(v)
	case uint64:
		f = float64(v)
	case float32:
		f = float64(v)
	case float64:
		f = v
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return nil, fmt.Errorf("must be a number, got %q", v.String())
		}
	default:
		return nil, fmt.Errorf("must be a %s, got %T %v", s.kind, raw, raw)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("must be a finite number, got %v", f)
	}
	if s.kind == kindInt && f != math.Trunc(f) {
		return nil, fmt.Errorf("must be an integer, got %v", f)
	}
	if f < s.min || (s.minOpen && f == s.min) || f > s.max {
		return nil, fmt.Errorf("must be in %s, got %v", s.rangeText(), f)
	}
	if s.check != nil {
		if err := s.check(f); err != nil {
			return nil, err
		}
	}
	if s.kind == kindInt {
		return int(f), nil
	}
	return f, nil
}

// Typed accessors for normalised params (only called after parseParams, so
// the types are known).
func (p Params) int(name string) int       { return p[name].(int) }
func (p Params) float(name string) float64 { return p[name].(float64) }
func (p Params) boolean(name string) bool  { return p[name].(bool) }
func (p Params) str(name string) string    { return p[name].(string) }

// ints returns a normalised int list param.
func (p Params) ints(name string) []int {
	l := p[name].([]any)
	out := make([]int, len(l))
	for i, v := range l {
		out[i] = v.(int)
	}
	return out
}
