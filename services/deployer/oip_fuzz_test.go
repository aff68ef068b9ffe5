package deployer

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeInfer checks the hand-written inference request decoder: it
// never panics, and whatever it accepts is valid JSON (it must not be more
// lenient than the grammar). The seeds run in `make test`; fuzz with
// `go test -fuzz FuzzDecodeInfer ./services/deployer/`.
func FuzzDecodeInfer(f *testing.F) {
	seeds := []string{
		`{"id": "a", "inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.5, -2e3]}]}`,
		`{"inputs": [{"name": "m", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}`,
		`{"inputs": [{"name": "c", "datatype": "BYTES", "shape": [1], "data": ["a\u00e9\n"]}, {"name": "x", "datatype": "INT8", "shape": [1, 1], "data": [[-128]]}]}`,
		`{"inputs": [{"name": "b", "datatype": "BOOL", "shape": [2], "data": [true, null]}], "outputs": [{"name": "predict", "parameters": {"binary_data": false}}], "parameters": {"k": [1, {"x": null}]}}`,
		`{"inputs": [{"name": "u", "datatype": "UINT64", "shape": [1], "data": [18446744073709551615]}]}`,
		`{"inputs": []} {}`, `[1]`, `{"id": "abc`, `{"inputs": [{"name": "x", "shape": [-1]}]}`, "",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	names := func() []string { return []string{"x", "c"} }
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeInfer(body, names)
		if err == nil && !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q: %+v", body, req)
		}
	})
}

// FuzzDecodeInferBinary checks the decoder of the binary tensor data
// extension: whatever the JSON header and the binary data, it never
// panics, and what it accepts has a JSON header and takes every byte.
func FuzzDecodeInferBinary(f *testing.F) {
	f.Add([]byte(`{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}]}`),
		[]byte{0, 0, 0, 0, 0, 0, 0xe0, 0x3f})
	f.Add([]byte(`{"inputs": [{"name": "c", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 10}}], "parameters": {"binary_data_output": true}}`),
		[]byte{1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b'})
	f.Add([]byte(`{"inputs": [{"name": "m", "datatype": "FP16", "shape": [1, 2], "parameters": {"binary_data_size": 4}}]}`), []byte{0, 0x3c, 0, 0xbc})
	f.Add([]byte(`{"inputs": [{"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": 2}}]}`), []byte{1, 2})
	names := func() []string { return []string{"x", "c"} }
	f.Fuzz(func(t *testing.T, header, bin []byte) {
		req, err := decodeInferParts(header, bin, true, names)
		if err == nil && !json.Valid(header) {
			t.Fatalf("accepted an invalid JSON header %q: %+v", header, req)
		}
	})
}
