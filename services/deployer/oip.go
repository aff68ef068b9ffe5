package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// DefaultMaxRequestBytes is the default bound of an inference request's
// body (Config.MaxRequestBytes).
const DefaultMaxRequestBytes = 64 << 20

// Output tensor names of an inference response.
const (
	OutputPredict       = "predict"
	OutputProbabilities = "probabilities"
	OutputPredictionID  = "prediction_id"
)

// ServerName is the name GET /v2 answers.
const ServerName = "gyre-deployer"

// routes registers the Open Inference Protocol v2 REST endpoints (KServe's
// "v2" protocol) and the deployment status. The model name is the
// pipeline's; its versions are the model versions loaded for it.
func (s *Service) routes() error {
	// Health is open (load balancers and KServe's clients probe it); what
	// reads models or deployments needs read, inference needs infer.
	routes := []struct {
		pattern string
		scope   service.Scope
		h       http.HandlerFunc
	}{
		{"GET /v2", service.ScopeRead, s.serverMetadata},
		{"GET /v2/health/live", service.ScopePublic, s.live},
		{"GET /v2/health/ready", service.ScopePublic, s.ready},
		{"GET /v2/models/{name}", service.ScopeRead, s.modelMetadata},
		{"GET /v2/models/{name}/versions/{version}", service.ScopeRead, s.modelMetadata},
		{"GET /v2/models/{name}/ready", service.ScopeRead, s.modelReady},
		{"GET /v2/models/{name}/versions/{version}/ready", service.ScopeRead, s.modelReady},
		{"POST /v2/models/{name}/infer", service.ScopeInfer, s.infer},
		{"POST /v2/models/{name}/versions/{version}/infer", service.ScopeInfer, s.infer},
		{"/v2/", service.ScopePublic, s.noRoute},
		{"GET /v1/deployments/{name}", service.ScopeRead, s.deployment},
	}
	for _, r := range routes {
		if err := s.rt.HandleScoped(r.pattern, r.scope, r.h); err != nil {
			return err
		}
	}
	return nil
}

// writeError answers {"error": "..."}.
func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	service.WriteJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func (s *Service) noRoute(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/infer") {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "%s %s: inference takes POST", r.Method, r.URL.Path)
		return
	}
	writeError(w, http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
}

// serverVersion is the deployer's module version, or "devel".
var serverVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
})

// ExtensionBinaryTensorData is the name of Triton's binary tensor data
// extension of the REST protocol, as GET /v2 and ServerMetadata list it.
const ExtensionBinaryTensorData = "binary_tensor_data"

// serverExtensions are the protocol extensions the server has: binary
// tensor data (REST; gRPC has raw contents of its own). Classification
// outputs and the like are refused.
var serverExtensions = []string{ExtensionBinaryTensorData}

// serverMetadata: the server's name, version and protocol extensions.
func (s *Service) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, map[string]any{"name": ServerName, "version": serverVersion(), "extensions": serverExtensions})
}

func (s *Service) live(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, map[string]bool{"live": true})
}

// ready: the server is ready once every deployment record is in force on
// it — what served before it started, and each rollout step since.
func (s *Service) ready(w http.ResponseWriter, _ *http.Request) {
	code := http.StatusOK
	if ok, _ := s.app.Ready(); !ok {
		code = http.StatusServiceUnavailable
	}
	service.WriteJSON(w, code, map[string]bool{"ready": code == http.StatusOK})
}

// httpError is an answer that is not a model's: a status and its message.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) write(w http.ResponseWriter) { writeError(w, e.code, "%s", e.msg) }

func notFoundf(format string, args ...any) *httpError {
	return &httpError{code: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

// resolve finds the model of a request: the routing in force and the model
// a versioned path names (with its version), or the one answering routed
// traffic (version 0).
func (s *Service) resolve(r *http.Request) (rt *serving.Routing, m *serving.Model, version int64, herr *httpError) {
	return s.resolveModel(r.Context(), r.PathValue("name"), r.PathValue("version"))
}

// resolveModel finds the model a request names, over REST or gRPC: the
// routing in force and the model of version v (its number), or, v empty,
// the one answering routed traffic (version 0).
func (s *Service) resolveModel(ctx context.Context, name, v string) (rt *serving.Routing, m *serving.Model, version int64, herr *httpError) {
	if events.ValidatePipeline(name) != nil {
		return nil, nil, 0, notFoundf("unknown model %q", name)
	}
	if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, nil, 0, notFoundf("unknown version %q of model %s: versions are numbers from 1", v, name)
		}
		version = n
	}
	rt = s.app.Routing(name)
	if rt == nil {
		known, err := s.app.Known(ctx, name)
		switch {
		case err != nil:
			return nil, nil, 0, &httpError{code: http.StatusServiceUnavailable, msg: fmt.Sprintf("model %s: %v", name, err)}
		case !known:
			return nil, nil, 0, notFoundf("unknown model %q", name)
		default:
			return nil, nil, 0, &httpError{code: http.StatusServiceUnavailable, msg: fmt.Sprintf("no model deployed for %s yet", name)}
		}
	}
	if version == 0 {
		return rt, rt.Serving(), 0, nil
	}
	for _, c := range []*serving.Model{rt.Champion, rt.Candidate, rt.Mirror} {
		if c != nil && c.Version == version {
			return rt, c, version, nil
		}
	}
	return nil, nil, 0, notFoundf("version %d of model %s does not serve (serving %v)", version, name, rt.Versions())
}

