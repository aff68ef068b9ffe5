package ml

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Task is what a model predicts.
type Task string

const (
	// Classification predicts one of Dataset.Classes; labels are class
	// indices.
	Classification Task = "classification"
	// Regression predicts a real value; labels are the values.
	Regression Task = "regression"
)

// FeatureType says how a feature column is encoded.
type FeatureType string

const (
	// Numeric columns hold real values, NaN when missing.
	Numeric FeatureType = "numeric"
	// Categorical columns hold the index of the value in the column's sorted
	// vocabulary (Dataset.Categories), NaN when missing or unseen.
	Categorical FeatureType = "categorical"
)

// Input describes one model input column. It is part of both a Dataset's
// schema and a model's Signature, so the two can be matched by name.
type Input struct {
	Name string      `json:"name"`
	Type FeatureType `json:"type"`
	// Categories is the sorted vocabulary of a categorical input: value i
	// encodes Categories[i]. Empty for numeric inputs.
	Categories []string `json:"categories,omitempty"`
}

// Dataset is an in-memory table of features and, optionally, labels.
//
// Features are stored column-major: X[j][i] is feature j of row i. Both
// trainers work one feature at a time (binning, histograms, standardisation),
// so a column is one contiguous slice. Missing values are NaN.
//
// A Dataset is treated as immutable once built: Slice returns views that share
// memory with the original, and models never modify the data they train on.
type Dataset struct {
	// Features names the columns of X, in order.
	Features []string
	// Categories holds, per feature, the sorted vocabulary of a categorical
	// column, or nil for a numeric column. It is nil or has len(Features)
	// entries.
	Categories [][]string
	// X holds the feature values column-major: X[feature][row].
	X [][]float64
	// LabelName is the name of the label column ("" when unknown).
	LabelName string
	// Task says how Label is encoded. It may be "" for unlabelled data.
	Task Task
	// Classes holds the class names of a classification dataset, sorted
	// numerically when every name is a number and lexically otherwise. Label
	// values are indices into Classes.
	Classes []string
	// Label holds the target per row: a class index for classification, the
	// value for regression. It is nil for unlabelled data.
	Label []float64
}

// NumRows returns the number of rows.
func (d *Dataset) NumRows() int {
	if d == nil {
		return 0
	}
	if len(d.X) > 0 {
		return len(d.X[0])
	}
	return len(d.Label)
}

// NumFeatures returns the number of feature columns.
func (d *Dataset) NumFeatures() int {
	if d == nil {
		return 0
	}
	return len(d.Features)
}

// FeatureType returns the type of feature j.
func (d *Dataset) FeatureType(j int) FeatureType {
	if j < len(d.Categories) && d.Categories[j] != nil {
		return Categorical
	}
	return Numeric
}

// Inputs returns the schema of the feature columns.
func (d *Dataset) Inputs() []Input {
	in := make([]Input, len(d.Features))
	for j, name := range d.Features {
		in[j] = Input{Name: name, Type: d.FeatureType(j)}
		if in[j].Type == Categorical {
			in[j].Categories = slices.Clone(d.Categories[j])
		}
	}
	return in
}

// Rows returns the features row-major (one new slice per row), the layout
// that Model.Predict takes.
func (d *Dataset) Rows() [][]float64 {
	n, p := d.NumRows(), d.NumFeatures()
	flat := make([]float64, n*p)
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = flat[i*p : (i+1)*p : (i+1)*p]
	}
	for j, col := range d.X {
		for i, v := range col {
			flat[i*p+j] = v
		}
	}
	return rows
}

// Slice returns rows [start, end) as a new Dataset that shares the column
// storage with d (a window over a batch). The slices are capped so that
// appending to them cannot overwrite d.
func (d *Dataset) Slice(start, end int) (*Dataset, error) {
	if d == nil {
		return nil, dataErr(0, "", "slice of a nil dataset")
	}
	n := d.NumRows()
	if start < 0 || end < start || end > n {
		return nil, dataErr(0, "", "slice [%d:%d] out of range for %d rows", start, end, n)
	}
	out := d.shallowHeader()
	out.X = make([][]float64, len(d.X))
	for j, col := range d.X {
		out.X[j] = col[start:end:end]
	}
	if d.Label != nil {
		out.Label = d.Label[start:end:end]
	}
	return out, nil
}

