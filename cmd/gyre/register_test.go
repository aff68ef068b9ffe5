package main

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bundle/bundletest"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/deployer"
	"github.com/gyrehq/gyre/services/registry"
)

// TestRegisterPromoteServeXGBoost: `gyre models register` sends an XGBoost
// model to a registry running in this process, whose gates bless it; `gyre
// promote` makes it champion, a deployer serves it, and /infer answers
// XGBoost's own probabilities. A version whose artifact is replaced after
// registration is refused by the deployer; a model with another number of
// features than the pipeline's columns is refused at registration.
func TestRegisterPromoteServeXGBoost(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	rcfg := registry.DefaultConfig()
	rcfg.NATSURL = env.Server.URL
	rcfg.SigningKey = looptest.SigningKeyFile(t)
	reg, err := registry.New(rcfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	dcfg := deployer.DefaultConfig()
	dcfg.NATSURL = env.Server.URL
	dcfg.VerifyKeys = looptest.VerifyKeyFile(t)
	dep, err := deployer.New(dcfg, env.Deps)
	if err != nil {
		t.Fatal(err)
	}
	env.Run(reg)
	env.Run(dep)
	regSrv, depSrv := httptest.NewServer(reg.Handler()), httptest.NewServer(dep.Handler())
	t.Cleanup(regSrv.Close)
	t.Cleanup(depSrv.Close)

	fx := bundletest.Binary(t)
	dir := t.TempDir()
	jsonFile, ubjFile := filepath.Join(dir, "model.json"), filepath.Join(dir, "model.ubj")
	if err := os.WriteFile(jsonFile, fx.JSON, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ubjFile, fx.UBJ, 0o600); err != nil {
		t.Fatal(err)
	}
	const p = "cancer"
	env.ApplyPipeline(bundletest.Spec(p, "  evaluation: {gates: [{metric: accuracy, min: 0.9}]}\n  deployment: {strategy: immediate}\n"))
	env.AddBatch(p, "b1", fx.CSV(fx.Predicted))
	nats, registryURL := "--nats="+env.Server.URL, "--registry="+regSrv.URL

	out, _, err := execute(t, "models", "register", p, "--file", jsonFile, "--format", "xgboost", "--signature-from-schema", registryURL)
	if err != nil {
		t.Fatalf("gyre models register: %v", err)
	}
	t.Logf("gyre models register:\n%s", out)
	for _, want := range []string{"cancer: registered v1 (xgboost, request registered-", "registered by anonymous for ", "inputs named from the schema",
		"blessed: accuracy 1.0000", "accuracy passed: accuracy 1.0000 >= 0.9000", "signed", "not promoted: gyre promote cancer 1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("gyre models register lacks %q:\n%s", want, out)
		}
	}
	if out, _, err := execute(t, "models", "register", p, "--file", jsonFile, "--format", "xgboost", "--signature-from-schema", registryURL); err != nil ||
		!strings.Contains(out, "already registered as v1") {
		t.Fatalf("registered again: %v\n%s", err, out)
	}
	if out, _, err := execute(t, "models", p, nats); err != nil || !strings.HasPrefix(strings.Join(strings.Fields(strings.Split(out, "\n")[1]), " "), "1 blessed - 1.0000 xgboost") {
		t.Fatalf("gyre models: %v\n%s", err, out)
	}
	if out, _, err := execute(t, "lineage", p+"@1", nats); err != nil || !strings.Contains(out, "registered:") || !strings.Contains(out, "xgboost file, sha256") {
		t.Fatalf("gyre lineage: %v\n%s", err, out)
	}

	if out, _, err := execute(t, "promote", p, "1", nats); err != nil || !strings.Contains(out, "champion is v1") {
		t.Fatalf("gyre promote: %v\n%s", err, out)
	}
	looptest.WaitFor(t, "the deployer serving v1", 30*time.Second, func() bool { return serving(t, depSrv.URL, p) == "1" })

	// Every row through /infer: XGBoost's probabilities.
	var inputs []map[string]any
	for j := range bundletest.Features {
		data := make([]any, len(fx.Rows))
		for i, r := range fx.Rows {
			if !math.IsNaN(r[j]) {
				data[i] = r[j]
			}
		}
		inputs = append(inputs, map[string]any{"name": "f" + strconv.Itoa(j), "datatype": "FP64", "shape": []int{len(fx.Rows)}, "data": data})
	}
	body, _ := json.Marshal(map[string]any{"inputs": inputs})
	resp, err := http.Post(depSrv.URL+"/v2/models/"+p+"/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Name string `json:"name"`
			Data []any  `json:"data"`
		} `json:"outputs"`
	}
	err = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || answer.ModelVersion != "1" {
		t.Fatalf("infer: %d v%s %v", resp.StatusCode, answer.ModelVersion, err)
	}
	var proba []any
	for _, o := range answer.Outputs {
		if o.Name == "probabilities" {
			proba = o.Data
		}
	}
	if len(proba) != 2*len(fx.Rows) {
		t.Fatalf("%d probabilities for %d rows", len(proba), len(fx.Rows))
	}
	worst := 0.0
	for i, want := range fx.Proba {
		for k := range 2 {
			worst = max(worst, math.Abs(proba[2*i+k].(float64)-want[k]))
		}
	}
	if worst > 1e-9 {
		t.Fatalf("/infer differs from XGBoost's probabilities by up to %g", worst)
	}
	t.Logf("registered → promoted → /infer, %d rows: max |Δ| from ml.LoadXGBoost's PredictProba %g", len(fx.Rows), worst)

	// Version 2 (the UBJSON file, its inputs named by the model: f0…f29),
	// its artifact replaced in gyre-models after registration: promoted,
	// the deployer refuses it and v1 keeps serving.
	out, _, err = execute(t, "models", "register", p, "--file", ubjFile, "--format", "xgboost", "-o", "json", registryURL)
	var r2 registry.Registered
	if err != nil || json.Unmarshal([]byte(out), &r2) != nil || r2.Version.Version != 2 {
		t.Fatalf("register v2: %v\n%s", err, out)
	}
	stored, err := store.GetObject(env.Ctx(), env.Buckets.Models, r2.Version.Artifact.Key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Unmarshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	b.ModelData = bytes.Replace(fx.JSON, []byte(`"base_score":"3E-1"`), []byte(`"base_score":"9E-1"`), 1)
	tampered, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.PutObject(env.Ctx(), env.Buckets.Models, r2.Version.Artifact.Key, bundle.MediaType, tampered); err != nil {
		t.Fatal(err)
	}
	if out, _, err := execute(t, "promote", p, "2", nats); err != nil {
		t.Fatalf("gyre promote 2: %v\n%s", err, out)
	}
	var reason string
	looptest.WaitFor(t, "deployment.rolledback of v2", 30*time.Second, func() bool {
		for _, ev := range env.Events(p, events.DeploymentRolledBack) {
			if rb := looptest.Decode(t, ev, &gyrev1.DeploymentRolledBack{}); rb.GetModelVersion() == 2 {
				reason = rb.GetReason()
				return true
			}
		}
		return false
	})
	if !strings.Contains(reason, "refused") || !strings.Contains(reason, "the artifact was replaced") {
		t.Fatalf("v2 rolled back with %q, want it refused as replaced", reason)
	}
	if v := serving(t, depSrv.URL, p); v != "1" {
		t.Fatalf("serving %q after a replaced artifact, want v1", v)
	}

	// Four columns, thirty features: refused, naming the mismatch.
	env.ApplyPipeline(looptest.Spec("narrow", "{algorithm: gbdt}", ""))
	_, _, err = execute(t, "models", "register", "narrow", "--file", jsonFile, "--format", "xgboost", "--signature-from-schema", registryURL)
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request") ||
		!strings.Contains(err.Error(), "feature count mismatch: the model takes 30 features (f0, f1, f2, f3, …, f27, f28, f29), pipeline narrow's feature columns are 3 (x1, x2, color)") {
		t.Fatalf("a model of 30 features for 3 columns: %v", err)
	}
	if rec, _, found, _ := models.Get(env.Ctx(), env.Buckets.Registry, "narrow"); found && len(rec.Versions) > 0 {
		t.Fatalf("narrow has %d versions", len(rec.Versions))
	}
}