type tensorMetadata struct {
	Name     string `json:"name"`
	Datatype string `json:"datatype"`
	Shape    []int  `json:"shape"`
}

// modelMeta is a model's metadata, as REST and gRPC answer it.
type modelMeta struct {
	name, platform  string
	versions        []string
	inputs, outputs []tensorMetadata
	// params are REST's only: the gRPC message has no field for them.
	params map[string]any
}

// modelMetadata describes a model from its artifact's signature: its raw
// feature columns as inputs (FP64 for numbers, BYTES for text, shape [-1]:
// one value per row), its outputs, and in parameters the task, classes,
// the 2-D form of the inputs and how requests are batched.
func (s *Service) modelMetadata(w http.ResponseWriter, r *http.Request) {
	rt, m, _, herr := s.resolve(r)
	if herr != nil {
		herr.write(w)
		return
	}
	md := metadataOf(rt, m)
	service.WriteJSON(w, http.StatusOK, map[string]any{
		"name": md.name, "versions": md.versions, "platform": md.platform,
		"inputs": md.inputs, "outputs": md.outputs, "parameters": md.params,
	})
}

// metadataOf is the metadata of model m under the routing rt.
func metadataOf(rt *serving.Routing, m *serving.Model) modelMeta {
	var inputs []tensorMetadata
	var columns []string
	matrix := "FP64"
	for _, in := range m.Inputs() {
		dt := "BYTES"
		if in.Numeric {
			dt = "FP64"
		} else {
			matrix = "BYTES"
		}
		inputs = append(inputs, tensorMetadata{Name: in.Name, Datatype: dt, Shape: []int{-1}})
		columns = append(columns, in.Name)
	}
	outputs := []tensorMetadata{{Name: OutputPredict, Datatype: "BYTES", Shape: []int{-1}}}
	maxRows, delay := m.Batching()
	calls, scored := m.BatchStats()
	params := map[string]any{
		"task": m.Task(), "deployment_id": rt.DeploymentID,
		// Every input in one tensor: its columns in the inputs' order.
		"input_matrix": map[string]any{"shape": []int{-1, len(columns)}, "datatype": matrix, "columns": columns},
		"batching": map[string]any{
			"max_batch_size": maxRows, "max_queue_delay_ms": float64(delay) / float64(time.Millisecond),
			"model_calls": calls, "rows_scored": scored,
		},
	}
	if m.Task() == ml.Regression {
		outputs[0].Datatype = "FP64"
	} else {
		outputs = append(outputs, tensorMetadata{Name: OutputProbabilities, Datatype: "FP64", Shape: []int{-1, len(m.Classes())}})
		params["classes"] = m.Classes()
	}
	outputs = append(outputs, tensorMetadata{Name: OutputPredictionID, Datatype: "BYTES", Shape: []int{-1}})
	var versions []string
	for _, v := range rt.Versions() {
		versions = append(versions, strconv.FormatInt(v, 10))
	}
	return modelMeta{name: rt.Pipeline, versions: versions, platform: "gyre_" + m.Algorithm(),
		inputs: inputs, outputs: outputs, params: params}
}

// modelReady: 200 {"name", "ready": true} when a model serves, 503
// {"name", "ready": false, "error"} when the pipeline has none yet, 404 when
// there is no such model or version.
func (s *Service) modelReady(w http.ResponseWriter, r *http.Request) {
	rt, _, _, herr := s.resolve(r)
	switch {
	case herr == nil:
		service.WriteJSON(w, http.StatusOK, map[string]any{"name": rt.Pipeline, "ready": true})
	case herr.code == http.StatusServiceUnavailable:
		service.WriteJSON(w, herr.code, map[string]any{"name": r.PathValue("name"), "ready": false, "error": herr.msg})
	default:
		herr.write(w)
	}
}

// bodies recycles request and response buffers.
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBody keeps large buffers out of the pool.
const maxPooledBody = 1 << 20

// errTooLarge is a body over the limit.
var errTooLarge = errors.New("request body too large")

// readBody reads a request's body into buf, up to limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, buf []byte) ([]byte, error) {
	if r.ContentLength > limit {
		return buf, errTooLarge
	}
	if r.ContentLength > int64(cap(buf)) {
		buf = make([]byte, 0, r.ContentLength)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return buf, errTooLarge
			}
			return buf, fmt.Errorf("reading the request body: %w", err)
		}
	}
}

