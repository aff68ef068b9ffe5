package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// Model formats: how a bundle's model is stored, and what NewOutside
// takes.
const (
	// ModelGyre is Gyre's own model: a gyre.model/v1 artifact (what the
	// trainer and `gyre train` write), inline in the bundle's "model".
	ModelGyre = "gyre"
	// ModelXGBoost is a model file written by XGBoost's save_model (JSON or
	// UBJSON; see ml.LoadXGBoost), kept byte for byte in "modelData".
	ModelXGBoost = "xgboost"
)

// ModelFormats returns the model formats a bundle can hold.
func ModelFormats() []string { return []string{ModelGyre, ModelXGBoost} }

// isOutside reports whether a model format is stored as the file of a
// library other than Gyre's.
func isOutside(format string) bool { return format == ModelXGBoost }

// Outside is a model trained outside Gyre, to bundle with NewOutside.
type Outside struct {
	Pipeline  string
	RequestID string
	// Format is ModelXGBoost (an XGBoost model file), or ModelGyre: a
	// gyre.model/v1 artifact, or a gyre.bundle/v1 document.
	Format string
	// Data is the model's file.
	Data []byte
	// Signature is what the model takes and gives, in the model's order:
	// its inputs are the pipeline's raw columns, taken as they come (the
	// identity: the model does its own preprocessing, if any), its label
	// the pipeline's, its classes the names of its outputs. The task must
	// be the model's. An XGBoost model's inputs are numeric. For ModelGyre
	// it must be zero or the model's own: a Gyre artifact names its inputs
	// and classes itself.
	Signature ml.Signature
}

// Inspect reads a model file of a format and returns its own signature —
// the columns it takes, its label, task and classes: an XGBoost model's
// feature_names (or f0, f1, …) and classes "0", "1", …; a Gyre artifact's
// signature; for a bundle, its feature set's source columns (numeric, or
// categorical with their vocabulary) and its model's classes. Nothing else
// is checked: NewOutside is what bundles the model.
func Inspect(format string, data []byte) (ml.Signature, ml.ModelInfo, error) {
	switch format {
	case ModelXGBoost:
		m, err := ml.LoadXGBoost(data)
		if err != nil {
			return ml.Signature{}, ml.ModelInfo{}, bundleErr(err, "xgboost model")
		}
		return m.Signature(), m.Info(), nil
	case ModelGyre:
		if isBundle(data) {
			b, err := Unmarshal(data)
			if err != nil {
				return ml.Signature{}, ml.ModelInfo{}, err
			}
			return b.rawSignature(), b.Model.Info(), nil
		}
		m, err := ml.Load(bytes.NewReader(data))
		if err != nil {
			return ml.Signature{}, ml.ModelInfo{}, bundleErr(err, "gyre model (want a gyre.model/v1 artifact or a gyre.bundle/v1 document)")
		}
		return m.Signature(), m.Info(), nil
	}
	return ml.Signature{}, ml.ModelInfo{}, bundleErr(nil, "model format %q (want one of %s)", format, strings.Join(ModelFormats(), ", "))
}

// rawSignature is what a bundle takes and gives in raw columns: its
// feature set's columns, its model's label, task and classes.
func (b *Bundle) rawSignature() ml.Signature {
	sig := b.Model.Signature()
	out := ml.Signature{Task: sig.Task, Label: b.Features.Label, Classes: sig.Classes}
	for _, c := range b.Features.Columns {
		in := ml.Input{Name: c.Name, Type: ml.Numeric}
		if !c.Numeric {
			in.Type, in.Categories = ml.Categorical, slices.Clone(c.Categories)
		}
		out.Inputs = append(out.Inputs, in)
	}
	return out
}

// isBundle reports whether data looks like a bundle document rather than
// a model artifact.
func isBundle(data []byte) bool {
	var head struct {
		Format string `json:"format"`
	}
	return json.Unmarshal(data, &head) == nil && head.Format == Format
}

