// Package features turns raw batch columns into model inputs the way a
// pipeline spec says (spec.features: identity, standardize, minmax, log1p,
// onehot, bucketize), with the transform parameters fitted on a training
// window and versioned.
//
// A fitted Set is what makes training and serving agree: the trainer fits it
// on its window and bundles it with the model, the feature service
// materialises snapshots with it, and serving applies the bundled Set to
// the raw inputs of each request. Its Version is a digest of the fitted
// parameters, so the same window gives the same version everywhere.
package features

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// Set is a fitted feature set.
type Set struct {
	// Version is the digest of the fitted parameters (16 hex digits).
	Version string `json:"version"`
	// Label is the target column.
	Label string `json:"label"`
	// Task is classification or regression, decided from the label column.
	Task ml.Task `json:"task"`
	// Classes are the label's classes (classification), sorted as ml sorts them.
	Classes []string `json:"classes,omitempty"`
	// Columns are the fitted transforms, in input order.
	Columns []Column `json:"columns"`
}

// Column is one source column and its fitted transform.
type Column struct {
	Name      string `json:"name"`
	Transform string `json:"transform"`
	// Numeric is false for a text column (categorical identity or onehot).
	Numeric bool    `json:"numeric"`
	Mean    float64 `json:"mean,omitempty"`
	Std     float64 `json:"std,omitempty"`
	Min     float64 `json:"min,omitempty"`
	Max     float64 `json:"max,omitempty"`
	// Categories is the fitted vocabulary of a text column, sorted.
	Categories []string  `json:"categories,omitempty"`
	Buckets    []float64 `json:"buckets,omitempty"`
}

// Error is a problem with data given to a feature set; it names the row
// (1-based) and column. It is permanent.
type Error struct {
	Row    int
	Column string
	Reason string
}

func (e *Error) Error() string {
	if e.Row > 0 {
		return fmt.Sprintf("features: row %d, column %q: %s", e.Row, e.Column, e.Reason)
	}
	if e.Column != "" {
		return fmt.Sprintf("features: column %q: %s", e.Column, e.Reason)
	}
	return "features: " + e.Reason
}

// Permanent marks feature errors as not worth retrying.
func (e *Error) Permanent() bool { return true }

// Fit fits the pipeline's feature transforms on the given batches (the
// training window). With no spec.features, every column but the label is a
// feature with the identity transform.
func Fit(p *pipeline.Pipeline, window ...*table.Table) (*Set, error) {
	if len(window) == 0 {
		return nil, &Error{Reason: "no data to fit on"}
	}
	label := p.Spec.Dataset.Label
	specs := p.Spec.Features
	if len(specs) == 0 {
		for _, c := range window[0].Columns {
			if c != label {
				specs = append(specs, pipeline.Feature{Name: c, Transform: pipeline.TransformIdentity})
			}
		}
	}
	types := map[string]string{}
	for _, c := range p.Spec.Dataset.Schema {
		types[c.Name] = c.Type
	}
	s := &Set{Label: label}
	for _, f := range specs {
		values, err := columnValues(window, f.Name)
		if err != nil {
			return nil, err
		}
		c := Column{Name: f.Name, Transform: f.Transform, Buckets: slices.Clone(f.Buckets)}
		if c.Transform == "" {
			c.Transform = pipeline.TransformIdentity
		}
		c.Numeric = isNumericColumn(types[f.Name], values) && c.Transform != pipeline.TransformOneHot
		if c.Numeric {
			nums := parseAll(values)
			c.Mean, c.Std, c.Min, c.Max = moments(nums)
		} else {
			c.Categories = vocabulary(values)
		}
		s.Columns = append(s.Columns, c)
	}
	labels, err := columnValues(window, label)
	if err != nil {
		return nil, err
	}
	if isRegression(types[label], labels) {
		s.Task = ml.Regression
	} else {
		s.Task = ml.Classification
		s.Classes = classes(labels)
	}
	s.Version = s.digest()
	return s, nil
}

