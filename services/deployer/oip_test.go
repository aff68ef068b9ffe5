package deployer_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestOpenInferenceProtocol checks every endpoint, well-formed and
// malformed, against a deployed model ("oip"), a pipeline with none
// ("empty") and names that are no model.
func TestOpenInferenceProtocol(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env.ApplyPipeline(spec("oip", "{strategy: immediate}", false))
	h.env.ApplyPipeline(spec("empty", "{strategy: immediate}", false))
	h.run(nil)
	h.promote("oip", 1, h.storeBundle("oip", "r1", false, false), 0.9)
	h.waitServing("oip", "1")

	tensor := func(name, dt string, shape []int, data any) map[string]any {
		return map[string]any{"name": name, "datatype": dt, "shape": shape, "data": data}
	}
	good := func(extra ...map[string]any) map[string]any {
		in := []map[string]any{
			tensor("x", "FP64", []int{3}, []any{-0.5, 0.25, 0.9}),
			tensor("c", "BYTES", []int{3}, []any{"a", "b", "a"}),
		}
		return map[string]any{"id": "req-1", "inputs": append(in, extra...)}
	}
	for _, tc := range []struct {
		name, method, path string
		body               any
		code               int
		// want is a substring of the JSON body.
		want string
		// check looks further at a 200 body.
		check func(t *testing.T, body map[string]any)
	}{
		{name: "live", method: "GET", path: "/v2/health/live", code: 200, want: `"live":true`},
		{name: "ready", method: "GET", path: "/v2/health/ready", code: 200, want: `"ready":true`},
		{name: "server metadata", method: "GET", path: "/v2", code: 200, want: `"name":"gyre-deployer"`},
		{name: "metadata", method: "GET", path: "/v2/models/oip", code: 200, check: func(t *testing.T, b map[string]any) {
			got, _ := json.Marshal([]any{b["name"], b["versions"], b["inputs"], b["outputs"]})
			want := `["oip",["1"],[{"datatype":"FP64","name":"x","shape":[-1]},{"datatype":"BYTES","name":"c","shape":[-1]}],` +
				`[{"datatype":"BYTES","name":"predict","shape":[-1]},{"datatype":"FP64","name":"probabilities","shape":[-1,2]},{"datatype":"BYTES","name":"prediction_id","shape":[-1]}]]`
			if string(got) != want {
				t.Errorf("metadata\n got %s\nwant %s", got, want)
			}
		}},
		{name: "metadata of a version", method: "GET", path: "/v2/models/oip/versions/1", code: 200, want: `"versions":["1"]`},
		{name: "metadata of a version not serving", method: "GET", path: "/v2/models/oip/versions/7", code: 404, want: "version 7 of model oip does not serve"},
		{name: "metadata of a bad version", method: "GET", path: "/v2/models/oip/versions/abc", code: 404, want: "unknown version"},
		{name: "metadata of no model", method: "GET", path: "/v2/models/nope", code: 404, want: `unknown model \"nope\"`},
		{name: "metadata of a bad name", method: "GET", path: "/v2/models/No_Pe", code: 404, want: "unknown model"},
		{name: "metadata before a deployment", method: "GET", path: "/v2/models/empty", code: 503, want: "no model deployed for empty yet"},
		{name: "model ready", method: "GET", path: "/v2/models/oip/ready", code: 200, want: `"ready":true`},
		{name: "version ready", method: "GET", path: "/v2/models/oip/versions/1/ready", code: 200, want: `"ready":true`},
		{name: "model not ready", method: "GET", path: "/v2/models/empty/ready", code: 503, want: `"ready":false`},
		{name: "ready of no model", method: "GET", path: "/v2/models/nope/ready", code: 404, want: "unknown model"},
		{name: "infer", method: "POST", path: "/v2/models/oip/infer", body: good(), code: 200, check: func(t *testing.T, b map[string]any) {
			if b["model_name"] != "oip" || b["model_version"] != "1" || b["id"] != "req-1" {
				t.Errorf("response header %v %v %v", b["model_name"], b["model_version"], b["id"])
			}
			if got := fmt.Sprint(output(b, "predict")); got != "[0 1 1]" {
				t.Errorf("predict = %s, want [0 1 1]", got)
			}
			if p := output(b, "probabilities"); len(p) != 6 {
				t.Errorf("probabilities = %v, want 3×2", p)
			}
			ids := output(b, "prediction_id")
			if len(ids) != 3 || ids[0] == ids[1] || ids[0] == "" {
				t.Errorf("prediction ids = %v, want 3 distinct", ids)
			}
			shapes := map[string]string{}
			for _, o := range b["outputs"].([]any) {
				m := o.(map[string]any)
				shapes[m["name"].(string)] = fmt.Sprint(m["datatype"], m["shape"])
			}
			if got := fmt.Sprint(shapes); got != "map[predict:BYTES[3] prediction_id:BYTES[3] probabilities:FP64[3 2]]" {
				t.Errorf("outputs = %s", got)
			}
		}},
		{name: "infer a version", method: "POST", path: "/v2/models/oip/versions/1/infer", body: good(), code: 200, want: `"model_version":"1"`},
		{name: "infer nested [N,1], FP32 and INT32", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "INT32", []int{2, 1}, [][]any{{-3}, {4}}),
			tensor("c", "BYTES", []int{2, 1}, [][]any{{"a"}, {"b"}}),
		}}, code: 200, check: func(t *testing.T, b map[string]any) {
			if got := fmt.Sprint(output(b, "predict")); got != "[0 1]" {
				t.Errorf("predict = %s", got)
			}
		}},
		{name: "infer FP32, missing values, parameters", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{
			"parameters": map[string]any{"content_type": "pd"},
			"inputs": []any{
				tensor("x", "FP32", []int{2}, []any{0.5, nil}),
				tensor("c", "BYTES", []int{2}, []any{nil, "b"}),
			}}, code: 200, want: `"prediction_id"`},
		{name: "infer numbers as BYTES", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "BYTES", []int{1}, []any{"0.7"}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 200, want: `"data":["1"]`},
		{name: "infer some outputs", method: "POST", path: "/v2/models/oip/infer",
			body: map[string]any{"inputs": good()["inputs"], "outputs": []any{map[string]any{"name": "predict"}}}, code: 200,
			check: func(t *testing.T, b map[string]any) {
				if n := len(b["outputs"].([]any)); n != 1 || output(b, "predict") == nil {
					t.Errorf("outputs = %v, want predict only", b["outputs"])
				}
			}},
		{name: "infer no rows", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{0}, []any{}), tensor("c", "BYTES", []int{0}, []any{}),
		}}, code: 200, want: `"shape":[0,2]`},
		{name: "bad JSON", method: "POST", path: "/v2/models/oip/infer", body: `{"inputs": [`, code: 400, want: "not an inference request"},
		{name: "not an object", method: "POST", path: "/v2/models/oip/infer", body: `[1, 2]`, code: 400, want: "not an inference request"},
		{name: "no inputs", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{}}, code: 400, want: "inputs: empty"},
		{name: "missing input", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{1}, []any{1.0}),
		}}, code: 400, want: `missing input \"c\"`},
		{name: "unexpected input", method: "POST", path: "/v2/models/oip/infer",
			body: good(tensor("z", "FP64", []int{3}, []any{1, 2, 3})), code: 400, want: `unexpected input \"z\"`},
		{name: "input twice", method: "POST", path: "/v2/models/oip/infer",
			body: good(tensor("x", "FP64", []int{3}, []any{1, 2, 3})), code: 400, want: "given twice"},
		{name: "wrong shape", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{1, 2}, []any{1.0, 2.0}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 400, want: "shape [1 2]: want [N] or [N, 1]"},
		{name: "shape and data disagree", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{2}, []any{1.0, 2.0, 3.0}), tensor("c", "BYTES", []int{2}, []any{"a", "b"}),
		}}, code: 400, want: "holds 2 values, data has 3"},
		{name: "rows differ", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{2}, []any{1.0, 2.0}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 400, want: "one value per row"},
		{name: "unknown datatype", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FLOAT", []int{1}, []any{1.0}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 400, want: `datatype \"FLOAT\" is not supported`},
		{name: "text in FP64", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{1}, []any{"1.5"}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 400, want: "is not a number (datatype FP64)"},
		{name: "number in BYTES", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "FP64", []int{1}, []any{1.5}), tensor("c", "BYTES", []int{1}, []any{7}),
		}}, code: 400, want: "is not a string (datatype BYTES)"},
		{name: "fraction in INT32", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "INT32", []int{1}, []any{1.5}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 400, want: "not an integer of datatype INT32"},
		{name: "not a number for a numeric column", method: "POST", path: "/v2/models/oip/infer", body: map[string]any{"inputs": []any{
			tensor("x", "BYTES", []int{1}, []any{"abc"}), tensor("c", "BYTES", []int{1}, []any{"a"}),
		}}, code: 400, want: `column \"x\"`},
		{name: "unknown output", method: "POST", path: "/v2/models/oip/infer",
			body: map[string]any{"inputs": good()["inputs"], "outputs": []any{map[string]any{"name": "logits"}}}, code: 400, want: `unknown output \"logits\"`},
		{name: "infer of no model", method: "POST", path: "/v2/models/nope/infer", body: good(), code: 404, want: `unknown model \"nope\"`},
		{name: "infer before a deployment", method: "POST", path: "/v2/models/empty/infer", body: good(), code: 503, want: `"error":"no model deployed for empty yet"`},
		{name: "infer of a version not serving", method: "POST", path: "/v2/models/oip/versions/9/infer", body: good(), code: 404, want: "does not serve"},
		{name: "infer by GET", method: "GET", path: "/v2/models/oip/infer", code: 405, want: "inference takes POST"},
		{name: "no such endpoint", method: "GET", path: "/v2/models/oip/explain", code: 404, want: "no such endpoint"},
		{name: "deployment status", method: "GET", path: "/v1/deployments/oip", code: 200, want: `"status":"completed"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, body := h.do(tc.method, tc.path, tc.body)
			raw, _ := json.Marshal(body)
			if code != tc.code {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, code, raw, tc.code)
			}
			if code >= 400 {
				if msg, _ := body["error"].(string); msg == "" {
					t.Errorf("error response %s has no error message", raw)
				}
			}
			if !strings.Contains(string(raw), tc.want) {
				t.Errorf("%s %s = %s, want it to contain %s", tc.method, tc.path, raw, tc.want)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
}
