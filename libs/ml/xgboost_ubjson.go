package ml

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// XGBoost's .ubj model files hold the same document as its JSON ones,
// written in Universal Binary JSON (ubjson.org, draft 12). No maintained Go
// module for UBJSON is served by the module proxy, so this file carries a
// small decoder: ubjsonToJSON re-encodes a UBJSON document as JSON, which
// LoadXGBoost then decodes with encoding/json like a .json file. That keeps
// one decoding path for both formats; the cost, a second pass over the
// bytes, is paid once per model load.
//
// Every type of the specification is read: null (Z), no-op (N, skipped),
// true (T), false (F), int8 (i), uint8 (U), int16 (I), int32 (l), int64 (L),
// float32 (d), float64 (D), high-precision number (H), char (C), string (S),
// arrays ([ ]) and objects ({ }), including the optimised containers with a
// count (#) and an element type ($), which XGBoost writes for its numeric
// arrays. Numbers are big-endian. A float32 is written as the shortest
// decimal that parses back to the same float32 (encoding/json parses a
// number into a float32 field with strconv.ParseFloat(s, 32), so the value
// round-trips exactly); NaN and infinities, which JSON lacks, become the
// strings "NaN", "Infinity" and "-Infinity", which a numeric field then
// refuses rather than reading as some number.

// ubjMaxDepth bounds the nesting of containers (XGBoost's models nest about
// six deep), so a hostile file cannot exhaust the stack.
const ubjMaxDepth = 256

// ubjsonToJSON re-encodes one UBJSON value (the whole of data) as JSON.
func ubjsonToJSON(data []byte) ([]byte, error) {
	d := &ubjDecoder{in: data, out: make([]byte, 0, 2*len(data))}
	m, err := d.marker()
	if err != nil {
		return nil, err
	}
	if err := d.value(m, 0); err != nil {
		return nil, err
	}
	for d.off < len(d.in) && d.in[d.off] == 'N' {
		d.off++
	}
	if d.off != len(d.in) {
		return nil, d.errorf("data after the document")
	}
	return d.out, nil
}

type ubjDecoder struct {
	in  []byte
	off int
	out []byte
}

func (d *ubjDecoder) errorf(format string, args ...any) error {
	return fmt.Errorf("ubjson: byte %d: %s", d.off, fmt.Sprintf(format, args...))
}

// take returns the next n bytes.
func (d *ubjDecoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.in)-d.off {
		return nil, d.errorf("unexpected end of data")
	}
	b := d.in[d.off : d.off+n]
	d.off += n
	return b, nil
}

// marker returns the next type marker, skipping no-ops.
func (d *ubjDecoder) marker() (byte, error) {
	for {
		b, err := d.take(1)
		if err != nil {
			return 0, err
		}
		if b[0] != 'N' {
			return b[0], nil
		}
	}
}

// integer reads an integer of the type marker m.
func (d *ubjDecoder) integer(m byte) (int64, error) {
	var b []byte
	var err error
	switch m {
	case 'i':
		if b, err = d.take(1); err == nil {
			return int64(int8(b[0])), nil
		}
	case 'U':
		if b, err = d.take(1); err == nil {
			return int64(b[0]), nil
		}
	case 'I':
		if b, err = d.take(2); err == nil {
			return int64(int16(binary.BigEndian.Uint16(b))), nil
		}
	case 'l':
		if b, err = d.take(4); err == nil {
			return int64(int32(binary.BigEndian.Uint32(b))), nil
		}
	case 'L':
		if b, err = d.take(8); err == nil {
			return int64(binary.BigEndian.Uint64(b)), nil
		}
	default:
		d.off--
		return 0, d.errorf("expected an integer type, got %q", m)
	}
	return 0, err
}

// length reads a length or count: an integer with its marker, ≥ 0.
func (d *ubjDecoder) length() (int, error) {
	m, err := d.marker()
	if err != nil {
		return 0, err
	}
	n, err := d.integer(m)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > int64(len(d.in)) {
		return 0, d.errorf("length %d out of range", n)
	}
	return int(n), nil
}

