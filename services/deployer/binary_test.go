package deployer_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/services/deployer/oipgrpc"
)

// postBinary sends a request of the binary tensor data extension: the JSON
// header, then data; with jsonLen < 0 no Inference-Header-Content-Length.
// It returns the status, the response's JSON and its binary data.
func (h *harness) postBinary(path string, header map[string]any, data []byte, jsonLen int) (int, map[string]any, []byte) {
	h.t.Helper()
	js, err := json.Marshal(header)
	if err != nil {
		h.t.Fatal(err)
	}
	if jsonLen == 0 {
		jsonLen = len(js)
	}
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, bytes.NewReader(append(js, data...)))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if jsonLen >= 0 {
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(jsonLen))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	n := len(raw)
	if v := resp.Header.Get("Inference-Header-Content-Length"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n > len(raw) {
			h.t.Fatalf("response Inference-Header-Content-Length %q of a %d-byte body", v, len(raw))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
			h.t.Errorf("binary response of Content-Type %q", ct)
		}
	}
	var out map[string]any
	if err := json.Unmarshal(raw[:n], &out); err != nil {
		h.t.Fatalf("%s: %d, JSON header not JSON: %q", path, resp.StatusCode, raw[:n])
	}
	return resp.StatusCode, out, raw[n:]
}

// binaryAnswer decodes a response of the binary extension: each output
// with binary_data_size takes its bytes of data, in order.
func binaryAnswer(t *testing.T, body map[string]any, data []byte) answer {
	t.Helper()
	outs, _ := body["outputs"].([]any)
	for _, o := range outs {
		m := o.(map[string]any)
		p, _ := m["parameters"].(map[string]any)
		size, ok := p["binary_data_size"].(float64)
		if !ok {
			continue
		}
		if _, has := m["data"]; has {
			t.Errorf("output %s: data and binary_data_size", m["name"])
		}
		if int(size) > len(data) {
			t.Fatalf("output %s: binary_data_size %v, %d bytes left", m["name"], size, len(data))
		}
		chunk := data[:int(size)]
		data = data[int(size):]
		// As JSON would have it, for restAnswer.
		var vs []any
		if m["datatype"] == "FP64" {
			for _, f := range decodeRawFP64(t, chunk) {
				vs = append(vs, f)
			}
		} else {
			for _, s := range decodeRawBytes(t, chunk) {
				vs = append(vs, s)
			}
		}
		m["data"] = vs
	}
	if len(data) > 0 {
		t.Errorf("%d bytes of binary data left over", len(data))
	}
	return restAnswer(t, body)
}