// infer answers POST /v2/models/{name}[/versions/{version}]/infer: the
// request's tensors become one typed column per feature, the serving
// application scores them (routing them to a variant unless the path names
// a version), and the outputs asked for are written back. Errors are 4xx
// with a JSON body naming what is wrong. A request with the header
// Inference-Header-Content-Length carries binary tensor data after its
// JSON (Triton's binary tensor data extension), and outputs asked for in
// binary follow the JSON of the response the same way.
func (s *Service) infer(w http.ResponseWriter, r *http.Request) {
	ob := s.observeInfer()
	defer ob.done()
	fail := func(c int, format string, args ...any) {
		ob.code = c
		writeError(w, c, format, args...)
	}
	rt, m, version, herr := s.resolve(r)
	if herr != nil {
		ob.code = herr.code
		herr.write(w)
		return
	}
	ob.pipeline = rt.Pipeline
	bp := bodies.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBody {
			*bp = (*bp)[:0]
			bodies.Put(bp)
		}
	}()
	body, err := readBody(w, r, int64(s.cfg.MaxRequestBytes), (*bp)[:0])
	*bp = body
	switch {
	case errors.Is(err, errTooLarge):
		fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", s.cfg.MaxRequestBytes)
		return
	case err != nil:
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	in, err := decodeInferHTTP(body, r.Header, m.InputNames)
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	name := r.PathValue("name")
	// The pipeline's route header pins a caller to one canary variant.
	res, herr := s.score(r.Context(), name, version, in, r.Header.Get(s.app.RouteHeader(name)))
	if herr != nil {
		fail(herr.code, "%s", herr.msg)
		return
	}
	ob.variant = string(res.Variant)
	out, jsonLen, err := appendInferResponse((*bp)[:0], res, in)
	*bp = out
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	h := w.Header()
	if jsonLen < len(out) {
		h["Content-Type"] = octetContentType
		h[headerInferenceLength] = []string{strconv.Itoa(jsonLen)}
	} else {
		h["Content-Type"] = jsonContentType
	}
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

var (
	jsonContentType  = []string{"application/json"}
	octetContentType = []string{"application/octet-stream"}
)

// inferObservation is what the metrics record of one inference, whatever
// its transport: the pipeline and variant that served it (only served
// models label the metrics: any name can be asked for) and its status as
// REST would answer it (a gRPC call is counted under the same codes).
type inferObservation struct {
	s                 *Service
	start             time.Time
	pipeline, variant string
	code              int
}

func (s *Service) observeInfer() *inferObservation {
	return &inferObservation{s: s, start: time.Now(), code: http.StatusOK}
}

func (o *inferObservation) done() {
	o.s.metrics.requests.WithLabelValues(o.pipeline, o.variant, strconv.Itoa(o.code)).Inc()
	o.s.metrics.duration.WithLabelValues(o.pipeline).Observe(time.Since(o.start).Seconds())
}

// score runs a decoded inference request through the serving application
// — routing, the champion and candidate, rollouts and the prediction log
// are all there — for REST and gRPC alike. The error's code is the REST
// status of the failure.
func (s *Service) score(ctx context.Context, name string, version int64, in *inferRequest, routingKey string) (*serving.Result, *httpError) {
	req := serving.Request{
		Pipeline: name, Version: version, Columns: in.columns, Inputs: in.frame,
		RoutingKey: routingKey,
	}
	res, err := s.app.Infer(ctx, req)
	if err == nil {
		return res, nil
	}
	var bad *serving.InputError
	code := http.StatusServiceUnavailable
	switch {
	case errors.As(err, &bad):
		code = http.StatusBadRequest
	case errors.Is(err, serving.ErrUnknownModel), errors.Is(err, serving.ErrUnknownVersion):
		code = http.StatusNotFound
	case errors.Is(err, serving.ErrModelFailed):
		code = http.StatusInternalServerError
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client is gone; the status is for the metrics.
		code = statusClientGone
	}
	return nil, &httpError{code: code, msg: err.Error()}
}

// statusClientGone is the status of a request whose client left (nginx's
// 499), for the metrics.
const statusClientGone = 499

// The outputs of an inference response, in the order they are written.
const (
	outPredict = iota
	outProbabilities
	outPredictionID
	numOutputs
)

var outputNames = [numOutputs]string{OutputPredict, OutputProbabilities, OutputPredictionID}

// inferRequest is an Open Inference Protocol v2 inference request, decoded
// into what the serving application takes.
type inferRequest struct {
	id    string
	hasID bool
	// want are the outputs asked for; all of them when none was.
	want [numOutputs]bool
	// binary are the outputs to answer in binary: the binary tensor data
	// extension over REST, raw_output_contents over gRPC.
	binary [numOutputs]bool
	// asked is true when the request named its outputs.
	asked bool
	// binarySet are the outputs whose own parameters said binary_data.
	binarySet [numOutputs]bool
	// columns are the inputs given, by name, and frame their rows.
	columns []string
	frame   *serving.Frame
}

// ask records that the request named output name (its i-th): binary is
// its binary_data parameter when set is true.
func (req *inferRequest) ask(i int, name string, binary, set bool) error {
	k := -1
	for j, n := range outputNames {
		if n == name {
			k = j
		}
	}
	switch {
	case name == "":
		return fmt.Errorf("outputs[%d]: no name (want %s, %s or %s)", i, OutputPredict, OutputProbabilities, OutputPredictionID)
	case k < 0:
		return fmt.Errorf("outputs: unknown output %q (want %s, %s or %s)", name, OutputPredict, OutputProbabilities, OutputPredictionID)
	case req.want[k]:
		return fmt.Errorf("outputs: %q asked for twice", name)
	}
	req.asked = true
	req.want[k] = true
	req.binary[k], req.binarySet[k] = binary, set
	return nil
}

// settle fills in the outputs once the request is read: all of them when
// it named none, and binary where its own parameters did not say, as
// binaryOutput (the request's binary_data_output).
func (req *inferRequest) settle(binaryOutput bool) {
	for k := range numOutputs {
		if !req.asked {
			req.want[k] = true
		}
		if !req.binarySet[k] {
			req.binary[k] = binaryOutput
		}
	}
}

// anyBinary reports whether an output asked for is to be answered in
// binary.
func (req *inferRequest) anyBinary() bool {
	for k := range numOutputs {
		if req.want[k] && req.binary[k] {
			return true
		}
	}
	return false
}

// maxRows bounds the rows of one request.
const maxRows = 1_000_000

// datatype is a tensor datatype the server takes.
type datatype struct {
	kind byte // 'f' float, 'i' signed, 'u' unsigned, 'b' bool, 's' bytes
	bits int
}

// datatypes are the Open Inference Protocol's, but BF16 (no JSON form).
const datatypes = "BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64 or BYTES"

func lookupDatatype(s string) (datatype, bool) {
	switch s {
	case "BOOL":
		return datatype{'b', 1}, true
	case "INT8":
		return datatype{'i', 8}, true
	case "INT16":
		return datatype{'i', 16}, true
	case "INT32":
		return datatype{'i', 32}, true
	case "INT64":
		return datatype{'i', 64}, true
	case "UINT8":
		return datatype{'u', 8}, true
	case "UINT16":
		return datatype{'u', 16}, true
	case "UINT32":
		return datatype{'u', 32}, true
	case "UINT64":
		return datatype{'u', 64}, true
	case "FP16":
		return datatype{'f', 16}, true
	case "FP32":
		return datatype{'f', 32}, true
	case "FP64":
		return datatype{'f', 64}, true
	case "BYTES":
		return datatype{'s', 0}, true
	}
	return datatype{}, false
}

// tensor is an input tensor as read, its data not yet decoded.
type tensor struct {
	name, datatype string
	shape          []int64
	hasShape       bool
	// data is the tensor's JSON data array; src its data given otherwise
	// (binary, or gRPC's contents), nil for JSON.
	data   []byte
	src    tensorSource
	params []byte
}

// tensorSource is a tensor's data given other than as JSON: raw
// little-endian bytes (the binary tensor data extension, gRPC's
// raw_input_contents) or gRPC's typed contents.
type tensorSource interface {
	// check fails unless the source holds total values of dt (named
	// name), before anything is allocated for them.
	check(dt datatype, name string, total int) error
	// fill calls num (numeric and BOOL datatypes: the value as a float64)
	// or text (BYTES) with each value's row-major index.
	fill(dt datatype, name string, total int, num func(idx int, v float64), text func(idx int, v string)) error
}

// headerInferenceLength is the header of the binary tensor data extension:
// the length of the JSON that opens a body, binary tensor data following.
const headerInferenceLength = "Inference-Header-Content-Length"

// decodeInferHTTP reads a REST inference request: JSON, or, with the
// header Inference-Header-Content-Length, that many bytes of JSON and the
// binary data of the tensors that give binary_data_size.
func decodeInferHTTP(body []byte, h http.Header, inputs func() []string) (*inferRequest, error) {
	v := h.Values(headerInferenceLength)
	if len(v) == 0 {
		return decodeInfer(body, inputs)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64)
	if len(v) > 1 || err != nil || n < 0 || n > int64(len(body)) {
		return nil, fmt.Errorf("header %s: %q is not the length of the JSON that opens the body (0 to %d bytes)", headerInferenceLength, strings.Join(v, ", "), len(body))
	}
	return decodeInferParts(body[:n], body[n:], true, inputs)
}

// decodeInfer reads an inference request. Each input tensor is one raw
// feature column — shape [N] or [N, 1] — or, named as no input of the model,
// a [N, K] tensor of every column in the order of the model's inputs.
// Data is row-major, flat or nested as the shape; null is a missing value.
// inputs names the model's inputs; it is called only for a 2-D tensor.
func decodeInfer(body []byte, inputs func() []string) (*inferRequest, error) {
	return decodeInferParts(body, nil, false, inputs)
}

// decodeInferParts reads an inference request whose JSON is body; with
// binary (the request had Inference-Header-Content-Length), bin is the
// binary data that followed it: each tensor with a binary_data_size
// parameter takes that many bytes of it, in the order of the inputs.
func decodeInferParts(body, bin []byte, binary bool, inputs func() []string) (*inferRequest, error) {
	s := &scanner{b: body}
	if s.peek() != '{' {
		return nil, s.unexpected("a JSON object")
	}
	req := &inferRequest{}
	var tensors []tensor
	var params []byte
	err := s.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "id":
			if s.peek() != '"' {
				return s.wrong(errors.New("id: want a string"))
			}
			req.id, err = s.str()
			req.hasID = true
		case "parameters":
			params, err = s.params("parameters")
		case "inputs":
			if s.peek() != '[' {
				return s.wrong(errors.New("inputs: want an array of tensors"))
			}
			tensors = tensors[:0]
			err = s.array(func(i int) error {
				t, err := s.tensor(i)
				tensors = append(tensors, t)
				return err
			})
		case "outputs":
			if s.peek() != '[' {
				return s.wrong(errors.New("outputs: want an array of {\"name\"}"))
			}
			req.asked = true
			err = s.array(func(i int) error { return s.output(i, req) })
		default:
			_, err = s.skip(0)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if s.ws(); s.i < len(s.b) {
		// A NUL byte is data too (peek would take it for the end).
		if !binary {
			// Binary tensor data needs Inference-Header-Content-Length.
			return nil, s.errorf("data after the JSON object")
		}
		return nil, s.errorf("data after the JSON object, within its %s", headerInferenceLength)
	}
	binaryOutput, _, err := paramFlag(params, "parameters", "binary_data_output")
	if err != nil {
		return nil, err
	}
	req.settle(binaryOutput)
	if len(tensors) == 0 {
		return nil, errors.New("inputs: empty; give one tensor per feature column, or one [N, K] tensor of them all")
	}
	if err := binaryInputs(tensors, bin, binary); err != nil {
		return nil, err
	}
	if err := req.decodeTensors(tensors, inputs); err != nil {
		return nil, err
	}
	return req, nil
}

// tensor reads an input tensor object.
func (s *scanner) tensor(i int) (tensor, error) {
	var t tensor
	if s.peek() != '{' {
		return t, s.wrong(fmt.Errorf("inputs[%d]: want a tensor object {name, shape, datatype, data}", i))
	}
	err := s.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "name", "datatype":
			if s.peek() != '"' {
				return s.wrong(fmt.Errorf("inputs[%d].%s: want a string", i, key))
			}
			var v string
			if v, err = s.str(); string(key) == "name" {
				t.name = v
			} else {
				t.datatype = v
			}
		case "shape":
			if s.peek() != '[' {
				return s.wrong(fmt.Errorf("inputs[%d].shape: want an array of sizes", i))
			}
			t.hasShape = true
			err = s.array(func(int) error {
				at := s.i
				num, err := s.number()
				if err != nil {
					return fmt.Errorf("inputs[%d].shape: %w", i, err)
				}
				v, perr := strconv.ParseInt(unsafeString(num), 10, 64)
				if perr != nil || v < 0 {
					s.i = at
					return fmt.Errorf("inputs[%d].shape: %s is not a size (a whole number from 0)", i, num)
				}
				t.shape = append(t.shape, v)
				return nil
			})
		case "parameters":
			t.params, err = s.params(fmt.Sprintf("inputs[%d].parameters", i))
		case "data":
			t.data, err = s.skip(1)
		default:
			_, err = s.skip(0)
		}
		return err
	})
	return t, err
}

