package deployer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/services/deployer/internal/serving"
	"github.com/gyrehq/gyre/services/deployer/oipgrpc"
)

// The Open Inference Protocol v2 over gRPC: KServe's GRPCInferenceService
// (services/deployer/oipgrpc, generated from the upstream proto), with the
// same semantics as the REST routes of oip.go — the same model routing,
// champion and candidate, rollouts, prediction log, metrics and scopes —
// through the same code: resolveModel, metadataOf, decodeTensors, score
// and the outputs' encoders. Beside it the server has the gRPC health
// service (grpc.health.v1: "" and inference.GRPCInferenceService are
// SERVING while the deployer is ready) and server reflection (v1 and
// v1alpha, which grpcurl lists and describes with).

// InferenceService is the full name of the gRPC inference service.
const InferenceService = "inference.GRPCInferenceService"

// grpcScopes are what each method needs: as REST's routes, health and
// liveness are open, metadata needs read and inference infer. Reflection
// is open, as /schemas/ is over HTTP: it tells the protocol, no model. A
// method not listed needs admin.
var grpcScopes = map[string]httpauth.Scope{
	oipgrpc.GRPCInferenceService_ServerLive_FullMethodName:                 httpauth.Public,
	oipgrpc.GRPCInferenceService_ServerReady_FullMethodName:                httpauth.Public,
	oipgrpc.GRPCInferenceService_ModelReady_FullMethodName:                 httpauth.ScopeRead,
	oipgrpc.GRPCInferenceService_ServerMetadata_FullMethodName:             httpauth.ScopeRead,
	oipgrpc.GRPCInferenceService_ModelMetadata_FullMethodName:              httpauth.ScopeRead,
	oipgrpc.GRPCInferenceService_ModelInfer_FullMethodName:                 httpauth.ScopeInfer,
	healthpb.Health_Check_FullMethodName:                                   httpauth.Public,
	healthpb.Health_List_FullMethodName:                                    httpauth.Public,
	healthpb.Health_Watch_FullMethodName:                                   httpauth.Public,
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      httpauth.Public,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: httpauth.Public,
}

// grpcServer is the deployer's gRPC server.
type grpcServer struct {
	srv    *grpc.Server
	health *health.Server
	ready  func() bool
}

// newGRPCServer builds the gRPC server: the inference service, health and
// reflection, every call authenticated as HTTP's routes are.
func (s *Service) newGRPCServer() *grpcServer {
	srv := grpc.NewServer(
		// The body limit of REST, for a request message.
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx, err := s.authorize(ctx, info.FullMethod)
			if err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if _, err := s.authorize(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	oipgrpc.RegisterGRPCInferenceServiceServer(srv, &inferenceServer{s: s})
	g := &grpcServer{srv: srv, health: health.NewServer(), ready: s.grpcReady}
	g.refresh()
	healthpb.RegisterHealthServer(srv, checkedHealth{g})
	reflection.Register(srv)
	return g
}

// refresh sets the health service's status to the deployer's readiness.
func (g *grpcServer) refresh() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if g.ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	g.health.SetServingStatus("", st)
	g.health.SetServingStatus(InferenceService, st)
}

// checkedHealth is the health service, its status read afresh on every
// Check and List (Watch follows trackHealth's): a probe never lags
// ServerReady.
type checkedHealth struct{ g *grpcServer }

func (h checkedHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.g.refresh()
	return h.g.health.Check(ctx, req)
}

func (h checkedHealth) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	h.g.refresh()
	return h.g.health.List(ctx, req)
}

func (h checkedHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	return h.g.health.Watch(req, stream)
}

func (g *grpcServer) serviceNames() []string {
	var names []string
	for name := range g.srv.GetServiceInfo() {
		names = append(names, name)
	}
	return names
}