// serving is the version a deployer's metadata lists first for a model, ""
// when none serves.
func serving(t *testing.T, base, name string) string {
	t.Helper()
	resp, err := http.Get(base + "/v2/models/" + name)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var m struct {
		Versions []string `json:"versions"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&m) != nil || len(m.Versions) == 0 {
		return ""
	}
	return m.Versions[0]
}

// TestRegisterFlagErrors: the command says what is missing before it calls
// anyone.
func TestRegisterFlagErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"models", "register", "p", "--format", "xgboost"}, "--file is required"},
		{[]string{"models", "register", "p", "--file", "x"}, "--format is required"},
		{[]string{"models", "register", "p", "--file", "x", "--format", "xgboost", "--signature-from-schema", "--inputs", "a"}, "give one"},
		{[]string{"models", "register", "Bad_Name", "--file", "x", "--format", "xgboost"}, "pipeline"},
		{[]string{"models", "register", "p", "--file", "/nonexistent", "--format", "xgboost", "--registry", "http://127.0.0.1:1"}, "--file"},
		{[]string{"models", "register", "p", "--file", "/dev/null", "--format", "xgboost", "--data-dir", t.TempDir()}, "--registry URL"},
	} {
		if _, _, err := execute(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	out, _, err := execute(t, "models", "register", "--help")
	if err != nil || !strings.Contains(out, "--signature-from-schema") || !strings.Contains(out, "POST /v1/pipelines/{pipeline}/models") {
		t.Fatalf("help: %v\n%s", err, out)
	}
}