// output reads a requested output object.
func (s *scanner) output(i int, req *inferRequest) error {
	if s.peek() != '{' {
		return s.wrong(fmt.Errorf("outputs[%d]: want an object {\"name\"}", i))
	}
	var name string
	var params []byte
	err := s.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "name":
			if s.peek() != '"' {
				return s.wrong(fmt.Errorf("outputs[%d].name: want a string", i))
			}
			name, err = s.str()
		case "parameters":
			params, err = s.params(fmt.Sprintf("outputs[%d].parameters", i))
		default:
			_, err = s.skip(0)
		}
		return err
	})
	if err != nil {
		return err
	}
	field := fmt.Sprintf("outputs[%d].parameters", i)
	if err := checkParams(params, field, "classification"); err != nil {
		return err
	}
	binary, set, err := paramFlag(params, field, "binary_data")
	if err != nil {
		return err
	}
	return req.ask(i, name, binary, set)
}

// params reads a parameters object and returns its bytes.
func (s *scanner) params(field string) ([]byte, error) {
	if s.peek() != '{' {
		return nil, s.wrong(fmt.Errorf("%s: want an object", field))
	}
	return s.skip(0)
}

// checkParams refuses the parameters of protocol extensions the server
// does not have (classification): a client asking for them would misread
// the answer. false or null asks for nothing. Other parameters are the
// client's and are ignored.
func checkParams(raw []byte, field string, refused ...string) error {
	if len(raw) == 0 {
		return nil
	}
	s := &scanner{b: raw}
	return s.object(func(key []byte) error {
		v, err := s.skip(0)
		if err != nil {
			return err
		}
		for _, r := range refused {
			if string(key) != r {
				continue
			}
			if val := string(v); val != "false" && val != "null" && val != "0" {
				return fmt.Errorf("%s.%s: %s is not supported: this server lists no extension for it (it has %s)", field, key, val, strings.Join(serverExtensions, ", "))
			}
		}
		return nil
	})
}