// NewOutside bundles a model trained outside Gyre under the pipeline's
// names. Its feature set is the identity over the signature's inputs —
// numeric columns as numbers, a Gyre model's categorical inputs as their
// category codes — so serving feeds the model the raw columns of a
// request. A Gyre bundle (ModelGyre) keeps its own feature set and takes
// the pipeline and request id given. Anything that does not fit — a
// signature with another number of inputs or classes than the model, or
// another task — is an *Error that says so.
func NewOutside(o Outside) (*Bundle, error) {
	switch o.Format {
	case ModelXGBoost:
		m, err := loadOutside(ModelXGBoost, o.Data, o.Signature)
		if err != nil {
			return nil, err
		}
		b := &Bundle{Pipeline: o.Pipeline, RequestID: o.RequestID, Features: IdentitySet(o.Signature), Model: m,
			ModelFormat: ModelXGBoost, ModelData: bytes.Clone(o.Data)}
		if err := b.check(); err != nil {
			return nil, err
		}
		return b, nil
	case ModelGyre:
		var b *Bundle
		if isBundle(o.Data) {
			var err error
			if b, err = Unmarshal(o.Data); err != nil {
				return nil, err
			}
		} else {
			m, err := ml.Load(bytes.NewReader(o.Data))
			if err != nil {
				return nil, bundleErr(err, "gyre model (want a gyre.model/v1 artifact or a gyre.bundle/v1 document)")
			}
			b = &Bundle{Features: IdentitySet(m.Signature()), Model: m}
		}
		own := b.Model.Signature()
		if !zeroSignature(o.Signature) && !sameSignature(own, o.Signature) {
			return nil, bundleErr(nil, "a Gyre model names its inputs and classes itself: it takes %s and gives %s, not %s and %s",
				inputList(own), classList(own), inputList(o.Signature), classList(o.Signature))
		}
		b.Pipeline, b.RequestID = o.Pipeline, o.RequestID
		if err := b.check(); err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, bundleErr(nil, "model format %q (want one of %s)", o.Format, strings.Join(ModelFormats(), ", "))
}

// fits checks a signature against a model's own: the number of inputs,
// the task and the number of classes.
func fits(own, sig ml.Signature, what string) error {
	if len(sig.Inputs) != len(own.Inputs) {
		return bundleErr(nil, "the model (%s) takes %d features (%s), the signature names %d inputs (%s)",
			what, len(own.Inputs), abbreviate(inputNames(own)), len(sig.Inputs), abbreviate(inputNames(sig)))
	}
	if sig.Task != own.Task {
		return bundleErr(nil, "the model (%s) is a %s model, the signature is for %s", what, own.Task, sig.Task)
	}
	if len(sig.Classes) != len(own.Classes) {
		return bundleErr(nil, "the model (%s) gives %d classes, the signature names %d (%s)",
			what, len(own.Classes), len(sig.Classes), strings.Join(sig.Classes, ", "))
	}
	if sig.Label == "" {
		return bundleErr(nil, "the signature names no label")
	}
	seen := make(map[string]bool, len(sig.Classes))
	for _, c := range sig.Classes {
		if c == "" || seen[c] {
			return bundleErr(nil, "the signature's classes must be unique and not empty (%q)", c)
		}
		seen[c] = true
	}
	return nil
}

func zeroSignature(s ml.Signature) bool {
	return s.Task == "" && len(s.Inputs) == 0 && s.Label == "" && len(s.Classes) == 0
}

func sameSignature(a, b ml.Signature) bool {
	if a.Task != b.Task || a.Label != b.Label || !slices.Equal(a.Classes, b.Classes) || len(a.Inputs) != len(b.Inputs) {
		return false
	}
	for i := range a.Inputs {
		if a.Inputs[i].Name != b.Inputs[i].Name || a.Inputs[i].Type != b.Inputs[i].Type {
			return false
		}
	}
	return true
}

func inputNames(s ml.Signature) []string {
	out := make([]string, len(s.Inputs))
	for i, in := range s.Inputs {
		out[i] = in.Name
	}
	return out
}

func inputList(s ml.Signature) string { return "inputs (" + abbreviate(inputNames(s)) + ")" }

func classList(s ml.Signature) string {
	if s.Task == ml.Regression {
		return "a value"
	}
	return "classes (" + strings.Join(s.Classes, ", ") + ")"
}

// abbreviate lists names, the first and last few of a long list.
func abbreviate(names []string) string {
	if len(names) <= 8 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:4], ", ") + ", …, " + strings.Join(names[len(names)-3:], ", ")
}

// IdentitySet is the feature set that hands a model its inputs as they
// come: for each input of sig, its column untransformed (a numeric input
// the number, a categorical one its category's code in the input's
// vocabulary), with sig's label, task and classes (sorted as features.Fit
// sorts them).
func IdentitySet(sig ml.Signature) *features.Set {
	s := &features.Set{Label: sig.Label, Task: sig.Task, Classes: sortClasses(sig.Classes)}
	for _, in := range sig.Inputs {
		c := features.Column{Name: in.Name, Transform: pipeline.TransformIdentity, Numeric: in.Type != ml.Categorical}
		if !c.Numeric {
			c.Categories = slices.Clone(in.Categories)
		}
		s.Columns = append(s.Columns, c)
	}
	s.Version = setDigest(s)
	return s
}

