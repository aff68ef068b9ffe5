package deployer_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/deployer"
)

// grpcurlPath finds grpcurl: on PATH, or where `go install` puts it
// (scripts/install-bench-deps.sh installs it so: Debian has no package of
// it). Missing, the test fails in CI and is skipped, saying why, elsewhere.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	for _, d := range dirs {
		if p := filepath.Join(d, "grpcurl"); isExecutable(p) {
			return p
		}
	}
	msg := "grpcurl not found (Debian packages none; `bash scripts/install-bench-deps.sh grpcurl` installs it with go install)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// TestGRPCurl drives the deployer's gRPC service with grpcurl, a peer that
// knows nothing of Gyre: it learns the service by server reflection, calls
// ServerLive, ModelMetadata and ModelInfer (typed and raw contents) with a
// bearer token, and checks the gRPC health service.
func TestGRPCurl(t *testing.T) {
	t.Parallel()
	bin := grpcurlPath(t)
	h := newHarness(t)
	h.env.ApplyPipeline(spec("oip", "{strategy: immediate}", false))
	tokens := filepath.Join(t.TempDir(), "tokens.json")
	secret, _, err := httpauth.CreateToken(tokens, "grpcurl", []httpauth.Scope{httpauth.ScopeRead, httpauth.ScopeInfer}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	h.run(func(c *deployer.Config) {
		c.HTTPAuth, c.AuthTokens = service.HTTPAuthRequired, tokens
		c.GRPCAddr = "127.0.0.1:0"
	})
	h.promote("oip", 1, h.storeBundle("oip", "r1", false, false), 0.9)
	looptest.WaitFor(t, "oip serving", 30*time.Second, func() bool {
		code, _ := h.do("GET", "/v2/models/oip/ready", nil, "Authorization", "Bearer "+secret)
		return code == 200
	})
	addr := h.svc.GRPCAddr()
	// grpcurl runs grpcurl -plaintext FLAGS ADDR REST...
	grpcurl := func(flags []string, rest ...string) (string, error) {
		t.Helper()
		full := append(append([]string{"-plaintext", "-max-time", "30"}, flags...), addr)
		full = append(full, rest...)
		out, err := exec.Command(bin, full...).CombinedOutput()
		t.Logf("$ grpcurl %s\n%s", strings.ReplaceAll(strings.Join(full, " "), secret, "$TOKEN"), out)
		return string(out), err
	}
	auth := "authorization: Bearer " + secret
	mustContain := func(out string, err error, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("grpcurl: %v\n%s", err, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("grpcurl output lacks %q:\n%s", w, out)
			}
		}
	}

	out, err := grpcurl(nil, "list")
	mustContain(out, err, deployer.InferenceService, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection")
	out, err = grpcurl(nil, "describe", deployer.InferenceService)
	mustContain(out, err, "rpc ModelInfer ( .inference.ModelInferRequest ) returns ( .inference.ModelInferResponse );")
	out, err = grpcurl(nil, deployer.InferenceService+"/ServerLive")
	mustContain(out, err, `"live": true`)
	out, err = grpcurl([]string{"-d", `{"service": ""}`}, "grpc.health.v1.Health/Check")
	mustContain(out, err, `"status": "SERVING"`)
	out, err = grpcurl([]string{"-H", auth, "-d", `{"name": "oip"}`}, deployer.InferenceService+"/ModelMetadata")
	mustContain(out, err, `"name": "oip"`, `"platform": "gyre_logreg"`, `"name": "probabilities"`)

	// Without the token: refused, as over HTTP.
	out, err = grpcurl([]string{"-d", `{"name": "oip"}`}, deployer.InferenceService+"/ModelMetadata")
	if err == nil || !strings.Contains(out, "Code: Unauthenticated") {
		t.Errorf("ModelMetadata without a token: %v\n%s", err, out)
	}

	typed := `{"model_name": "oip", "id": "curl-1", "inputs": [
		{"name": "x", "datatype": "FP64", "shape": [3], "contents": {"fp64_contents": [-0.5, 0.25, 0.9]}},
		{"name": "c", "datatype": "BYTES", "shape": [3], "contents": {"bytes_contents": ["YQ==", "Yg==", "YQ=="]}}]}`
	out, err = grpcurl([]string{"-H", auth, "-d", typed}, deployer.InferenceService+"/ModelInfer")
	mustContain(out, err, `"modelName": "oip"`, `"id": "curl-1"`, `"name": "predict"`)
	var res struct {
		Outputs []struct {
			Name     string
			Contents struct {
				BytesContents []string
				Fp64Contents  []float64
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("ModelInfer output not JSON: %v", err)
	}
	var predict []string
	for _, o := range res.Outputs {
		if o.Name == "predict" {
			for _, b := range o.Contents.BytesContents {
				v, _ := base64.StdEncoding.DecodeString(b)
				predict = append(predict, string(v))
			}
		}
	}
	if strings.Join(predict, " ") != "0 1 1" {
		t.Errorf("predict %v, want [0 1 1]", predict)
	}

	// raw_input_contents: base64 of the little-endian FP64 and the
	// length-prefixed BYTES; the answer comes back raw.
	raw := `{"model_name": "oip", "inputs": [{"name": "x", "datatype": "FP64", "shape": [1]}, {"name": "c", "datatype": "BYTES", "shape": [1]}],
		"raw_input_contents": ["` + base64.StdEncoding.EncodeToString(rawFP64([]float64{0.9})) + `", "` +
		base64.StdEncoding.EncodeToString(rawBytes([]string{"a"})) + `"]}`
	out, err = grpcurl([]string{"-H", auth, "-d", raw}, deployer.InferenceService+"/ModelInfer")
	mustContain(out, err, `"rawOutputContents": [`, `"`+base64.StdEncoding.EncodeToString(rawBytes([]string{"1"}))+`"`)
}
