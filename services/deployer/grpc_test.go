package deployer_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/deployer/oipgrpc"
)

// grpcConn dials the running deployer's gRPC service, with a client
// generated from the upstream proto.
func (h *harness) grpcConn() *grpc.ClientConn {
	h.t.Helper()
	h.mu.Lock()
	addr := h.svc.GRPCAddr()
	h.mu.Unlock()
	if addr == "" {
		h.t.Fatal("the deployer serves no gRPC (run it with GRPCAddr)")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (h *harness) grpcClient() oipgrpc.GRPCInferenceServiceClient {
	return oipgrpc.NewGRPCInferenceServiceClient(h.grpcConn())
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// grpcRows are rows of the conformance models' inputs: x with full
// float64 precision (one missing), c "a" or "b".
func grpcRows(n int) ([]float64, []string) {
	r := rand.New(rand.NewPCG(5, 8))
	xs, cs := make([]float64, n), make([]string, n)
	for i := range n {
		xs[i] = r.Float64()*2 - 1
		cs[i] = []string{"a", "b"}[r.IntN(2)]
	}
	xs[n/2] = math.NaN()
	return xs, cs
}

// typedInfer is a ModelInfer request of xs and cs in typed contents.
func typedInfer(model string, xs []float64, cs []string) *oipgrpc.ModelInferRequest {
	bs := make([][]byte, len(cs))
	for i, c := range cs {
		bs[i] = []byte(c)
	}
	return &oipgrpc.ModelInferRequest{ModelName: model, Id: "g-1", Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{
		{Name: "x", Datatype: "FP64", Shape: []int64{int64(len(xs))}, Contents: &oipgrpc.InferTensorContents{Fp64Contents: xs}},
		{Name: "c", Datatype: "BYTES", Shape: []int64{int64(len(cs))}, Contents: &oipgrpc.InferTensorContents{BytesContents: bs}},
	}}
}

// rawInfer is the same request in raw_input_contents.
func rawInfer(model string, xs []float64, cs []string) *oipgrpc.ModelInferRequest {
	req := typedInfer(model, xs, cs)
	for _, in := range req.Inputs {
		in.Contents = nil
	}
	req.RawInputContents = [][]byte{rawFP64(xs), rawBytes(cs)}
	return req
}

func rawFP64(xs []float64) []byte {
	var b []byte
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func rawBytes(cs []string) []byte {
	var b []byte
	for _, c := range cs {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return b
}

func decodeRawFP64(t *testing.T, b []byte) []float64 {
	t.Helper()
	if len(b)%8 != 0 {
		t.Fatalf("raw FP64 of %d bytes", len(b))
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

func decodeRawBytes(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("raw BYTES: %d bytes left, no length", len(b))
		}
		n := binary.LittleEndian.Uint32(b)
		if int(n) > len(b)-4 {
			t.Fatalf("raw BYTES: length %d, %d bytes left", n, len(b)-4)
		}
		out = append(out, string(b[4:4+n]))
		b = b[4+n:]
	}
	return out
}

// answer is a response's outputs in Go values, whatever their encoding.
type answer struct {
	version string
	predict []string // labels, or a regressor's values formatted with %v
	values  []float64
	proba   []float64
	ids     []string
	shapes  map[string]string
}

// grpcAnswer decodes a ModelInferResponse, raw or typed.
func grpcAnswer(t *testing.T, res *oipgrpc.ModelInferResponse) answer {
	t.Helper()
	a := answer{version: res.GetModelVersion(), shapes: map[string]string{}}
	raw := res.GetRawOutputContents()
	if len(raw) > 0 && len(raw) != len(res.GetOutputs()) {
		t.Fatalf("%d raw outputs for %d outputs", len(raw), len(res.GetOutputs()))
	}
	for i, o := range res.GetOutputs() {
		a.shapes[o.GetName()] = fmt.Sprint(o.GetDatatype(), o.GetShape())
		var fs []float64
		var ss []string
		switch {
		case len(raw) > 0 && o.GetContents() != nil:
			t.Fatalf("output %s: raw and typed contents", o.GetName())
		case len(raw) > 0 && o.GetDatatype() == "FP64":
			fs = decodeRawFP64(t, raw[i])
		case len(raw) > 0:
			ss = decodeRawBytes(t, raw[i])
		case o.GetDatatype() == "FP64":
			fs = o.GetContents().GetFp64Contents()
		default:
			for _, b := range o.GetContents().GetBytesContents() {
				ss = append(ss, string(b))
			}
		}
		switch o.GetName() {
		case "predict":
			a.predict, a.values = ss, fs
		case "probabilities":
			a.proba = fs
		case "prediction_id":
			a.ids = ss
		}
	}
	return a
}

// restAnswer decodes a REST JSON response.
func restAnswer(t *testing.T, body map[string]any) answer {
	t.Helper()
	a := answer{shapes: map[string]string{}}
	a.version, _ = body["model_version"].(string)
	outs, _ := body["outputs"].([]any)
	for _, o := range outs {
		m := o.(map[string]any)
		shape := []int64{}
		for _, d := range m["shape"].([]any) {
			shape = append(shape, int64(d.(float64)))
		}
		a.shapes[m["name"].(string)] = fmt.Sprint(m["datatype"], shape)
		var fs []float64
		var ss []string
		for _, v := range m["data"].([]any) {
			switch v := v.(type) {
			case float64:
				fs = append(fs, v)
			case string:
				ss = append(ss, v)
			case nil:
				fs = append(fs, math.NaN())
			}
		}
		switch m["name"] {
		case "predict":
			a.predict, a.values = ss, fs
		case "probabilities":
			a.proba = fs
		case "prediction_id":
			a.ids = ss
		}
	}
	return a
}

// canonJSON is a message in protojson with its keys sorted and no white
// space (protojson's own spacing is unstable on purpose).
func canonJSON(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

// sameBits reports whether two float64 slices are equal bit for bit.
func sameBits(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
}

// sameAnswer fails unless two answers give the same outputs, bit for bit:
// all but the prediction ids, which are each request's own.
func sameAnswer(t *testing.T, what string, got, want answer) {
	t.Helper()
	if got.version != want.version || !slices.Equal(got.predict, want.predict) || !sameBits(got.values, want.values) ||
		!sameBits(got.proba, want.proba) || len(got.ids) != len(want.ids) || fmt.Sprint(got.shapes) != fmt.Sprint(want.shapes) {
		t.Errorf("%s differs\n got %+v\nwant %+v", what, got, want)
	}
}

// TestGRPCInferenceService calls every RPC of GRPCInferenceService with the
// client generated from the upstream proto, well-formed and malformed,
// against the conformance deployer ("oip", a classifier; "reg", a
// regressor; "empty", a pipeline with no model yet), and holds each answer
// to the REST one of the same request.
func TestGRPCInferenceService(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	h.env.ApplyPipeline(spec("empty", "{strategy: immediate}", false))
	c := h.grpcClient()
	ctx := callCtx(t)
	xs, cs := grpcRows(25)

	// What REST answers, for the comparisons.
	_, restMeta := h.do("GET", "/v2/models/oip", nil)
	restRows := make([]row, len(xs))
	for i := range xs {
		restRows[i] = row{xs[i], cs[i]}
	}
	restBody := inferBody(restRows)
	restBody["inputs"].([]map[string]any)[0]["data"].([]any)[len(xs)/2] = nil // JSON's NaN
	code, restInfer := h.do("POST", "/v2/models/oip/infer", restBody)
	if code != 200 {
		t.Fatalf("REST infer: %d %v", code, restInfer)
	}
	want := restAnswer(t, restInfer)

	type tcase struct {
		name string
		call func() (proto.Message, error)
		code codes.Code
		// want is a substring of the error, or of the response in protojson.
		want  string
		check func(t *testing.T, m proto.Message)
	}
	infer := func(req *oipgrpc.ModelInferRequest) func() (proto.Message, error) {
		return func() (proto.Message, error) { return c.ModelInfer(ctx, req) }
	}
	withInput := func(req *oipgrpc.ModelInferRequest, f func(*oipgrpc.ModelInferRequest)) *oipgrpc.ModelInferRequest {
		req = proto.Clone(req).(*oipgrpc.ModelInferRequest)
		f(req)
		return req
	}
	one := typedInfer("oip", []float64{0.5}, []string{"a"})
	cases := []tcase{
		{name: "ServerLive", call: func() (proto.Message, error) { return c.ServerLive(ctx, &oipgrpc.ServerLiveRequest{}) }, want: `"live":true`},
		{name: "ServerReady", call: func() (proto.Message, error) { return c.ServerReady(ctx, &oipgrpc.ServerReadyRequest{}) }, want: `"ready":true`},
		{name: "ServerMetadata", call: func() (proto.Message, error) { return c.ServerMetadata(ctx, &oipgrpc.ServerMetadataRequest{}) },
			want: `"name":"gyre-deployer"`, check: func(t *testing.T, m proto.Message) {
				md := m.(*oipgrpc.ServerMetadataResponse)
				if md.GetVersion() == "" || !slices.Equal(md.GetExtensions(), []string{"binary_tensor_data"}) {
					t.Errorf("server metadata %v", md)
				}
			}},
		{name: "ModelReady", call: func() (proto.Message, error) { return c.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "oip"}) }, want: `"ready":true`},
		{name: "ModelReady of a version", call: func() (proto.Message, error) {
			return c.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "reg", Version: "3"})
		}, want: `"ready":true`},
		{name: "ModelReady before a deployment", call: func() (proto.Message, error) {
			return c.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "empty"})
		}, want: `{}`},
		{name: "ModelReady of no model", call: func() (proto.Message, error) { return c.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "nope"}) },
			code: codes.NotFound, want: `unknown model "nope"`},
		{name: "ModelReady of a version not serving", call: func() (proto.Message, error) {
			return c.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "oip", Version: "3"})
		}, code: codes.NotFound, want: "version 3 of model oip does not serve"},
		{name: "ModelMetadata", call: func() (proto.Message, error) { return c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "oip"}) },
			check: func(t *testing.T, m proto.Message) {
				// The REST metadata but its parameters, field for field.
				got, _ := protojson.Marshal(m)
				var g map[string]any
				_ = json.Unmarshal(got, &g)
				for _, k := range []string{"name", "versions", "platform", "inputs", "outputs"} {
					if a, b := fmt.Sprint(g[k]), fmt.Sprint(restMeta[k]); a != b {
						t.Errorf("%s: gRPC %s, REST %s", k, a, b)
					}
				}
			}},
		{name: "ModelMetadata of a regressor version", call: func() (proto.Message, error) {
			return c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "reg", Version: "3"})
		}, want: `"outputs":[{"datatype":"FP64","name":"predict","shape":["-1"]},{"datatype":"BYTES","name":"prediction_id","shape":["-1"]}]`},
		{name: "ModelMetadata before a deployment", call: func() (proto.Message, error) {
			return c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "empty"})
		}, code: codes.Unavailable, want: "no model deployed for empty yet"},
		{name: "ModelMetadata of a bad version", call: func() (proto.Message, error) {
			return c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "oip", Version: "v1"})
		}, code: codes.NotFound, want: `unknown version "v1" of model oip`},
		{name: "ModelInfer, typed contents", call: infer(typedInfer("oip", xs, cs)), check: func(t *testing.T, m proto.Message) {
			res := m.(*oipgrpc.ModelInferResponse)
			if res.GetModelName() != "oip" || res.GetId() != "g-1" || len(res.GetRawOutputContents()) != 0 ||
				res.GetParameters()["variant"].GetStringParam() != "champion" || res.GetParameters()["deployment_id"].GetStringParam() == "" {
				t.Errorf("response header %v", res)
			}
			sameAnswer(t, "typed answer against REST's", grpcAnswer(t, res), want)
		}},
		{name: "ModelInfer, raw_input_contents", call: infer(rawInfer("oip", xs, cs)), check: func(t *testing.T, m proto.Message) {
			res := m.(*oipgrpc.ModelInferResponse)
			if len(res.GetRawOutputContents()) != 3 {
				t.Errorf("raw inputs: %d raw outputs, want 3", len(res.GetRawOutputContents()))
			}
			sameAnswer(t, "raw answer against REST's", grpcAnswer(t, res), want)
		}},
		{name: "ModelInfer, raw inputs, typed outputs asked", call: infer(withInput(rawInfer("oip", xs, cs), func(r *oipgrpc.ModelInferRequest) {
			r.Parameters = map[string]*oipgrpc.InferParameter{"binary_data_output": {ParameterChoice: &oipgrpc.InferParameter_BoolParam{BoolParam: false}}}
		})), check: func(t *testing.T, m proto.Message) {
			res := m.(*oipgrpc.ModelInferResponse)
			if len(res.GetRawOutputContents()) != 0 {
				t.Errorf("binary_data_output false: raw outputs")
			}
			sameAnswer(t, "typed answer of raw inputs", grpcAnswer(t, res), want)
		}},
		{name: "ModelInfer, typed inputs, binary output asked", call: infer(withInput(typedInfer("oip", xs, cs), func(r *oipgrpc.ModelInferRequest) {
			r.Outputs = []*oipgrpc.ModelInferRequest_InferRequestedOutputTensor{{Name: "probabilities", Parameters: map[string]*oipgrpc.InferParameter{
				"binary_data": {ParameterChoice: &oipgrpc.InferParameter_BoolParam{BoolParam: true}}}}}
		})), check: func(t *testing.T, m proto.Message) {
			res := m.(*oipgrpc.ModelInferResponse)
			if len(res.GetOutputs()) != 1 || len(res.GetRawOutputContents()) != 1 {
				t.Fatalf("one binary output asked: %v", res)
			}
			if got := grpcAnswer(t, res).proba; !sameBits(got, want.proba) {
				t.Errorf("probabilities %v, REST %v", got, want.proba)
			}
		}},
		{name: "ModelInfer of a version", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.ModelName, r.ModelVersion = "reg", "3" })),
			want: `"modelName":"reg","modelVersion":"3"`, check: func(t *testing.T, m proto.Message) {
				a := grpcAnswer(t, m.(*oipgrpc.ModelInferResponse))
				if len(a.values) != 1 || a.proba != nil {
					t.Errorf("regressor answer %+v", a)
				}
			}},
		{name: "ModelInfer, one [N, K] tensor", call: infer(&oipgrpc.ModelInferRequest{ModelName: "oip", Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{
			{Name: "rows", Datatype: "BYTES", Shape: []int64{2, 2}, Contents: &oipgrpc.InferTensorContents{BytesContents: [][]byte{[]byte("-0.5"), []byte("a"), []byte("0.5"), []byte("b")}}}}}),
			check: func(t *testing.T, m proto.Message) {
				if got := grpcAnswer(t, m.(*oipgrpc.ModelInferResponse)).predict; !slices.Equal(got, []string{"0", "1"}) {
					t.Errorf("predict %v, want [0 1]", got)
				}
			}},
		{name: "ModelInfer, FP16 raw", call: infer(&oipgrpc.ModelInferRequest{ModelName: "oip", Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{
			{Name: "x", Datatype: "FP16", Shape: []int64{2}}, {Name: "c", Datatype: "BYTES", Shape: []int64{2}}},
			// -0.5 and 0.5 in half precision.
			RawInputContents: [][]byte{{0x00, 0xb8, 0x00, 0x38}, rawBytes([]string{"a", "a"})}}),
			check: func(t *testing.T, m proto.Message) {
				if got := grpcAnswer(t, m.(*oipgrpc.ModelInferResponse)).predict; !slices.Equal(got, []string{"0", "1"}) {
					t.Errorf("predict %v, want [0 1]", got)
				}
			}},
		{name: "ModelInfer, INT8 typed", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0] = &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "INT8", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{IntContents: []int32{-3}}}
		})), want: `"predict"`},
		{name: "ModelInfer with the route header", call: func() (proto.Message, error) {
			return c.ModelInfer(metadata.AppendToOutgoingContext(ctx, pipeline.DefaultRouteHeader, "caller-7"), one)
		}, want: `"variant":{"stringParam":"champion"}`},

		// Malformed requests: the errors REST answers, as gRPC codes.
		{name: "ModelInfer of no model", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.ModelName = "nope" })),
			code: codes.NotFound, want: `unknown model "nope"`},
		{name: "ModelInfer of a version not serving", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.ModelVersion = "9" })),
			code: codes.NotFound, want: "version 9 of model oip does not serve"},
		{name: "ModelInfer before a deployment", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.ModelName = "empty" })),
			code: codes.Unavailable, want: "no model deployed for empty yet"},
		{name: "no inputs", call: infer(&oipgrpc.ModelInferRequest{ModelName: "oip"}), code: codes.InvalidArgument, want: "inputs: empty"},
		{name: "missing input", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs = r.Inputs[:1] })),
			code: codes.InvalidArgument, want: `missing input "c"`},
		{name: "no data", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs[0].Contents = nil })),
			code: codes.InvalidArgument, want: `input "x": no data`},
		{name: "no shape", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs[0].Shape = nil })),
			code: codes.InvalidArgument, want: `input "x": no shape`},
		{name: "negative shape", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs[0].Shape = []int64{-1} })),
			code: codes.InvalidArgument, want: "inputs[0].shape: -1 is not a size"},
		{name: "contents and shape disagree", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs[0].Shape = []int64{2} })),
			code: codes.InvalidArgument, want: `shape holds 2 values, contents.fp64_contents has 1`},
		{name: "contents of another datatype", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0].Contents = &oipgrpc.InferTensorContents{Fp32Contents: []float32{0.5}}
		})), code: codes.InvalidArgument, want: "fp32_contents given for datatype FP64, which takes fp64_contents"},
		{name: "INT8 out of range", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0] = &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "INT8", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{IntContents: []int32{128}}}
		})), code: codes.InvalidArgument, want: "128 is out of range for INT8 (-128 to 127)"},
		{name: "FP16 typed", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs[0].Datatype = "FP16" })),
			code: codes.InvalidArgument, want: "FP16 has no typed contents in the protocol"},
		{name: "unknown datatype", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) { r.Inputs[0].Datatype = "FLOAT" })),
			code: codes.InvalidArgument, want: `datatype "FLOAT" is not supported`},
		{name: "text for a number", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0] = &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "BYTES", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{BytesContents: [][]byte{[]byte("abc")}}}
		})), code: codes.InvalidArgument, want: `column "x": "abc" is not a number`},
		{name: "raw entries short", call: infer(withInput(rawInfer("oip", xs, cs), func(r *oipgrpc.ModelInferRequest) { r.RawInputContents = r.RawInputContents[:1] })),
			code: codes.InvalidArgument, want: "raw_input_contents: 1 entries for 2 inputs"},
		{name: "raw and typed", call: infer(withInput(rawInfer("oip", xs, cs), func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0].Contents = &oipgrpc.InferTensorContents{Fp64Contents: xs}
		})), code: codes.InvalidArgument, want: "contents and raw_input_contents both given"},
		{name: "raw size", call: infer(withInput(rawInfer("oip", xs, cs), func(r *oipgrpc.ModelInferRequest) { r.RawInputContents[0] = r.RawInputContents[0][:9] })),
			code: codes.InvalidArgument, want: "binary data of 9 bytes: 25 values of FP64 take 200 bytes"},
		{name: "raw BYTES overrun", call: infer(withInput(rawInfer("oip", xs, cs), func(r *oipgrpc.ModelInferRequest) {
			r.RawInputContents[1] = append(binary.LittleEndian.AppendUint32(nil, 1000), r.RawInputContents[1]...)
		})), code: codes.InvalidArgument, want: "element 0: length 1000"},
		{name: "unknown output", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Outputs = []*oipgrpc.ModelInferRequest_InferRequestedOutputTensor{{Name: "logits"}}
		})), code: codes.InvalidArgument, want: `unknown output "logits"`},
		{name: "classification refused", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Outputs = []*oipgrpc.ModelInferRequest_InferRequestedOutputTensor{{Name: "predict", Parameters: map[string]*oipgrpc.InferParameter{
				"classification": {ParameterChoice: &oipgrpc.InferParameter_Int64Param{Int64Param: 2}}}}}
		})), code: codes.InvalidArgument, want: "classification: 2 is not supported"},
		{name: "regression has no probabilities", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.ModelName = "reg"
			r.Outputs = []*oipgrpc.ModelInferRequest_InferRequestedOutputTensor{{Name: "probabilities"}}
		})), code: codes.InvalidArgument, want: "a regression model has no probabilities"},
		{name: "message over --max-request-bytes", call: infer(withInput(one, func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[1].Contents.BytesContents[0] = make([]byte, maxBody+1)
		})), code: codes.ResourceExhausted, want: "larger than max"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.call()
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			text := ""
			if err != nil {
				text = status.Convert(err).Message()
			} else {
				text = canonJSON(t, m)
			}
			if !strings.Contains(text, tc.want) {
				t.Errorf("got %s, want it to contain %s", text, tc.want)
			}
			if tc.check != nil && err == nil {
				tc.check(t, m)
			}
		})
	}

	// gRPC inferences are counted with REST's: in the same series, under
	// the status REST would have answered.
	if v, _ := h.metric(`gyre_deployer_infer_requests_total{code="404",pipeline="",variant=""}`); v < 2 {
		t.Errorf("404s counted: %v, want the gRPC NotFounds among them", v)
	}
}

