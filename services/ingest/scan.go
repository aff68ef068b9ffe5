package ingest

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/parquet-go/parquet-go"

	"github.com/gyrehq/gyre/libs/table"
)

// summary is what ingest needs of a batch that parses: its rows and columns.
type summary struct {
	Rows    int64
	Columns []string
}

// scan checks that a batch parses and counts its rows, streaming: memory
// does not grow with the batch (a record at a time), so that a 200 MB upload
// costs kilobytes, not the gigabytes table.Read's [][]string would take.
// It applies table.Read's rules and returns its errors (*table.Error, the
// same rows and reasons: TestScanAgreesWithTable holds it to that), so that a
// batch ingest accepts is one validation can read.
func scan(format string, r io.ReaderAt, size int64) (summary, error) {
	switch format {
	case table.FormatCSV:
		return scanCSV(io.NewSectionReader(r, 0, size))
	case table.FormatJSONL:
		return scanJSONL(io.NewSectionReader(r, 0, size))
	case table.FormatParquet:
		return scanParquet(r, size)
	}
	return summary{}, &FormatError{Format: format}
}

// readBuffer is the buffer between the spooled batch and a parser.
const readBuffer = 256 << 10

func scanCSV(r io.Reader) (summary, error) {
	cr := csv.NewReader(bufio.NewReaderSize(r, readBuffer))
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return summary{}, &table.Error{Format: table.FormatCSV, Reason: "empty: no header line"}
	}
	if err != nil {
		return summary{}, csvError(err)
	}
	cols := append([]string(nil), header...) // ReuseRecord: the next Read overwrites it
	if err := checkHeader(table.FormatCSV, cols); err != nil {
		return summary{}, err
	}
	var rows int64
	for {
		_, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return summary{}, csvError(err)
		}
		rows++
	}
	if rows == 0 {
		return summary{}, &table.Error{Format: table.FormatCSV, Reason: "no data rows after the header"}
	}
	return summary{Rows: rows, Columns: cols}, nil
}

// csvError is table's: encoding/csv's line-based errors as data-row numbers.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		reason := pe.Err.Error()
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			reason = "wrong number of fields (rows must have as many fields as the header)"
		}
		return &table.Error{Format: table.FormatCSV, Row: max(pe.Line-1, 0), Reason: reason}
	}
	return &table.Error{Format: table.FormatCSV, Reason: err.Error()}
}

// checkHeader is table's check of a header: not too wide, every name
// non-empty and once.
func checkHeader(format string, header []string) error {
	if len(header) > table.MaxColumns {
		return &table.Error{Format: format, Reason: fmt.Sprintf("%d columns, at most %d", len(header), table.MaxColumns)}
	}
	seen := map[string]bool{}
	for i, h := range header {
		if strings.TrimSpace(h) == "" {
			return &table.Error{Format: format, Reason: fmt.Sprintf("column %d has an empty name", i+1)}
		}
		if seen[h] {
			return &table.Error{Format: format, Column: h, Reason: "column appears twice in the header"}
		}
		seen[h] = true
	}
	return nil
}

// maxJSONLLine is table's longest JSON Lines line.
const maxJSONLLine = 16 << 20

// scanJSONL reads one object per line. table.Read reports, in this order: a
// line that is not one object (at the first such row), no object at all, a
// bad header, then the first row with a nested value (its first such column
// in header order). The scan keeps the first nested value it meets and
// reports it only after the whole batch parsed, so that the order is the
// same.
func scanJSONL(r io.Reader) (summary, error) {
	sc := bufio.NewScanner(bufio.NewReaderSize(r, readBuffer))
	sc.Buffer(make([]byte, 64<<10), maxJSONLLine)
	index := map[string]int{} // column -> position, first-seen order
	var order []string
	var rows int64
	var nested error
	for sc.Scan() {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		obj, err := table.DecodeJSONLine(text, int(rows)+1)
		if err != nil {
			return summary{}, err
		}
		rows++
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, ok := index[k]; !ok {
				index[k] = len(order)
				order = append(order, k)
			}
		}
		if nested == nil {
			nested = nestedValue(obj, index, rows)
		}
	}
	if err := sc.Err(); err != nil {
		return summary{}, &table.Error{Format: table.FormatJSONL, Row: int(rows) + 1, Reason: err.Error()}
	}
	if rows == 0 {
		return summary{}, &table.Error{Format: table.FormatJSONL, Reason: "empty: no JSON objects"}
	}
	if err := checkHeader(table.FormatJSONL, order); err != nil {
		return summary{}, err
	}
	if nested != nil {
		return summary{}, nested
	}
	return summary{Rows: rows, Columns: order}, nil
}

// nestedValue returns table's error for a row holding a value that is not a
// string, number, bool or null — at the row's first such column in header
// order — or nil.
func nestedValue(obj map[string]any, index map[string]int, row int64) error {
	col, at := "", -1
	var value any
	for k, v := range obj {
		switch v.(type) {
		case nil, string, json.Number, bool:
			continue
		}
		if at < 0 || index[k] < at {
			col, at, value = k, index[k], v
		}
	}
	if at < 0 {
		return nil
	}
	return &table.Error{Format: table.FormatJSONL, Row: int(row), Column: col,
		Reason: fmt.Sprintf("nested %T values are not supported; flatten the record", value)}
}

// scanParquet reads every row (parquet-go checks pages as it decodes them),
// a buffer of rows at a time.
func scanParquet(r io.ReaderAt, size int64) (s summary, err error) {
	// As table: a panic deep in the decoder on a hostile file is an error.
	defer func() {
		if p := recover(); p != nil {
			s, err = summary{}, &table.Error{Format: table.FormatParquet, Reason: fmt.Sprintf("corrupt file: %v", p)}
		}
	}()
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return summary{}, &table.Error{Format: table.FormatParquet, Reason: "not a Parquet file: " + err.Error()}
	}
	schema := f.Schema()
	var cols []string
	for _, path := range schema.Columns() {
		if len(path) != 1 {
			return summary{}, &table.Error{Format: table.FormatParquet, Column: strings.Join(path, "."), Reason: "nested columns are not supported; flatten the schema"}
		}
		cols = append(cols, path[0])
	}
	if err := checkHeader(table.FormatParquet, cols); err != nil {
		return summary{}, err
	}
	pr := parquet.NewReader(io.NewSectionReader(r, 0, size), schema)
	defer pr.Close()
	buf := make([]parquet.Row, 256)
	var rows int64
	for {
		n, err := pr.ReadRows(buf)
		rows += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return summary{}, &table.Error{Format: table.FormatParquet, Row: int(rows) + 1, Reason: err.Error()}
		}
	}
	if rows == 0 {
		return summary{}, &table.Error{Format: table.FormatParquet, Reason: "no rows"}
	}
	return summary{Rows: rows, Columns: cols}, nil
}