// decodeTensors checks the tensors and decodes their data into typed
// columns.
func (req *inferRequest) decodeTensors(tensors []tensor, inputs func() []string) error {
	var names []string // the model's inputs, read for a 2-D tensor only
	modelInputs := func() []string {
		if names == nil {
			names = inputs()
		}
		return names
	}
	rows := -1
	f := &serving.Frame{Columns: make([]serving.Column, 0, len(tensors))}
	req.columns = make([]string, 0, len(tensors))
	for j := range tensors {
		t := &tensors[j]
		if t.name == "" {
			return fmt.Errorf("inputs[%d]: no name", j)
		}
		for _, o := range tensors[:j] {
			if o.name == t.name {
				return fmt.Errorf("input %q: given twice", t.name)
			}
		}
		dt, ok := lookupDatatype(t.datatype)
		switch {
		case t.datatype == "":
			return fmt.Errorf("input %q: no datatype (want %s)", t.name, datatypes)
		case !ok:
			return fmt.Errorf("input %q: datatype %q is not supported (want %s)", t.name, t.datatype, datatypes)
		case !t.hasShape:
			return fmt.Errorf("input %q: no shape (want [N], one value per row)", t.name)
		case t.data == nil && t.src == nil:
			return fmt.Errorf("input %q: no data", t.name)
		}
		// A 2-D tensor named as no model input holds every column.
		width := 1
		var colNames []string
		switch {
		case len(t.shape) == 2 && !contains(modelInputs(), t.name):
			if len(tensors) > 1 {
				return fmt.Errorf("input %q: a [N, K] tensor carries every input of the model; give no other tensor", t.name)
			}
			if t.shape[1] != int64(len(modelInputs())) {
				return fmt.Errorf("input %q: shape %v: a [N, K] tensor has one column per model input, K = %d (%s)",
					t.name, t.shape, len(modelInputs()), strings.Join(modelInputs(), ", "))
			}
			width, colNames = len(modelInputs()), modelInputs()
			f.Columns = slices.Grow(f.Columns, width)
			req.columns = slices.Grow(req.columns, width)
		case len(t.shape) == 1 || len(t.shape) == 2 && t.shape[1] == 1:
			colNames = []string{t.name}
		default:
			return fmt.Errorf("input %q: shape %v: want [N] or [N, 1], one value per row", t.name, t.shape)
		}
		n := t.shape[0]
		if n > maxRows {
			return fmt.Errorf("input %q: shape %v: at most %d rows", t.name, t.shape, maxRows)
		}
		if rows >= 0 && int(n) != rows {
			return fmt.Errorf("input %q: %d rows, but input %q has %d; every input needs one value per row", t.name, n, tensors[0].name, rows)
		}
		rows = int(n)
		total := int(n) * width
		if t.src != nil {
			if err := t.src.check(dt, t.datatype, total); err != nil {
				return fmt.Errorf("input %q: %w", t.name, err)
			}
		} else if total > len(t.data) {
			// Each value takes a byte at least: count them, and fail.
			err := tensorData(t.data, t.shape, total, func(int, token) error { return nil })
			return fmt.Errorf("input %q: %w", t.name, err)
		}
		start := len(f.Columns)
		// One allocation holds every column of the tensor.
		var nums []float64
		var texts []string
		if dt.kind == 's' {
			texts = make([]string, total)
		} else {
			nums = make([]float64, total)
		}
		for k, c := range colNames {
			col := serving.Column{Name: c, Bool: dt.kind == 'b'}
			lo, hi := k*int(n), (k+1)*int(n)
			if dt.kind == 's' {
				col.Text = texts[lo:hi:hi]
			} else {
				col.Numbers = nums[lo:hi:hi]
			}
			f.Columns = append(f.Columns, col)
			req.columns = append(req.columns, c)
		}
		cols := f.Columns[start:]
		if t.src != nil {
			err := t.src.fill(dt, t.datatype, total,
				func(idx int, v float64) { cols[idx%width].Numbers[idx/width] = v },
				func(idx int, v string) { cols[idx%width].Text[idx/width] = v })
			if err != nil {
				return fmt.Errorf("input %q: %w", t.name, err)
			}
			continue
		}
		err := tensorData(t.data, t.shape, total, func(idx int, tok token) error {
			c := &cols[idx%width]
			i := idx / width
			if dt.kind == 's' {
				v, missing, err := bytesValue(tok)
				if err != nil {
					return fmt.Errorf("data[%d]: %w", idx, err)
				}
				if missing {
					if c.Missing == nil {
						c.Missing = make([]bool, n)
					}
					c.Missing[i] = true
				}
				c.Text[i] = v
				return nil
			}
			x, err := numberValue(dt, t.datatype, tok)
			if err != nil {
				return fmt.Errorf("data[%d]: %w", idx, err)
			}
			c.Numbers[i] = x
			return nil
		})
		if err != nil {
			return fmt.Errorf("input %q: %w", t.name, err)
		}
	}
	f.Rows = rows
	req.frame = f
	return nil
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// bytesValue reads a BYTES element: a string, or null (missing).
func bytesValue(t token) (string, bool, error) {
	switch t.kind {
	case 's':
		if !t.escaped {
			return string(t.raw), false, nil
		}
		quoted := make([]byte, 0, len(t.raw)+2)
		quoted = append(append(append(quoted, '"'), t.raw...), '"')
		v, err := (&scanner{b: quoted}).str()
		return v, false, err
	case '0':
		return "", true, nil
	}
	return "", false, fmt.Errorf("%s is not a string (datatype BYTES)", t.text())
}

// numberValue reads an element of a numeric or BOOL tensor as a float64
// (NaN for null, a missing value), checking it fits its datatype. Integers
// beyond 2^53 lose precision, as the models compute in float64.
func numberValue(dt datatype, name string, t token) (float64, error) {
	if t.kind == '0' {
		return math.NaN(), nil
	}
	if dt.kind == 'b' {
		switch t.kind {
		case 't':
			return 1, nil
		case 'f':
			return 0, nil
		}
		return 0, fmt.Errorf("%s is not true or false (datatype BOOL)", t.text())
	}
	if t.kind != 'n' {
		return 0, fmt.Errorf("%s is not a number (datatype %s)", t.text(), name)
	}
	text := unsafeString(t.raw)
	switch dt.kind {
	case 'i':
		v, err := strconv.ParseInt(text, 10, dt.bits)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				lo, hi := int64(-1)<<(dt.bits-1), int64(1)<<(dt.bits-1)-1
				return 0, fmt.Errorf("%s is out of range for %s (%d to %d)", t.raw, name, lo, hi)
			}
			return 0, fmt.Errorf("%s is not an integer of datatype %s", t.raw, name)
		}
		return float64(v), nil
	case 'u':
		v, err := strconv.ParseUint(text, 10, dt.bits)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) || text[0] == '-' && !strings.ContainsAny(text, ".eE") {
				return 0, fmt.Errorf("%s is out of range for %s (0 to %d)", t.raw, name, uint64(1)<<dt.bits-1)
			}
			return 0, fmt.Errorf("%s is not an integer of datatype %s", t.raw, name)
		}
		return float64(v), nil
	}
	v, err := strconv.ParseFloat(text, 64)
	limit := math.MaxFloat64
	switch dt.bits {
	case 16:
		limit = 65504
	case 32:
		limit = math.MaxFloat32
	}
	if err != nil || math.Abs(v) > limit {
		return 0, fmt.Errorf("%s is out of range for %s", t.raw, name)
	}
	return v, nil
}