// TestGRPCPredictionLog: a gRPC inference is logged as a REST one is, its
// prediction ids those of the answer.
func TestGRPCPredictionLog(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	res, err := h.grpcClient().ModelInfer(callCtx(t), typedInfer("reg", []float64{0.25, -0.75}, []string{"a", "b"}))
	if err != nil {
		t.Fatal(err)
	}
	ids := grpcAnswer(t, res).ids
	logged := map[string]bool{}
	looptest.WaitFor(t, "the gRPC predictions logged", 30*time.Second, func() bool {
		for _, ev := range h.env.Events("reg", events.PredictionLogged) {
			for _, r := range looptest.Decode(t, ev, &gyrev1.PredictionLogged{}).GetRows() {
				logged[r.GetPredictionId()] = true
			}
		}
		return logged[ids[0]] && logged[ids[1]]
	})
}

// TestGRPCHealthAndReflection: the gRPC health service answers SERVING for
// the server and the inference service once the deployer is ready, and
// server reflection lists the services and resolves the inference
// service's file (what grpcurl does first).
func TestGRPCHealthAndReflection(t *testing.T) {
	t.Parallel()
	h := conformance(t)
	conn := h.grpcConn()
	ctx := callCtx(t)
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", deployer.InferenceService} {
		res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v %v, want SERVING", svc, res, err)
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("health of an unknown service: %v, want NotFound", err)
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var names []string
	for _, s := range ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	if want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", deployer.InferenceService}; !slices.Equal(names, want) {
		t.Errorf("services %v, want %v", names, want)
	}
	fd := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: deployer.InferenceService}}).GetFileDescriptorResponse()
	if fd == nil || len(fd.GetFileDescriptorProto()) == 0 {
		t.Fatalf("no file descriptor for %s", deployer.InferenceService)
	}
	if !strings.Contains(string(fd.GetFileDescriptorProto()[0]), "grpc_predict_v2.proto") {
		t.Errorf("file of %s is not grpc_predict_v2.proto", deployer.InferenceService)
	}
}

