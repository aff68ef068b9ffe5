// Package bundletest gives tests an outside model to register and serve:
// the XGBoost fixture of libs/ml (XGBoost 1.7.4's binary:logistic model
// of the breast cancer data, 30 features f0…f29, and its 196 held-back
// rows, a tenth of their values missing), a pipeline spec whose columns
// fit it, and labelled batches of its rows.
package bundletest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/ml"
)

// XGBoost is the fixture: the model's files, the rows, and what the model
// itself (ml.LoadXGBoost) predicts for them.
type XGBoost struct {
	// JSON and UBJ are the same model as XGBoost's JSON and UBJSON files.
	JSON, UBJ []byte
	// Rows are the held-back rows, f0…f29 in order, NaN where missing.
	Rows [][]float64
	// Proba are the model's class probabilities of Rows ([1-p, p]).
	Proba [][]float64
}

// Features is the number of the fixture's features.
const Features = 30

// dir is libs/ml/testdata/xgboost, found from this file.
func dir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("bundletest: cannot locate the fixture")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "ml", "testdata", "xgboost")
}

// Binary reads the fixture.
func Binary(t testing.TB) XGBoost {
	t.Helper()
	d := dir(t)
	var f XGBoost
	var err error
	if f.JSON, err = os.ReadFile(filepath.Join(d, "binary.json")); err != nil {
		t.Fatalf("bundletest: %v", err)
	}
	if f.UBJ, err = os.ReadFile(filepath.Join(d, "binary.ubj")); err != nil {
		t.Fatalf("bundletest: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(d, "binary.expect.json"))
	if err != nil {
		t.Fatalf("bundletest: %v", err)
	}
	var e struct {
		Rows [][]*float64 `json:"rows"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("bundletest: %v", err)
	}
	for _, r := range e.Rows {
		row := make([]float64, len(r))
		for j, v := range r {
			row[j] = math.NaN()
			if v != nil {
				row[j] = *v
			}
		}
		f.Rows = append(f.Rows, row)
	}
	m, err := ml.LoadXGBoost(f.JSON)
	if err != nil {
		t.Fatalf("bundletest: %v", err)
	}
	f.Proba = m.PredictProba(f.Rows)
	return f
}

// Predicted is the class the model predicts for row i, "0" or "1".
func (f XGBoost) Predicted(i int) string {
	if f.Proba[i][1] > f.Proba[i][0] {
		return "1"
	}
	return "0"
}

// CSV is a batch of the rows with columns f0…f29 and the label y, as
// label gives it for row i (a missing value is an empty cell).
func (f XGBoost) CSV(label func(i int) string) []byte {
	var b strings.Builder
	for j := range Features {
		fmt.Fprintf(&b, "f%d,", j)
	}
	b.WriteString("y\n")
	for i, r := range f.Rows {
		for _, v := range r {
			if !math.IsNaN(v) {
				b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
			}
			b.WriteByte(',')
		}
		b.WriteString(label(i) + "\n")
	}
	return []byte(b.String())
}

// Spec is a pipeline whose schema is the fixture's columns, f0…f29
// (float) and the label y (int); extra is YAML appended under spec:
// (indented two spaces), e.g. "  evaluation: {gates: [...]}".
func Spec(name, extra string) string {
	var cols strings.Builder
	for j := range Features {
		fmt.Fprintf(&cols, "      - {name: f%d, type: float}\n", j)
	}
	return fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  dataset:
    label: y
    schema:
%s      - {name: y, type: int}
  model: {algorithm: gbdt}
%s`, name, cols.String(), extra)
}
