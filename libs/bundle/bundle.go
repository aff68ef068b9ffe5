// Package bundle is the unit Gyre trains, registers and serves: a fitted
// feature set and the model trained on its outputs, in one self-describing
// JSON document (format gyre.bundle/v1).
//
// Keeping the two together is what makes training and serving agree: the
// trainer fits the feature set on its window and trains the model on what
// the set produces, and whoever loads the bundle — the evaluator, the
// deployer — turns raw rows into model inputs with exactly that set. Load
// checks that they fit each other, so a bundle that loads predicts.
//
// The document is
//
//	{"format":"gyre.bundle/v1","pipeline":"elec2","requestId":"…",
//	 "features":<features.Set>,"model":<ml artifact, gyre.model/v1 JSON>}
//
// or, for a model trained outside Gyre and registered (NewOutside), its
// file byte for byte, with the names it takes and gives:
//
//	{"format":"gyre.bundle/v1","pipeline":"elec2","requestId":"registered-…",
//	 "features":<identity over the model's columns>,"modelFormat":"xgboost",
//	 "signature":<ml.Signature>,"modelData":"<base64 of the XGBoost file>"}
//
// The same bundle always encodes to the same bytes (the feature set and the
// ml artifact are deterministic), so storing it content-addressed is
// idempotent: a retrained bundle after a crash is the same object.
package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// Format is the format tag of the bundles Save writes.
const Format = "gyre.bundle/v1"

// MediaType is the media type of a stored bundle.
const MediaType = "application/vnd.gyre.bundle+json"

// MaxBytes bounds how much Load reads, so that a corrupt or hostile object
// cannot exhaust memory.
const MaxBytes = ml.MaxArtifactBytes

// Bundle is a fitted feature set and its model.
type Bundle struct {
	// Pipeline the bundle was trained for.
	Pipeline string
	// RequestID is the training request that produced it.
	RequestID string
	// Features turns raw columns into the model's inputs.
	Features *features.Set
	// Model predicts from the outputs of Features.
	Model ml.Model
	// ModelFormat is how the model is stored: ModelGyre (or "") for Gyre's
	// own, whose artifact Marshal encodes from Model; ModelXGBoost for a
	// model trained outside Gyre, stored as its file (ModelData).
	ModelFormat string
	// ModelData is an outside model's file, byte for byte: what Marshal
	// stores and Load reads Model from, under Model's signature. Nil for
	// Gyre's own models.
	ModelData []byte
}

// document is the JSON form of a Bundle. The fields of outside models
// are omitted for Gyre's own, whose bytes stay what they always were.
type document struct {
	Format    string        `json:"format"`
	Pipeline  string        `json:"pipeline"`
	RequestID string        `json:"requestId"`
	Features  *features.Set `json:"features"`
	// ModelFormat is empty for Gyre's own models (ModelGyre).
	ModelFormat string `json:"modelFormat,omitempty"`
	// Signature names an outside model's inputs and classes.
	Signature *ml.Signature `json:"signature,omitempty"`
	// Model is Gyre's own artifact; ModelData an outside model's file.
	Model     json.RawMessage `json:"model,omitempty"`
	ModelData []byte          `json:"modelData,omitempty"`
}

// Error says a bundle cannot be written or read: the document is not a
// bundle, or its feature set and model do not fit each other. Reading the
// same bytes again fails the same way, so it is permanent.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return "bundle: " + e.Reason + ": " + e.Err.Error()
	}
	return "bundle: " + e.Reason
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks bundle errors as not worth retrying.
func (e *Error) Permanent() bool { return true }

func bundleErr(err error, format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...), Err: err}
}

