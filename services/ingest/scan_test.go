package ingest

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/table"
)

func parquetBatch(t *testing.T, cols []table.Column) string {
	t.Helper()
	var b bytes.Buffer
	if err := table.WriteParquet(&b, cols); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestScanAgreesWithTable: the streaming scan accepts exactly what
// table.Read accepts, with the same row count and columns, and refuses the
// rest with the same error — the same row, column and reason — so that what
// ingest stores, validation can read, and an upload's 400 names the same row
// it always did.
func TestScanAgreesWithTable(t *testing.T) {
	t.Parallel()
	wide := strings.Repeat("c,", table.MaxColumns) + "c\n1\n"
	tests := []struct {
		name, format, data string
	}{
		{"csv", "csv", "x,y\n1.5,0\n2.5,1\n"},
		{"csv quoted newline", "csv", "x,y\n\"a\nb\",1\n2,3\n"},
		{"csv missing cells", "csv", "x,y\n,0\n2,\n"},
		{"csv no trailing newline", "csv", "x,y\n1,2"},
		{"csv crlf", "csv", "x,y\r\n1,2\r\n"},
		{"csv empty", "csv", ""},
		{"csv header only", "csv", "x,y\n"},
		{"csv short row", "csv", "x,y\n1,2\n3\n"},
		{"csv long row", "csv", "x,y\n1,2\n3,4\n5,6,7\n"},
		{"csv bare quote", "csv", "x,y\n1,a\"b\n"},
		{"csv empty column name", "csv", "x,\n1,2\n"},
		{"csv duplicate column", "csv", "x,x\n1,2\n"},
		{"csv too wide", "csv", wide},
		{"jsonl", "jsonl", "{\"x\":1,\"y\":\"a\"}\n\n{\"y\":\"b\",\"z\":true,\"x\":null}\n"},
		{"jsonl empty", "jsonl", "\n\n"},
		{"jsonl not an object", "jsonl", "{\"x\":1}\n[1]\n"},
		{"jsonl two values", "jsonl", "{\"x\":1} {\"x\":2}\n"},
		{"jsonl nested", "jsonl", "{\"x\":1}\n{\"x\":{\"a\":1}}\n"},
		{"jsonl nested in a later column", "jsonl", "{\"b\":1,\"a\":2}\n{\"b\":[1],\"a\":{\"c\":1}}\n"},
		{"jsonl nested then broken", "jsonl", "{\"x\":[1]}\n{\"x\":\n"},
		{"jsonl empty key", "jsonl", "{\"\":1}\n"},
		{"jsonl nested and empty key", "jsonl", "{\"\":1,\"x\":[2]}\n"},
		{"jsonl line too long", "jsonl", "{\"x\":\"" + strings.Repeat("a", maxJSONLLine) + "\"}\n"},
		{"parquet", "parquet", parquetBatch(t, []table.Column{{Name: "x", Float: []float64{1, math.NaN(), 3}}, {Name: "s", Text: []string{"a", "b", "c"}}})},
		{"parquet no rows", "parquet", parquetBatch(t, []table.Column{{Name: "x", Float: []float64{}}})},
		{"parquet not parquet", "parquet", "x,y\n1,2\n"},
		{"parquet truncated", "parquet", parquetBatch(t, []table.Column{{Name: "x", Float: []float64{1, 2}}})[:40]},
	}
	for _, tt := range tests {
		want, wantErr := table.Read(tt.format, []byte(tt.data))
		got, err := scan(tt.format, strings.NewReader(tt.data), int64(len(tt.data)))
		switch {
		case wantErr != nil:
			var te *table.Error
			if err == nil || err.Error() != wantErr.Error() || !errors.As(err, &te) {
				t.Errorf("%s: scan error %v, table.Read's %v", tt.name, err, wantErr)
			}
		case err != nil:
			t.Errorf("%s: scan error %v, table.Read reads %d rows", tt.name, err, want.Len())
		case got.Rows != int64(want.Len()) || !slices.Equal(got.Columns, want.Columns):
			t.Errorf("%s: scan %d rows %v, table.Read %d rows %v", tt.name, got.Rows, got.Columns, want.Len(), want.Columns)
		}
	}
}

// TestValidateBatchID: names, sequence numbers and times pass; path
// separators, "..", white space and control characters do not.
func TestValidateBatchID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want string // in the error; "" valid
	}{
		{"b-1", ""},
		{"elec2-00042", ""},
		{"2024-05-01T10:00:00+02:00", ""},
		{"batch_7.csv", ""},
		{"0123456789abcdef", ""},
		{strings.Repeat("a", MaxBatchIDLen), ""},
		{"", "empty"},
		{strings.Repeat("a", MaxBatchIDLen+1), "at most"},
		{"../etc/passwd", "must start with a letter or a digit"},
		{"a/../b", `".."`},
		{"a..b", `".."`},
		{"a/b", `'/' at position 2`},
		{`a\b`, `'\\'`},
		{".hidden", "must start"},
		{"a b", `' '`},
		{"a\nb", `'\n'`},
		{"a%2fb", `'%'`},
		{"é", "must start"},
	}
	for _, tt := range tests {
		err := ValidateBatchID(tt.id)
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("ValidateBatchID(%q) = %v, want %q", tt.id, err, tt.want)
		}
	}
}
