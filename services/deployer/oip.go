package deployer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// RoutingKeyHeader makes a client's canary assignment sticky: requests with
// the same key go to the same variant throughout a rollout.
const RoutingKeyHeader = "X-Gyre-Routing-Key"

// MaxRequestBytes bounds an inference request's body.
const MaxRequestBytes = 64 << 20

// Output tensor names of an inference response.
const (
	OutputPredict       = "predict"
	OutputProbabilities = "probabilities"
	OutputPredictionID  = "prediction_id"
)

// routes registers the Open Inference Protocol v2 REST endpoints (KServe's
// "v2" protocol) and the deployment status. The model name is the
// pipeline's.
func (s *Service) routes() error {
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /v2", s.serverMetadata},
		{"GET /v2/health/live", s.live},
		{"GET /v2/health/ready", s.ready},
		{"GET /v2/models/{name}", s.modelMetadata},
		{"GET /v2/models/{name}/versions/{version}", s.modelMetadata},
		{"GET /v2/models/{name}/ready", s.modelReady},
		{"GET /v2/models/{name}/versions/{version}/ready", s.modelReady},
		{"POST /v2/models/{name}/infer", s.infer},
		{"POST /v2/models/{name}/versions/{version}/infer", s.infer},
		{"/v2/", s.noRoute},
		{"GET /v1/deployments/{name}", s.deployment},
	}
	for _, r := range routes {
		if err := s.rt.Handle(r.pattern, r.h); err != nil {
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

func (s *Service) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, map[string]any{"name": "gyre-deployer", "version": "v2", "extensions": []string{}})
}

func (s *Service) live(w http.ResponseWriter, _ *http.Request) {
	service.WriteJSON(w, http.StatusOK, map[string]bool{"live": true})
}

