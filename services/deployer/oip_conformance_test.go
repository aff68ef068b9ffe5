package deployer_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/services/deployer"
)

// maxBody is the request body limit of the conformance deployer.
const maxBody = 64 << 10

// conformance starts a deployer (body limit maxBody) serving "oip", a
// classifier of x (numeric) and c (text), and "reg", a regressor of the
// same inputs batching at most 8 rows, over REST and gRPC.
func conformance(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.env.ApplyPipeline(spec("oip", "{strategy: immediate}", false))
	reg := strings.NewReplacer("{name: y, type: category}", "{name: y, type: float}",
		"{algorithm: logreg}", "{algorithm: gbdt, params: {trees: 10}}").
		Replace(spec("reg", "{strategy: immediate, batching: {maxBatchSize: 8, maxQueueDelayMs: 0.5}}", false))
	p, err := pipeline.Parse([]byte(reg))
	if err != nil {
		t.Fatal(err)
	}
	h.env.ApplyPipeline(reg)
	h.run(func(c *deployer.Config) {
		c.MaxRequestBytes = maxBody
		// The same deployer answers gRPC (grpc_test.go).
		c.GRPCAddr = "127.0.0.1:0"
	})
	h.promote("oip", 1, h.storeBundle("oip", "r1", false, false), 0.9)
	var csv strings.Builder
	csv.WriteString("x,c,y\n")
	for i := range 200 {
		x := float64(i%40)/20 - 1
		fmt.Fprintf(&csv, "%.3f,%s,%.3f\n", x, []string{"a", "b"}[i%2], 2*x+1)
	}
	h.env.Promote(looptest.Promotion{Pipeline: "reg", Version: 3, Artifact: h.env.StoreBundle(p, "r3", []byte(csv.String()))})
	h.waitServing("oip", "1")
	h.waitServing("reg", "3")
	return h
}

func tensor(name, datatype string, shape []int, data any) map[string]any {
	return map[string]any{"name": name, "datatype": datatype, "shape": shape, "data": data}
}

// withC is an inference request of the x tensor given and c = "a" on
// every row (one row when x's shape says none).
func withC(x map[string]any) map[string]any {
	rows := 1
	if shape, ok := x["shape"].([]int); ok && len(shape) > 0 && shape[0] > 0 {
		rows = shape[0]
	}
	cs := make([]any, rows)
	for i := range cs {
		cs[i] = "a"
	}
	return map[string]any{"inputs": []any{x, tensor("c", "BYTES", []int{rows}, cs)}}
}

