package ml

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
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
	doc   string
}

// ParamInfo describes a parameter for documentation and UIs.
type ParamInfo struct {
	Name    string `json:"name"`
	Type    string `json:"type"` // "int", "float" or "bool"
	Default any    `json:"default"`
	Doc     string `json:"doc"`
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
	default:
		return "bool"
	}
}

// parseParams validates p against specs and returns a complete, normalised
// copy: ints as int, floats as float64, bools as bool, every known name set.
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
		out[s.name] = s.def
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

func convertParam(s paramSpec, raw any) (any, error) {
	if s.kind == kindBool {
		b, ok := raw.(bool)
		if !ok {
			return nil, fmt.Errorf("must be a bool, got %T %v", raw, raw)
		}
		return b, nil
	}
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