func (s *Set) digest() string {
	c := *s
	c.Version = ""
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Outputs returns the model input names the set produces, in order: one per
// column, or one per category (name=value) for onehot.
func (s *Set) Outputs() []string {
	var out []string
	for _, c := range s.Columns {
		if c.Transform == pipeline.TransformOneHot {
			for _, v := range c.Categories {
				out = append(out, c.Name+"="+v)
			}
			continue
		}
		out = append(out, c.Name)
	}
	return out
}

// Dataset transforms a batch into an ml.Dataset; with labelled, the label
// column is required and encoded into the set's classes (an unseen class is
// an error naming its row).
func (s *Set) Dataset(t *table.Table, labelled bool) (*ml.Dataset, error) {
	idx := make([]int, len(s.Columns))
	for j, c := range s.Columns {
		idx[j] = t.Index(c.Name)
		if idx[j] < 0 {
			return nil, &Error{Column: c.Name, Reason: "the batch has no such column"}
		}
	}
	n := t.Len()
	ds := &ml.Dataset{Features: s.Outputs(), LabelName: s.Label}
	ds.X = make([][]float64, len(ds.Features))
	for j := range ds.X {
		ds.X[j] = make([]float64, n)
	}
	ds.Categories = make([][]string, len(ds.Features))
	out := 0
	for j, c := range s.Columns {
		width := 1
		if c.Transform == pipeline.TransformOneHot {
			width = len(c.Categories)
		} else if !c.Numeric {
			ds.Categories[out] = slices.Clone(c.Categories)
		}
		for i := 0; i < n; i++ {
			missing := t.IsMissing(i, idx[j])
			if err := c.apply(t.Rows[i][idx[j]], missing, ds.X[out:out+width], i); err != nil {
				return nil, err
			}
		}
		out += width
	}
	if labelled {
		li := t.Index(s.Label)
		if li < 0 {
			return nil, &Error{Column: s.Label, Reason: "the batch has no label column"}
		}
		ds.Task = s.Task
		ds.Classes = slices.Clone(s.Classes)
		ds.Label = make([]float64, n)
		for i := 0; i < n; i++ {
			v := strings.TrimSpace(t.Rows[i][li])
			if t.IsMissing(i, li) || v == "" {
				return nil, &Error{Row: i + 1, Column: s.Label, Reason: "label is missing"}
			}
			if s.Task == ml.Regression {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
					return nil, &Error{Row: i + 1, Column: s.Label, Reason: fmt.Sprintf("%q is not a finite number", v)}
				}
				ds.Label[i] = f
				continue
			}
			k := slices.Index(s.Classes, canonicalClass(v))
			if k < 0 {
				return nil, &Error{Row: i + 1, Column: s.Label, Reason: fmt.Sprintf("class %q was not in the training window (classes %v)", v, s.Classes)}
			}
			ds.Label[i] = float64(k)
		}
	}
	return ds, nil
}

// Row transforms one raw record (column → text value; absent = missing)
// into model inputs, for serving.
func (s *Set) Row(record map[string]string) ([]float64, error) {
	out := make([]float64, 0, len(s.Columns))
	for _, c := range s.Columns {
		width := 1
		if c.Transform == pipeline.TransformOneHot {
			width = len(c.Categories)
		}
		cols := make([][]float64, width)
		for k := range cols {
			cols[k] = make([]float64, 1)
		}
		v, ok := record[c.Name]
		if err := c.apply(v, !ok || v == "", cols, 0); err != nil {
			return nil, err
		}
		for k := range cols {
			out = append(out, cols[k][0])
		}
	}
	return out, nil
}

// apply writes the transform of one cell into dst[k][row].
func (c Column) apply(raw string, missing bool, dst [][]float64, row int) error {
	if c.Transform == pipeline.TransformOneHot {
		v := strings.TrimSpace(raw)
		for k, cat := range c.Categories {
			if !missing && cat == v {
				dst[k][row] = 1
			} else {
				dst[k][row] = 0
			}
		}
		return nil
	}
	if !c.Numeric {
		k := slices.Index(c.Categories, strings.TrimSpace(raw))
		if missing || k < 0 {
			dst[0][row] = math.NaN() // unseen category: missing, as trees route it
		} else {
			dst[0][row] = float64(k)
		}
		return nil
	}
	if missing {
		dst[0][row] = math.NaN()
		return nil
	}
	x, err := parseNumber(raw)
	if err != nil {
		return &Error{Row: row + 1, Column: c.Name, Reason: err.Error()}
	}
	x, err = c.number(x, row+1)
	if err != nil {
		return err
	}
	dst[0][row] = x
	return nil
}

// Width returns how many model inputs the column produces: one per category
// for onehot, else one.
func (c Column) Width() int {
	if c.Transform == pipeline.TransformOneHot {
		return len(c.Categories)
	}
	return 1
}

// Encode writes the transform of one raw cell into dst (Width values), as
// Row does (an absent or empty value is missing), without allocating: the
// form serving uses on its request path. row is the 1-based row an error
// names.
func (c Column) Encode(raw string, missing bool, dst []float64, row int) error {
	missing = missing || raw == ""
	if c.Transform == pipeline.TransformOneHot || !c.Numeric {
		v := strings.TrimSpace(raw)
		if c.Transform == pipeline.TransformOneHot {
			for k, cat := range c.Categories {
				dst[k] = 0
				if !missing && cat == v {
					dst[k] = 1
				}
			}
			return nil
		}
		dst[0] = math.NaN()
		if k := slices.Index(c.Categories, v); !missing && k >= 0 {
			dst[0] = float64(k)
		}
		return nil
	}
	if missing {
		dst[0] = math.NaN()
		return nil
	}
	x, err := parseNumber(raw)
	if err != nil {
		return &Error{Row: row, Column: c.Name, Reason: err.Error()}
	}
	return c.EncodeNumber(x, dst, row)
}