// Marshal encodes b as a gyre.bundle/v1 document. It checks b the way Load
// does, so what Marshal writes, Load reads.
func Marshal(b *Bundle) ([]byte, error) {
	if b == nil {
		return nil, bundleErr(nil, "nil bundle")
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	if isOutside(b.ModelFormat) {
		return marshalOutside(b)
	}
	if b.ModelFormat != "" && b.ModelFormat != ModelGyre {
		return nil, bundleErr(nil, "model format %q (want one of %s)", b.ModelFormat, strings.Join(ModelFormats(), ", "))
	}
	var model bytes.Buffer
	if err := ml.Save(&model, b.Model); err != nil {
		return nil, bundleErr(err, "encode the model")
	}
	out, err := json.Marshal(document{
		Format: Format, Pipeline: b.Pipeline, RequestID: b.RequestID,
		Features: b.Features, Model: bytes.TrimSpace(model.Bytes()),
	})
	if err != nil {
		return nil, bundleErr(err, "encode the document")
	}
	return append(out, '\n'), nil
}

// Save writes b to w as a gyre.bundle/v1 document (see Marshal).
func Save(w io.Writer, b *Bundle) error {
	data, err := Marshal(b)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// Load reads a bundle written by Save. It checks the format tag, the model
// artifact (ml.Load: format, checksum, structure) and that the feature set
// produces exactly the inputs the model takes; anything wrong is an *Error.
// It never panics on bad input.
func Load(r io.Reader) (*Bundle, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("bundle: read: %w", err)
	}
	return Unmarshal(data)
}

// Unmarshal decodes a bundle from its bytes (see Load).
func Unmarshal(data []byte) (*Bundle, error) {
	if len(data) > MaxBytes {
		return nil, bundleErr(nil, "larger than %d bytes", MaxBytes)
	}
	var doc document
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, bundleErr(err, "not a JSON bundle document")
	}
	if doc.Format != Format {
		return nil, bundleErr(nil, "format %q, want %q", doc.Format, Format)
	}
	if doc.Features == nil {
		return nil, bundleErr(nil, "no feature set")
	}
	if doc.ModelFormat != "" {
		return unmarshalOutside(&doc)
	}
	if len(bytes.TrimSpace(doc.Model)) == 0 || bytes.Equal(bytes.TrimSpace(doc.Model), []byte("null")) {
		return nil, bundleErr(nil, "no model")
	}
	m, err := ml.Load(bytes.NewReader(doc.Model))
	if err != nil {
		return nil, bundleErr(err, "model")
	}
	b := &Bundle{Pipeline: doc.Pipeline, RequestID: doc.RequestID, Features: doc.Features, Model: m}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}

// check verifies that the feature set is well formed and produces, in order,
// the inputs the model takes: the invariant that lets a caller feed
// Features.Row straight into Model.
func (b *Bundle) check() error {
	s := b.Features
	if s == nil {
		return bundleErr(nil, "no feature set")
	}
	if b.Model == nil {
		return bundleErr(nil, "no model")
	}
	if len(s.Columns) == 0 {
		return bundleErr(nil, "the feature set has no columns")
	}
	if s.Label == "" {
		return bundleErr(nil, "the feature set names no label column")
	}
	for i, c := range s.Columns {
		if err := checkColumn(c); err != nil {
			return bundleErr(nil, "feature set column %d (%q): %s", i+1, c.Name, err)
		}
	}
	sig := b.Model.Signature()
	if sig.Task != s.Task {
		return bundleErr(nil, "the model is a %s model, the feature set is for %s", sig.Task, s.Task)
	}
	outs := s.Outputs()
	if len(outs) != len(sig.Inputs) {
		return bundleErr(nil, "the feature set produces %d inputs, the model takes %d", len(outs), len(sig.Inputs))
	}
	out := 0
	for _, c := range s.Columns {
		width := 1
		if c.Transform == pipeline.TransformOneHot {
			width = len(c.Categories)
		}
		for k := 0; k < width; k++ {
			in := sig.Inputs[out]
			if in.Name != outs[out] {
				return bundleErr(nil, "model input %d is %q, the feature set produces %q", out+1, in.Name, outs[out])
			}
			categorical := !c.Numeric && c.Transform != pipeline.TransformOneHot
			switch {
			case categorical && in.Type != ml.Categorical:
				return bundleErr(nil, "model input %q is %s, the feature set produces category codes", in.Name, in.Type)
			case categorical && !slices.Equal(in.Categories, c.Categories):
				return bundleErr(nil, "model input %q has categories %v, the feature set %v", in.Name, in.Categories, c.Categories)
			case !categorical && in.Type != ml.Numeric:
				return bundleErr(nil, "model input %q is %s, the feature set produces numbers", in.Name, in.Type)
			}
			out++
		}
	}
	if s.Task == ml.Classification {
		a, c := slices.Clone(sig.Classes), slices.Clone(s.Classes)
		slices.Sort(a)
		slices.Sort(c)
		if !slices.Equal(a, c) {
			return bundleErr(nil, "the model's classes %v differ from the feature set's %v", sig.Classes, s.Classes)
		}
	}
	return nil
}

func checkColumn(c features.Column) error {
	if c.Name == "" {
		return errors.New("no name")
	}
	switch c.Transform {
	case pipeline.TransformIdentity, pipeline.TransformStandardize, pipeline.TransformMinMax,
		pipeline.TransformLog1p, pipeline.TransformOneHot, pipeline.TransformBucketize:
	default:
		return fmt.Errorf("unknown transform %q", c.Transform)
	}
	for _, v := range []float64{c.Mean, c.Std, c.Min, c.Max} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return errors.New("a fitted parameter is not finite")
		}
	}
	if c.Transform == pipeline.TransformOneHot && len(c.Categories) == 0 {
		return errors.New("onehot with no categories")
	}
	if c.Transform == pipeline.TransformBucketize && !slices.IsSorted(c.Buckets) {
		return errors.New("bucket bounds are not ascending")
	}
	return nil
}