// serve serves on ln until stop; nil once stopped.
func (g *grpcServer) serve(ln net.Listener) error {
	err := g.srv.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// trackHealth keeps the health service's status that of the deployer's
// readiness (/v2/health/ready) for its watchers, until ctx ends.
func (g *grpcServer) trackHealth(ctx context.Context) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		g.refresh()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stop says NOT_SERVING to the health watchers, lets the calls in flight
// finish within timeout, then closes what is left (health watches never
// finish by themselves).
func (g *grpcServer) stop(timeout time.Duration) {
	g.health.Shutdown()
	done := make(chan struct{})
	go func() {
		g.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		g.srv.Stop()
		<-done
	}
}

// authorize checks a call's credentials — the authorization metadata,
// "Bearer <token>", as HTTP's header — with the service's Authenticator,
// against the scope the method needs; the principal is in the context it
// returns. With --http-auth none every call passes.
func (s *Service) authorize(ctx context.Context, method string) (context.Context, error) {
	scope, ok := grpcScopes[method]
	if !ok {
		scope = httpauth.ScopeAdmin
	}
	if scope == httpauth.Public || s.auth.Mode() == httpauth.ModeNone {
		// With authentication off anyone may do anything (Authenticate's
		// anonymous admin), without building a request to say so.
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	// The Authenticator reads an HTTP request: one is made of the call.
	r := (&http.Request{Method: http.MethodPost, URL: &url.URL{Path: method}, Header: http.Header{}}).WithContext(ctx)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		r.RemoteAddr = p.Addr.String()
	}
	for _, v := range md.Get("authorization") {
		r.Header.Add("Authorization", v)
	}
	p, err := s.auth.Authenticate(r, false)
	if err != nil {
		var e *httpauth.Error
		if !errors.As(err, &e) {
			e = &httpauth.Error{Status: http.StatusServiceUnavailable, Message: err.Error()}
		}
		s.refused(ctx, r, p, e)
		code := codes.Unauthenticated
		if e.Status >= 500 {
			code = codes.Unavailable
		}
		return ctx, status.Error(code, e.Message)
	}
	if !p.Has(scope) {
		need := string(scope)
		if scope != httpauth.ScopeAdmin {
			need += " (or admin)"
		}
		held := make([]string, len(p.Scopes))
		for i, sc := range p.Scopes {
			held[i] = string(sc)
		}
		e := &httpauth.Error{Status: http.StatusForbidden, Code: "insufficient_scope", Required: scope, Granted: p.Scopes,
			Message: fmt.Sprintf("%s needs scope %s; %s holds %s", method, need, p, strings.Join(held, ", "))}
		s.refused(ctx, r, p, e)
		return ctx, status.Error(codes.PermissionDenied, e.Message)
	}
	return httpauth.WithPrincipal(ctx, p), nil
}

// refused logs a refused call as httpauth logs a refused request: who
// (never the token), what and why; a 401 at debug, a 403 at info.
func (s *Service) refused(ctx context.Context, r *http.Request, p httpauth.Principal, e *httpauth.Error) {
	level := slog.LevelDebug
	switch {
	case e.Status == http.StatusForbidden:
		level = slog.LevelInfo
	case e.Status >= 500:
		level = slog.LevelError
	}
	attrs := []any{"method", r.URL.Path, "status", e.Status, "reason", e.Message, "remote", r.RemoteAddr, "protocol", "grpc"}
	if p.Kind != "" {
		attrs = append(attrs, "principal", p.String())
	}
	s.rt.Logger().Log(ctx, level, "grpc call refused", attrs...)
}

// grpcCodes are the gRPC codes of REST's statuses.
var grpcCodes = map[int]codes.Code{
	http.StatusBadRequest:            codes.InvalidArgument,
	http.StatusNotFound:              codes.NotFound,
	http.StatusMethodNotAllowed:      codes.Unimplemented,
	http.StatusRequestEntityTooLarge: codes.ResourceExhausted,
	statusClientGone:                 codes.Canceled,
	http.StatusInternalServerError:   codes.Internal,
	http.StatusServiceUnavailable:    codes.Unavailable,
}

// grpcError is e as a gRPC status.
func grpcError(e *httpError) error {
	c, ok := grpcCodes[e.code]
	if !ok {
		c = codes.Unknown
	}
	return status.Error(c, e.msg)
}

// inferenceServer implements GRPCInferenceService on the service.
type inferenceServer struct {
	oipgrpc.UnimplementedGRPCInferenceServiceServer
	s *Service
}

func (g *inferenceServer) ServerLive(context.Context, *oipgrpc.ServerLiveRequest) (*oipgrpc.ServerLiveResponse, error) {
	return &oipgrpc.ServerLiveResponse{Live: true}, nil
}

// ServerReady: as /v2/health/ready, ready once every deployment record is
// in force on this replica (false, not an error, before).
func (g *inferenceServer) ServerReady(context.Context, *oipgrpc.ServerReadyRequest) (*oipgrpc.ServerReadyResponse, error) {
	ok, _ := g.s.app.Ready()
	return &oipgrpc.ServerReadyResponse{Ready: ok}, nil
}

// ModelReady: true when the model (version) serves; false while the
// pipeline has none yet (REST's 503); NotFound for no such model or
// version (REST's 404).
func (g *inferenceServer) ModelReady(ctx context.Context, req *oipgrpc.ModelReadyRequest) (*oipgrpc.ModelReadyResponse, error) {
	_, _, _, herr := g.s.resolveModel(ctx, req.GetName(), req.GetVersion())
	switch {
	case herr == nil:
		return &oipgrpc.ModelReadyResponse{Ready: true}, nil
	case herr.code == http.StatusServiceUnavailable:
		return &oipgrpc.ModelReadyResponse{Ready: false}, nil
	}
	return nil, grpcError(herr)
}

func (g *inferenceServer) ServerMetadata(context.Context, *oipgrpc.ServerMetadataRequest) (*oipgrpc.ServerMetadataResponse, error) {
	return &oipgrpc.ServerMetadataResponse{Name: ServerName, Version: serverVersion(), Extensions: serverExtensions}, nil
}

// ModelMetadata: as GET /v2/models/{name}[/versions/{v}], but for the
// parameters (task, classes, input_matrix, batching), which the message
// has no field for.
func (g *inferenceServer) ModelMetadata(ctx context.Context, req *oipgrpc.ModelMetadataRequest) (*oipgrpc.ModelMetadataResponse, error) {
	rt, m, _, herr := g.s.resolveModel(ctx, req.GetName(), req.GetVersion())
	if herr != nil {
		return nil, grpcError(herr)
	}
	md := metadataOf(rt, m)
	tensors := func(ts []tensorMetadata) []*oipgrpc.ModelMetadataResponse_TensorMetadata {
		out := make([]*oipgrpc.ModelMetadataResponse_TensorMetadata, len(ts))
		for i, t := range ts {
			shape := make([]int64, len(t.Shape))
			for j, d := range t.Shape {
				shape[j] = int64(d)
			}
			out[i] = &oipgrpc.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: shape}
		}
		return out
	}
	return &oipgrpc.ModelMetadataResponse{
		Name: md.name, Versions: md.versions, Platform: md.platform,
		Inputs: tensors(md.inputs), Outputs: tensors(md.outputs),
	}, nil
}

