package registry_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bundle/bundletest"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/signing"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/registry"
)

// gates bless a model whose accuracy on the newest batch is at least 0.9.
const gates = "  evaluation: {gates: [{metric: accuracy, min: 0.9}]}\n"

// post sends a model to POST /v1/pipelines/{p}/models?query and returns
// the status and the body.
func post(t *testing.T, h http.Handler, p, query string, body []byte, auth ...string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/pipelines/"+p+"/models?"+query, bytes.NewReader(body))
	if len(auth) == 1 {
		req.Header.Set("Authorization", "Bearer "+auth[0])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// registered decodes a registration's answer, failing unless the status is
// code.
func registeredAs(t *testing.T, what string, code int, body []byte, want int) registry.Registered {
	t.Helper()
	if code != want {
		t.Fatalf("%s: %d %s, want %d", what, code, body, want)
	}
	var r registry.Registered
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s: %v: %s", what, err, body)
	}
	return r
}

// TestRegisterXGBoostThroughTheRoute: an XGBoost model registered over
// HTTP is bundled under the pipeline's columns, stored in gyre-models,
// judged by the evaluator's gates on the newest batch, recorded signed
// with who registered it, not promoted unless asked; the same file again is
// the same version; what does not fit the pipeline is a 400 that says why.
func TestRegisterXGBoostThroughTheRoute(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	h := startRegistry(t, env).Handler()
	fx := bundletest.Binary(t)
	const p = "cancer"
	env.ApplyPipeline(bundletest.Spec(p, gates))
	env.AddBatch(p, "b1", fx.CSV(fx.Predicted))

	code, body := post(t, h, p, "format=xgboost&signature=schema&for=alice@laptop", fx.JSON)
	r := registeredAs(t, "register", code, body, http.StatusCreated)
	v := r.Version
	if !r.Created || v.Version != 1 || v.Verdict != models.VerdictBlessed || v.Algorithm != "xgboost" || r.Promoted != nil {
		t.Fatalf("registered %+v", r)
	}
	if v.EvalBatchID != "b1" || v.Metrics["accuracy"] != 1 || len(v.Gates) != 1 || !v.Gates[0].Passed || v.EvalRows != int64(len(fx.Rows)) {
		t.Fatalf("the gates did not judge it on b1: batch %q, metrics %v, gates %+v", v.EvalBatchID, v.Metrics, v.Gates)
	}
	reg := v.Registered
	if reg == nil || reg.By != "anonymous" || reg.For != "alice@laptop" || reg.Format != bundle.ModelXGBoost || reg.Signature != registry.SignatureSchema ||
		reg.FileBytes != int64(len(fx.JSON)) || reg.SkippedGates || v.Lineage.Reason != "registered by anonymous for alice@laptop" {
		t.Fatalf("registration record %+v, lineage reason %q", reg, v.Lineage.Reason)
	}
	if !strings.HasPrefix(v.RequestID, registry.RegisteredPrefix) || v.Artifact.Bucket != events.ObjectModels || v.Artifact.Key != bundle.Key(p, v.RequestID) {
		t.Fatalf("request %q, artifact %+v", v.RequestID, v.Artifact)
	}
	if strings.Join(v.Schema.Features[:2], ",") != "f0,f1" || len(v.Schema.Features) != 30 || v.Schema.Label != "y" || strings.Join(v.Schema.Classes, ",") != "0,1" {
		t.Fatalf("schema %+v", v.Schema)
	}
	// Signed like any version, over the bytes stored.
	keys, err := signing.LoadPublicKeys(looptest.VerifyKeyFile(t))
	if err != nil {
		t.Fatal(err)
	}
	data, err := store.GetObject(env.Ctx(), env.Buckets.Models, v.Artifact.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.NewVerifier(keys...).Verify(v.Subject(p), v.Signature); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if err := signing.CheckDigest(v.Subject(p), data); err != nil {
		t.Fatalf("digest: %v", err)
	}
	b, err := bundle.Unmarshal(data)
	if err != nil || b.ModelFormat != bundle.ModelXGBoost || !bytes.Equal(b.ModelData, fx.JSON) {
		t.Fatalf("stored bundle: %v", err)
	}
	// model.registered, and no model.evaluated: the registry emits none.
	regs := env.WaitEvents(p, events.ModelRegistered, 1)
	if m := looptest.Decode(t, regs[0], &gyrev1.ModelRegistered{}); m.GetModelVersion() != 1 || m.GetAlgorithm() != "xgboost" || m.GetVerdict() != models.VerdictBlessed {
		t.Fatalf("model.registered %+v", m)
	}
	if n := len(env.Events(p, events.ModelEvaluated)); n != 0 {
		t.Fatalf("%d model.evaluated published", n)
	}
	// The lineage is the registration's, and names only published events.
	if ids := v.Lineage.EventIDs; len(ids) != 1 || ids[0] != regs[0].ID() {
		t.Fatalf("lineage events %v, want model.registered's %s", ids, regs[0].ID())
	}

	// The same file under the same names: the same version.
	code, body = post(t, h, p, "format=xgboost&signature=schema", fx.JSON)
	if again := registeredAs(t, "again", code, body, http.StatusOK); again.Created || again.Version.Version != 1 {
		t.Fatalf("registered again: %+v", again)
	}
	// The UBJSON file, promoted when blessed: version 2, champion.
	code, body = post(t, h, p, "format=xgboost&promote=true", fx.UBJ)
	if ubj := registeredAs(t, "ubj", code, body, http.StatusCreated); ubj.Version.Version != 2 || ubj.Promoted == nil ||
		ubj.Promoted.Reason != models.ReasonBlessed || ubj.Version.Registered.Signature != registry.SignatureModel {
		t.Fatalf("ubj promoted when blessed: %+v", ubj)
	}
	rec, _, _, err := models.Get(env.Ctx(), env.Buckets.Registry, p)
	if err != nil || rec.Aliases[models.AliasChampion] != 2 || len(rec.Versions) != 2 {
		t.Fatalf("record: champion %v, %d versions (%v)", rec.Aliases, len(rec.Versions), err)
	}
	env.WaitEvents(p, events.ModelPromoted, 1)

	// Labels the model gets wrong: the gate fails; asked to promote, it is
	// not.
	const wrong = "wrong"
	env.ApplyPipeline(bundletest.Spec(wrong, gates))
	env.AddBatch(wrong, "b1", fx.CSV(func(i int) string { return map[string]string{"0": "1", "1": "0"}[fx.Predicted(i)] }))
	code, body = post(t, h, wrong, "format=xgboost&promote=true", fx.JSON)
	if w := registeredAs(t, "wrong labels", code, body, http.StatusCreated); w.Version.Verdict != models.VerdictRejected || w.Promoted != nil ||
		w.Version.Gates[0].Passed || w.Version.Metrics["accuracy"] != 0 {
		t.Fatalf("registered against wrong labels: %+v", w)
	}

	// No data: the gates cannot run (409), unless skipped, which is
	// recorded; skipped and promoted, it is champion by hand.
	const empty = "empty"
	env.ApplyPipeline(bundletest.Spec(empty, gates))
	if code, body := post(t, h, empty, "format=xgboost", fx.JSON); code != http.StatusConflict || !strings.Contains(string(body), "skipGates") {
		t.Fatalf("no data: %d %s, want 409 naming skipGates", code, body)
	}
	code, body = post(t, h, empty, "format=xgboost&skipGates=true&promote=true", fx.JSON)
	s := registeredAs(t, "skipped", code, body, http.StatusCreated)
	if s.Version.Verdict != models.VerdictRejected || !s.Version.Registered.SkippedGates || len(s.Version.Gates) != 0 ||
		s.Promoted == nil || s.Promoted.Reason != models.ReasonManual || !strings.Contains(s.Version.Reason, "gates skipped") {
		t.Fatalf("skipped gates: %+v", s)
	}

	// What does not fit is a 400 naming the mismatch.
	const narrow = "narrow"
	env.ApplyPipeline(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: narrow}
spec:
  dataset:
    label: y
    schema:
      - {name: a, type: float}
      - {name: b, type: float}
      - {name: c, type: float}
      - {name: d, type: category}
      - {name: y, type: category, categories: [no, yes, maybe]}
  model: {algorithm: gbdt}
`)
	for _, c := range []struct {
		name, p, query string
		body           []byte
		code           int
		want           string
	}{
		{"four columns", narrow, "format=xgboost&signature=schema", fx.JSON, 400,
			"feature count mismatch: the model takes 30 features (f0, f1, f2, f3, …, f27, f28, f29), pipeline narrow's feature columns are 4 (a, b, c, d)"},
		{"three inputs given", p, "format=xgboost&inputs=f0,f1,f2", fx.JSON, 400, "the model takes 30 features (f0, f1, f2, f3, …, f27, f28, f29), the request names 3 (f0, f1, f2)"},
		{"not the pipeline's columns", narrow, "format=xgboost", fx.JSON, 400, `input "f0" is not a column of pipeline narrow`},
		{"three classes", p, "format=xgboost&classes=a,b,c", fx.JSON, 400, "class count mismatch: the model gives 2 classes, the request names 3"},
		{"an input twice", p, "format=xgboost&inputs=" + strings.Repeat("f1,", 29) + "f0", fx.JSON, 400, `input "f1" is named twice`},
		{"no format", p, "", fx.JSON, 400, "format is required"},
		{"onnx", p, "format=onnx", fx.JSON, 400, `format "onnx"`},
		{"not a model", p, "format=xgboost", []byte("hello"), 400, "not an XGBoost JSON or UBJSON model"},
		{"empty", p, "format=xgboost", nil, 400, "no model"},
		{"bad signature", p, "format=xgboost&signature=guess", fx.JSON, 400, `signature "guess"`},
		{"not applied", "nope", "format=xgboost", fx.JSON, 404, "apply its spec first"},
	} {
		code, body := post(t, h, c.p, c.query, c.body)
		var e map[string]string
		_ = json.Unmarshal(body, &e)
		if code != c.code || !strings.Contains(e["error"], c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, code, body, c.code, c.want)
		}
	}
}

// TestOutsideSignature: the names an outside model is registered under,
// and what is refused.
func TestOutsideSignature(t *testing.T) {
	t.Parallel()
	p, err := pipeline.Parse([]byte(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: sig}
spec:
  dataset:
    label: y
    schema:
      - {name: a, type: float}
      - {name: b, type: int}
      - {name: c, type: category}
      - {name: y, type: category, categories: [no, yes]}
  model: {algorithm: gbdt}
`))
	if err != nil {
		t.Fatal(err)
	}
	own := func(n int, task ml.Task, classes ...string) ml.Signature {
		s := ml.Signature{Task: task, Classes: classes}
		for j := range n {
			s.Inputs = append(s.Inputs, ml.Input{Name: "f" + string(rune('0'+j)), Type: ml.Numeric})
		}
		return s
	}
	sig, from, err := registry.OutsideSignature(p, registry.Upload{Format: bundle.ModelXGBoost, Inputs: []string{"a", "b"}}, own(2, ml.Classification, "0", "1"))
	if err != nil || from != registry.SignatureGiven || sig.Label != "y" || strings.Join(sig.Classes, ",") != "no,yes" || sig.Inputs[1].Name != "b" {
		t.Fatalf("given inputs: %+v %s %v", sig, from, err)
	}
	sig, _, err = registry.OutsideSignature(p, registry.Upload{Format: bundle.ModelXGBoost, Inputs: []string{"a", "b"}, Classes: []string{"1.0", "0"}}, own(2, ml.Classification, "0", "1"))
	if err != nil || strings.Join(sig.Classes, ",") != "1,0" {
		t.Fatalf("given classes: %+v %v", sig, err)
	}
	for _, c := range []struct {
		name string
		u    registry.Upload
		own  ml.Signature
		want string
	}{
		{"a category column", registry.Upload{Format: bundle.ModelXGBoost, From: registry.SignatureSchema}, own(3, ml.Classification, "0", "1"),
			`input "c" is a category column of pipeline sig: an XGBoost model takes numbers`},
		{"the label as input", registry.Upload{Format: bundle.ModelXGBoost, Inputs: []string{"a", "y"}}, own(2, ml.Classification, "0", "1"), `input "y" is pipeline sig's label`},
		{"a regressor", registry.Upload{Format: bundle.ModelXGBoost, Inputs: []string{"a", "b"}}, own(2, ml.Regression), "is a regression model; pipeline sig's label \"y\" (category) calls for classification"},
		{"three classes", registry.Upload{Format: bundle.ModelXGBoost, Inputs: []string{"a", "b"}}, own(2, ml.Classification, "0", "1", "2"),
			"the model gives 3 classes, pipeline sig's label \"y\" has 2 categories (no, yes)"},
		{"a Gyre model renamed", registry.Upload{Format: bundle.ModelGyre, Inputs: []string{"a"}}, own(1, ml.Classification, "no", "yes"), "names its inputs and classes itself"},
	} {
		if _, _, err := registry.OutsideSignature(p, c.u, c.own); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestRegisterNeedsAdmin: registering a model is an admin's; the version
// records the credential that did.
func TestRegisterNeedsAdmin(t *testing.T) {
	t.Parallel()
	tokens := servicetest.NewTokens(t)
	key := looptest.SigningKeyFile(t)
	r := servicetest.StartWith(t, servicetest.Options{Tokens: tokens}, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := registry.DefaultConfig()
		cfg.NATSURL = url
		cfg.SigningKey = key
		return registry.New(cfg, deps)
	})
	h := r.Services[0].(*registry.Service).Handler()
	fx := bundletest.Binary(t)
	const p = "admin"
	r.Apply(t, bundletest.Spec(p, ""))
	if code, body := post(t, h, p, "format=xgboost&skipGates=true", fx.JSON, tokens.Secret(service.ScopeRead)); code != http.StatusForbidden {
		t.Fatalf("a read token: %d %s, want 403", code, body)
	}
	code, body := post(t, h, p, "format=xgboost&skipGates=true", fx.JSON, tokens.Secret(service.ScopeAdmin))
	v := registeredAs(t, "admin", code, body, http.StatusCreated).Version
	if by := v.Registered.By; !strings.HasPrefix(by, "token:tok_") || !strings.HasSuffix(by, " (test-admin)") {
		t.Fatalf("registered by %q", by)
	}
}

// TestRegisterGyreModels: a Gyre bundle and a bare gyre.model/v1 artifact
// register like an XGBoost file: judged by the gates, signed, recorded.
func TestRegisterGyreModels(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	h := startRegistry(t, env).Handler()
	const p = "toy"
	spec := env.ApplyPipeline(looptest.Spec(p, "{algorithm: gbdt, params: {trees: 20, maxDepth: 3}}", gates))
	env.AddBatch(p, "b1", looptest.CSV(2, 300, 0))
	ref := env.StoreBundle(spec, "elsewhere", looptest.CSV(1, 400, 0))
	whole, err := store.GetObject(env.Ctx(), env.Buckets.Models, ref.GetKey())
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.Unmarshal(whole)
	if err != nil {
		t.Fatal(err)
	}
	var art bytes.Buffer
	if err := ml.Save(&art, b.Model); err != nil {
		t.Fatal(err)
	}
	for i, file := range [][]byte{whole, art.Bytes()} {
		code, body := post(t, h, p, "format=gyre&signature=schema", file)
		r := registeredAs(t, "gyre model", code, body, http.StatusCreated)
		v := r.Version
		if v.Version != int64(i+1) || v.Verdict != models.VerdictBlessed || v.Algorithm != "gbdt" || v.EvalBatchID != "b1" || v.Registered.Format != bundle.ModelGyre {
			t.Fatalf("gyre model %d: %+v", i+1, r)
		}
		data, err := store.GetObject(env.Ctx(), env.Buckets.Models, v.Artifact.Key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := bundle.Unmarshal(data)
		if err != nil || got.Pipeline != p || got.RequestID != v.RequestID || got.ModelFormat != "" {
			t.Fatalf("gyre model %d stored: %+v %v", i+1, got, err)
		}
	}
	code, body := post(t, h, p, "format=gyre&inputs=x1", art.Bytes())
	var e map[string]string
	if _ = json.Unmarshal(body, &e); code != http.StatusBadRequest || !strings.Contains(e["error"], "names its inputs and classes itself") {
		t.Fatalf("a Gyre model renamed: %d %s", code, body)
	}
}