// Classes returns the class names of a classifier in the order of its
// probability outputs; nil for a regressor.
func (b *Bundle) Classes() []string { return b.Model.Signature().Classes }

// Dataset transforms a batch with the bundle's feature set (see
// features.Set.Dataset).
func (b *Bundle) Dataset(t *table.Table, labelled bool) (*ml.Dataset, error) {
	return b.Features.Dataset(t, labelled)
}

// Evaluate scores the model on a labelled batch (ml.Evaluate): accuracy,
// logloss, auc and f1 for a classifier, rmse and mae for a regressor.
func (b *Bundle) Evaluate(t *table.Table) (map[string]float64, error) {
	ds, err := b.Features.Dataset(t, true)
	if err != nil {
		return nil, err
	}
	return ml.Evaluate(b.Model, ds)
}

// Predictions are a bundle's outputs for a batch of rows.
type Predictions struct {
	// Task is classification or regression.
	Task ml.Task
	// Classes name the columns of Proba (classification).
	Classes []string
	// Values are, per row, the index in Classes of the most probable class
	// (classification; ties go to the lower index) or the predicted value
	// (regression). NaN when the row could not be scored.
	Values []float64
	// Labels are, per row, the predicted class name, or the value formatted
	// (regression).
	Labels []string
	// Proba are, per row, the probability of each class; nil for regression.
	Proba [][]float64
}

// Prediction is the output for one row.
type Prediction struct {
	Label string
	Value float64
	// Proba is the probability of each class in Bundle.Classes order; nil
	// for regression.
	Proba []float64
}

// Len returns the number of rows predicted.
func (p *Predictions) Len() int { return len(p.Values) }

// Row returns the prediction of row i.
func (p *Predictions) Row(i int) Prediction {
	out := Prediction{Label: p.Labels[i], Value: p.Values[i]}
	if p.Proba != nil {
		out.Proba = p.Proba[i]
	}
	return out
}

// PredictTable predicts every row of a batch (its label column, if any, is
// ignored). A value the feature set cannot transform is an error naming its
// row and column.
func (b *Bundle) PredictTable(t *table.Table) (*Predictions, error) {
	ds, err := b.Features.Dataset(t, false)
	if err != nil {
		return nil, err
	}
	x, err := b.Model.Signature().Matrix(ds)
	if err != nil {
		return nil, err
	}
	return b.predict(x), nil
}

// PredictRecords predicts raw records (column → text value; an absent or
// empty value is missing), the shape of a serving request.
func (b *Bundle) PredictRecords(records []map[string]string) (*Predictions, error) {
	x := make([][]float64, len(records))
	for i, r := range records {
		row, err := b.Features.Row(r)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i+1, err)
		}
		x[i] = row
	}
	return b.predict(x), nil
}

// PredictRow predicts one raw record (see PredictRecords).
func (b *Bundle) PredictRow(record map[string]string) (Prediction, error) {
	p, err := b.PredictRecords([]map[string]string{record})
	if err != nil {
		return Prediction{}, err
	}
	return p.Row(0), nil
}

// predict runs the model on rows in its input order.
func (b *Bundle) predict(x [][]float64) *Predictions {
	sig := b.Model.Signature()
	p := &Predictions{Task: sig.Task, Classes: slices.Clone(sig.Classes), Labels: make([]string, len(x))}
	if sig.Task == ml.Regression {
		p.Values = b.Model.Predict(x)
		for i, v := range p.Values {
			p.Labels[i] = fmt.Sprint(v)
		}
		return p
	}
	p.Proba = b.Model.PredictProba(x)
	p.Values = make([]float64, len(x))
	for i, row := range p.Proba {
		k := Argmax(row)
		if k < 0 || k >= len(sig.Classes) {
			p.Values[i] = math.NaN()
			continue
		}
		p.Values[i] = float64(k)
		p.Labels[i] = sig.Classes[k]
	}
	return p
}

// Argmax returns the index of the largest value (the lower on ties), or -1
// when there is none or one is NaN: how a row of class probabilities
// becomes a class, in bundle and in serving alike.
func Argmax(xs []float64) int {
	best := -1
	for i, v := range xs {
		if math.IsNaN(v) {
			return -1
		}
		if best < 0 || v > xs[best] {
			best = i
		}
	}
	return best
}