// Subset returns the given rows (0-based, in the given order, repeats
// allowed) as a new Dataset with copied columns.
func (d *Dataset) Subset(rows []int) (*Dataset, error) {
	if d == nil {
		return nil, dataErr(0, "", "subset of a nil dataset")
	}
	n := d.NumRows()
	for _, r := range rows {
		if r < 0 || r >= n {
			return nil, dataErr(0, "", "subset row index %d out of range for %d rows", r, n)
		}
	}
	out := d.shallowHeader()
	out.X = make([][]float64, len(d.X))
	for j, col := range d.X {
		c := make([]float64, len(rows))
		for k, r := range rows {
			c[k] = col[r]
		}
		out.X[j] = c
	}
	if d.Label != nil {
		out.Label = make([]float64, len(rows))
		for k, r := range rows {
			out.Label[k] = d.Label[r]
		}
	}
	return out, nil
}

// shallowHeader copies the schema (names, vocabularies, classes) but not the
// data.
func (d *Dataset) shallowHeader() *Dataset {
	out := &Dataset{
		Features:  slices.Clone(d.Features),
		LabelName: d.LabelName,
		Task:      d.Task,
		Classes:   slices.Clone(d.Classes),
	}
	if d.Categories != nil {
		out.Categories = make([][]string, len(d.Categories))
		for j, c := range d.Categories {
			out.Categories[j] = slices.Clone(c)
		}
	}
	return out
}

// Validate checks that the dataset is internally consistent: column lengths,
// unique feature names, categorical codes and labels in range, no infinite
// values and no missing labels. Errors name the row and column.
func (d *Dataset) Validate() error {
	if d == nil {
		return dataErr(0, "", "dataset is nil")
	}
	if len(d.X) != len(d.Features) {
		return dataErr(0, "", "%d feature names but %d columns", len(d.Features), len(d.X))
	}
	if d.Categories != nil && len(d.Categories) != len(d.Features) {
		return dataErr(0, "", "%d feature names but %d vocabularies", len(d.Features), len(d.Categories))
	}
	seen := make(map[string]bool, len(d.Features))
	for _, f := range d.Features {
		if f == "" {
			return dataErr(0, "", "empty feature name")
		}
		if seen[f] {
			return dataErr(0, f, "duplicate feature name")
		}
		seen[f] = true
	}
	n := d.NumRows()
	for j, col := range d.X {
		name := d.Features[j]
		if len(col) != n {
			return dataErr(0, name, "column has %d rows, want %d", len(col), n)
		}
		if d.FeatureType(j) == Categorical {
			if err := checkVocabulary(name, d.Categories[j]); err != nil {
				return err
			}
			k := float64(len(d.Categories[j]))
			for i, v := range col {
				if !math.IsNaN(v) && (v < 0 || v >= k || v != math.Trunc(v)) {
					return dataErr(i+1, name, "categorical code %v out of range [0,%d)", v, len(d.Categories[j]))
				}
			}
			continue
		}
		for i, v := range col {
			if math.IsInf(v, 0) {
				return dataErr(i+1, name, "value %v is not finite", v)
			}
		}
	}
	if d.Label == nil {
		return nil
	}
	if len(d.Label) != n {
		return dataErr(0, d.LabelName, "label has %d rows, want %d", len(d.Label), n)
	}
	switch d.Task {
	case Classification:
		if len(d.Classes) == 0 {
			return dataErr(0, d.LabelName, "classification dataset has no classes")
		}
		if err := checkVocabulary(d.LabelName, d.Classes); err != nil {
			return err
		}
		k := float64(len(d.Classes))
		for i, v := range d.Label {
			if math.IsNaN(v) {
				return dataErr(i+1, d.LabelName, "label is missing (NaN)")
			}
			if v < 0 || v >= k || v != math.Trunc(v) {
				return dataErr(i+1, d.LabelName, "class index %v out of range [0,%d)", v, len(d.Classes))
			}
		}
	case Regression:
		if len(d.Classes) != 0 {
			return dataErr(0, d.LabelName, "regression dataset must not have classes")
		}
		for i, v := range d.Label {
			if math.IsNaN(v) {
				return dataErr(i+1, d.LabelName, "label is missing (NaN)")
			}
			if math.IsInf(v, 0) {
				return dataErr(i+1, d.LabelName, "label %v is not finite", v)
			}
		}
	default:
		return dataErr(0, d.LabelName, "labelled dataset has unknown task %q (want %q or %q)", d.Task, Classification, Regression)
	}
	return nil
}

