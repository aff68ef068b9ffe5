package deployer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Binary tensor data: the form of Triton's binary tensor data extension of
// the REST protocol and of gRPC's raw_input_contents and
// raw_output_contents. A tensor's elements are row-major, without padding:
// little-endian numbers of the datatype's size (BOOL one byte, 0 or 1;
// FP16 IEEE half precision), and BYTES elements each a 4-byte
// little-endian length followed by that many bytes. The values decode to
// the same float64 and strings as JSON's, so a request answers the same in
// either form; NaN, which JSON writes null, is a missing value in both.

// rawSource is a tensor's data in binary form.
type rawSource []byte

// elemSize is the size of an element of dt in binary form; 0 for BYTES.
func elemSize(dt datatype) int {
	switch dt.kind {
	case 's':
		return 0
	case 'b':
		return 1
	}
	return dt.bits / 8
}

func (r rawSource) check(dt datatype, name string, total int) error {
	if size := elemSize(dt); size > 0 {
		if len(r) != total*size {
			return fmt.Errorf("binary data of %d bytes: %d values of %s take %d bytes (%d each)", len(r), total, name, total*size, size)
		}
		return nil
	}
	// BYTES: 4 bytes of length at least per element; fill checks the rest.
	if len(r) < 4*total {
		return fmt.Errorf("binary data of %d bytes: %d BYTES values take at least %d (a 4-byte length each)", len(r), total, 4*total)
	}
	return nil
}

func (r rawSource) fill(dt datatype, name string, total int, num func(int, float64), text func(int, string)) error {
	if dt.kind == 's' {
		b := []byte(r)
		for i := range total {
			if len(b) < 4 {
				return fmt.Errorf("binary data: element %d: no 4-byte length left", i)
			}
			n := binary.LittleEndian.Uint32(b)
			b = b[4:]
			if uint64(n) > uint64(len(b)) {
				return fmt.Errorf("binary data: element %d: length %d, %d bytes left", i, n, len(b))
			}
			text(i, string(b[:n]))
			b = b[n:]
		}
		if len(b) > 0 {
			return fmt.Errorf("binary data: %d bytes after the %d BYTES values", len(b), total)
		}
		return nil
	}
	size := elemSize(dt)
	for i := range total {
		e := r[i*size : (i+1)*size]
		var v float64
		switch dt.kind {
		case 'b':
			switch e[0] {
			case 0:
			case 1:
				v = 1
			default:
				return fmt.Errorf("binary data: element %d: byte %d is not a BOOL (0 or 1)", i, e[0])
			}
		case 'i':
			switch size {
			case 1:
				v = float64(int8(e[0]))
			case 2:
				v = float64(int16(binary.LittleEndian.Uint16(e)))
			case 4:
				v = float64(int32(binary.LittleEndian.Uint32(e)))
			default:
				v = float64(int64(binary.LittleEndian.Uint64(e)))
			}
		case 'u':
			switch size {
			case 1:
				v = float64(e[0])
			case 2:
				v = float64(binary.LittleEndian.Uint16(e))
			case 4:
				v = float64(binary.LittleEndian.Uint32(e))
			default:
				v = float64(binary.LittleEndian.Uint64(e))
			}
		default:
			switch size {
			case 2:
				v = halfToFloat64(binary.LittleEndian.Uint16(e))
			case 4:
				v = float64(math.Float32frombits(binary.LittleEndian.Uint32(e)))
			default:
				v = math.Float64frombits(binary.LittleEndian.Uint64(e))
			}
			if math.IsInf(v, 0) {
				// JSON cannot carry one either: out of any range.
				return fmt.Errorf("binary data: element %d: %v is out of range for %s", i, v, name)
			}
		}
		num(i, v)
	}
	return nil
}

// halfToFloat64 widens an IEEE 754 half-precision number, exactly.
func halfToFloat64(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0: // zero or subnormal
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	}
	return sign * math.Ldexp(1024+frac, exp-25)
}

// binaryInputs gives each tensor with a binary_data_size parameter its
// bytes of bin, in the order of the inputs; binary says whether the
// request had binary data at all (the header Inference-Header-Content-Length).
func binaryInputs(tensors []tensor, bin []byte, binary bool) error {
	off := 0
	for i := range tensors {
		t := &tensors[i]
		field := fmt.Sprintf("input %q: parameters", t.name)
		size, ok, err := paramSize(t.params, field, "binary_data_size")
		switch {
		case err != nil:
			return err
		case !ok:
			continue
		case !binary:
			return fmt.Errorf("%s.binary_data_size: binary tensor data needs the header %s, the length of the JSON that opens the body", field, headerInferenceLength)
		case t.data != nil:
			return fmt.Errorf("input %q: both data and binary_data_size: give one", t.name)
		case size > int64(len(bin)-off):
			return fmt.Errorf("%s.binary_data_size: %d bytes, but %d of binary data are left after the JSON", field, size, len(bin)-off)
		}
		t.src = rawSource(bin[off : off+int(size)])
		off += int(size)
	}
	if off != len(bin) {
		return fmt.Errorf("binary data: %d bytes after the JSON, and the inputs' binary_data_size add up to %d", len(bin), off)
	}
	return nil
}

// paramFlag reads a boolean parameter of a parameters object: set when it
// is there and not null. 0 and 1 are taken for false and true.
func paramFlag(raw []byte, field, key string) (v, set bool, err error) {
	text, ok, err := paramValue(raw, key)
	if err != nil || !ok || text == "null" {
		return false, false, err
	}
	switch text {
	case "true", "1":
		return true, true, nil
	case "false", "0":
		return false, true, nil
	}
	return false, false, fmt.Errorf("%s.%s: %s is not true or false", field, key, text)
}

// paramSize reads a size parameter (a whole number from 0) of a parameters
// object: ok when it is there and not null.
func paramSize(raw []byte, field, key string) (int64, bool, error) {
	text, ok, err := paramValue(raw, key)
	if err != nil || !ok || text == "null" {
		return 0, false, err
	}
	n, perr := strconv.ParseInt(text, 10, 64)
	if perr != nil || n < 0 {
		return 0, false, fmt.Errorf("%s.%s: %s is not a size in bytes (a whole number from 0)", field, key, text)
	}
	return n, true, nil
}

// paramValue returns the JSON text of a parameter, if it is there.
func paramValue(raw []byte, key string) (string, bool, error) {
	if len(raw) == 0 {
		return "", false, nil
	}
	var text string
	found := false
	s := &scanner{b: raw}
	err := s.object(func(k []byte) error {
		v, err := s.skip(0)
		if err == nil && string(k) == key {
			text, found = string(v), true
		}
		return err
	})
	return text, found, err
}

// appendRawFloats appends float64s, little-endian.
func appendRawFloats(dst []byte, vs []float64) []byte {
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst
}

// appendRawStrings appends BYTES elements: a 4-byte little-endian length
// and the bytes of each.
func appendRawStrings(dst []byte, vs []string) []byte {
	for _, v := range vs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return dst
}

// rawStringsSize is the length of appendRawStrings' bytes.
func rawStringsSize(vs []string) int {
	n := 4 * len(vs)
	for _, v := range vs {
		n += len(v)
	}
	return n
}

// errNoRaw is returned for FP16 contents over gRPC, which only raw bytes
// can carry.
var errNoRaw = errors.New("FP16 has no typed contents in the protocol: send it in raw_input_contents")
