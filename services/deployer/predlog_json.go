package deployer

import (
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// appendPredictionLogged appends to b the payload of one prediction.logged
// event made of recs (mergeable records, at least one): the compact
// protojson encoding of the gyrev1.PredictionLogged they form, byte for
// byte (TestPredictionLoggedJSON checks it against protojson). The rows
// are recs' in order; the latency is the slowest request's.
//
// It is written by hand because the prediction log is the deployer's
// hottest path after scoring: building a message per row and encoding it
// with protojson cost more CPU than the scoring did (at sampleRate 1).
// Strings that are not valid UTF-8 (a client's prediction id, a text input)
// have their invalid bytes replaced by U+FFFD, where protojson would fail
// the whole event.
func appendPredictionLogged(b []byte, recs []*serving.PredictionRecord) []byte {
	h := recs[0]
	rows := 0
	latency := h.LatencyMs
	for _, r := range recs {
		rows += r.Rows()
		latency = max(latency, r.LatencyMs)
	}
	if b == nil {
		b = make([]byte, 0, 256+rows*(64+24*len(h.Features)+32*len(h.Classes)))
	}
	w := jsonObject{b: append(b, '{')}
	if h.Pipeline != "" {
		w.key("pipeline")
		w.b = appendJSONString(w.b, h.Pipeline)
	}
	if h.ModelVersion != 0 {
		// int64 is a JSON string in protojson.
		w.key("modelVersion")
		w.b = append(w.b, '"')
		w.b = strconv.AppendInt(w.b, h.ModelVersion, 10)
		w.b = append(w.b, '"')
	}
	if h.DeploymentID != "" {
		w.key("deploymentId")
		w.b = appendJSONString(w.b, h.DeploymentID)
	}
	if h.Variant != "" {
		w.key("variant")
		w.b = appendJSONString(w.b, string(h.Variant))
	}
	if len(h.Features) > 0 {
		w.key("features")
		w.b = append(w.b, '[')
		for i, f := range h.Features {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = appendJSONString(w.b, f)
		}
		w.b = append(w.b, ']')
	}
	if rows > 0 {
		w.key("rows")
		w.b = append(w.b, '[')
		// Map entries go in key order, as protojson writes them.
		byLabel := make([]int, len(h.Classes))
		for k := range byLabel {
			byLabel[k] = k
		}
		slices.SortFunc(byLabel, func(i, j int) int {
			switch a, b := h.Classes[i], h.Classes[j]; {
			case a < b:
				return -1
			case a > b:
				return 1
			}
			return 0
		})
		var textKeys []string
		first := true
		for _, r := range recs {
			width, classes := len(r.Features), len(r.Classes)
			for i := range r.IDs {
				if !first {
					w.b = append(w.b, ',')
				}
				first = false
				row := jsonObject{b: append(w.b, '{')}
				if r.IDs[i] != "" {
					row.key("predictionId")
					row.b = appendJSONString(row.b, r.IDs[i])
				}
				if width > 0 {
					row.key("values")
					row.b = append(row.b, '[')
					for k, v := range r.Values[i*width : (i+1)*width] {
						if k > 0 {
							row.b = append(row.b, ',')
						}
						row.b = appendJSONFloat(row.b, v)
					}
					row.b = append(row.b, ']')
				}
				if r.Text != nil && len(r.Text[i]) > 0 {
					row.key("textInputs")
					textKeys = textKeys[:0]
					for k := range r.Text[i] {
						textKeys = append(textKeys, k)
					}
					slices.Sort(textKeys)
					row.b = append(row.b, '{')
					for n, k := range textKeys {
						if n > 0 {
							row.b = append(row.b, ',')
						}
						row.b = appendJSONString(row.b, k)
						row.b = append(row.b, ':')
						row.b = appendJSONString(row.b, r.Text[i][k])
					}
					row.b = append(row.b, '}')
				}
				if r.Outputs[i] != "" {
					row.key("output")
					row.b = appendJSONString(row.b, r.Outputs[i])
				}
				if classes > 0 {
					row.key("probabilities")
					row.b = append(row.b, '{')
					p := r.Proba[i*classes : (i+1)*classes]
					for n, k := range byLabel {
						if n > 0 {
							row.b = append(row.b, ',')
						}
						row.b = appendJSONString(row.b, h.Classes[k])
						row.b = append(row.b, ':')
						row.b = appendJSONFloat(row.b, p[k])
					}
					row.b = append(row.b, '}')
				}
				w.b = append(row.b, '}')
			}
		}
		w.b = append(w.b, ']')
	}
	// proto3 leaves a double out when its bits are zero: -0 is written.
	if math.Float64bits(h.SampleRate) != 0 {
		w.key("sampleRate")
		w.b = appendJSONFloat(w.b, h.SampleRate)
	}
	if math.Float64bits(latency) != 0 {
		w.key("latencyMs")
		w.b = appendJSONFloat(w.b, latency)
	}
	return append(w.b, '}')
}

// jsonObject writes the members of a JSON object after its '{'.
type jsonObject struct {
	b    []byte
	more bool
}

// key writes a member's name (plain ASCII), after a comma unless it is the
// first.
func (o *jsonObject) key(name string) {
	if o.more {
		o.b = append(o.b, ',')
	}
	o.more = true
	o.b = append(o.b, '"')
	o.b = append(o.b, name...)
	o.b = append(o.b, '"', ':')
}

// appendJSONFloat writes a double as protojson does: NaN and the
// infinities as strings, the shortest decimal that reads back exactly,
// with an exponent below 1e-6 and from 1e21 (encoding/json's rule), and no
// leading zero in a negative exponent's two digits.
func appendJSONFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(v, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' {
		// 1e-07 → 1e-7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString writes s as a JSON string, escaped as protojson
// escapes: the quote, the backslash and control characters only.
// Invalid UTF-8 becomes U+FFFD. The prediction log and the OIP responses
// both write their strings with it.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, s[start:i]...)
				b = append(b, "\uFFFD"...)
				i += n
				start = i
				continue
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