// TestGRPCAuthentication: secure by default as HTTP is — the same token
// file and scopes, the token in the authorization metadata: infer for
// ModelInfer, read for metadata, nothing for liveness, readiness, health
// and reflection.
func TestGRPCAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env.ApplyPipeline(spec("auth", "{strategy: immediate}", false))
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	token := func(scopes ...httpauth.Scope) string {
		secret, _, err := httpauth.CreateToken(tokens, fmt.Sprint(scopes), scopes, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	infer, read, admin := token(httpauth.ScopeInfer), token(httpauth.ScopeRead), token(httpauth.ScopeAdmin)
	h.run(func(c *deployer.Config) {
		c.HTTPAuth, c.AuthTokens = service.HTTPAuthRequired, tokens
		c.GRPCAddr = "127.0.0.1:0"
	})
	h.promote("auth", 1, h.storeBundle("auth", "r1", false, false), 0.9)
	looptest.WaitFor(t, "auth serving", 30*time.Second, func() bool {
		code, _ := h.do("GET", "/v2/models/auth", nil, "Authorization", "Bearer "+read)
		return code == 200
	})
	conn := h.grpcConn()
	c := oipgrpc.NewGRPCInferenceServiceClient(conn)
	with := func(tok string) context.Context {
		ctx := callCtx(t)
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		return ctx
	}
	req := typedInfer("auth", []float64{0.5}, []string{"a"})
	for _, tc := range []struct {
		name  string
		token string
		call  func(ctx context.Context) error
		code  codes.Code
		want  string
	}{
		{"live, no token", "", func(ctx context.Context) error { _, err := c.ServerLive(ctx, &oipgrpc.ServerLiveRequest{}); return err }, codes.OK, ""},
		{"ready, no token", "", func(ctx context.Context) error {
			_, err := c.ServerReady(ctx, &oipgrpc.ServerReadyRequest{})
			return err
		}, codes.OK, ""},
		{"health, no token", "", func(ctx context.Context) error {
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, codes.OK, ""},
		{"infer, no token", "", func(ctx context.Context) error { _, err := c.ModelInfer(ctx, req); return err },
			codes.Unauthenticated, "no credentials: send the header Authorization: Bearer <token>"},
		{"infer, bad token", "gyre_nope", func(ctx context.Context) error { _, err := c.ModelInfer(ctx, req); return err },
			codes.Unauthenticated, ""},
		{"infer, read token", read, func(ctx context.Context) error { _, err := c.ModelInfer(ctx, req); return err },
			codes.PermissionDenied, "/inference.GRPCInferenceService/ModelInfer needs scope infer (or admin)"},
		{"infer, infer token", infer, func(ctx context.Context) error { _, err := c.ModelInfer(ctx, req); return err }, codes.OK, ""},
		{"infer, admin token", admin, func(ctx context.Context) error { _, err := c.ModelInfer(ctx, req); return err }, codes.OK, ""},
		{"metadata, no token", "", func(ctx context.Context) error {
			_, err := c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "auth"})
			return err
		}, codes.Unauthenticated, ""},
		{"metadata, infer token", infer, func(ctx context.Context) error {
			_, err := c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "auth"})
			return err
		}, codes.PermissionDenied, "needs scope read"},
		{"metadata, read token", read, func(ctx context.Context) error {
			_, err := c.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "auth"})
			return err
		}, codes.OK, ""},
		{"model ready, read token", read, func(ctx context.Context) error {
			_, err := c.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "auth"})
			return err
		}, codes.OK, ""},
		{"server metadata, no token", "", func(ctx context.Context) error {
			_, err := c.ServerMetadata(ctx, &oipgrpc.ServerMetadataRequest{})
			return err
		}, codes.Unauthenticated, ""},
		{"reflection, no token", "", func(ctx context.Context) error {
			s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			if err == nil {
				err = s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			}
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(with(tc.token))
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Errorf("%v, want %v %q", err, tc.code, tc.want)
			}
		})
	}
}

