package table_test

import (
	"testing"

	"github.com/gyrehq/gyre/libs/table"
)

// TestIsMissingAfterLastMissingRow: rows after the last one with a missing
// cell are not missing (and asking does not index out of range).
func TestIsMissingAfterLastMissingRow(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ format, data string }{
		{"csv", "a,b\n1,\n2,3\n4,5\n"},
		{"jsonl", "{\"a\":1}\n{\"a\":2,\"b\":3}\n{\"a\":4,\"b\":5}\n"},
	} {
		tb, err := table.Read(tt.format, []byte(tt.data))
		if err != nil {
			t.Fatal(err)
		}
		if !tb.IsMissing(0, 1) {
			t.Errorf("%s: row 1 column b should be missing", tt.format)
		}
		for i := 1; i < tb.Len(); i++ {
			if tb.IsMissing(i, 0) || tb.IsMissing(i, 1) {
				t.Errorf("%s: row %d has no missing cell", tt.format, i+1)
			}
		}
	}
}