// TestOIPDatatypes: every datatype of the protocol (but BF16, which JSON
// cannot carry) feeds a numeric feature, within its range; values out of
// range, of the wrong kind or in an unknown datatype are 400s naming the
// value and the datatype.
func TestOIPDatatypes(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	for _, tc := range []struct {
		name  string
		x     map[string]any
		code  int
		want  string // in the body
		label string // predict of row 1 (x's sign), on 200
	}{
		{name: "BOOL", x: tensor("x", "BOOL", []int{2}, []any{true, false}), code: 200, label: "1"},
		{name: "INT8", x: tensor("x", "INT8", []int{2}, []any{-128, 127}), code: 200, label: "0"},
		{name: "INT16", x: tensor("x", "INT16", []int{2}, []any{-32768, 32767}), code: 200, label: "0"},
		{name: "INT32", x: tensor("x", "INT32", []int{2}, []any{-3, 4}), code: 200, label: "0"},
		{name: "INT64", x: tensor("x", "INT64", []int{2}, []any{json.Number("-9223372036854775808"), 5}), code: 200, label: "0"},
		{name: "UINT8", x: tensor("x", "UINT8", []int{2}, []any{255, 0}), code: 200, label: "1"},
		{name: "UINT16", x: tensor("x", "UINT16", []int{1}, []any{65535}), code: 200, label: "1"},
		{name: "UINT32", x: tensor("x", "UINT32", []int{1}, []any{json.Number("4294967295")}), code: 200, label: "1"},
		{name: "UINT64", x: tensor("x", "UINT64", []int{1}, []any{json.Number("18446744073709551615")}), code: 200, label: "1"},
		{name: "FP16", x: tensor("x", "FP16", []int{2}, []any{0.5, -65504}), code: 200, label: "1"},
		{name: "FP32", x: tensor("x", "FP32", []int{2}, []any{-0.75, 3.4e38}), code: 200, label: "0"},
		{name: "FP64", x: tensor("x", "FP64", []int{2}, []any{0.9, -1e308}), code: 200, label: "1"},
		{name: "FP64 exponent", x: tensor("x", "FP64", []int{1}, []any{json.Number("-2.5E-1")}), code: 200, label: "0"},
		{name: "BYTES", x: tensor("x", "BYTES", []int{2}, []any{" 0.7 ", "-0.7"}), code: 200, label: "1"},
		{name: "BYTES true", x: tensor("x", "BYTES", []int{1}, []any{"true"}), code: 200, label: "1"},
		{name: "null is missing", x: tensor("x", "FP64", []int{2}, []any{nil, 0.5}), code: 200},

		{name: "INT8 over", x: tensor("x", "INT8", []int{1}, []any{128}), code: 400, want: `data[0]: 128 is out of range for INT8 (-128 to 127)`},
		{name: "INT8 under", x: tensor("x", "INT8", []int{1}, []any{-129}), code: 400, want: `-129 is out of range for INT8`},
		{name: "INT16 over", x: tensor("x", "INT16", []int{1}, []any{32768}), code: 400, want: `out of range for INT16 (-32768 to 32767)`},
		{name: "INT32 over", x: tensor("x", "INT32", []int{1}, []any{json.Number("2147483648")}), code: 400, want: `out of range for INT32`},
		{name: "INT64 over", x: tensor("x", "INT64", []int{1}, []any{json.Number("9223372036854775808")}), code: 400, want: `out of range for INT64`},
		{name: "UINT8 over", x: tensor("x", "UINT8", []int{1}, []any{256}), code: 400, want: `256 is out of range for UINT8 (0 to 255)`},
		{name: "UINT8 negative", x: tensor("x", "UINT8", []int{1}, []any{-1}), code: 400, want: `-1 is out of range for UINT8 (0 to 255)`},
		{name: "UINT16 over", x: tensor("x", "UINT16", []int{1}, []any{65536}), code: 400, want: `out of range for UINT16 (0 to 65535)`},
		{name: "UINT32 over", x: tensor("x", "UINT32", []int{1}, []any{json.Number("4294967296")}), code: 400, want: `out of range for UINT32`},
		{name: "UINT64 over", x: tensor("x", "UINT64", []int{1}, []any{json.Number("18446744073709551616")}), code: 400, want: `out of range for UINT64`},
		{name: "fraction in INT32", x: tensor("x", "INT32", []int{1}, []any{1.5}), code: 400, want: `1.5 is not an integer of datatype INT32`},
		{name: "exponent in INT64", x: tensor("x", "INT64", []int{1}, []any{json.Number("1e3")}), code: 400, want: `1e3 is not an integer of datatype INT64`},
		{name: "fraction in UINT8", x: tensor("x", "UINT8", []int{1}, []any{0.5}), code: 400, want: `0.5 is not an integer of datatype UINT8`},
		{name: "FP16 over", x: tensor("x", "FP16", []int{1}, []any{65505}), code: 400, want: `65505 is out of range for FP16`},
		{name: "FP32 over", x: tensor("x", "FP32", []int{1}, []any{3.5e38}), code: 400, want: `out of range for FP32`},
		{name: "FP64 over", x: tensor("x", "FP64", []int{1}, []any{json.Number("1e309")}), code: 400, want: `1e309 is out of range for FP64`},
		{name: "text in FP64", x: tensor("x", "FP64", []int{1}, []any{"1.5"}), code: 400, want: `data[0]: \"1.5\" is not a number (datatype FP64)`},
		{name: "bool in INT32", x: tensor("x", "INT32", []int{1}, []any{true}), code: 400, want: `true is not a number (datatype INT32)`},
		{name: "number in BOOL", x: tensor("x", "BOOL", []int{1}, []any{1}), code: 400, want: `1 is not true or false (datatype BOOL)`},
		{name: "number in BYTES", x: tensor("x", "BYTES", []int{1}, []any{7}), code: 400, want: `7 is not a string (datatype BYTES)`},
		{name: "text not a number for a numeric column", x: tensor("x", "BYTES", []int{1}, []any{"abc"}), code: 400, want: `column \"x\": \"abc\" is not a number`},
		{name: "BF16", x: tensor("x", "BF16", []int{1}, []any{1}), code: 400, want: `datatype \"BF16\" is not supported (want BOOL, INT8`},
		{name: "lower case", x: tensor("x", "fp64", []int{1}, []any{1}), code: 400, want: `datatype \"fp64\" is not supported`},
		{name: "no datatype", x: map[string]any{"name": "x", "shape": []int{1}, "data": []any{1}}, code: 400, want: `input \"x\": no datatype`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, body := h.do(http.MethodPost, "/v2/models/oip/infer", withC(tc.x))
			raw, _ := json.Marshal(body)
			if code != tc.code || !strings.Contains(string(raw), tc.want) {
				t.Fatalf("= %d %s, want %d with %s", code, raw, tc.code, tc.want)
			}
			if code == 200 && tc.label != "" {
				if got := output(body, "predict"); len(got) == 0 || got[0] != tc.label {
					t.Errorf("predict = %v, want %s first", got, tc.label)
				}
			}
		})
	}
}