// TestGRPCRouting: during a canary, ModelInfer routes as REST does — a
// model_version reaches that version only, the route key in the call's
// metadata pins a caller to one variant, and traffic without either is
// split.
func TestGRPCRouting(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "grpcsplit"
	h.env.ApplyPipeline(spec(name, "{strategy: canary, steps: [50, 100], stepRequests: 100000}", false))
	h.run(func(c *deployer.Config) { c.GRPCAddr = "127.0.0.1:0" })
	if s := h.startRollout(name, h.storeBundle(name, "r1", false, false), h.storeBundle(name, "r2", true, false)); s != "canary" {
		t.Fatalf("status %s, want canary", s)
	}
	c := h.grpcClient()
	ctx := callCtx(t)
	versions := func(n int, ctx func(i int) context.Context, version string) map[string]int {
		seen := map[string]int{}
		for i := range n {
			req := typedInfer(name, []float64{0.5}, []string{"a"})
			req.ModelVersion = version
			res, err := c.ModelInfer(ctx(i), req)
			if err != nil {
				t.Fatal(err)
			}
			seen[res.GetModelVersion()]++
		}
		return seen
	}
	plain := func(int) context.Context { return ctx }
	if got := versions(40, plain, "2"); fmt.Sprint(got) != "map[2:40]" {
		t.Errorf("model_version 2 answered by %v", got)
	}
	if got := versions(40, plain, "1"); fmt.Sprint(got) != "map[1:40]" {
		t.Errorf("model_version 1 answered by %v", got)
	}
	if got := versions(60, func(i int) context.Context {
		return metadata.AppendToOutgoingContext(ctx, pipeline.DefaultRouteHeader, fmt.Sprint("key-", i))
	}, ""); len(got) != 2 {
		t.Errorf("split traffic answered by %v, want both versions", got)
	}
	if got := versions(30, func(int) context.Context {
		return metadata.AppendToOutgoingContext(ctx, pipeline.DefaultRouteHeader, "one-caller")
	}, ""); len(got) != 1 {
		t.Errorf("one route key answered by %v, want one version", got)
	}
}

