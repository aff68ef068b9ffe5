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

// serverMetadata: the server's name, version and protocol extensions (none:
// binary tensor data, classification outputs and the like are refused).
func (s *Service) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, map[string]any{"name": ServerName, "version": serverVersion(), "extensions": []string{}})
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
	name := r.PathValue("name")
	if events.ValidatePipeline(name) != nil {
		return nil, nil, 0, notFoundf("unknown model %q", name)
	}
	if v := r.PathValue("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, nil, 0, notFoundf("unknown version %q of model %s: versions are numbers from 1", v, name)
		}
		version = n
	}
	rt = s.app.Routing(name)
	if rt == nil {
		known, err := s.app.Known(r.Context(), name)
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
	service.WriteJSON(w, http.StatusOK, map[string]any{
		"name": rt.Pipeline, "versions": versions, "platform": "gyre_" + m.Algorithm(),
		"inputs": inputs, "outputs": outputs, "parameters": params,
	})
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
// {"error"} naming what is wrong, 5xx when the model or the server failed.
func (s *Service) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := r.PathValue("name")
	pipeline, variant, code := "", "", http.StatusOK
	defer func() {
		// Only served models label the metrics: any name can be asked for.
		s.metrics.requests.WithLabelValues(pipeline, variant, strconv.Itoa(code)).Inc()
		s.metrics.duration.WithLabelValues(pipeline).Observe(time.Since(start).Seconds())
	}()
	fail := func(c int, format string, args ...any) {
		code = c
		writeError(w, c, format, args...)
	}
	rt, m, version, herr := s.resolve(r)
	if herr != nil {
		code = herr.code
		herr.write(w)
		return
	}
	pipeline = rt.Pipeline
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
	in, err := decodeInfer(body, m.InputNames)
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	req := serving.Request{
		Pipeline: name, Version: version, Columns: in.columns, Inputs: in.frame,
		// The pipeline's route header pins a caller to one canary variant.
		RoutingKey: r.Header.Get(s.app.RouteHeader(name)),
	}
	res, err := s.app.Infer(r.Context(), req)
	if err != nil {
		var bad *serving.InputError
		switch {
		case errors.As(err, &bad):
			fail(http.StatusBadRequest, "%v", err)
		case errors.Is(err, serving.ErrUnknownModel), errors.Is(err, serving.ErrUnknownVersion):
			fail(http.StatusNotFound, "%v", err)
		case errors.Is(err, serving.ErrModelFailed):
			fail(http.StatusInternalServerError, "%v", err)
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			// The client is gone; the status is for the metrics.
			fail(499, "%v", err)
		default:
			fail(http.StatusServiceUnavailable, "%v", err)
		}
		return
	}
	variant = string(res.Variant)
	out, err := appendInferResponse((*bp)[:0], res, in)
	*bp = out
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

var jsonContentType = []string{"application/json"}

// inferRequest is an Open Inference Protocol v2 inference request, decoded
// into what the serving application takes.
type inferRequest struct {
	id    string
	hasID bool
	// outputs asked for; all of them when none was.
	predict, probabilities, predictionID bool
	// asked is true when the request named its outputs.
	asked bool
	// columns are the inputs given, by name, and frame their rows.
	columns []string
	frame   *serving.Frame
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
	data           []byte
	params         []byte
}

// decodeInfer reads an inference request. Each input tensor is one raw
// feature column — shape [N] or [N, 1] — or, named as no input of the model,
// a [N, K] tensor of every column in the order of the model's inputs.
// Data is row-major, flat or nested as the shape; null is a missing value.
// inputs names the model's inputs; it is called only for a 2-D tensor.
func decodeInfer(body []byte, inputs func() []string) (*inferRequest, error) {
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
	if s.peek() != 0 {
		return nil, s.errorf("data after the JSON object")
	}
	if err := checkParams(params, "parameters", "binary_data_output"); err != nil {
		return nil, err
	}
	if !req.asked {
		req.predict, req.probabilities, req.predictionID = true, true, true
	}
	if len(tensors) == 0 {
		return nil, errors.New("inputs: empty; give one tensor per feature column, or one [N, K] tensor of them all")
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
	var seen *bool
	switch name {
	case OutputPredict:
		seen = &req.predict
	case OutputProbabilities:
		seen = &req.probabilities
	case OutputPredictionID:
		seen = &req.predictionID
	case "":
		return fmt.Errorf("outputs[%d]: no name (want %s, %s or %s)", i, OutputPredict, OutputProbabilities, OutputPredictionID)
	default:
		return fmt.Errorf("outputs: unknown output %q (want %s, %s or %s)", name, OutputPredict, OutputProbabilities, OutputPredictionID)
	}
	if *seen {
		return fmt.Errorf("outputs: %q asked for twice", name)
	}
	*seen = true
	return checkParams(params, fmt.Sprintf("outputs[%d].parameters", i), "binary_data", "classification")
}

// params reads a parameters object and returns its bytes.
func (s *scanner) params(field string) ([]byte, error) {
	if s.peek() != '{' {
		return nil, s.wrong(fmt.Errorf("%s: want an object", field))
	}
	return s.skip(0)
}

// checkParams refuses the parameters of protocol extensions the server
// does not have (binary tensor data, classification): a client asking for
// them would misread a plain JSON answer. false or null asks for nothing.
// Other parameters are the client's and are ignored.
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
				return fmt.Errorf("%s.%s: %s is not supported: this server answers in JSON only and lists no extension for it", field, key, val)
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
		case t.data == nil:
			return fmt.Errorf("input %q: no data", t.name)
		}
		if t.params != nil {
			if err := checkParams(t.params, fmt.Sprintf("input %q: parameters", t.name), "binary_data_size"); err != nil {
				return err
			}
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
		if total > len(t.data) {
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

// appendInferResponse appends the response: predict (class names, or
// values for a regressor), probabilities [N, classes] and prediction_id
// [N] — those the request asked for, all of them otherwise.
func appendInferResponse(dst []byte, res *serving.Result, req *inferRequest) ([]byte, error) {
	p := res.Predictions
	n := len(res.PredictionIDs)
	if req.asked && req.probabilities && p.Task == ml.Regression {
		return dst, fmt.Errorf("outputs: %q: a regression model has no probabilities", OutputProbabilities)
	}
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
	first := true
	open := func(name, datatype string, shape ...int) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, `{"name":"`...)
		dst = append(dst, name...)
		dst = append(dst, `","datatype":"`...)
		dst = append(dst, datatype...)
		dst = append(dst, `","shape":[`...)
		for i, d := range shape {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendInt(dst, int64(d), 10)
		}
		dst = append(dst, `],"data":[`...)
	}
	if req.predict {
		if p.Task == ml.Regression {
			open(OutputPredict, "FP64", n)
			for i, v := range p.Values {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendFloat(dst, v)
			}
		} else {
			open(OutputPredict, "BYTES", n)
			for i, l := range p.Labels {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONString(dst, l)
			}
		}
		dst = append(dst, "]}"...)
	}
	if req.probabilities && p.Task != ml.Regression {
		open(OutputProbabilities, "FP64", n, len(p.Classes))
		for i, row := range p.Proba {
			for k, v := range row {
				if i > 0 || k > 0 {
					dst = append(dst, ',')
				}
				dst = appendFloat(dst, v)
			}
		}
		dst = append(dst, "]}"...)
	}
	if req.predictionID {
		open(OutputPredictionID, "BYTES", n)
		for i, id := range res.PredictionIDs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, id)
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, "]}"...), nil
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
