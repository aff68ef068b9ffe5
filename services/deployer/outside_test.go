package deployer_test

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bundle/bundletest"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/store"
)

// storeXGBoost bundles an XGBoost file as the registry registers it —
// under the pipeline's columns f0…f29, label y, classes 0 and 1 — stores
// it in gyre-models and returns its reference.
func (h *harness) storeXGBoost(name, requestID string, file []byte) *gyrev1.ObjectRef {
	h.t.Helper()
	data := xgboostBundle(h.t, name, requestID, file)
	ref, _, err := store.PutObject(h.env.Ctx(), h.env.Buckets.Models, bundle.Key(name, requestID), bundle.MediaType, data)
	if err != nil {
		h.t.Fatal(err)
	}
	return ref
}

func xgboostBundle(t *testing.T, name, requestID string, file []byte) []byte {
	t.Helper()
	sig := ml.Signature{Task: ml.Classification, Label: "y", Classes: []string{"0", "1"}}
	for j := range bundletest.Features {
		sig.Inputs = append(sig.Inputs, ml.Input{Name: "f" + strconv.Itoa(j), Type: ml.Numeric})
	}
	b, err := bundle.NewOutside(bundle.Outside{Pipeline: name, RequestID: requestID, Format: bundle.ModelXGBoost, Data: file, Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	data, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// xgboostRequest is the OIP request of the fixture's rows: one FP64
// tensor per column, null where a value is missing.
func xgboostRequest(rows [][]float64) map[string]any {
	var inputs []map[string]any
	for j := range bundletest.Features {
		data := make([]any, len(rows))
		for i, r := range rows {
			if !math.IsNaN(r[j]) {
				data[i] = r[j]
			}
		}
		inputs = append(inputs, map[string]any{"name": "f" + strconv.Itoa(j), "datatype": "FP64", "shape": []int{len(rows)}, "data": data})
	}
	return map[string]any{"inputs": inputs}
}

// TestServesXGBoost: a registered XGBoost model is served after the
// signature and digest checks like any bundle, and answers XGBoost's own
// probabilities; a version whose XGBoost file is replaced after it was
// signed is refused, and the model serving keeps serving.
func TestServesXGBoost(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const name = "xgb"
	h.env.ApplyPipeline(bundletest.Spec(name, "  deployment: {strategy: immediate}\n"))
	h.run(nil)
	fx := bundletest.Binary(t)
	h.promote(name, 1, h.storeXGBoost(name, "registered-1", fx.JSON), 0.97)
	h.waitServing(name, "1")

	code, body := h.do("POST", "/v2/models/"+name+"/infer", xgboostRequest(fx.Rows))
	if code != 200 {
		t.Fatalf("infer: %d %v", code, body)
	}
	proba, predict := output(body, "probabilities"), output(body, "predict")
	if len(proba) != 2*len(fx.Rows) || len(predict) != len(fx.Rows) {
		t.Fatalf("infer: %d probabilities, %d predictions for %d rows", len(proba), len(predict), len(fx.Rows))
	}
	worst := 0.0
	for i, want := range fx.Proba {
		for k := range 2 {
			worst = max(worst, math.Abs(proba[2*i+k].(float64)-want[k]))
		}
		if predict[i] != fx.Predicted(i) {
			t.Fatalf("row %d: predicted %v, XGBoost %s", i, predict[i], fx.Predicted(i))
		}
	}
	if worst > 1e-9 {
		t.Fatalf("probabilities differ from XGBoost's by up to %g", worst)
	}
	t.Logf("%d rows through /infer: max |Δ| from ml.LoadXGBoost's PredictProba %g", len(fx.Rows), worst)

	// Version 2, signed over its bundle; its XGBoost file then replaced in
	// gyre-models (base_score 0.3 → 0.9: a model that loads and predicts
	// otherwise).
	signed := h.storeXGBoost(name, "registered-2", fx.UBJ)
	tampered := bytes.Replace(fx.JSON, []byte(`"base_score":"3E-1"`), []byte(`"base_score":"9E-1"`), 1)
	if bytes.Equal(tampered, fx.JSON) {
		t.Fatal("the fixture's base_score was not found")
	}
	if _, _, err := store.PutObject(h.env.Ctx(), h.env.Buckets.Models, signed.GetKey(), bundle.MediaType,
		xgboostBundle(t, name, "registered-2", tampered)); err != nil {
		t.Fatal(err)
	}
	h.promote(name, 2, signed, 0.97)
	if reason := h.rolledBack(name, 2); !strings.Contains(reason, "refused") || !strings.Contains(reason, "the artifact was replaced") {
		t.Fatalf("a replaced XGBoost file: rolled back with %q", reason)
	}
	if v := h.servingVersion(name); v != "1" {
		t.Fatalf("serving %s, want v1 to keep serving", v)
	}
}