// EncodeNumber is Encode for a cell given as a number: NaN is missing,
// infinities are refused as Row refuses them, and a text column sees the
// number's shortest decimal form.
func (c Column) EncodeNumber(x float64, dst []float64, row int) error {
	if c.Transform == pipeline.TransformOneHot || !c.Numeric {
		if math.IsNaN(x) {
			return c.Encode("", true, dst, row)
		}
		return c.Encode(strconv.FormatFloat(x, 'g', -1, 64), false, dst, row)
	}
	if math.IsNaN(x) {
		dst[0] = math.NaN()
		return nil
	}
	if math.IsInf(x, 0) {
		return &Error{Row: row, Column: c.Name, Reason: fmt.Sprintf("%g is not a finite number", x)}
	}
	x, err := c.number(x, row)
	if err != nil {
		return err
	}
	dst[0] = x
	return nil
}

// number applies a numeric column's transform to a parsed value; row is
// 1-based.
func (c Column) number(x float64, row int) (float64, error) {
	switch c.Transform {
	case pipeline.TransformStandardize:
		if c.Std > 0 {
			x = (x - c.Mean) / c.Std
		} else {
			x = 0
		}
	case pipeline.TransformMinMax:
		if c.Max > c.Min {
			x = (x - c.Min) / (c.Max - c.Min)
		} else {
			x = 0
		}
	case pipeline.TransformLog1p:
		if x <= -1 {
			return 0, &Error{Row: row, Column: c.Name, Reason: fmt.Sprintf("log1p of %g is undefined", x)}
		}
		x = math.Log1p(x)
	case pipeline.TransformBucketize:
		x = float64(sort.SearchFloat64s(c.Buckets, x))
	}
	return x, nil
}

func parseNumber(s string) (float64, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, fmt.Errorf("%q is not a finite number", s)
	}
	return x, nil
}

func columnValues(window []*table.Table, name string) ([]string, error) {
	var out []string
	for _, t := range window {
		j := t.Index(name)
		if j < 0 {
			return nil, &Error{Column: name, Reason: "not a column of the training data"}
		}
		for i, r := range t.Rows {
			if t.IsMissing(i, j) {
				out = append(out, "")
				continue
			}
			out = append(out, strings.TrimSpace(r[j]))
		}
	}
	return out, nil
}

// isNumericColumn decides from the declared type, or — for an inferred
// schema — from whether every present value parses as a number.
func isNumericColumn(declared string, values []string) bool {
	switch declared {
	case pipeline.TypeFloat, pipeline.TypeInt, pipeline.TypeBool:
		return true
	case pipeline.TypeString, pipeline.TypeCategory:
		return false
	}
	for _, v := range values {
		if v == "" {
			continue
		}
		if _, err := parseNumber(v); err != nil {
			return false
		}
	}
	return true
}

// isRegression: a float label, or an undeclared numeric label with many
// distinct values, is a regression target; anything else is a class.
func isRegression(declared string, labels []string) bool {
	switch declared {
	case pipeline.TypeFloat:
		return true
	case pipeline.TypeInt, pipeline.TypeBool, pipeline.TypeString, pipeline.TypeCategory:
		return false
	}
	distinct := map[string]bool{}
	for _, v := range labels {
		if v == "" {
			continue
		}
		if _, err := parseNumber(v); err != nil {
			return false
		}
		distinct[v] = true
	}
	return len(distinct) > 20
}

func parseAll(values []string) []float64 {
	out := make([]float64, 0, len(values))
	for _, v := range values {
		if v == "" {
			continue
		}
		if x, err := parseNumber(v); err == nil {
			out = append(out, x)
		}
	}
	return out
}

func moments(x []float64) (mean, std, lo, hi float64) {
	if len(x) == 0 {
		return 0, 0, 0, 0
	}
	lo, hi = x[0], x[0]
	for _, v := range x {
		mean += v
		lo, hi = min(lo, v), max(hi, v)
	}
	mean /= float64(len(x))
	for _, v := range x {
		std += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(std / float64(len(x))), lo, hi
}

func vocabulary(values []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range values {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// canonicalClass writes numeric class names the way classes() stores them,
// so "1", "1.0" and " 1" are one class.
func canonicalClass(v string) string {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return v
}

// classes returns the distinct label values, numerically sorted when all are
// numbers (as ml sorts them) and lexically otherwise.
func classes(labels []string) []string {
	seen := map[string]bool{}
	var out []string
	numeric := true
	for _, v := range labels {
		if v == "" {
			continue
		}
		c := canonicalClass(v)
		if _, err := strconv.ParseFloat(c, 64); err != nil {
			numeric = false
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	if numeric {
		sort.Slice(out, func(i, j int) bool {
			a, _ := strconv.ParseFloat(out[i], 64)
			b, _ := strconv.ParseFloat(out[j], 64)
			return a < b
		})
	} else {
		sort.Strings(out)
	}
	return out
}