// ready: the server is ready once it has restored what served before it
// started; from then on every model it serves answers.
func (s *Service) ready(w http.ResponseWriter, _ *http.Request) {
	code := http.StatusOK
	if !s.app.Ready() {
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

// resolve finds the model of a request: the routing in force and, for a
// versioned path, the serving version (0 otherwise).
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
		return rt, rt.Champion, 0, nil
	}
	for _, c := range []*serving.Model{rt.Champion, rt.Candidate} {
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

// modelMetadata describes a model: its raw feature columns as inputs (FP64
// for numbers, BYTES for text), its outputs.
func (s *Service) modelMetadata(w http.ResponseWriter, r *http.Request) {
	rt, m, _, herr := s.resolve(r)
	if herr != nil {
		herr.write(w)
		return
	}
	var inputs []tensorMetadata
	for _, in := range m.Inputs() {
		dt := "BYTES"
		if in.Numeric {
			dt = "FP64"
		}
		inputs = append(inputs, tensorMetadata{Name: in.Name, Datatype: dt, Shape: []int{-1}})
	}
	outputs := []tensorMetadata{{Name: OutputPredict, Datatype: "BYTES", Shape: []int{-1}}}
	params := map[string]any{"task": m.Task(), "deployment_id": rt.DeploymentID}
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
		"name": rt.Pipeline, "versions": versions, "platform": "gyre",
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

// inferRequest is an Open Inference Protocol v2 request.
type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Inputs     []requestTensor `json:"inputs"`
	Outputs    []struct {
		Name string `json:"name"`
	} `json:"outputs,omitempty"`
}

type requestTensor struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

type responseTensor struct {
	Name     string `json:"name"`
	Datatype string `json:"datatype"`
	Shape    []int  `json:"shape"`
	Data     []any  `json:"data"`
}

type inferResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version"`
	ID           string           `json:"id,omitempty"`
	Parameters   map[string]any   `json:"parameters,omitempty"`
	Outputs      []responseTensor `json:"outputs"`
}

// infer decodes the request into one record per row — every input tensor is
// one raw feature column — runs it through the serving application, and
// encodes the outputs.
func (s *Service) infer(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name := r.PathValue("name")
	variant, code := "", http.StatusOK
	defer func() {
		// Only served models label the metrics: any name can be asked for.
		pipeline := name
		if s.app.Routing(name) == nil {
			pipeline = ""
		}
		s.metrics.requests.WithLabelValues(pipeline, variant, strconv.Itoa(code)).Inc()
		s.metrics.duration.WithLabelValues(pipeline).Observe(time.Since(start).Seconds())
	}()
	fail := func(c int, format string, args ...any) {
		code = c
		writeError(w, c, format, args...)
	}
	if events.ValidatePipeline(name) != nil {
		fail(http.StatusNotFound, "unknown model %q", name)
		return
	}
	var version int64
	if v := r.PathValue("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			fail(http.StatusNotFound, "unknown version %q of model %s: versions are numbers from 1", v, name)
			return
		}
		version = n
	}
	req, outputs, id, err := decodeInfer(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fail(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", MaxRequestBytes)
			return
		}
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	req.Pipeline, req.Version, req.RoutingKey = name, version, r.Header.Get(RoutingKeyHeader)
	res, err := s.app.Infer(r.Context(), req)
	if err != nil {
		var in *serving.InputError
		switch {
		case errors.As(err, &in):
			fail(http.StatusBadRequest, "%v", err)
		case errors.Is(err, serving.ErrUnknownModel), errors.Is(err, serving.ErrUnknownVersion):
			fail(http.StatusNotFound, "%v", err)
		default:
			fail(http.StatusServiceUnavailable, "%v", err)
		}
		return
	}
	variant = string(res.Variant)
	body, err := encodeInfer(res, outputs, id)
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	service.WriteJSON(w, http.StatusOK, body)
}

// decodeInfer reads an inference request. Every input is one raw feature
// column: shape [N] or [N, 1], data flat or nested, datatype FP32, FP64,
// INT8-64, UINT8-64, BOOL or BYTES; null is a missing value.
func decodeInfer(body io.Reader) (req serving.Request, outputs []string, id string, err error) {
	dec := json.NewDecoder(body)
	dec.UseNumber()
	var ir inferRequest
	if err := dec.Decode(&ir); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, nil, "", err
		}
		return req, nil, "", fmt.Errorf("request body is not an inference request: %v", err)
	}
	if dec.More() {
		return req, nil, "", errors.New("request body has data after the JSON object")
	}
	if len(ir.Inputs) == 0 {
		return req, nil, "", errors.New("inputs: empty; give one tensor per feature column")
	}
	for _, o := range ir.Outputs {
		switch o.Name {
		case OutputPredict, OutputProbabilities, OutputPredictionID:
			outputs = append(outputs, o.Name)
		default:
			return req, nil, "", fmt.Errorf("outputs: unknown output %q (want %s, %s or %s)", o.Name, OutputPredict, OutputProbabilities, OutputPredictionID)
		}
	}
	rows := -1
	seen := map[string]bool{}
	cols := make([][]cell, len(ir.Inputs))
	for j, t := range ir.Inputs {
		if t.Name == "" {
			return req, nil, "", fmt.Errorf("inputs[%d]: no name", j)
		}
		if seen[t.Name] {
			return req, nil, "", fmt.Errorf("input %q: given twice", t.Name)
		}
		seen[t.Name] = true
		n, err := checkShape(t)
		if err != nil {
			return req, nil, "", fmt.Errorf("input %q: %w", t.Name, err)
		}
		if rows >= 0 && n != rows {
			return req, nil, "", fmt.Errorf("input %q: %d rows, but input %q has %d; every input needs one value per row", t.Name, n, ir.Inputs[0].Name, rows)
		}
		rows = n
		col, err := decodeData(t, n)
		if err != nil {
			return req, nil, "", fmt.Errorf("input %q: %w", t.Name, err)
		}
		cols[j] = col
		req.Columns = append(req.Columns, t.Name)
	}
	req.Records = make([]map[string]string, rows)
	for i := range req.Records {
		rec := make(map[string]string, len(cols))
		for j, col := range cols {
			if !col[i].missing {
				rec[ir.Inputs[j].Name] = col[i].text
			}
		}
		req.Records[i] = rec
	}
	return req, outputs, ir.ID, nil
}

// maxRows bounds the rows of one request.
const maxRows = 1_000_000

func checkShape(t requestTensor) (int, error) {
	switch {
	case len(t.Shape) == 1 || len(t.Shape) == 2 && t.Shape[1] == 1:
	default:
		return 0, fmt.Errorf("shape %v: want [N] or [N, 1], one value per row", t.Shape)
	}
	if t.Shape[0] < 0 || t.Shape[0] > maxRows {
		return 0, fmt.Errorf("shape %v: want 0 to %d rows", t.Shape, maxRows)
	}
	return int(t.Shape[0]), nil
}

// cell is one value as text, or missing.
type cell struct {
	text    string
	missing bool
}

// Datatypes an input may have.
var intBits = map[string]int{"INT8": 8, "INT16": 16, "INT32": 32, "INT64": 64, "UINT8": 8, "UINT16": 16, "UINT32": 32, "UINT64": 64}