// TestOIPRequests: the forms a request may take — per-feature tensors flat
// or nested, one [N, K] tensor, requested outputs and their parameters, ids
// — and the malformed ones, each a 4xx {"error"} saying what is wrong.
func TestOIPRequests(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	x := tensor("x", "FP64", []int{2}, []any{-0.5, 0.5})
	c := tensor("c", "BYTES", []int{2}, []any{"a", "b"})
	good := []any{x, c}
	for _, tc := range []struct {
		name, path string
		body       any
		code       int
		want       string // in the JSON body
		absent     string // not in the JSON body
		predict    string // the predict output, on 200
	}{
		// Tensor forms.
		{name: "flat", body: map[string]any{"inputs": good}, code: 200, predict: "[0 1]"},
		{name: "nested [N, 1]", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{2, 1}, [][]any{{-0.5}, {0.5}}), tensor("c", "BYTES", []int{2, 1}, [][]any{{"a"}, {"b"}})}},
			code: 200, predict: "[0 1]"},
		{name: "flat [N, 1]", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{2, 1}, []any{-0.5, 0.5}), c}}, code: 200, predict: "[0 1]"},
		{name: "one [N, K] tensor, nested", body: map[string]any{"inputs": []any{
			tensor("rows", "BYTES", []int{2, 2}, [][]any{{"-0.5", "a"}, {"0.5", "b"}})}}, code: 200, predict: "[0 1]"},
		{name: "one [N, K] tensor, flat", body: map[string]any{"inputs": []any{
			tensor("rows", "BYTES", []int{3, 2}, []any{"0.5", "a", "-0.5", "b", "0.9", "a"})}}, code: 200, predict: "[1 0 1]"},
		{name: "no rows", body: map[string]any{"inputs": []any{tensor("x", "FP64", []int{0}, []any{}), tensor("c", "BYTES", []int{0}, []any{})}},
			code: 200, want: `"shape":[0,2]`},
		{name: "escaped text", body: map[string]any{"inputs": []any{tensor("x", "FP64", []int{1}, []any{0.5}), tensor("c", "BYTES", []int{1}, []any{"\u00e9\t\"q\""})}},
			code: 200, predict: "[1]"},
		{name: "missing text", body: map[string]any{"inputs": []any{x, tensor("c", "BYTES", []int{2}, []any{nil, "b"})}}, code: 200, predict: "[0 1]"},
		{name: "unknown fields are ignored", body: map[string]any{"inputs": good, "extra": map[string]any{"a": []any{1, "b", nil, true}}}, code: 200},

		// Header fields and outputs.
		{name: "id echoed", body: map[string]any{"id": "req \"7\" é", "inputs": good}, code: 200, want: `"id":"req \"7\" é"`},
		{name: "no id, none echoed", body: map[string]any{"inputs": good}, code: 200, absent: `"id"`, want: `"model_name":"oip","model_version":"1"`},
		{name: "parameters", body: map[string]any{"parameters": map[string]any{"content_type": "pd", "priority": 1, "binary_data_output": false}, "inputs": good}, code: 200},
		{name: "one output", body: map[string]any{"inputs": good, "outputs": []any{map[string]any{"name": "probabilities"}}}, code: 200,
			want: `"datatype":"FP64","name":"probabilities","shape":[2,2]}]`},
		{name: "outputs in JSON", body: map[string]any{"inputs": good, "outputs": []any{
			map[string]any{"name": "predict", "parameters": map[string]any{"binary_data": false}}, map[string]any{"name": "prediction_id"}}},
			code: 200, absent: "probabilities"},
		{name: "binary_data not a flag", body: map[string]any{"inputs": good, "outputs": []any{map[string]any{"name": "predict", "parameters": map[string]any{"binary_data": "yes"}}}},
			code: 400, want: `outputs[0].parameters.binary_data: \"yes\" is not true or false`},
		{name: "classification output refused", body: map[string]any{"inputs": good, "outputs": []any{map[string]any{"name": "predict", "parameters": map[string]any{"classification": 2}}}},
			code: 400, want: `classification: 2 is not supported`},
		{name: "binary_data_output not a flag", body: map[string]any{"parameters": map[string]any{"binary_data_output": 2}, "inputs": good},
			code: 400, want: `parameters.binary_data_output: 2 is not true or false`},
		{name: "binary input without the header", body: map[string]any{"inputs": []any{map[string]any{"name": "x", "datatype": "FP64", "shape": []int{2},
			"parameters": map[string]any{"binary_data_size": 16}}, c}}, code: 400,
			want: `input \"x\": parameters.binary_data_size: binary tensor data needs the header Inference-Header-Content-Length`},
		{name: "binary_data_size not a size", body: map[string]any{"inputs": []any{map[string]any{"name": "x", "datatype": "FP64", "shape": []int{2},
			"parameters": map[string]any{"binary_data_size": -1}}, c}}, code: 400, want: `binary_data_size: -1 is not a size in bytes`},
		{name: "unknown output", body: map[string]any{"inputs": good, "outputs": []any{map[string]any{"name": "logits"}}}, code: 400, want: `unknown output \"logits\"`},
		{name: "output twice", body: map[string]any{"inputs": good, "outputs": []any{map[string]any{"name": "predict"}, map[string]any{"name": "predict"}}},
			code: 400, want: `\"predict\" asked for twice`},
		{name: "regression", path: "/v2/models/reg/infer", body: map[string]any{"inputs": good}, code: 200,
			want: `"datatype":"FP64","name":"predict","shape":[2]`, absent: "probabilities"},
		{name: "regression has no probabilities", path: "/v2/models/reg/infer", body: map[string]any{"inputs": good, "outputs": []any{map[string]any{"name": "probabilities"}}},
			code: 400, want: `a regression model has no probabilities`},

		// Malformed JSON.
		{name: "empty body", body: "", code: 400, want: "not an inference request: unexpected end of input"},
		{name: "truncated", body: `{"inputs": [`, code: 400, want: "not an inference request"},
		{name: "not an object", body: `[1, 2]`, code: 400, want: "not an inference request: unexpected '[', want a JSON object at byte 0"},
		{name: "trailing data", body: `{"inputs": []} {}`, code: 400, want: "data after the JSON object at byte 15"},
		{name: "bad literal", body: `{"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [tru]}]}`, code: 400, want: "not an inference request"},
		{name: "leading zero", body: `{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [01]}]}`, code: 400, want: "not an inference request"},
		{name: "bare point", body: `{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.]}]}`, code: 400, want: "want a digit"},
		{name: "NaN", body: `{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [NaN]}]}`, code: 400, want: "not an inference request"},
		{name: "unterminated string", body: `{"id": "abc`, code: 400, want: "unterminated string"},
		{name: "control character", body: "{\"id\": \"a\nb\"}", code: 400, want: "control character in a string"},
		{name: "missing colon", body: `{"inputs" []}`, code: 400, want: "want ':'"},
		{name: "missing comma", body: `{"id": "a" "inputs": []}`, code: 400, want: "want ',' or '}'"},

		// Wrong structure.
		{name: "no inputs", body: map[string]any{"id": "a"}, code: 400, want: "inputs: empty"},
		{name: "empty inputs", body: map[string]any{"inputs": []any{}}, code: 400, want: "inputs: empty"},
		{name: "inputs not an array", body: map[string]any{"inputs": map[string]any{}}, code: 400, want: "inputs: want an array of tensors"},
		{name: "id not a string", body: map[string]any{"id": 5, "inputs": good}, code: 400, want: "id: want a string"},
		{name: "outputs not an array", body: map[string]any{"inputs": good, "outputs": "predict"}, code: 400, want: "outputs: want an array"},
		{name: "parameters not an object", body: map[string]any{"inputs": good, "parameters": []any{}}, code: 400, want: "parameters: want an object"},
		{name: "tensor not an object", body: map[string]any{"inputs": []any{1}}, code: 400, want: "inputs[0]: want a tensor object"},
		{name: "no name", body: map[string]any{"inputs": []any{map[string]any{"datatype": "FP64", "shape": []int{1}, "data": []any{1}}}}, code: 400, want: "inputs[0]: no name"},
		{name: "name not a string", body: map[string]any{"inputs": []any{map[string]any{"name": 1}}}, code: 400, want: "inputs[0].name: want a string"},
		{name: "no shape", body: map[string]any{"inputs": []any{map[string]any{"name": "x", "datatype": "FP64", "data": []any{1}}}}, code: 400, want: `input \"x\": no shape`},
		{name: "no data", body: map[string]any{"inputs": []any{map[string]any{"name": "x", "datatype": "FP64", "shape": []int{1}}}}, code: 400, want: `input \"x\": no data`},
		{name: "data not an array", body: withC(tensor("x", "FP64", []int{1}, 1.5)), code: 400, want: `input \"x\": data: not an array`},
		{name: "negative size", body: withC(tensor("x", "FP64", []int{-1}, []any{1})), code: 400, want: "inputs[0].shape: -1 is not a size"},
		{name: "fractional size", body: `{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1.5], "data": [1]}]}`, code: 400, want: "1.5 is not a size"},
		{name: "shape not an array", body: withC(map[string]any{"name": "x", "datatype": "FP64", "shape": 1, "data": []any{1}}), code: 400, want: "inputs[0].shape: want an array"},

		// Shapes and data.
		{name: "scalar shape", body: withC(tensor("x", "FP64", []int{}, []any{})), code: 400, want: `input \"x\": shape []: want [N] or [N, 1]`},
		{name: "feature of two columns", body: map[string]any{"inputs": []any{tensor("x", "FP64", []int{1, 2}, []any{1, 2}), tensor("c", "BYTES", []int{1}, []any{"a"})}},
			code: 400, want: `input \"x\": shape [1 2]: want [N] or [N, 1]`},
		{name: "3-D", body: withC(tensor("x", "FP64", []int{1, 1, 1}, []any{1})), code: 400, want: "shape [1 1 1]: want [N] or [N, 1]"},
		{name: "too many rows", body: map[string]any{"inputs": []any{tensor("x", "FP64", []int{2000000}, []any{1})}}, code: 400, want: "at most 1000000 rows"},
		{name: "more data than shape", body: withC(tensor("x", "FP64", []int{2}, []any{1, 2, 3})), code: 400, want: "shape [2] holds 2 values, data has 3"},
		{name: "less data than shape", body: withC(tensor("x", "FP64", []int{3}, []any{1, 2})), code: 400, want: "shape [3] holds 3 values, data has 2"},
		{name: "huge shape, little data", body: map[string]any{"inputs": []any{tensor("x", "FP64", []int{900000}, []any{1})}}, code: 400, want: "holds 900000 values, data has 1"},
		{name: "nested unlike the shape", body: withC(tensor("x", "FP64", []int{2, 1}, [][]any{{1}, {2, 3}})), code: 400, want: "data[1][1]: the shape [2 1] has 1 element(s) at this level"},
		{name: "too few nested", body: withC(tensor("x", "FP64", []int{3, 1}, [][]any{{1}, {2}})), code: 400, want: "data: 2 elements where the shape [3 1] has 3"},
		{name: "nested deeper than the shape", body: withC(tensor("x", "FP64", []int{1, 1}, [][][]any{{{1}}})), code: 400, want: "nested deeper than the shape [1 1]"},
		{name: "nested for a 1-D shape", body: withC(tensor("x", "FP64", []int{1}, [][]any{{1}})), code: 400, want: "nested deeper than the shape [1]"},
		{name: "ragged", body: withC(tensor("x", "FP64", []int{2, 1}, []any{[]any{1}, 2})), code: 400, want: "data[1]: a value where the shape [2 1] wants an array"},
		{name: "array among values", body: withC(tensor("x", "FP64", []int{2}, []any{1, []any{2}})), code: 400, want: "data[1]: an array among values"},
		{name: "rows differ", body: map[string]any{"inputs": []any{x, tensor("c", "BYTES", []int{1}, []any{"a"})}}, code: 400, want: `input \"c\": 1 rows, but input \"x\" has 2`},

		// Inputs against the model.
		{name: "missing input", body: map[string]any{"inputs": []any{x}}, code: 400, want: `missing input \"c\": the model takes x, c`},
		{name: "unexpected input", body: map[string]any{"inputs": []any{x, c, tensor("z", "FP64", []int{2}, []any{1, 2})}}, code: 400, want: `unexpected input \"z\"`},
		{name: "input twice", body: map[string]any{"inputs": []any{x, c, x}}, code: 400, want: `input \"x\": given twice`},
		{name: "[N, K] with the wrong K", body: map[string]any{"inputs": []any{tensor("rows", "BYTES", []int{1, 3}, []any{"1", "a", "2"})}}, code: 400,
			want: `input \"rows\": shape [1 3]: a [N, K] tensor has one column per model input, K = 2 (x, c)`},
		{name: "[N, K] beside another tensor", body: map[string]any{"inputs": []any{tensor("rows", "BYTES", []int{1, 2}, []any{"1", "a"}), c}}, code: 400,
			want: `a [N, K] tensor carries every input of the model; give no other tensor`},
		{name: "unseen category", body: map[string]any{"inputs": []any{x, tensor("c", "BYTES", []int{2}, []any{"a", "never seen"})}}, code: 200},

		// Models, versions, limits.
		{name: "a version", path: "/v2/models/oip/versions/1/infer", body: map[string]any{"inputs": good}, code: 200, want: `"model_version":"1"`},
		{name: "a version not serving", path: "/v2/models/oip/versions/2/infer", body: map[string]any{"inputs": good}, code: 404, want: "version 2 of model oip does not serve (serving [1])"},
		{name: "version 0", path: "/v2/models/oip/versions/0/infer", body: map[string]any{"inputs": good}, code: 404, want: `unknown version \"0\" of model oip: versions are numbers from 1`},
		{name: "unknown model", path: "/v2/models/nope/infer", body: map[string]any{"inputs": good}, code: 404, want: `unknown model \"nope\"`},
		{name: "not a model name", path: "/v2/models/No_Pe/infer", body: map[string]any{"inputs": good}, code: 404, want: "unknown model"},
		{name: "body too large", body: map[string]any{"inputs": good, "pad": strings.Repeat("x", maxBody)}, code: 413, want: fmt.Sprintf("request body larger than %d bytes", maxBody)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path
			if path == "" {
				path = "/v2/models/oip/infer"
			}
			code, body := h.do(http.MethodPost, path, tc.body)
			raw, _ := json.Marshal(body)
			if code != tc.code {
				t.Fatalf("= %d %s, want %d", code, raw, tc.code)
			}
			if msg, _ := body["error"].(string); code >= 400 && msg == "" {
				t.Errorf("error response %s has no error message", raw)
			}
			if !strings.Contains(string(raw), tc.want) || tc.absent != "" && strings.Contains(string(raw), tc.absent) {
				t.Errorf("= %s, want it to contain %s and not %q", raw, tc.want, tc.absent)
			}
			if tc.predict != "" {
				if got := fmt.Sprint(output(body, "predict")); got != tc.predict {
					t.Errorf("predict = %s, want %s", got, tc.predict)
				}
			}
		})
	}
}