// checkOutputs fails when the request asked for an output the model does
// not have.
func (req *inferRequest) checkOutputs(task ml.Task) error {
	if req.asked && req.want[outProbabilities] && task == ml.Regression {
		return fmt.Errorf("outputs: %q: a regression model has no probabilities", OutputProbabilities)
	}
	return nil
}

// outputs lists the outputs of a response: those asked for that the model
// has, in the order they are written.
func (req *inferRequest) outputs(task ml.Task) []int {
	out := make([]int, 0, numOutputs)
	for k := range numOutputs {
		if req.want[k] && (k != outProbabilities || task != ml.Regression) {
			out = append(out, k)
		}
	}
	return out
}

// outputTensor describes output k of a result: its datatype and shape.
func outputTensor(k int, res *serving.Result) (datatype string, shape []int) {
	p := res.Predictions
	n := len(res.PredictionIDs)
	switch k {
	case outPredict:
		if p.Task == ml.Regression {
			return "FP64", []int{n}
		}
		return "BYTES", []int{n}
	case outProbabilities:
		return "FP64", []int{n, len(p.Classes)}
	}
	return "BYTES", []int{n}
}

// appendRawOutput appends output k of a result in the binary form of the
// protocol (REST's binary tensor data, gRPC's raw_output_contents):
// little-endian FP64, or BYTES as a 4-byte little-endian length and the
// bytes of each element.
func appendRawOutput(dst []byte, k int, res *serving.Result) []byte {
	p := res.Predictions
	switch {
	case k == outPredict && p.Task == ml.Regression:
		return appendRawFloats(dst, p.Values)
	case k == outPredict:
		return appendRawStrings(dst, p.Labels)
	case k == outProbabilities:
		for _, row := range p.Proba {
			dst = appendRawFloats(dst, row)
		}
		return dst
	}
	return appendRawStrings(dst, res.PredictionIDs)
}