func checkVocabulary(col string, vocab []string) error {
	for i, c := range vocab {
		if i > 0 && vocab[i-1] == c {
			return dataErr(0, col, "vocabulary has duplicate value %q", c)
		}
	}
	return nil
}

// FromMatrix builds a Dataset from row-major values. For classification the
// label values are class names written as numbers (0 and 1 become classes
// "0" and "1"); for regression they are the targets. label may be nil for an
// unlabelled dataset. Every column is numeric.
func FromMatrix(features []string, rows [][]float64, label []float64, task Task) (*Dataset, error) {
	d := &Dataset{Features: slices.Clone(features), X: make([][]float64, len(features))}
	for j := range d.X {
		d.X[j] = make([]float64, len(rows))
	}
	for i, r := range rows {
		if len(r) != len(features) {
			return nil, dataErr(i+1, "", "row has %d values, want %d (one per feature)", len(r), len(features))
		}
		for j, v := range r {
			d.X[j][i] = v
		}
	}
	if label != nil {
		if len(label) != len(rows) {
			return nil, dataErr(0, "", "%d labels for %d rows", len(label), len(rows))
		}
		d.Task = task
		switch task {
		case Classification:
			names := make([]string, len(label))
			for i, v := range label {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return nil, dataErr(i+1, "", "label %v is not a valid class", v)
				}
				names[i] = strconv.FormatFloat(v, 'g', -1, 64)
			}
			d.Classes, d.Label = encodeClasses(names)
		case Regression:
			d.Label = slices.Clone(label)
		default:
			return nil, dataErr(0, "", "unknown task %q (want %q or %q)", task, Classification, Regression)
		}
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}

// Concat stacks datasets row-wise, for example the newest N batches of a
// training window. The first part's feature order is kept; the other parts
// must have the same feature names (in any order) and types. Categorical
// vocabularies and class lists are merged (sorted union) and codes re-mapped,
// so batches that saw different categories or only some classes combine
// correctly.
func Concat(parts ...*Dataset) (*Dataset, error) {
	if len(parts) == 0 {
		return nil, dataErr(0, "", "concat of no datasets")
	}
	for k, p := range parts {
		if p == nil {
			return nil, dataErr(0, "", "concat part %d is nil", k+1)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("concat part %d: %w", k+1, err)
		}
	}
	first := parts[0]
	out := &Dataset{Features: slices.Clone(first.Features), LabelName: first.LabelName, Task: first.Task}
	labelled := first.Label != nil
	total := 0
	// colOf[k][j] is the column of part k that holds output feature j.
	colOf := make([][]int, len(parts))
	for k, p := range parts {
		total += p.NumRows()
		if (p.Label != nil) != labelled {
			return nil, dataErr(0, "", "concat part %d: cannot mix labelled and unlabelled datasets", k+1)
		}
		if labelled && p.Task != first.Task {
			return nil, dataErr(0, "", "concat part %d: task %q differs from %q", k+1, p.Task, first.Task)
		}
		if len(p.Features) != len(first.Features) {
			return nil, dataErr(0, "", "concat part %d: %d features, want %d (%s)", k+1, len(p.Features), len(first.Features), strings.Join(first.Features, ", "))
		}
		idx := make(map[string]int, len(p.Features))
		for j, f := range p.Features {
			idx[f] = j
		}
		colOf[k] = make([]int, len(first.Features))
		for j, f := range first.Features {
			pj, ok := idx[f]
			if !ok {
				return nil, dataErr(0, f, "concat part %d has no such column", k+1)
			}
			if p.FeatureType(pj) != first.FeatureType(j) {
				return nil, dataErr(0, f, "concat part %d: column is %s, want %s", k+1, p.FeatureType(pj), first.FeatureType(j))
			}
			colOf[k][j] = pj
		}
	}
	out.X = make([][]float64, len(first.Features))
	for j := range first.Features {
		col := make([]float64, 0, total)
		if first.FeatureType(j) == Numeric {
			for k, p := range parts {
				col = append(col, p.X[colOf[k][j]]...)
			}
			out.X[j] = col
			continue
		}
		var all []string
		for k, p := range parts {
			all = append(all, p.Categories[colOf[k][j]]...)
		}
		vocab := sortedUnique(all, false)
		if vocab == nil {
			vocab = []string{} // a nil vocabulary would mean "numeric"
		}
		if out.Categories == nil {
			out.Categories = make([][]string, len(first.Features))
		}
		out.Categories[j] = vocab
		for k, p := range parts {
			col = append(col, remapCodes(p.X[colOf[k][j]], p.Categories[colOf[k][j]], vocab, math.NaN())...)
		}
		out.X[j] = col
	}
	if labelled {
		out.Label = make([]float64, 0, total)
		if first.Task == Classification {
			var all []string
			for _, p := range parts {
				all = append(all, p.Classes...)
			}
			out.Classes = sortedUnique(all, true)
			for _, p := range parts {
				out.Label = append(out.Label, remapCodes(p.Label, p.Classes, out.Classes, -1)...)
			}
		} else {
			for _, p := range parts {
				out.Label = append(out.Label, p.Label...)
			}
		}
	}
	return out, nil
}