func decodeData(t requestTensor, n int) ([]cell, error) {
	dt := strings.ToUpper(t.Datatype)
	_, isInt := intBits[dt]
	switch {
	case dt == "FP32", dt == "FP64", dt == "BOOL", dt == "BYTES", isInt:
	case dt == "":
		return nil, errors.New("no datatype (want FP32, FP64, INT8 to INT64, UINT8 to UINT64, BOOL or BYTES)")
	default:
		return nil, fmt.Errorf("datatype %q is not supported (want FP32, FP64, INT8 to INT64, UINT8 to UINT64, BOOL or BYTES)", t.Datatype)
	}
	if len(bytes.TrimSpace(t.Data)) == 0 {
		return nil, errors.New("no data")
	}
	dec := json.NewDecoder(bytes.NewReader(t.Data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("data: %v", err)
	}
	var flat []any
	if err := flatten(raw, &flat, 0); err != nil {
		return nil, err
	}
	if len(flat) != n {
		return nil, fmt.Errorf("shape %v holds %d values, data has %d", t.Shape, n, len(flat))
	}
	out := make([]cell, n)
	for i, v := range flat {
		c, err := toCell(dt, v)
		if err != nil {
			return nil, fmt.Errorf("data[%d]: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}

// flatten appends the scalars of v (nested arrays, row-major) to out.
func flatten(v any, out *[]any, depth int) error {
	arr, ok := v.([]any)
	if !ok {
		if depth == 0 {
			return errors.New("data: not an array")
		}
		*out = append(*out, v)
		return nil
	}
	if depth > 2 {
		return errors.New("data: nested deeper than the shape [N, 1]")
	}
	for _, e := range arr {
		if err := flatten(e, out, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func toCell(dt string, v any) (cell, error) {
	if v == nil {
		return cell{missing: true}, nil
	}
	switch dt {
	case "BYTES":
		s, ok := v.(string)
		if !ok {
			return cell{}, fmt.Errorf("%v is not a string (datatype BYTES)", v)
		}
		return cell{text: s}, nil
	case "BOOL":
		b, ok := v.(bool)
		if !ok {
			return cell{}, fmt.Errorf("%v is not true or false (datatype BOOL)", v)
		}
		return cell{text: strconv.FormatBool(b)}, nil
	}
	num, ok := v.(json.Number)
	if !ok {
		return cell{}, fmt.Errorf("%#v is not a number (datatype %s)", v, dt)
	}
	if bits, isInt := intBits[dt]; isInt {
		var err error
		if strings.HasPrefix(dt, "U") {
			_, err = strconv.ParseUint(num.String(), 10, bits)
		} else {
			_, err = strconv.ParseInt(num.String(), 10, bits)
		}
		if err != nil {
			return cell{}, fmt.Errorf("%s is not an integer of datatype %s", num, dt)
		}
		return cell{text: num.String()}, nil
	}
	f, err := num.Float64()
	if err != nil || math.IsInf(f, 0) {
		return cell{}, fmt.Errorf("%s is not a finite number (datatype %s)", num, dt)
	}
	return cell{text: num.String()}, nil
}

// encodeInfer builds the response: predict (class names, or values for a
// regressor), probabilities [N, classes], prediction_id [N] — all of them,
// or those the request asked for.
func encodeInfer(res *serving.Result, outputs []string, id string) (inferResponse, error) {
	p := res.Predictions
	n := len(res.PredictionIDs)
	want := func(name string) bool {
		if len(outputs) == 0 {
			return true
		}
		for _, o := range outputs {
			if o == name {
				return true
			}
		}
		return false
	}
	out := inferResponse{
		ModelName: res.Pipeline, ModelVersion: strconv.FormatInt(res.Model.Version, 10), ID: id,
		Parameters: map[string]any{"deployment_id": res.DeploymentID, "variant": string(res.Variant)},
	}
	if want(OutputPredict) {
		t := responseTensor{Name: OutputPredict, Datatype: "BYTES", Shape: []int{n}, Data: make([]any, n)}
		if p.Task == ml.Regression {
			t.Datatype = "FP64"
			for i, v := range p.Values {
				t.Data[i] = finiteOrNil(v)
			}
		} else {
			for i, l := range p.Labels {
				t.Data[i] = l
			}
		}
		out.Outputs = append(out.Outputs, t)
	}
	if want(OutputProbabilities) {
		if p.Task == ml.Regression {
			if len(outputs) > 0 {
				return out, fmt.Errorf("outputs: %q: a regression model has no probabilities", OutputProbabilities)
			}
		} else {
			k := len(p.Classes)
			t := responseTensor{Name: OutputProbabilities, Datatype: "FP64", Shape: []int{n, k}, Data: make([]any, 0, n*k)}
			for _, row := range p.Proba {
				for _, v := range row {
					t.Data = append(t.Data, finiteOrNil(v))
				}
			}
			out.Outputs = append(out.Outputs, t)
		}
	}
	if want(OutputPredictionID) {
		t := responseTensor{Name: OutputPredictionID, Datatype: "BYTES", Shape: []int{n}, Data: make([]any, n)}
		for i, id := range res.PredictionIDs {
			t.Data[i] = id
		}
		out.Outputs = append(out.Outputs, t)
	}
	return out, nil
}

func finiteOrNil(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// deployment answers a pipeline's deployment record and, during a canary,
// the counts of the step in force.
func (s *Service) deployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rec, servingVersions, canary, ok := s.app.DeploymentStatus(name)
	if !ok {
		writeError(w, http.StatusNotFound, "no deployment of %q", name)
		return
	}
	service.WriteJSON(w, http.StatusOK, map[string]any{"deployment": rec, "serving": servingVersions, "canary": canary})
}