// rawOutputSize is the length of appendRawOutput's bytes.
func rawOutputSize(k int, res *serving.Result) int {
	p := res.Predictions
	switch {
	case k == outPredict && p.Task == ml.Regression:
		return 8 * len(p.Values)
	case k == outPredict:
		return rawStringsSize(p.Labels)
	case k == outProbabilities:
		return 8 * len(p.Proba) * len(p.Classes)
	}
	return rawStringsSize(res.PredictionIDs)
}

// appendInferResponse appends the response: predict (class names, or
// values for a regressor), probabilities [N, classes] and prediction_id
// [N] — those the request asked for, all of them otherwise. An output
// asked for in binary gives its binary_data_size in parameters, and its
// bytes follow the JSON, in the order of the outputs: jsonLen is the
// length of the JSON (Inference-Header-Content-Length), len(out) when no
// output is binary.
func appendInferResponse(dst []byte, res *serving.Result, req *inferRequest) (out []byte, jsonLen int, err error) {
	p := res.Predictions
	if err := req.checkOutputs(p.Task); err != nil {
		return dst, 0, err
	}
	start := len(dst)
	dst = append(dst, `{"model_name":`...)
	dst = appendJSONString(dst, res.Pipeline)
	dst = append(dst, `,"model_version":"`...)
	dst = strconv.AppendInt(dst, res.Model.Version, 10)
	dst = append(dst, '"')
	if req.hasID {
		dst = append(dst, `,"id":`...)
		dst = appendJSONString(dst, req.id)
	}
	dst = append(dst, `,"parameters":{"deployment_id":`...)
	dst = appendJSONString(dst, res.DeploymentID)
	dst = append(dst, `,"variant":`...)
	dst = appendJSONString(dst, string(res.Variant))
	dst = append(dst, `},"outputs":[`...)
	outputs := req.outputs(p.Task)
	binary := false
	for i, k := range outputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		datatype, shape := outputTensor(k, res)
		dst = append(dst, `{"name":"`...)
		dst = append(dst, outputNames[k]...)
		dst = append(dst, `","datatype":"`...)
		dst = append(dst, datatype...)
		dst = append(dst, `","shape":[`...)
		for i, d := range shape {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(d), 10)
		}
		if req.binary[k] {
			binary = true
			dst = append(dst, `],"parameters":{"binary_data_size":`...)
			dst = strconv.AppendInt(dst, int64(rawOutputSize(k, res)), 10)
			dst = append(dst, "}}"...)
			continue
		}
		dst = append(dst, `],"data":[`...)
		dst = appendJSONData(dst, k, res)
		dst = append(dst, "]}"...)
	}
	dst = append(dst, "]}"...)
	jsonLen = len(dst) - start
	if binary {
		for _, k := range outputs {
			if req.binary[k] {
				dst = appendRawOutput(dst, k, res)
			}
		}
	}
	return dst, jsonLen, nil
}

// appendJSONData appends the elements of output k, comma-separated.
func appendJSONData(dst []byte, k int, res *serving.Result) []byte {
	p := res.Predictions
	switch {
	case k == outPredict && p.Task == ml.Regression:
		for i, v := range p.Values {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendFloat(dst, v)
		}
	case k == outPredict:
		for i, l := range p.Labels {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, l)
		}
	case k == outProbabilities:
		for i, row := range p.Proba {
			for j, v := range row {
				if i > 0 || j > 0 {
					dst = append(dst, ',')
				}
				dst = appendFloat(dst, v)
			}
		}
	default:
		for i, id := range res.PredictionIDs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, id)
		}
	}
	return dst
}

// deployment answers a pipeline's deployment record and, while a rollout
// (canary, shadow or blue-green) is judged, the counts of the step in force
// under "rollout".
func (s *Service) deployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rec, servingVersions, rollout, ok := s.app.DeploymentStatus(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no deployment of %q", name)
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"deployment": rec, "serving": servingVersions, "rollout": rollout})
}
