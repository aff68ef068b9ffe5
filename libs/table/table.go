// Package table reads data batches — CSV, JSON Lines or Parquet — into one
// shape, a header and rows of text cells, so that validation can say exactly
// which row and column is wrong before anything is typed; and writes typed
// columns back out as Parquet (offline feature snapshots).
package table

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Formats of a batch.
const (
	FormatCSV     = "csv"
	FormatJSONL   = "jsonl"
	FormatParquet = "parquet"
)

// Formats lists the formats Read takes.
func Formats() []string { return []string{FormatCSV, FormatJSONL, FormatParquet} }

// Table is a batch as text: Columns in order and one cell per column per
// row. A missing value (empty CSV field, JSON null or absent key, Parquet
// null) is Missing.
type Table struct {
	Columns []string
	Rows    [][]string
	// Missing marks missing cells; nil when none is.
	Missing [][]bool
}

// Len returns the number of rows.
func (t *Table) Len() int { return len(t.Rows) }

// Index returns the position of a column, or -1.
func (t *Table) Index(column string) int { return slices.Index(t.Columns, column) }

// IsMissing reports whether a cell is missing.
func (t *Table) IsMissing(row, col int) bool {
	// Missing grows only as far as the last row with a missing cell.
	return row < len(t.Missing) && t.Missing[row] != nil && t.Missing[row][col]
}

// Error is a problem reading a batch, naming the row (1-based, data rows:
// the CSV header is not row 1) and column where it can.
type Error struct {
	Format string
	Row    int
	Column string
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Format + " batch")
	if e.Row > 0 {
		fmt.Fprintf(&b, ", row %d", e.Row)
	}
	if e.Column != "" {
		fmt.Fprintf(&b, ", column %q", e.Column)
	}
	b.WriteString(": " + e.Reason)
	return b.String()
}

// Permanent: a batch that does not parse never will.
func (e *Error) Permanent() bool { return true }

// MaxColumns bounds the width of a batch.
const MaxColumns = 10000

// Read parses a batch of the given format.
func Read(format string, data []byte) (*Table, error) {
	switch format {
	case FormatCSV:
		return readCSV(data)
	case FormatJSONL:
		return readJSONL(data)
	case FormatParquet:
		return readParquet(data)
	default:
		return nil, &Error{Format: format, Reason: fmt.Sprintf("unknown format %q (want csv, jsonl or parquet)", format)}
	}
}

func readCSV(data []byte) (*Table, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.ReuseRecord = false
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, &Error{Format: FormatCSV, Reason: "empty: no header line"}
	}
	if err != nil {
		return nil, csvError(err)
	}
	if err := checkHeader(FormatCSV, header); err != nil {
		return nil, err
	}
	t := &Table{Columns: header}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(err)
		}
		row := len(t.Rows)
		for j, v := range rec {
			if strings.TrimSpace(v) == "" {
				t.markMissing(row, j)
			}
		}
		t.Rows = append(t.Rows, rec)
	}
	if len(t.Rows) == 0 {
		return nil, &Error{Format: FormatCSV, Reason: "no data rows after the header"}
	}
	return t, nil
}

// csvError turns encoding/csv's line-based errors into data-row numbers.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		reason := pe.Err.Error()
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			reason = "wrong number of fields (rows must have as many fields as the header)"
		}
		return &Error{Format: FormatCSV, Row: max(pe.Line-1, 0), Reason: reason}
	}
	return &Error{Format: FormatCSV, Reason: err.Error()}
}

func checkHeader(format string, header []string) error {
	if len(header) > MaxColumns {
		return &Error{Format: format, Reason: fmt.Sprintf("%d columns, at most %d", len(header), MaxColumns)}
	}
	seen := map[string]bool{}
	for i, h := range header {
		if strings.TrimSpace(h) == "" {
			return &Error{Format: format, Reason: fmt.Sprintf("column %d has an empty name", i+1)}
		}
		if seen[h] {
			return &Error{Format: format, Column: h, Reason: "column appears twice in the header"}
		}
		seen[h] = true
	}
	return nil
}

func (t *Table) markMissing(row, col int) {
	if t.Missing == nil {
		t.Missing = make([][]bool, row+1, max(row+1, len(t.Rows)+1))
	}
	for len(t.Missing) <= row {
		t.Missing = append(t.Missing, nil)
	}
	if t.Missing[row] == nil {
		t.Missing[row] = make([]bool, len(t.Columns))
	}
	t.Missing[row][col] = true
}

func readJSONL(data []byte) (*Table, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var objs []map[string]any
	cols := map[string]bool{}
	var order []string
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		obj, err := DecodeJSONLine(text, len(objs)+1)
		if err != nil {
			return nil, err
		}
		// Columns in first-seen order; keys of one object sorted for determinism.
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !cols[k] {
				cols[k] = true
				order = append(order, k)
			}
		}
		objs = append(objs, obj)
	}
	if err := sc.Err(); err != nil {
		return nil, &Error{Format: FormatJSONL, Row: len(objs) + 1, Reason: err.Error()}
	}
	if len(objs) == 0 {
		return nil, &Error{Format: FormatJSONL, Reason: "empty: no JSON objects"}
	}
	if err := checkHeader(FormatJSONL, order); err != nil {
		return nil, err
	}
	t := &Table{Columns: order, Rows: make([][]string, len(objs))}
	for i, obj := range objs {
		row := make([]string, len(order))
		for j, c := range order {
			v, ok := obj[c]
			if !ok || v == nil {
				t.markMissing(i, j)
				continue
			}
			switch x := v.(type) {
			case string:
				row[j] = x
			case json.Number:
				row[j] = x.String()
			case bool:
				row[j] = strconv.FormatBool(x)
			default:
				return nil, &Error{Format: FormatJSONL, Row: i + 1, Column: c, Reason: fmt.Sprintf("nested %T values are not supported; flatten the record", v)}
			}
		}
		t.Rows[i] = row
	}
	return t, nil
}