// TestOIPMetadata: the server, health and model endpoints, versioned and
// not, for a classifier and a regressor.
func TestOIPMetadata(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	for _, tc := range []struct {
		name, path string
		code       int
		want       []string
	}{
		{"server", "/v2", 200, []string{`"name":"gyre-deployer"`, `"version":"`, `"extensions":["binary_tensor_data"]`}},
		{"live", "/v2/health/live", 200, []string{`"live":true`}},
		{"ready", "/v2/health/ready", 200, []string{`"ready":true`}},
		{"classifier", "/v2/models/oip", 200, []string{
			`"name":"oip"`, `"versions":["1"]`, `"platform":"gyre_logreg"`,
			`"inputs":[{"datatype":"FP64","name":"x","shape":[-1]},{"datatype":"BYTES","name":"c","shape":[-1]}]`,
			`"outputs":[{"datatype":"BYTES","name":"predict","shape":[-1]},{"datatype":"FP64","name":"probabilities","shape":[-1,2]},{"datatype":"BYTES","name":"prediction_id","shape":[-1]}]`,
			`"classes":["0","1"]`, `"input_matrix":{"columns":["x","c"],"datatype":"BYTES","shape":[-1,2]}`, `"max_batch_size":64`,
		}},
		{"classifier version", "/v2/models/oip/versions/1", 200, []string{`"name":"oip"`, `"versions":["1"]`}},
		{"regressor", "/v2/models/reg", 200, []string{`"versions":["3"]`, `"task":"regression"`, `"platform":"gyre_gbdt"`,
			`"max_batch_size":8,"max_queue_delay_ms":0.5`,
			`"outputs":[{"datatype":"FP64","name":"predict","shape":[-1]},{"datatype":"BYTES","name":"prediction_id","shape":[-1]}]`}},
		{"model ready", "/v2/models/oip/ready", 200, []string{`"name":"oip"`, `"ready":true`}},
		{"version ready", "/v2/models/reg/versions/3/ready", 200, []string{`"ready":true`}},
		{"version not serving", "/v2/models/oip/versions/3", 404, []string{"version 3 of model oip does not serve"}},
		{"version not serving ready", "/v2/models/oip/versions/3/ready", 404, []string{"does not serve"}},
		{"bad version", "/v2/models/oip/versions/v1", 404, []string{`unknown version \"v1\" of model oip`}},
		{"unknown model", "/v2/models/nope", 404, []string{`unknown model \"nope\"`}},
		{"unknown model ready", "/v2/models/nope/ready", 404, []string{`unknown model \"nope\"`}},
		{"infer by GET", "/v2/models/oip/infer", 405, []string{"inference takes POST"}},
		{"no such endpoint", "/v2/models/oip/explain", 404, []string{"no such endpoint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, body := h.do(http.MethodGet, tc.path, nil)
			raw, _ := json.Marshal(body)
			if code != tc.code {
				t.Fatalf("GET %s = %d %s, want %d", tc.path, code, raw, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(raw), w) {
					t.Errorf("GET %s = %s, want it to contain %s", tc.path, raw, w)
				}
			}
		})
	}
}