// ModelInfer: as POST /v2/models/{name}[/versions/{v}]/infer. Inputs come
// as typed contents or raw_input_contents; outputs go back as typed
// contents, or as raw_output_contents when the request sent raw inputs or
// asked for binary (binary_data_output, or an output's binary_data): the
// protocol has a message use one or the other for all its tensors. The
// pipeline's route header is read from the call's metadata.
func (g *inferenceServer) ModelInfer(ctx context.Context, req *oipgrpc.ModelInferRequest) (*oipgrpc.ModelInferResponse, error) {
	s := g.s
	ob := s.observeInfer()
	defer ob.done()
	fail := func(e *httpError) error {
		ob.code = e.code
		return grpcError(e)
	}
	name := req.GetModelName()
	rt, m, version, herr := s.resolveModel(ctx, name, req.GetModelVersion())
	if herr != nil {
		return nil, fail(herr)
	}
	ob.pipeline = rt.Pipeline
	in, err := decodeInferGRPC(req, m.InputNames)
	if err != nil {
		return nil, fail(&httpError{code: http.StatusBadRequest, msg: err.Error()})
	}
	var routingKey string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(s.app.RouteHeader(name)); len(v) > 0 {
			routingKey = v[0]
		}
	}
	res, herr := s.score(ctx, name, version, in, routingKey)
	if herr != nil {
		return nil, fail(herr)
	}
	ob.variant = string(res.Variant)
	out, err := inferResponseGRPC(res, in)
	if err != nil {
		return nil, fail(&httpError{code: http.StatusBadRequest, msg: err.Error()})
	}
	return out, nil
}