// TestBinaryTensorData: Triton's binary tensor data extension, both ways.
// The same rows in JSON, in binary, and over gRPC (typed and raw) answer
// the same outputs bit for bit, binary or JSON; malformed binary requests
// get a 400 naming what is wrong.
func TestBinaryTensorData(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	xs, cs := grpcRows(40)

	// JSON in, JSON out: the reference.
	rows := make([]row, len(xs))
	for i := range xs {
		rows[i] = row{xs[i], cs[i]}
	}
	jsonBody := inferBody(rows)
	jsonBody["inputs"].([]map[string]any)[0]["data"].([]any)[len(xs)/2] = nil
	code, jsonRes := h.do("POST", "/v2/models/oip/infer", jsonBody)
	if code != 200 {
		t.Fatalf("JSON: %d %v", code, jsonRes)
	}
	want := restAnswer(t, jsonRes)

	n := len(xs)
	binInputs := []any{
		map[string]any{"name": "x", "datatype": "FP64", "shape": []int{n}, "parameters": map[string]any{"binary_data_size": 8 * n}},
		map[string]any{"name": "c", "datatype": "BYTES", "shape": []int{n}, "parameters": map[string]any{"binary_data_size": len(rawBytes(cs))}},
	}
	binData := append(rawFP64(xs), rawBytes(cs)...)
	out := func(name string, binary bool) map[string]any {
		return map[string]any{"name": name, "parameters": map[string]any{"binary_data": binary}}
	}
	for _, tc := range []struct {
		name   string
		header map[string]any
		data   []byte
		// binaryOut are the outputs expected in binary.
		binaryOut string
	}{
		{"binary in, JSON out", map[string]any{"inputs": binInputs}, binData, ""},
		{"binary in, binary out", map[string]any{"inputs": binInputs, "parameters": map[string]any{"binary_data_output": true}}, binData,
			"predict probabilities prediction_id"},
		{"JSON in, binary out", map[string]any{"inputs": jsonBody["inputs"], "parameters": map[string]any{"binary_data_output": true}}, nil,
			"predict probabilities prediction_id"},
		{"one output binary", map[string]any{"inputs": binInputs, "outputs": []any{out("predict", false), out("probabilities", true), out("prediction_id", false)}}, binData,
			"probabilities"},
		{"binary_data_output, one output JSON", map[string]any{"inputs": binInputs, "parameters": map[string]any{"binary_data_output": true},
			"outputs": []any{map[string]any{"name": "predict"}, map[string]any{"name": "probabilities"}, out("prediction_id", false)}}, binData,
			"predict probabilities"},
		{"one input binary", map[string]any{"inputs": []any{binInputs[0], jsonBody["inputs"].([]map[string]any)[1]}}, rawFP64(xs), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, data := h.postBinary("/v2/models/oip/infer", tc.header, tc.data, 0)
			if code != 200 {
				t.Fatalf("%d %v", code, body)
			}
			var binaryOut []string
			for _, o := range body["outputs"].([]any) {
				m := o.(map[string]any)
				if p, _ := m["parameters"].(map[string]any); p["binary_data_size"] != nil {
					binaryOut = append(binaryOut, m["name"].(string))
				}
			}
			if got := strings.Join(binaryOut, " "); got != tc.binaryOut {
				t.Errorf("binary outputs %q, want %q", got, tc.binaryOut)
			}
			sameAnswer(t, "binary extension against JSON", binaryAnswer(t, body, data), want)
		})
	}

	// gRPC answers the same, raw and typed.
	c := h.grpcClient()
	for _, req := range []*oipgrpc.ModelInferRequest{typedInfer("oip", xs, cs), rawInfer("oip", xs, cs)} {
		res, err := c.ModelInfer(callCtx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, fmt.Sprintf("gRPC (raw %v) against JSON", len(req.RawInputContents) > 0), grpcAnswer(t, res), want)
	}

	// A regressor's FP64 predict, and every numeric datatype in binary
	// against the same values in JSON.
	t.Run("regressor", func(t *testing.T) {
		_, jr := h.do("POST", "/v2/models/reg/infer", jsonBody)
		code, body, data := h.postBinary("/v2/models/reg/infer", map[string]any{"inputs": binInputs, "parameters": map[string]any{"binary_data_output": true}}, binData, 0)
		if code != 200 {
			t.Fatalf("%d %v", code, body)
		}
		sameAnswer(t, "regressor", binaryAnswer(t, body, data), restAnswer(t, jr))
	})
	ints := []float64{-3, -1, 0, 1, 2}
	small := []string{"a", "b", "a", "b", "a"}
	for _, dt := range []struct {
		name string
		raw  func(v float64) []byte
	}{
		{"INT8", func(v float64) []byte { return []byte{byte(int8(v))} }},
		{"INT16", func(v float64) []byte { return binary.LittleEndian.AppendUint16(nil, uint16(int16(v))) }},
		{"INT32", func(v float64) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(int32(v))) }},
		{"INT64", func(v float64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(int64(v))) }},
		{"FP32", func(v float64) []byte { return binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(v))) }},
		{"FP16", func(v float64) []byte { return binary.LittleEndian.AppendUint16(nil, half(v)) }},
	} {
		t.Run(dt.name, func(t *testing.T) {
			var raw []byte
			data := make([]any, len(ints))
			for i, v := range ints {
				raw = append(raw, dt.raw(v)...)
				data[i] = v
			}
			x := map[string]any{"name": "x", "datatype": dt.name, "shape": []int{len(ints)}}
			c := map[string]any{"name": "c", "datatype": "BYTES", "shape": []int{len(ints)}, "data": small}
			x["data"] = data
			_, jr := h.do("POST", "/v2/models/oip/infer", map[string]any{"inputs": []any{x, c}})
			delete(x, "data")
			x["parameters"] = map[string]any{"binary_data_size": len(raw)}
			code, body, rest := h.postBinary("/v2/models/oip/infer", map[string]any{"inputs": []any{x, c}}, raw, 0)
			if code != 200 {
				t.Fatalf("%d %v", code, body)
			}
			sameAnswer(t, dt.name, binaryAnswer(t, body, rest), restAnswer(t, jr))
		})
	}

	// Malformed binary requests.
	x8 := map[string]any{"name": "x", "datatype": "FP64", "shape": []int{1}, "parameters": map[string]any{"binary_data_size": 8}}
	c1 := map[string]any{"name": "c", "datatype": "BYTES", "shape": []int{1}, "data": []any{"a"}}
	one := rawFP64([]float64{0.5})
	for _, tc := range []struct {
		name    string
		header  map[string]any
		data    []byte
		jsonLen int
		want    string
	}{
		{"header length past the body", map[string]any{"inputs": []any{x8, c1}}, one, 10_000,
			"header Inference-Header-Content-Length: \"10000\" is not the length of the JSON"},
		{"no header", map[string]any{"inputs": []any{x8, c1}}, one, -1, "data after the JSON object"},
		{"too little data", map[string]any{"inputs": []any{x8, c1}}, one[:5], 0, "binary_data_size: 8 bytes, but 5 of binary data are left"},
		{"data left over", map[string]any{"inputs": []any{x8, c1}}, append(one, 1, 2), 0, "binary data: 10 bytes after the JSON, and the inputs' binary_data_size add up to 8"},
		{"size of another shape", map[string]any{"inputs": []any{
			map[string]any{"name": "x", "datatype": "FP64", "shape": []int{2}, "parameters": map[string]any{"binary_data_size": 8}}, c1}}, one, 0,
			"binary data of 8 bytes: 2 values of FP64 take 16 bytes"},
		{"data and binary_data_size", map[string]any{"inputs": []any{
			map[string]any{"name": "x", "datatype": "FP64", "shape": []int{1}, "data": []any{0.5}, "parameters": map[string]any{"binary_data_size": 8}}, c1}}, one, 0,
			"both data and binary_data_size"},
		{"BOOL not 0 or 1", map[string]any{"inputs": []any{
			map[string]any{"name": "x", "datatype": "BOOL", "shape": []int{1}, "parameters": map[string]any{"binary_data_size": 1}}, c1}}, []byte{2}, 0,
			"byte 2 is not a BOOL (0 or 1)"},
		{"infinity", map[string]any{"inputs": []any{x8, c1}}, rawFP64([]float64{math.Inf(1)}), 0, "+Inf is out of range for FP64"},
		{"BYTES length overrun", map[string]any{"inputs": []any{x8,
			map[string]any{"name": "c", "datatype": "BYTES", "shape": []int{1}, "parameters": map[string]any{"binary_data_size": 5}}}},
			append(one, 9, 0, 0, 0, 'a'), 0, "element 0: length 9, 1 bytes left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := h.postBinary("/v2/models/oip/infer", tc.header, tc.data, tc.jsonLen)
			if msg, _ := body["error"].(string); code != 400 || !strings.Contains(msg, tc.want) {
				t.Errorf("%d %q, want 400 %q", code, msg, tc.want)
			}
		})
	}
}

// half is v in IEEE half precision (v exactly representable: small
// integers).
func half(v float64) uint16 {
	if v == 0 {
		return 0
	}
	var sign uint16
	if v < 0 {
		sign, v = 0x8000, -v
	}
	frac, exp := math.Frexp(v) // v = frac * 2^exp, frac in [0.5, 1)
	return sign | uint16(exp+14)<<10 | uint16((frac*2-1)*1024)
}