// TestOIPVersionDuringCanary: while a canary splits the traffic, a
// versioned path reaches that version only, and the metadata lists both.
func TestOIPVersionDuringCanary(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "pinned"
	h.env.ApplyPipeline(spec(name, "{strategy: canary, steps: [50, 100], stepRequests: 100000}", false))
	h.run(nil)
	if s := h.startRollout(name, h.storeBundle(name, "r1", false, false), h.storeBundle(name, "r2", true, false)); s != "canary" {
		t.Fatalf("status %s, want canary", s)
	}
	code, meta := h.do(http.MethodGet, "/v2/models/"+name, nil)
	if code != 200 || fmt.Sprint(meta["versions"]) != "[1 2]" {
		t.Fatalf("metadata = %d %v, want versions [1 2]", code, meta["versions"])
	}
	body := inferBody([]row{{0.5, "a"}})
	for _, tc := range []struct {
		path string
		want map[string]bool // model versions that may answer
	}{
		{"/v2/models/" + name + "/versions/1/infer", map[string]bool{"1": true}},
		{"/v2/models/" + name + "/versions/2/infer", map[string]bool{"2": true}},
		{"/v2/models/" + name + "/infer", map[string]bool{"1": true, "2": true}},
	} {
		seen := map[string]int{}
		for range 60 {
			code, res := h.do(http.MethodPost, tc.path, body)
			if code != 200 {
				t.Fatalf("POST %s = %d %v", tc.path, code, res)
			}
			v, _ := res["model_version"].(string)
			if !tc.want[v] {
				t.Fatalf("POST %s answered by version %s", tc.path, v)
			}
			seen[v]++
		}
		if len(seen) != len(tc.want) {
			t.Errorf("POST %s: versions %v, want each of %v", tc.path, seen, tc.want)
		}
	}
}
