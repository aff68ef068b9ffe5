package table_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/table"
)

func TestReadFormatsAgree(t *testing.T) {
	t.Parallel()
	csvData := "a,b,label\n1.5,x,1\n,y,0\n3,z,1\n"
	jsonl := `{"a": 1.5, "b": "x", "label": 1}
{"a": null, "b": "y", "label": 0}

{"a": 3, "b": "z", "label": 1}
`
	var pq bytes.Buffer
	if err := table.WriteParquet(&pq, []table.Column{
		{Name: "a", Float: []float64{1.5, math.NaN(), 3}},
		{Name: "b", Text: []string{"x", "y", "z"}},
		{Name: "label", Float: []float64{1, 0, 1}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		format string
		data   []byte
	}{{table.FormatCSV, []byte(csvData)}, {table.FormatJSONL, []byte(jsonl)}, {table.FormatParquet, pq.Bytes()}} {
		t.Run(c.format, func(t *testing.T) {
			t.Parallel()
			tb, err := table.Read(c.format, c.data)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(tb.Columns, ",") != "a,b,label" || tb.Len() != 3 {
				t.Fatalf("columns %v, %d rows", tb.Columns, tb.Len())
			}
			a, b, l := tb.Index("a"), tb.Index("b"), tb.Index("label")
			if tb.Rows[0][a] != "1.5" || tb.Rows[2][a] != "3" || tb.Rows[1][b] != "y" || tb.Rows[2][l] != "1" {
				t.Errorf("rows = %v", tb.Rows)
			}
			if !tb.IsMissing(1, a) || tb.IsMissing(0, a) || tb.IsMissing(1, b) {
				t.Errorf("missing = %v", tb.Missing)
			}
		})
	}
}

func TestReadErrorsNameRowAndColumn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, format, data string
		want               []string
	}{
		{"empty csv", "csv", "", []string{"empty"}},
		{"header only", "csv", "a,b\n", []string{"no data rows"}},
		{"ragged row", "csv", "a,b\n1,2\n3\n", []string{"row 2", "number of fields"}},
		{"bare quote", "csv", "a,b\n1,2\n3,\"x\n", []string{"row 2"}},
		{"duplicate column", "csv", "a,a\n1,2\n", []string{`column "a"`, "twice"}},
		{"empty column name", "csv", "a,,c\n1,2,3\n", []string{"column 2", "empty name"}},
		{"jsonl garbage", "jsonl", "{\"a\":1}\nnot json\n", []string{"row 2", "not a JSON object"}},
		{"jsonl array", "jsonl", "[1,2]\n", []string{"row 1"}},
		{"jsonl nested", "jsonl", "{\"a\":{\"b\":1}}\n", []string{"row 1", `column "a"`, "nested"}},
		{"parquet garbage", "parquet", "PAR1 not really", []string{"Parquet"}},
		{"unknown format", "xlsx", "x", []string{"unknown format"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := table.Read(c.format, []byte(c.data))
			var te *table.Error
			if !errors.As(err, &te) || !te.Permanent() {
				t.Fatalf("error %v is not a permanent *table.Error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not mention %q", err, w)
				}
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	f.Add("csv", []byte("a,b\n1,2\n"))
	f.Add("jsonl", []byte(`{"a":1}`))
	f.Add("parquet", []byte("PAR1\x00\x00PAR1"))
	f.Fuzz(func(t *testing.T, format string, data []byte) {
		tb, err := table.Read(format, data)
		if err != nil {
			return
		}
		for i, r := range tb.Rows {
			if len(r) != len(tb.Columns) {
				t.Fatalf("row %d has %d cells for %d columns", i, len(r), len(tb.Columns))
			}
		}
	})
}