// decodeInferGRPC reads a gRPC inference request into what REST's decoder
// makes of a JSON one, and checks it the same way (decodeTensors).
func decodeInferGRPC(req *oipgrpc.ModelInferRequest, inputs func() []string) (*inferRequest, error) {
	in := &inferRequest{id: req.GetId(), hasID: req.GetId() != ""}
	binaryOutput, err := grpcFlag(req.GetParameters(), "parameters", "binary_data_output")
	if err != nil {
		return nil, err
	}
	for i, o := range req.GetOutputs() {
		field := fmt.Sprintf("outputs[%d].parameters", i)
		if p, ok := o.GetParameters()["classification"]; ok && grpcParamAsks(p) {
			return nil, fmt.Errorf("%s.classification: %s is not supported: this server lists no extension for it", field, grpcParamText(p))
		}
		b, err := grpcFlag(o.GetParameters(), field, "binary_data")
		if err != nil {
			return nil, err
		}
		if err := in.ask(i, o.GetName(), b == flagTrue, b != flagUnset); err != nil {
			return nil, err
		}
	}
	raw := req.GetRawInputContents()
	// Outputs are raw when the inputs were, unless the request says.
	binaryDefault := len(raw) > 0 && binaryOutput != flagFalse || binaryOutput == flagTrue
	in.settle(binaryDefault)
	// A message has raw contents or typed ones for all its tensors.
	if in.anyBinary() {
		for k := range numOutputs {
			in.binary[k] = true
		}
	}
	if len(raw) > 0 && len(raw) != len(req.GetInputs()) {
		return nil, fmt.Errorf("raw_input_contents: %d entries for %d inputs: give one per input, in the order of inputs", len(raw), len(req.GetInputs()))
	}
	if len(req.GetInputs()) == 0 {
		return nil, errors.New("inputs: empty; give one tensor per feature column, or one [N, K] tensor of them all")
	}
	tensors := make([]tensor, len(req.GetInputs()))
	for i, t := range req.GetInputs() {
		tt := tensor{name: t.GetName(), datatype: t.GetDatatype(), shape: t.GetShape(), hasShape: len(t.GetShape()) > 0}
		for _, d := range tt.shape {
			if d < 0 {
				return nil, fmt.Errorf("inputs[%d].shape: %d is not a size (a whole number from 0)", i, d)
			}
		}
		switch {
		case len(raw) > 0 && t.GetContents() != nil:
			return nil, fmt.Errorf("input %q: contents and raw_input_contents both given: use one for every input", tt.name)
		case len(raw) > 0:
			tt.src = rawSource(raw[i])
		case t.GetContents() != nil:
			tt.src = typedSource{t.GetContents()}
		}
		tensors[i] = tt
	}
	if err := in.decodeTensors(tensors, inputs); err != nil {
		return nil, err
	}
	return in, nil
}

// A flag parameter: not given (or not a bool), false or true.
const (
	flagUnset = iota
	flagFalse
	flagTrue
)

// grpcFlag reads a bool parameter; an int64 0 or 1 is taken too.
func grpcFlag(params map[string]*oipgrpc.InferParameter, field, key string) (int, error) {
	p, ok := params[key]
	if !ok || p.GetParameterChoice() == nil {
		return flagUnset, nil
	}
	switch v := p.GetParameterChoice().(type) {
	case *oipgrpc.InferParameter_BoolParam:
		if v.BoolParam {
			return flagTrue, nil
		}
		return flagFalse, nil
	case *oipgrpc.InferParameter_Int64Param:
		switch v.Int64Param {
		case 0:
			return flagFalse, nil
		case 1:
			return flagTrue, nil
		}
	}
	return flagUnset, fmt.Errorf("%s.%s: %s is not true or false", field, key, grpcParamText(p))
}

