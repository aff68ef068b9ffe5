package deployer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/deployer/oipgrpc"
)

// BenchmarkSingleRowProtocols measures one single-row inference, answered
// before the next is sent, over loopback through each protocol of the
// deployer: REST with JSON, REST with the binary tensor data extension
// (binary in and out), gRPC with typed contents and with raw contents —
// the same 8-feature GBDT, the client and the server in this process.
// services/deployer/cmd/servebench --only-protocols measures the same with
// the load in a process of its own, on CPUs of its own.
func BenchmarkSingleRowProtocols(b *testing.B) {
	env := looptest.NewFull(b)
	promoteBench(env, "bench", 0, 64)
	cfg := deployer.DefaultConfig()
	cfg.VerifyKeys = looptest.VerifyKeyFile(b)
	cfg.HTTPAuth = service.HTTPAuthNone
	cfg.NATSURL = env.Server.URL
	cfg.GRPCAddr = "127.0.0.1:0"
	proc, err := service.Connect(context.Background(), cfg.Config, "deployer-bench", service.WithLogOutput(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = proc.Close(context.Background()) })
	svc, err := deployer.New(cfg, proc.Deps)
	if err != nil {
		b.Fatal(err)
	}
	env.Run(svc)
	srv := httptest.NewServer(svc.Handler())
	b.Cleanup(srv.Close)
	looptest.WaitFor(b, "bench deployed", 30*time.Second, func() bool {
		resp, err := http.Get(srv.URL + "/v2/models/bench/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	conn, err := grpc.NewClient(svc.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	client := oipgrpc.NewGRPCInferenceServiceClient(conn)

	row := []float64{0.1, -0.2, 0.3, 1, -1, 0.5, 0, 2}
	var raw []byte
	for _, v := range row {
		raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(v))
	}
	jsonBody, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "input", "shape": []int{1, 8}, "datatype": "FP64", "data": row}}})
	header := `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP64","parameters":{"binary_data_size":64}}],"parameters":{"binary_data_output":true}}`
	binBody := append([]byte(header), raw...)
	httpClient := &http.Client{Timeout: 10 * time.Second}
	post := func(b *testing.B, body []byte, binary bool) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/models/bench/infer", bytes.NewReader(body))
		if binary {
			req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(len(header)))
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	infer := func(b *testing.B, rawIn bool) {
		in := &oipgrpc.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP64", Shape: []int64{1, 8}}
		req := &oipgrpc.ModelInferRequest{ModelName: "bench", Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{in}}
		if rawIn {
			req.RawInputContents = [][]byte{raw}
		} else {
			in.Contents = &oipgrpc.InferTensorContents{Fp64Contents: row}
		}
		if _, err := client.ModelInfer(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		call func(b *testing.B)
	}{
		{"rest-json", func(b *testing.B) { post(b, jsonBody, false) }},
		{"rest-binary", func(b *testing.B) { post(b, binBody, true) }},
		{"grpc-typed", func(b *testing.B) { infer(b, false) }},
		{"grpc-raw", func(b *testing.B) { infer(b, true) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tc.call(b)
			}
		})
	}
}