func (d *ubjDecoder) writeFloat(v float64, bits int) {
	switch {
	case math.IsNaN(v):
		d.out = append(d.out, `"NaN"`...)
	case math.IsInf(v, 1):
		d.out = append(d.out, `"Infinity"`...)
	case math.IsInf(v, -1):
		d.out = append(d.out, `"-Infinity"`...)
	default:
		d.out = strconv.AppendFloat(d.out, v, 'g', -1, bits)
	}
}

func (d *ubjDecoder) writeString(s []byte) {
	q, _ := json.Marshal(string(s)) // a string always marshals
	d.out = append(d.out, q...)
}

// value decodes one value whose type marker m has been read.
func (d *ubjDecoder) value(m byte, depth int) error {
	switch m {
	case 'Z':
		d.out = append(d.out, "null"...)
	case 'T':
		d.out = append(d.out, "true"...)
	case 'F':
		d.out = append(d.out, "false"...)
	case 'i', 'U', 'I', 'l', 'L':
		v, err := d.integer(m)
		if err != nil {
			return err
		}
		d.out = strconv.AppendInt(d.out, v, 10)
	case 'd':
		b, err := d.take(4)
		if err != nil {
			return err
		}
		d.writeFloat(float64(math.Float32frombits(binary.BigEndian.Uint32(b))), 32)
	case 'D':
		b, err := d.take(8)
		if err != nil {
			return err
		}
		d.writeFloat(math.Float64frombits(binary.BigEndian.Uint64(b)), 64)
	case 'H':
		n, err := d.length()
		if err != nil {
			return err
		}
		b, err := d.take(n)
		if err != nil {
			return err
		}
		if !json.Valid(b) {
			return d.errorf("high-precision number %q is not a number", b)
		}
		if _, err := strconv.ParseFloat(string(b), 64); err != nil {
			return d.errorf("high-precision number %q is not a number", b)
		}
		d.out = append(d.out, b...)
	case 'C':
		b, err := d.take(1)
		if err != nil {
			return err
		}
		d.writeString(b)
	case 'S':
		n, err := d.length()
		if err != nil {
			return err
		}
		b, err := d.take(n)
		if err != nil {
			return err
		}
		d.writeString(b)
	case '[', '{':
		if depth >= ubjMaxDepth {
			return d.errorf("containers nested deeper than %d", ubjMaxDepth)
		}
		return d.container(m == '{', depth+1)
	default:
		d.off--
		return d.errorf("unknown type marker %q", m)
	}
	return nil
}

// container decodes an array or object whose opening marker has been read.
func (d *ubjDecoder) container(object bool, depth int) error {
	open, closing := byte('['), byte(']')
	if object {
		open, closing = '{', '}'
	}
	d.out = append(d.out, open)
	// Optimised form: [$ type] # count, then count elements without markers
	// (with $) and no closing marker.
	var elemType byte
	count := -1
	if d.off < len(d.in) && d.in[d.off] == '$' {
		d.off++
		b, err := d.take(1)
		if err != nil {
			return err
		}
		elemType = b[0]
		if d.off >= len(d.in) || d.in[d.off] != '#' {
			return d.errorf("typed container without a count")
		}
	}
	if d.off < len(d.in) && d.in[d.off] == '#' {
		d.off++
		n, err := d.length()
		if err != nil {
			return err
		}
		count = n
	}
	for i := 0; ; i++ {
		if count >= 0 {
			if i == count {
				break
			}
		} else {
			m, err := d.peekMarker()
			if err != nil {
				return err
			}
			if m == closing {
				d.off++
				break
			}
		}
		if i > 0 {
			d.out = append(d.out, ',')
		}
		if object {
			// An object's key is a string without the S marker.
			n, err := d.length()
			if err != nil {
				return err
			}
			key, err := d.take(n)
			if err != nil {
				return err
			}
			d.writeString(key)
			d.out = append(d.out, ':')
		}
		m := elemType
		if m == 0 {
			var err error
			if m, err = d.marker(); err != nil {
				return err
			}
		}
		if err := d.value(m, depth); err != nil {
			return err
		}
	}
	d.out = append(d.out, closing)
	return nil
}

// peekMarker skips no-ops and returns the next marker without consuming it.
func (d *ubjDecoder) peekMarker() (byte, error) {
	for d.off < len(d.in) && d.in[d.off] == 'N' {
		d.off++
	}
	if d.off >= len(d.in) {
		return 0, d.errorf("unexpected end of data")
	}
	return d.in[d.off], nil
}
