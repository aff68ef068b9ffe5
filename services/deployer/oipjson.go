package deployer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// The inference request is decoded by hand rather than with encoding/json:
// a request is mostly tensor data, and decoding it through reflection and
// interface values (one allocation per number) was most of what an /infer
// call cost. The decoder walks the body once, copies only the strings it
// keeps, and turns tensor data straight into typed columns.

// syntaxError is malformed JSON at a byte offset of the body.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("request body is not an inference request: %s at byte %d", e.msg, e.off)
}

// scanner reads JSON tokens from a byte slice.
type scanner struct {
	b []byte
	i int
}

// maxDepth bounds the nesting of values the scanner skips (parameters).
const maxDepth = 64

func (s *scanner) errorf(format string, args ...any) error {
	return &syntaxError{off: s.i, msg: fmt.Sprintf(format, args...)}
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

func (s *scanner) unexpected(want string) error {
	if s.i >= len(s.b) {
		return s.errorf("unexpected end of input, want %s", want)
	}
	c := s.b[s.i]
	if c < 0x20 || c >= 0x7f {
		return s.errorf("unexpected byte 0x%02x, want %s", c, want)
	}
	return s.errorf("unexpected %q, want %s", c, want)
}

// wrong is err, a value of the wrong kind, unless the input ended: then
// the body is not JSON at all.
func (s *scanner) wrong(err error) error {
	if s.peek() == 0 {
		return s.unexpected("a value")
	}
	return err
}

// consume skips c (after white space) or fails.
func (s *scanner) consume(c byte, want string) error {
	if s.peek() != c {
		return s.unexpected(want)
	}
	s.i++
	return nil
}

// more reads what follows an element of an object or array: true when a
// comma announces another, false at the closing bracket.
func (s *scanner) more(end byte) (bool, error) {
	switch s.peek() {
	case ',':
		s.i++
		return true, nil
	case end:
		s.i++
		return false, nil
	}
	return false, s.unexpected(fmt.Sprintf("',' or '%c'", end))
}

// object calls field for each key of an object; field reads the value.
func (s *scanner) object(field func(key []byte) error) error {
	if err := s.consume('{', "an object"); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.unexpected("a string key")
		}
		key, _, err := s.rawString()
		if err != nil {
			return err
		}
		if err := s.consume(':', "':'"); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		more, err := s.more('}')
		if err != nil || !more {
			return err
		}
	}
}

// array calls elem for each element of an array; elem reads it.
func (s *scanner) array(elem func(i int) error) error {
	if err := s.consume('[', "an array"); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		more, err := s.more(']')
		if err != nil || !more {
			return err
		}
	}
}

// rawString reads a string token and returns its contents as they are in
// the body (escapes not decoded) and whether it has escapes.
func (s *scanner) rawString() (raw []byte, escaped bool, err error) {
	if s.peek() != '"' {
		return nil, false, s.unexpected("a string")
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], escaped, nil
		case c == '\\':
			escaped = true
			j++
		case c < 0x20:
			s.i = j
			return nil, false, s.errorf("control character in a string")
		}
	}
	s.i = len(s.b)
	return nil, false, s.errorf("unterminated string")
}

// str reads a string token and returns its value.
func (s *scanner) str() (string, error) {
	at := s.i
	raw, escaped, err := s.rawString()
	if err != nil {
		return "", err
	}
	if !escaped {
		if !utf8.Valid(raw) {
			return string([]rune(string(raw))), nil
		}
		return string(raw), nil
	}
	// Escapes are rare in tensor data: encoding/json decodes them.
	var v string
	if err := json.Unmarshal(s.b[at:s.i], &v); err != nil {
		return "", &syntaxError{off: at, msg: "bad string escape"}
	}
	return v, nil
}

// number reads a number token (JSON's grammar, strictly) and returns it.
func (s *scanner) number() ([]byte, error) {
	s.ws()
	start, j := s.i, s.i
	b := s.b
	digits := func() bool {
		k := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j > k
	}
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case !digits():
		s.i = j
		return nil, s.unexpected("a number")
	}
	if j < len(b) && b[j] == '.' {
		j++
		if !digits() {
			s.i = j
			return nil, s.unexpected("a digit")
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if !digits() {
			s.i = j
			return nil, s.unexpected("a digit")
		}
	}
	s.i = j
	return b[start:j], nil
}