func readParquet(data []byte) (t *Table, err error) {
	// parquet-go validates as it reads; a hostile file must not take the
	// service down, so a panic deep in the decoder is an error here.
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, &Error{Format: FormatParquet, Reason: fmt.Sprintf("corrupt file: %v", r)}
		}
	}()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, &Error{Format: FormatParquet, Reason: "not a Parquet file: " + err.Error()}
	}
	schema := f.Schema()
	var cols []string
	for _, path := range schema.Columns() {
		if len(path) != 1 {
			return nil, &Error{Format: FormatParquet, Column: strings.Join(path, "."), Reason: "nested columns are not supported; flatten the schema"}
		}
		cols = append(cols, path[0])
	}
	if err := checkHeader(FormatParquet, cols); err != nil {
		return nil, err
	}
	t = &Table{Columns: cols}
	r := parquet.NewReader(bytes.NewReader(data), schema)
	defer r.Close()
	buf := make([]parquet.Row, 256)
	for {
		n, err := r.ReadRows(buf)
		for _, pr := range buf[:n] {
			i := len(t.Rows)
			row := make([]string, len(cols))
			seen := make([]bool, len(cols))
			for _, v := range pr {
				c := v.Column()
				if c < 0 || c >= len(cols) {
					continue
				}
				seen[c] = true
				if v.IsNull() {
					t.markMissing(i, c)
					continue
				}
				row[c] = parquetString(v)
			}
			for c := range cols {
				if !seen[c] {
					t.markMissing(i, c)
				}
			}
			t.Rows = append(t.Rows, row)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &Error{Format: FormatParquet, Row: len(t.Rows) + 1, Reason: err.Error()}
		}
	}
	if len(t.Rows) == 0 {
		return nil, &Error{Format: FormatParquet, Reason: "no rows"}
	}
	return t, nil
}

func parquetString(v parquet.Value) string {
	switch v.Kind() {
	case parquet.Boolean:
		return strconv.FormatBool(v.Boolean())
	case parquet.Int32:
		return strconv.FormatInt(int64(v.Int32()), 10)
	case parquet.Int64:
		return strconv.FormatInt(v.Int64(), 10)
	case parquet.Float:
		return strconv.FormatFloat(float64(v.Float()), 'g', -1, 32)
	case parquet.Double:
		return strconv.FormatFloat(v.Double(), 'g', -1, 64)
	default:
		return string(v.ByteArray())
	}
}

// Column is a typed column to write.
type Column struct {
	Name string
	// Float holds numeric values (NaN = null); Text, when non-nil, makes the
	// column a string column instead.
	Float []float64
	Text  []string
}

// WriteParquet writes columns (all the same length) as one Parquet file:
// doubles for numeric columns (NaN written as null), strings for text ones.
func WriteParquet(w io.Writer, cols []Column) error {
	if len(cols) == 0 {
		return errors.New("parquet: no columns")
	}
	n := -1
	group := parquet.Group{}
	for _, c := range cols {
		l := len(c.Float)
		node := parquet.Optional(parquet.Leaf(parquet.DoubleType))
		if c.Text != nil {
			l = len(c.Text)
			node = parquet.Optional(parquet.String())
		}
		if n >= 0 && l != n {
			return fmt.Errorf("parquet: column %q has %d values, others %d", c.Name, l, n)
		}
		n = l
		group[c.Name] = node
	}
	schema := parquet.NewSchema("gyre", group)
	// The schema orders columns by name; map each to its leaf index.
	leaf := map[string]int{}
	for i, path := range schema.Columns() {
		leaf[path[0]] = i
	}
	pw := parquet.NewWriter(w, schema)
	rows := make([]parquet.Row, 0, 1024)
	flush := func() error {
		if _, err := pw.WriteRows(rows); err != nil {
			return err
		}
		rows = rows[:0]
		return nil
	}
	ordered := slices.Clone(cols)
	sort.Slice(ordered, func(i, j int) bool { return leaf[ordered[i].Name] < leaf[ordered[j].Name] })
	for i := 0; i < n; i++ {
		row := make(parquet.Row, len(ordered))
		for j, c := range ordered {
			idx := leaf[c.Name]
			switch {
			case c.Text != nil:
				row[j] = parquet.ValueOf(c.Text[i]).Level(0, 1, idx)
			case math.IsNaN(c.Float[i]):
				row[j] = parquet.Value{}.Level(0, 0, idx)
			default:
				row[j] = parquet.ValueOf(c.Float[i]).Level(0, 1, idx)
			}
		}
		rows = append(rows, row)
		if len(rows) == cap(rows) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return pw.Close()
}

// DecodeJSONLine decodes one non-blank line of a JSON Lines batch: exactly
// one JSON object, numbers kept as json.Number. A line that is not one
// object is an *Error naming the row. The ingest service's streaming scan
// and Read share it, so both refuse the same lines with the same reasons.
func DecodeJSONLine(text []byte, row int) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		reason := "not a JSON object"
		if err != nil {
			reason = "not a JSON object: " + err.Error()
		}
		return nil, &Error{Format: FormatJSONL, Row: row, Reason: reason}
	}
	if dec.More() {
		return nil, &Error{Format: FormatJSONL, Row: row, Reason: "more than one JSON value on the line"}
	}
	return obj, nil
}