// sortClasses sorts class names as features.Fit does: numerically when all
// are numbers, lexically otherwise.
func sortClasses(classes []string) []string {
	if len(classes) == 0 {
		return nil
	}
	out := slices.Clone(classes)
	nums := make(map[string]float64, len(out))
	for _, c := range out {
		f, err := strconv.ParseFloat(c, 64)
		if err != nil || math.IsNaN(f) {
			sort.Strings(out)
			return out
		}
		nums[c] = f
	}
	sort.SliceStable(out, func(i, j int) bool { return nums[out[i]] < nums[out[j]] })
	return out
}

// CanonicalClass writes a class name the way features.Fit stores the
// label's values: a number in its shortest form ("1.0" is "1"), anything
// else trimmed.
func CanonicalClass(v string) string {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return v
}

// setDigest is a feature set's version as features.Fit computes it: the
// first 8 bytes of the SHA-256 of its JSON without the version, in hex.
func setDigest(s *features.Set) string {
	c := *s
	c.Version = ""
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// loadOutside reads an outside model's file under a signature.
func loadOutside(format string, data []byte, sig ml.Signature) (ml.Model, error) {
	switch format {
	case ModelXGBoost:
		own, err := ml.LoadXGBoost(data)
		if err != nil {
			return nil, bundleErr(err, "xgboost model")
		}
		if err := fits(own.Signature(), sig, own.Objective()); err != nil {
			return nil, err
		}
		for _, in := range sig.Inputs {
			if in.Type != ml.Numeric || len(in.Categories) > 0 {
				return nil, bundleErr(nil, "input %q is %s: an XGBoost model takes numbers", in.Name, in.Type)
			}
		}
		m, err := own.WithSignature(sig)
		if err != nil {
			return nil, bundleErr(err, "xgboost model")
		}
		return m, nil
	}
	return nil, bundleErr(nil, "model format %q (this Gyre reads %s)", format, strings.Join(ModelFormats(), ", "))
}

// marshalOutside encodes a bundle whose model is an outside file. The
// file is read again under the model's signature, so that what Marshal
// writes, Load reads.
func marshalOutside(b *Bundle) ([]byte, error) {
	if len(b.ModelData) == 0 {
		return nil, bundleErr(nil, "a %s model without its file (ModelData)", b.ModelFormat)
	}
	sig := b.Model.Signature()
	m, err := loadOutside(b.ModelFormat, b.ModelData, sig)
	if err != nil {
		return nil, err
	}
	if err := (&Bundle{Features: b.Features, Model: m}).check(); err != nil {
		return nil, err
	}
	out, err := json.Marshal(document{
		Format: Format, Pipeline: b.Pipeline, RequestID: b.RequestID, Features: b.Features,
		ModelFormat: b.ModelFormat, Signature: &sig, ModelData: b.ModelData,
	})
	if err != nil {
		return nil, bundleErr(err, "encode the document")
	}
	return append(out, '\n'), nil
}

// unmarshalOutside decodes a bundle whose model is an outside file.
func unmarshalOutside(doc *document) (*Bundle, error) {
	if !isOutside(doc.ModelFormat) {
		return nil, bundleErr(nil, "model format %q (this Gyre reads %s)", doc.ModelFormat, strings.Join(ModelFormats(), ", "))
	}
	if len(doc.ModelData) == 0 {
		return nil, bundleErr(nil, "no model: a %s bundle carries the model's file in modelData", doc.ModelFormat)
	}
	if len(bytes.TrimSpace(doc.Model)) != 0 {
		return nil, bundleErr(nil, "a %s bundle carries its model in modelData, not in model", doc.ModelFormat)
	}
	if doc.Signature == nil {
		return nil, bundleErr(nil, "no signature: a %s bundle names the model's inputs and classes", doc.ModelFormat)
	}
	m, err := loadOutside(doc.ModelFormat, doc.ModelData, *doc.Signature)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Pipeline: doc.Pipeline, RequestID: doc.RequestID, Features: doc.Features, Model: m,
		ModelFormat: doc.ModelFormat, ModelData: doc.ModelData}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}