// grpcParamAsks reports whether a parameter asks for something: a value
// other than false, 0 or "" (as REST's false, 0 or null ask for nothing).
func grpcParamAsks(p *oipgrpc.InferParameter) bool {
	switch v := p.GetParameterChoice().(type) {
	case *oipgrpc.InferParameter_BoolParam:
		return v.BoolParam
	case *oipgrpc.InferParameter_Int64Param:
		return v.Int64Param != 0
	case *oipgrpc.InferParameter_StringParam:
		return v.StringParam != ""
	}
	return false
}

func grpcParamText(p *oipgrpc.InferParameter) string {
	switch v := p.GetParameterChoice().(type) {
	case *oipgrpc.InferParameter_BoolParam:
		return fmt.Sprint(v.BoolParam)
	case *oipgrpc.InferParameter_Int64Param:
		return fmt.Sprint(v.Int64Param)
	case *oipgrpc.InferParameter_StringParam:
		return fmt.Sprintf("%q", v.StringParam)
	}
	return "null"
}

// typedSource is a tensor's data in gRPC's typed contents: the field of
// its datatype (int_contents for INT8 to INT32, uint_contents for UINT8 to
// UINT32), each value checked against the datatype as JSON's are.
type typedSource struct{ c *oipgrpc.InferTensorContents }

// field returns the name of the contents field of dt and how many values
// it holds, or an error naming the field that was given instead.
func (t typedSource) field(dt datatype, name string) (string, int, error) {
	c := t.c
	counts := []struct {
		field string
		n     int
	}{
		{"bool_contents", len(c.GetBoolContents())}, {"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())}, {"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())}, {"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())}, {"bytes_contents", len(c.GetBytesContents())},
	}
	var want string
	switch {
	case dt.kind == 'b':
		want = "bool_contents"
	case dt.kind == 'i' && dt.bits <= 32:
		want = "int_contents"
	case dt.kind == 'i':
		want = "int64_contents"
	case dt.kind == 'u' && dt.bits <= 32:
		want = "uint_contents"
	case dt.kind == 'u':
		want = "uint64_contents"
	case dt.kind == 'f' && dt.bits == 16:
		return "", 0, errNoRaw
	case dt.kind == 'f' && dt.bits == 32:
		want = "fp32_contents"
	case dt.kind == 'f':
		want = "fp64_contents"
	default:
		want = "bytes_contents"
	}
	n := 0
	for _, f := range counts {
		if f.field == want {
			n = f.n
			continue
		}
		if f.n > 0 {
			return "", 0, fmt.Errorf("contents: %s given for datatype %s, which takes %s", f.field, name, want)
		}
	}
	return want, n, nil
}

func (t typedSource) check(dt datatype, name string, total int) error {
	field, n, err := t.field(dt, name)
	if err != nil {
		return err
	}
	if n != total {
		return fmt.Errorf("shape holds %d values, contents.%s has %d", total, field, n)
	}
	return nil
}

