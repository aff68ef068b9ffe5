package bundle_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bundle/bundletest"
	"github.com/gyrehq/gyre/libs/ml"
)

// xgbSignature names the fixture's 30 inputs c0…c29, label y, classes
// "benign" and "malignant".
func xgbSignature(n int) ml.Signature {
	sig := ml.Signature{Task: ml.Classification, Label: "y", Classes: []string{"benign", "malignant"}}
	for j := range n {
		sig.Inputs = append(sig.Inputs, ml.Input{Name: "c" + strconv.Itoa(j), Type: ml.Numeric})
	}
	return sig
}

func TestOutsideXGBoostBundlePredictsAsXGBoost(t *testing.T) {
	t.Parallel()
	fx := bundletest.Binary(t)
	for ext, data := range map[string][]byte{".json": fx.JSON, ".ubj": fx.UBJ} {
		b, err := bundle.NewOutside(bundle.Outside{Pipeline: "cancer", RequestID: "registered-1", Format: bundle.ModelXGBoost, Data: data, Signature: xgbSignature(30)})
		if err != nil {
			t.Fatal(err)
		}
		enc, err := bundle.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		again, err := bundle.Marshal(b)
		if err != nil || !bytes.Equal(enc, again) {
			t.Fatalf("%s: Marshal is not deterministic (%v)", ext, err)
		}
		if !bytes.Contains(enc, []byte(`"modelFormat":"xgboost"`)) || bytes.Contains(enc, []byte(`"model":`)) {
			t.Fatalf("%s: the document does not hold the XGBoost file as modelData: %.200s", ext, enc)
		}
		got, err := bundle.Unmarshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		if got.ModelFormat != bundle.ModelXGBoost || !bytes.Equal(got.ModelData, data) || got.Model.Info().Algorithm != "xgboost" {
			t.Fatalf("%s: loaded format %q, algorithm %q, %d bytes of model", ext, got.ModelFormat, got.Model.Info().Algorithm, len(got.ModelData))
		}
		if re, err := bundle.Marshal(got); err != nil || !bytes.Equal(re, enc) {
			t.Fatalf("%s: a loaded bundle encodes to other bytes (%v)", ext, err)
		}
		// Raw records, through the identity feature set, give XGBoost's
		// probabilities exactly.
		rows := fx.Rows
		records := make([]map[string]string, len(rows))
		for i, r := range rows {
			records[i] = map[string]string{}
			for j, v := range r {
				if !math.IsNaN(v) {
					records[i]["c"+strconv.Itoa(j)] = strconv.FormatFloat(v, 'g', -1, 64)
				}
			}
		}
		p, err := got.PredictRecords(records)
		if err != nil {
			t.Fatal(err)
		}
		want := fx.Proba
		for i := range rows {
			for k := range 2 {
				if p.Proba[i][k] != want[i][k] {
					t.Fatalf("%s: row %d class %d: %v, XGBoost %v", ext, i, k, p.Proba[i][k], want[i][k])
				}
			}
			if wantLabel := got.Classes()[bundle.Argmax(want[i])]; p.Labels[i] != wantLabel {
				t.Fatalf("%s: row %d: label %q, want %q", ext, i, p.Labels[i], wantLabel)
			}
		}
		// It evaluates on a labelled batch like any bundle.
		var csv strings.Builder
		for j := range 30 {
			fmt.Fprintf(&csv, "c%d,", j)
		}
		csv.WriteString("y\n")
		for i, r := range rows {
			for _, v := range r {
				if !math.IsNaN(v) {
					csv.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
				}
				csv.WriteString(",")
			}
			csv.WriteString(p.Labels[i] + "\n")
		}
		m, err := got.Evaluate(readTable(t, []byte(csv.String())))
		if err != nil || m["accuracy"] != 1 {
			t.Fatalf("%s: Evaluate on its own predictions: %v, %v", ext, m, err)
		}
	}
}

