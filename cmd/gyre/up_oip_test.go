package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/deployer/oipgrpc"
)

// TestUpServesOIPAtRoot: under gyre up the Open Inference Protocol answers
// at the listener's root (/v2/...), as under /services/deployer/, with the
// same authentication, and the deployer's gRPC service answers on --grpc.
func TestUpServesOIPAtRoot(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	inv, state, stop := runUpWith(t, dir, "--nats", srv.URL, "--grpc", "127.0.0.1:0")
	defer stop()
	token := func(file string) string {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	get := func(path, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, state.HTTPURL+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	read := token(readTokenFile)
	for _, tc := range []struct {
		path, token string
		code        int
		want        string
	}{
		{"/v2/health/live", "", 200, `{"live":true}`},
		{"/v2/health/ready", "", 200, `{"ready":true}`},
		{"/v2", "", 401, "no credentials"},
		{"/v2", read, 200, `"extensions":["binary_tensor_data"]`},
		{"/v2/models/nope", read, 404, `unknown model \"nope\"`},
		{"/v2/models/nope/infer", read, 405, "inference takes POST"},
		{"/v2/unknown", "", 404, "no such endpoint"},
		{"/", "", 200, `"inference":"/v2"`},
	} {
		code, body := get(tc.path, tc.token)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s = %d %s, want %d containing %s", tc.path, code, body, tc.code, tc.want)
		}
		// The same answer under the deployer's prefix.
		if strings.HasPrefix(tc.path, "/v2") {
			if pcode, pbody := get("/services/deployer"+tc.path, tc.token); pcode != code || pbody != body {
				t.Errorf("GET /services/deployer%s = %d %s, but %s = %d %s", tc.path, pcode, pbody, tc.path, code, body)
			}
		}
	}

	// gRPC, on the address gyre up printed.
	m := regexp.MustCompile(`(?m)^gRPC   (\S+) \(inference\.GRPCInferenceService`).FindStringSubmatch(inv.stdout.String())
	if m == nil {
		t.Fatalf("gyre up printed no gRPC address:\n%s", inv.stdout.String())
	}
	conn, err := grpc.NewClient(m[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := oipgrpc.NewGRPCInferenceServiceClient(conn)
	if res, err := c.ServerLive(ctx, &oipgrpc.ServerLiveRequest{}); err != nil || !res.GetLive() {
		t.Errorf("ServerLive: %v %v", res, err)
	}
	if res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", res, err)
	}
	if _, err := c.ServerMetadata(ctx, &oipgrpc.ServerMetadataRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ServerMetadata without a token: %v, want Unauthenticated", err)
	}
	res, err := c.ServerMetadata(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+read), &oipgrpc.ServerMetadataRequest{})
	if err != nil || res.GetName() != deployer.ServerName {
		t.Errorf("ServerMetadata with the read token: %v %v", res, err)
	}
	if _, err := c.ModelReady(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+read), &oipgrpc.ModelReadyRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("ModelReady of no model: %v, want NotFound", err)
	}
}

// TestUpGRPCFlag: --grpc is validated, off turns gRPC off, a port given
// that is taken fails, and the default, taken, gives way to a free port.
func TestUpGRPCFlag(t *testing.T) {
	t.Parallel()
	_, _, err := execute(t, "up", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--grpc", "8081")
	if err == nil || !strings.Contains(err.Error(), "--grpc (env GYRE_GRPC_ADDR)") {
		t.Errorf("--grpc 8081: %v, want the flag named", err)
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, _, err := listenGRPC(upOptions{grpcAddr: taken.Addr().String(), grpcSet: true}); err == nil ||
		!strings.Contains(err.Error(), "--grpc "+taken.Addr().String()) || !strings.Contains(err.Error(), "--grpc off") {
		t.Errorf("a taken --grpc given: %v, want an error naming it", err)
	}
	ln, note, err := listenGRPC(upOptions{grpcAddr: taken.Addr().String()})
	if err != nil || ln == nil || !strings.Contains(note, "is taken") || !strings.Contains(note, "gRPC listens on "+ln.Addr().String()) {
		t.Errorf("a taken default: %v %q %v, want a free port and a note", ln, note, err)
	}
	if ln != nil {
		ln.Close()
	}
	if ln, _, err := listenGRPC(upOptions{grpcAddr: "off"}); ln != nil || err != nil {
		t.Errorf("--grpc off: %v %v, want no listener", ln, err)
	}
}

// TestUpMuxMountsOIPAtRoot: /v2 and /v2/... reach the deployer's handler
// with their paths as they are.
func TestUpMuxMountsOIPAtRoot(t *testing.T) {
	t.Parallel()
	svcs := []service.Runner{&fakeRunner{name: "ingest", ready: true}, &fakeRunner{name: deployer.Name, ready: true}}
	mux := upMux(svcs, service.Deps{Registry: service.NewRegistry()}, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	for _, tc := range []struct{ path, want string }{
		{"/v2", `{"path":"/v2","service":"deployer"}`},
		{"/v2/models/m/infer", `{"path":"/v2/models/m/infer","service":"deployer"}`},
		{"/services/deployer/v2/models/m", `{"path":"/v2/models/m","service":"deployer"}`},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("GET %s = %d %s, want %s", tc.path, rec.Code, rec.Body.String(), tc.want)
		}
	}
}