func (t typedSource) fill(dt datatype, name string, total int, num func(int, float64), text func(int, string)) error {
	c := t.c
	// Integers narrower than their field must fit their datatype.
	inRange := func(i int, v int64) error {
		if dt.kind == 'i' && dt.bits < 32 {
			lo, hi := int64(-1)<<(dt.bits-1), int64(1)<<(dt.bits-1)-1
			if v < lo || v > hi {
				return fmt.Errorf("contents[%d]: %d is out of range for %s (%d to %d)", i, v, name, lo, hi)
			}
		}
		if dt.kind == 'u' && dt.bits < 32 && v > int64(1)<<dt.bits-1 {
			return fmt.Errorf("contents[%d]: %d is out of range for %s (0 to %d)", i, v, name, int64(1)<<dt.bits-1)
		}
		return nil
	}
	switch {
	case dt.kind == 'b':
		for i, v := range c.GetBoolContents() {
			if v {
				num(i, 1)
			} else {
				num(i, 0)
			}
		}
	case dt.kind == 'i' && dt.bits <= 32:
		for i, v := range c.GetIntContents() {
			if err := inRange(i, int64(v)); err != nil {
				return err
			}
			num(i, float64(v))
		}
	case dt.kind == 'i':
		for i, v := range c.GetInt64Contents() {
			num(i, float64(v))
		}
	case dt.kind == 'u' && dt.bits <= 32:
		for i, v := range c.GetUintContents() {
			if err := inRange(i, int64(v)); err != nil {
				return err
			}
			num(i, float64(v))
		}
	case dt.kind == 'u':
		for i, v := range c.GetUint64Contents() {
			num(i, float64(v))
		}
	case dt.kind == 'f' && dt.bits == 32:
		for i, v := range c.GetFp32Contents() {
			num(i, float64(v))
		}
	case dt.kind == 'f':
		for i, v := range c.GetFp64Contents() {
			num(i, v)
		}
	default:
		for i, v := range c.GetBytesContents() {
			text(i, string(v))
		}
	}
	return nil
}

// inferResponseGRPC is the response of a scored request: the outputs
// asked for, as typed contents or all as raw_output_contents, in the
// order and with the figures REST writes.
func inferResponseGRPC(res *serving.Result, in *inferRequest) (*oipgrpc.ModelInferResponse, error) {
	p := res.Predictions
	if err := in.checkOutputs(p.Task); err != nil {
		return nil, err
	}
	out := &oipgrpc.ModelInferResponse{
		ModelName: res.Pipeline, ModelVersion: fmt.Sprint(res.Model.Version), Id: in.id,
		Parameters: map[string]*oipgrpc.InferParameter{
			"deployment_id": {ParameterChoice: &oipgrpc.InferParameter_StringParam{StringParam: res.DeploymentID}},
			"variant":       {ParameterChoice: &oipgrpc.InferParameter_StringParam{StringParam: string(res.Variant)}},
		},
	}
	outputs := in.outputs(p.Task)
	raw := in.anyBinary()
	var buf []byte
	if raw {
		size := 0
		for _, k := range outputs {
			size += rawOutputSize(k, res)
		}
		buf = make([]byte, 0, size)
	}
	for _, k := range outputs {
		datatype, shape := outputTensor(k, res)
		t := &oipgrpc.ModelInferResponse_InferOutputTensor{Name: outputNames[k], Datatype: datatype, Shape: make([]int64, len(shape))}
		for i, d := range shape {
			t.Shape[i] = int64(d)
		}
		out.Outputs = append(out.Outputs, t)
		if raw {
			start := len(buf)
			buf = appendRawOutput(buf, k, res)
			out.RawOutputContents = append(out.RawOutputContents, buf[start:len(buf):len(buf)])
			continue
		}
		t.Contents = typedOutput(k, res)
	}
	return out, nil
}

// typedOutput is output k of a result as typed contents.
func typedOutput(k int, res *serving.Result) *oipgrpc.InferTensorContents {
	p := res.Predictions
	strs := func(vs []string) [][]byte {
		out := make([][]byte, len(vs))
		for i, v := range vs {
			out[i] = []byte(v)
		}
		return out
	}
	switch {
	case k == outPredict && p.Task == ml.Regression:
		return &oipgrpc.InferTensorContents{Fp64Contents: p.Values}
	case k == outPredict:
		return &oipgrpc.InferTensorContents{BytesContents: strs(p.Labels)}
	case k == outProbabilities:
		flat := make([]float64, 0, len(p.Proba)*len(p.Classes))
		for _, row := range p.Proba {
			flat = append(flat, row...)
		}
		return &oipgrpc.InferTensorContents{Fp64Contents: flat}
	}
	return &oipgrpc.InferTensorContents{BytesContents: strs(res.PredictionIDs)}
}

// grpcReady is the readiness the health service follows:
// /v2/health/ready's.
func (s *Service) grpcReady() bool {
	ok, _ := s.app.Ready()
	return ok
}
