package ml

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// CSVOptions says how to turn a table of strings into a Dataset.
type CSVOptions struct {
	// Label is the target column. Empty means the data is unlabelled (for
	// prediction).
	Label string
	// Features lists the feature columns in order. Empty means every column
	// except the label, in file order (for records: sorted by name).
	Features []string
	// Categorical lists feature columns to encode against a vocabulary
	// instead of parsing as numbers.
	Categorical []string
	// Task says how to read the label; empty means Classification.
	Task Task
	// Comma is the field delimiter; zero means ','.
	Comma rune
}

// ReadCSV reads a CSV table with a header row. Numeric cells are parsed as
// float64; empty cells and NA, N/A, NaN, null, none and ? (any case) are
// missing (NaN). Categorical columns are encoded against their sorted
// vocabulary. Class labels are trimmed and numbers normalised ("1.0" is class
// "1").
//
// Errors are *DataError values naming the 1-based data row (the header is not
// counted) and the column: malformed CSV, a value that is not a number, an
// infinite value, an unknown column, a missing label, an empty file or a file
// with no data rows.
func ReadCSV(r io.Reader, opts CSVOptions) (*Dataset, error) {
	cr := csv.NewReader(r)
	if opts.Comma != 0 {
		cr.Comma = opts.Comma
	}
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, dataErr(0, "", "empty input: no header row")
	}
	if err != nil {
		return nil, csvErr(err, 0)
	}
	header = slices.Clone(header)
	for i := range header {
		header[i] = strings.TrimSpace(header[i])
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	b, err := newTableBuilder(header, opts)
	if err != nil {
		return nil, err
	}
	for row := 1; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvErr(err, row)
		}
		if err := b.add(row, func(c int) (string, bool) { return rec[c], true }); err != nil {
			return nil, err
		}
	}
	return b.finish()
}

// ReadCSVFile reads the CSV file at path as ReadCSV does; its errors start
// with the path.
func ReadCSVFile(path string, opts CSVOptions) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := ReadCSV(f, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// csvErr turns an encoding/csv error into a DataError for data row row.
func csvErr(err error, row int) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return dataErr(row, "", "malformed CSV (line %d, column %d): %v", pe.Line, pe.Column, pe.Err)
	}
	return dataErr(row, "", "reading CSV: %v", err)
}

// FromRecords builds a Dataset from rows given as column → value maps (for
// example the inline rows of a data.batch.arrived event). A column absent
// from a record is missing. It follows the same rules and errors as ReadCSV;
// rows are numbered from 1 in slice order.
func FromRecords(records []map[string]string, opts CSVOptions) (*Dataset, error) {
	set := map[string]bool{}
	for _, rec := range records {
		for k := range rec {
			set[k] = true
		}
	}
	cols := make([]string, 0, len(set))
	for k := range set {
		cols = append(cols, k)
	}
	slices.Sort(cols) // map order is random; the column order must not be
	b, err := newTableBuilder(cols, opts)
	if err != nil {
		return nil, err
	}
	for i, rec := range records {
		if err := b.add(i+1, func(c int) (string, bool) {
			v, ok := rec[cols[c]]
			return v, ok
		}); err != nil {
			return nil, err
		}
	}
	return b.finish()
}

// tableBuilder accumulates string cells into typed columns.
type tableBuilder struct {
	opts     CSVOptions
	features []string
	src      []int  // header position of each feature
	cat      []bool // feature is categorical
	label    int    // header position of the label, -1 for none
	num      [][]float64
	catVals  [][]string
	labels   []string
	regLabel []float64
	rows     int
}