// remapCodes re-expresses codes into vocabulary from as codes into
// vocabulary to; NaN stays NaN and a name missing from to becomes unknown.
func remapCodes(codes []float64, from, to []string, unknown float64) []float64 {
	pos := make(map[string]int, len(to))
	for i, c := range to {
		pos[c] = i
	}
	m := make([]float64, len(from))
	for i, c := range from {
		if p, ok := pos[c]; ok {
			m[i] = float64(p)
		} else {
			m[i] = unknown
		}
	}
	out := make([]float64, len(codes))
	for i, v := range codes {
		if math.IsNaN(v) || v < 0 || int(v) >= len(m) {
			out[i] = math.NaN()
			continue
		}
		out[i] = m[int(v)]
	}
	return out
}

// encodeClasses turns class names into a sorted class list and indices.
func encodeClasses(names []string) ([]string, []float64) {
	classes := sortedUnique(names, true)
	pos := make(map[string]int, len(classes))
	for i, c := range classes {
		pos[c] = i
	}
	label := make([]float64, len(names))
	for i, s := range names {
		label[i] = float64(pos[s])
	}
	return classes, label
}

// sortedUnique returns the distinct values sorted. With numericAware, when
// every value parses as a number they are sorted by value (so classes 2 and
// 10 come out as 2, 10 rather than 10, 2); otherwise lexically. Either way
// the order is a pure function of the set of values.
func sortedUnique(vals []string, numericAware bool) []string {
	u := slices.Clone(vals)
	slices.Sort(u)
	u = slices.Compact(u)
	if !numericAware || len(u) < 2 {
		return u
	}
	nums := make([]float64, len(u))
	for i, s := range u {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) {
			return u
		}
		nums[i] = v
	}
	idx := make([]int, len(u))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(nums[a], nums[b]) })
	out := make([]string, len(u))
	for i, k := range idx {
		out[i] = u[k]
	}
	return out
}

// canonicalClass normalises a class name: numbers are written in Go's
// shortest form so that "1", "1.0" and "01" from different batches name the
// same class.
func canonicalClass(s string) string {
	s = strings.TrimSpace(s)
	if v, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(v, 0) && !math.IsNaN(v) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return s
}

// isMissing reports whether a cell spells a missing value.
func isMissing(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "na", "n/a", "nan", "null", "none", "?":
		return true
	}
	return false
}