// literal reads true, false or null.
func (s *scanner) literal(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// skip reads any value and returns its bytes.
func (s *scanner) skip(depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, s.errorf("nested deeper than %d", maxDepth)
	}
	c := s.peek()
	start := s.i
	var err error
	switch {
	case c == '{':
		err = s.object(func([]byte) error { _, err := s.skip(depth + 1); return err })
	case c == '[':
		err = s.array(func(int) error { _, err := s.skip(depth + 1); return err })
	case c == '"':
		_, _, err = s.rawString()
	case c == '-' || c >= '0' && c <= '9':
		_, err = s.number()
	case s.literal("true"), s.literal("false"), s.literal("null"):
	default:
		err = s.unexpected("a value")
	}
	return s.b[start:s.i], err
}

// token is one scalar of tensor data.
type token struct {
	kind byte // 'n' number, 's' string, 't' true, 'f' false, '0' null
	raw  []byte
	// escaped strings need decoding.
	escaped bool
}

// scalar reads a scalar value; a nested array or object is not one.
func (s *scanner) scalar() (token, error) {
	switch c := s.peek(); {
	case c == '"':
		raw, esc, err := s.rawString()
		return token{kind: 's', raw: raw, escaped: esc}, err
	case c == '-' || c >= '0' && c <= '9':
		raw, err := s.number()
		return token{kind: 'n', raw: raw}, err
	case s.literal("true"):
		return token{kind: 't'}, nil
	case s.literal("false"):
		return token{kind: 'f'}, nil
	case s.literal("null"):
		return token{kind: '0'}, nil
	}
	return token{}, s.unexpected("a value")
}

// text returns a token as it reads in an error message.
func (t token) text() string {
	switch t.kind {
	case 's':
		return strconv.Quote(string(t.raw))
	case 't':
		return "true"
	case 'f':
		return "false"
	case '0':
		return "null"
	}
	return string(t.raw)
}

// unsafeString views b as a string without copying, for parsing only: the
// string must not outlive the call it is passed to.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// tensorData walks a tensor's data array — flat, or nested exactly as the
// shape says — and calls emit with each scalar's row-major index.
func tensorData(data []byte, shape []int64, total int, emit func(idx int, t token) error) error {
	s := &scanner{b: data}
	if s.peek() != '[' {
		return errors.New("data: not an array (want the values, flat or nested as the shape)")
	}
	// Flat when the first element is not an array.
	if probe := (&scanner{b: data, i: s.i + 1}); probe.peek() != '[' {
		n := 0
		err := s.array(func(i int) error {
			t, err := s.scalar()
			if err != nil {
				if s.peek() == '[' {
					return fmt.Errorf("data[%d]: an array among values: give the data flat, or nested as the shape %v", i, shape)
				}
				return err
			}
			n++
			if i >= total {
				return nil
			}
			return emit(i, t)
		})
		if err != nil {
			return err
		}
		if n != total {
			return fmt.Errorf("shape %v holds %d values, data has %d", shape, total, n)
		}
		return nil
	}
	// Nested: level d is an array of shape[d] elements.
	idx := 0
	pos := make([]int, 0, len(shape))
	where := func() string {
		var b strings.Builder
		for _, p := range pos {
			fmt.Fprintf(&b, "[%d]", p)
		}
		return b.String()
	}
	var level func(d int) error
	level = func(d int) error {
		n := 0
		err := s.array(func(i int) error {
			pos = append(pos, i)
			if int64(i) >= shape[d] {
				return fmt.Errorf("data%s: the shape %v has %d element(s) at this level", where(), shape, shape[d])
			}
			n++
			if d == len(shape)-1 {
				t, err := s.scalar()
				if err != nil {
					if s.peek() == '[' {
						return fmt.Errorf("data%s: nested deeper than the shape %v", where(), shape)
					}
					return err
				}
				pos = pos[:len(pos)-1]
				err = emit(idx, t)
				idx++
				return err
			}
			if s.peek() != '[' {
				return fmt.Errorf("data%s: a value where the shape %v wants an array", where(), shape)
			}
			if err := level(d + 1); err != nil {
				return err
			}
			pos = pos[:len(pos)-1]
			return nil
		})
		if err != nil {
			return err
		}
		if int64(n) != shape[d] {
			return fmt.Errorf("data%s: %d elements where the shape %v has %d", where(), n, shape, shape[d])
		}
		return nil
	}
	return level(0)
}

// Encoding

// appendFloat appends a number, or null for NaN and infinities, which JSON
// cannot carry.
func appendFloat(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}
