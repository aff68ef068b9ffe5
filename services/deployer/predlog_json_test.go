package deployer

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// asProto is the message records encode to: the oracle of
// TestPredictionLoggedJSON.
func asProto(recs []*serving.PredictionRecord) *gyrev1.PredictionLogged {
	h := recs[0]
	m := &gyrev1.PredictionLogged{Pipeline: h.Pipeline, ModelVersion: h.ModelVersion, DeploymentId: h.DeploymentID,
		Variant: string(h.Variant), Features: h.Features, SampleRate: h.SampleRate, LatencyMs: h.LatencyMs}
	for _, r := range recs {
		m.LatencyMs = max(m.LatencyMs, r.LatencyMs)
		w, c := len(r.Features), len(r.Classes)
		for i := range r.IDs {
			p := &gyrev1.Prediction{PredictionId: r.IDs[i], Output: r.Outputs[i], Values: r.Values[i*w : (i+1)*w]}
			if r.Text != nil && len(r.Text[i]) > 0 {
				p.TextInputs = r.Text[i]
			}
			if c > 0 {
				p.Probabilities = map[string]float64{}
				for k, class := range r.Classes {
					p.Probabilities[class] = r.Proba[i*c+k]
				}
			}
			m.Rows = append(m.Rows, p)
		}
	}
	return m
}

func protojsonCompact(t *testing.T, m proto.Message) []byte {
	t.Helper()
	raw, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Awkward values for the encoder: every escape, multi-byte UTF-8, and the
// floats where protojson's format changes.
var (
	awkwardStrings = []string{"", "a", "champion", `q"uote`, `back\slash`, "tab\there", "nl\n", "\x00\x01\x1f\x7f",
		"\b\f\r", "<html>&amp;", "é中文🙂", "\u2028\u2029", "10", "9", "B", "a b"}
	awkwardFloats = []float64{0, math.Copysign(0, -1), 1, -1, 0.5, 1.0 / 3, 1e-6, 9.99e-7, 1e-7, 1e-300, 5e-324,
		1e20, 1e21, 1.5e300, math.MaxFloat64, -2.5e-10, 123456789.125, math.NaN(), math.Inf(1), math.Inf(-1)}
)

func randomRecord(r *rand.Rand, h *serving.PredictionRecord) *serving.PredictionRecord {
	str := func() string {
		if r.IntN(3) == 0 {
			return awkwardStrings[r.IntN(len(awkwardStrings))]
		}
		var b strings.Builder
		for range r.IntN(12) {
			b.WriteRune(rune(r.IntN(0x2100)))
		}
		return b.String()
	}
	num := func() float64 {
		if r.IntN(3) == 0 {
			return awkwardFloats[r.IntN(len(awkwardFloats))]
		}
		return r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
	}
	rec := *h
	rec.LatencyMs = num()
	rows := 1 + r.IntN(4)
	text := r.IntN(2) == 0
	if text {
		rec.Text = make([]map[string]string, rows)
	}
	for i := range rows {
		rec.IDs = append(rec.IDs, str())
		rec.Outputs = append(rec.Outputs, str())
		for range rec.Features {
			rec.Values = append(rec.Values, num())
		}
		for range rec.Classes {
			rec.Proba = append(rec.Proba, num())
		}
		if text && r.IntN(3) > 0 {
			rec.Text[i] = map[string]string{}
			for range 1 + r.IntN(3) {
				rec.Text[i][str()] = str()
			}
		}
	}
	return &rec
}

// TestPredictionLoggedJSON: the hand-written encoder writes what
// protojson (compacted) writes, byte for byte, for random and awkward
// events: escapes, non-ASCII, NaN, infinities, -0, exponents, empty and
// unset fields, map key order, merged records.
func TestPredictionLoggedJSON(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 11))
	headers := []serving.PredictionRecord{
		{Pipeline: "elec2", ModelVersion: 3, DeploymentID: "d-1", Variant: "champion", SampleRate: 1,
			Features: []string{"nswprice", "vicdemand"}, Classes: []string{"UP", "DOWN"}},
		{Pipeline: "p", ModelVersion: -9_007_199_254_740_993, Variant: "shadow", SampleRate: 0.001,
			Features: []string{"a\"b", "é"}, Classes: []string{"b", "a", "10", "9", "B"}},
		{Pipeline: "reg", ModelVersion: math.MaxInt64, SampleRate: math.Copysign(0, -1), Features: []string{"x"}},
		{Pipeline: "text-only"},
	}
	for n := range 2000 {
		h := headers[n%len(headers)]
		var recs []*serving.PredictionRecord
		for range 1 + r.IntN(3) {
			recs = append(recs, randomRecord(r, &h))
		}
		got := appendPredictionLogged(nil, recs)
		want := protojsonCompact(t, asProto(recs))
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d:\n got %s\nwant %s", n, got, want)
		}
	}
}

// TestPredictionLoggedJSONInvalidUTF8: invalid UTF-8 in a client's string
// becomes U+FFFD, and the event still decodes, where protojson would fail
// the whole event.
func TestPredictionLoggedJSONInvalidUTF8(t *testing.T) {
	t.Parallel()
	rec := &serving.PredictionRecord{Pipeline: "p", ModelVersion: 1, Variant: "champion", SampleRate: 1,
		IDs: []string{"id-\xff\xfe-x"}, Outputs: []string{"ok"}, Text: []map[string]string{{"c\xc3": "v\x80"}}}
	data := appendPredictionLogged(nil, []*serving.PredictionRecord{rec})
	if !utf8.Valid(data) {
		t.Fatalf("invalid UTF-8 out: %q", data)
	}
	var m gyrev1.PredictionLogged
	if err := protojson.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	if id := m.Rows[0].PredictionId; id != "id-\uFFFD\uFFFD-x" {
		t.Errorf("prediction id %q", id)
	}
	if m.Rows[0].TextInputs["c\uFFFD"] != "v\uFFFD" {
		t.Errorf("text inputs %q", m.Rows[0].TextInputs)
	}
}

// BenchmarkPredictionLoggedJSON compares the encoder with building the
// message and encoding it with protojson, for an event of 100 rows of 8
// features and 2 classes.
func BenchmarkPredictionLoggedJSON(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	h := serving.PredictionRecord{Pipeline: "bench", ModelVersion: 1, DeploymentID: "d", Variant: "champion", SampleRate: 1,
		Features: []string{"f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"}, Classes: []string{"0", "1"}}
	var recs []*serving.PredictionRecord
	for range 100 {
		rec := h
		rec.IDs = []string{"0196a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}
		rec.Outputs = []string{"1"}
		for range 8 {
			rec.Values = append(rec.Values, math.Round(r.NormFloat64()*1e4)/1e4)
		}
		p := r.Float64()
		rec.Proba = []float64{1 - p, p}
		recs = append(recs, &rec)
	}
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			_ = appendPredictionLogged(nil, recs)
		}
	})
	b.Run("protojson", func(b *testing.B) {
		for b.Loop() {
			raw, _ := protojson.Marshal(asProto(recs))
			var out bytes.Buffer
			_ = json.Compact(&out, raw)
		}
	})
}