func TestOutsideRefusesWhatDoesNotFit(t *testing.T) {
	t.Parallel()
	data := bundletest.Binary(t).JSON
	regression := xgbSignature(30)
	regression.Task, regression.Classes = ml.Regression, nil
	three := xgbSignature(30)
	three.Classes = []string{"a", "b", "c"}
	categorical := xgbSignature(30)
	categorical.Inputs[3] = ml.Input{Name: "c3", Type: ml.Categorical, Categories: []string{"x"}}
	noLabel := xgbSignature(30)
	noLabel.Label = ""
	cases := []struct {
		name string
		o    bundle.Outside
		want string
	}{
		{"four inputs", bundle.Outside{Format: bundle.ModelXGBoost, Data: data, Signature: xgbSignature(4)},
			"takes 30 features (f0, f1, f2, f3, …, f27, f28, f29), the signature names 4 inputs (c0, c1, c2, c3)"},
		{"regression", bundle.Outside{Format: bundle.ModelXGBoost, Data: data, Signature: regression}, "is a classification model, the signature is for regression"},
		{"three classes", bundle.Outside{Format: bundle.ModelXGBoost, Data: data, Signature: three}, "gives 2 classes, the signature names 3"},
		{"categorical", bundle.Outside{Format: bundle.ModelXGBoost, Data: data, Signature: categorical}, `input "c3" is categorical`},
		{"no label", bundle.Outside{Format: bundle.ModelXGBoost, Data: data, Signature: noLabel}, "names no label"},
		{"not xgboost", bundle.Outside{Format: bundle.ModelXGBoost, Data: []byte("hello"), Signature: xgbSignature(30)}, "not an XGBoost JSON or UBJSON model"},
		{"onnx", bundle.Outside{Format: "onnx", Data: data}, `model format "onnx"`},
		{"gyre, not gyre", bundle.Outside{Format: bundle.ModelGyre, Data: data}, "want a gyre.model/v1 artifact"},
	}
	for _, c := range cases {
		_, err := bundle.NewOutside(c.o)
		var be *bundle.Error
		if !errors.As(err, &be) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a bundle error with %q", c.name, err, c.want)
		}
	}

	// A document naming an unknown format, or without its file or
	// signature, is refused.
	b, err := bundle.NewOutside(bundle.Outside{Pipeline: "p", Format: bundle.ModelXGBoost, Data: data, Signature: xgbSignature(30)})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(map[string]any){
		"unknown format": func(d map[string]any) { d["modelFormat"] = "onnx" },
		"no file":        func(d map[string]any) { delete(d, "modelData") },
		"no signature":   func(d map[string]any) { delete(d, "signature") },
		"both":           func(d map[string]any) { d["model"] = map[string]any{"format": "gyre.model/v1"} },
		"other inputs": func(d map[string]any) {
			d["signature"].(map[string]any)["inputs"] = []any{map[string]any{"name": "x", "type": "numeric"}}
		},
	} {
		var doc map[string]any
		if err := json.Unmarshal(enc, &doc); err != nil {
			t.Fatal(err)
		}
		edit(doc)
		raw, _ := json.Marshal(doc)
		if _, err := bundle.Unmarshal(raw); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

func TestOutsideGyreArtifact(t *testing.T) {
	t.Parallel()
	trained := train(t)
	var art bytes.Buffer
	if err := ml.Save(&art, trained.Model); err != nil {
		t.Fatal(err)
	}
	b, err := bundle.NewOutside(bundle.Outside{Pipeline: "toy", RequestID: "registered-2", Format: bundle.ModelGyre, Data: art.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(enc, []byte("modelFormat")) {
		t.Fatalf("a Gyre model's bundle names a model format: %.200s", enc)
	}
	got, err := bundle.Unmarshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	// The artifact takes the feature set's outputs; raw through the
	// identity, it predicts what the model predicts on them.
	tab := readTable(t, batch(2, 50))
	ds, err := trained.Dataset(tab, false)
	if err != nil {
		t.Fatal(err)
	}
	x, err := trained.Model.Signature().Matrix(ds)
	if err != nil {
		t.Fatal(err)
	}
	want := trained.Model.PredictProba(x)
	records := make([]map[string]string, len(x))
	for i, r := range x {
		records[i] = map[string]string{}
		for j, in := range got.Model.Signature().Inputs {
			if in.Type == ml.Categorical {
				records[i][in.Name] = in.Categories[int(r[j])]
			} else {
				records[i][in.Name] = strconv.FormatFloat(r[j], 'g', -1, 64)
			}
		}
	}
	p, err := got.PredictRecords(records)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		for k := range want[i] {
			if p.Proba[i][k] != want[i][k] {
				t.Fatalf("row %d class %d: %v, want %v", i, k, p.Proba[i][k], want[i][k])
			}
		}
	}
	// A Gyre bundle is taken whole, under the new pipeline and request.
	whole, err := bundle.Marshal(trained)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := bundle.NewOutside(bundle.Outside{Pipeline: "other", RequestID: "registered-3", Format: bundle.ModelGyre, Data: whole})
	if err != nil || rb.Pipeline != "other" || rb.RequestID != "registered-3" || rb.Features.Version != trained.Features.Version {
		t.Fatalf("a Gyre bundle registered: %+v, %v", rb, err)
	}
	// A Gyre model's names are its own.
	if _, err := bundle.NewOutside(bundle.Outside{Format: bundle.ModelGyre, Data: art.Bytes(), Signature: xgbSignature(3)}); err == nil ||
		!strings.Contains(err.Error(), "names its inputs and classes itself") {
		t.Fatalf("a Gyre model under other names: %v", err)
	}
}

func TestIdentitySetSortsClassesAsFit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want []string }{
		{[]string{"10", "9", "1"}, []string{"1", "9", "10"}},
		{[]string{"b", "a", "10"}, []string{"10", "a", "b"}},
	} {
		s := bundle.IdentitySet(ml.Signature{Task: ml.Classification, Label: "y", Classes: c.in, Inputs: []ml.Input{{Name: "x", Type: ml.Numeric}}})
		if strings.Join(s.Classes, ",") != strings.Join(c.want, ",") || len(s.Version) != 16 {
			t.Errorf("classes %v: %v (version %q)", c.in, s.Classes, s.Version)
		}
	}
	if got := bundle.CanonicalClass(" 1.0 "); got != "1" {
		t.Errorf("CanonicalClass(1.0) = %q", got)
	}
}