func newTableBuilder(header []string, opts CSVOptions) (*tableBuilder, error) {
	if opts.Task == "" {
		opts.Task = Classification
	}
	if opts.Task != Classification && opts.Task != Regression {
		return nil, dataErr(0, "", "unknown task %q (want %q or %q)", opts.Task, Classification, Regression)
	}
	pos := make(map[string]int, len(header))
	for i, h := range header {
		if h == "" {
			return nil, dataErr(0, "", "header column %d has an empty name", i+1)
		}
		if _, dup := pos[h]; dup {
			return nil, dataErr(0, h, "duplicate column in header")
		}
		pos[h] = i
	}
	known := func() string { return strings.Join(header, ", ") }
	b := &tableBuilder{opts: opts, label: -1}
	if opts.Label != "" {
		p, ok := pos[opts.Label]
		if !ok {
			return nil, dataErr(0, opts.Label, "label column not found (columns: %s)", known())
		}
		b.label = p
	}
	b.features = slices.Clone(opts.Features)
	if len(b.features) == 0 {
		for _, h := range header {
			if h != opts.Label {
				b.features = append(b.features, h)
			}
		}
	}
	if len(b.features) == 0 {
		return nil, dataErr(0, "", "no feature columns (columns: %s)", known())
	}
	isCat := make(map[string]bool, len(opts.Categorical))
	for _, c := range opts.Categorical {
		isCat[c] = true
	}
	seen := map[string]bool{}
	for _, f := range b.features {
		p, ok := pos[f]
		if !ok {
			return nil, dataErr(0, f, "unknown feature column (columns: %s)", known())
		}
		if f == opts.Label {
			return nil, dataErr(0, f, "the label column cannot also be a feature")
		}
		if seen[f] {
			return nil, dataErr(0, f, "feature listed twice")
		}
		seen[f] = true
		b.src = append(b.src, p)
		b.cat = append(b.cat, isCat[f])
	}
	for _, c := range opts.Categorical {
		if !seen[c] {
			return nil, dataErr(0, c, "categorical column is not a feature (features: %s)", strings.Join(b.features, ", "))
		}
	}
	b.num = make([][]float64, len(b.features))
	b.catVals = make([][]string, len(b.features))
	return b, nil
}

// add appends one row; cell returns the raw string of a header column and
// whether it was present.
func (b *tableBuilder) add(row int, cell func(col int) (string, bool)) error {
	for j, c := range b.src {
		s, ok := cell(c)
		if b.cat[j] {
			if !ok || isMissing(s) {
				s = ""
			}
			b.catVals[j] = append(b.catVals[j], strings.TrimSpace(s))
			continue
		}
		v := math.NaN()
		if ok && !isMissing(s) {
			var err error
			v, err = strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return dataErr(row, b.features[j], "value %q is not a number", s)
			}
			if math.IsInf(v, 0) {
				return dataErr(row, b.features[j], "value %q is not finite", s)
			}
		}
		b.num[j] = append(b.num[j], v)
	}
	if b.label >= 0 {
		s, ok := cell(b.label)
		if !ok || isMissing(s) {
			return dataErr(row, b.opts.Label, "label is missing")
		}
		if b.opts.Task == Regression {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return dataErr(row, b.opts.Label, "label %q is not a number", s)
			}
			if math.IsInf(v, 0) {
				return dataErr(row, b.opts.Label, "label %q is not finite", s)
			}
			b.regLabel = append(b.regLabel, v)
		} else {
			b.labels = append(b.labels, canonicalClass(s))
		}
	}
	b.rows++
	return nil
}

func (b *tableBuilder) finish() (*Dataset, error) {
	if b.rows == 0 {
		return nil, dataErr(0, "", "no data rows")
	}
	d := &Dataset{Features: b.features, X: make([][]float64, len(b.features))}
	for j := range b.features {
		if !b.cat[j] {
			d.X[j] = b.num[j]
			continue
		}
		vals := b.catVals[j]
		nonEmpty := make([]string, 0, len(vals))
		for _, v := range vals {
			if v != "" {
				nonEmpty = append(nonEmpty, v)
			}
		}
		vocab := sortedUnique(nonEmpty, false)
		if vocab == nil {
			vocab = []string{} // categorical with nothing seen yet: still categorical
		}
		pos := make(map[string]int, len(vocab))
		for i, c := range vocab {
			pos[c] = i
		}
		col := make([]float64, len(vals))
		for i, v := range vals {
			if v == "" {
				col[i] = math.NaN()
			} else {
				col[i] = float64(pos[v])
			}
		}
		if d.Categories == nil {
			d.Categories = make([][]string, len(b.features))
		}
		d.Categories[j] = vocab
		d.X[j] = col
	}
	if b.label >= 0 {
		d.LabelName = b.opts.Label
		d.Task = b.opts.Task
		if b.opts.Task == Regression {
			d.Label = b.regLabel
		} else {
			d.Classes, d.Label = encodeClasses(b.labels)
		}
	}
	return d, nil
}