// TestGRPCConfig: gRPC is off for the deployer alone unless --grpc (or
// GYRE_DEPLOYER_GRPC_ADDR) says where; a bad address is refused naming the
// flag, and a taken one fails Run.
func TestGRPCConfig(t *testing.T) {
	t.Setenv(deployer.EnvGRPCAddr, "127.0.0.1:0")
	if c := deployer.DefaultConfig(); c.GRPCAddr != "" {
		t.Errorf("default --grpc %q, want off", c.GRPCAddr)
	}
	c := deployer.DefaultConfig()
	fs := flag.NewFlagSet("deployer", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil || c.GRPCAddr != "127.0.0.1:0" {
		t.Errorf("--grpc from %s: %q %v", deployer.EnvGRPCAddr, c.GRPCAddr, err)
	}
	c.VerifyKeys = looptest.VerifyKeyFile(t)
	for addr, want := range map[string]string{"": "", "off": "", "127.0.0.1:8081": "", "8081": `--grpc (env GYRE_DEPLOYER_GRPC_ADDR): "8081" is not host:port`} {
		c.GRPCAddr = addr
		err := c.Validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("--grpc %q: %v, want %q", addr, err, want)
		}
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	h := newHarness(t)
	c = deployer.DefaultConfig()
	c.VerifyKeys, c.HTTPAuth, c.NATSURL, c.GRPCAddr = looptest.VerifyKeyFile(t), service.HTTPAuthNone, h.env.Server.URL, taken.Addr().String()
	proc, err := service.Connect(context.Background(), c.Config, "deployer-test", service.WithLogOutput(testLogOut()))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close(context.Background())
	svc, err := deployer.New(c, proc.Deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "--grpc "+taken.Addr().String()) {
		t.Errorf("Run on a taken --grpc: %v, want an error naming it", err)
	}
}
