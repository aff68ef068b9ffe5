package features_test

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/features"
)

// TestEncodeMatchesRow: Encode and EncodeNumber write, cell by cell, what
// Row produces for the same record — missing, empty, padded and unseen
// values included — and fail where Row fails, naming the row.
func TestEncodeMatchesRow(t *testing.T) {
	t.Parallel()
	p := mustParse(t, spec)
	set, err := features.Fit(p, mustRead(t, "a,b,c,d,e,c2,y\n1,5,x,0,3,u,1\n3,9,y,2,12,v,0\n2,7,x,1,-4,u,1\n"))
	if err != nil {
		t.Fatal(err)
	}
	cells := []string{"", " ", "2", " 2.5 ", "-1", "abc", "true", "x", " y ", "z", "u", "v", "1e400"}
	for _, c := range set.Columns {
		for _, raw := range cells {
			for _, absent := range []bool{false, true} {
				rec := map[string]string{}
				for _, o := range set.Columns {
					rec[o.Name] = "1"
					if o.Name == "c" || o.Name == "c2" {
						rec[o.Name] = "x"
					}
				}
				delete(rec, c.Name)
				if !absent {
					rec[c.Name] = raw
				}
				want, werr := set.Row(rec)
				// The column's slice of the row.
				off := 0
				for _, o := range set.Columns {
					if o.Name == c.Name {
						break
					}
					off += o.Width()
				}
				got := make([]float64, c.Width())
				gerr := c.Encode(raw, absent, got, 1)
				what := fmt.Sprintf("column %s, cell %q (absent %v)", c.Name, raw, absent)
				if (werr != nil) != (gerr != nil) {
					t.Errorf("%s: Row error %v, Encode error %v", what, werr, gerr)
					continue
				}
				if werr != nil {
					if !strings.Contains(gerr.Error(), "row 1") || !strings.Contains(gerr.Error(), c.Name) {
						t.Errorf("%s: error %v names no row and column", what, gerr)
					}
					continue
				}
				eq := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
				if !slices.EqualFunc(got, want[off:off+c.Width()], eq) {
					t.Errorf("%s: Encode %v, Row %v", what, got, want[off:off+c.Width()])
				}
				// The same cell as a number, when it is one.
				if x, err := strconv.ParseFloat(strings.TrimSpace(raw), 64); err == nil && !absent && !math.IsInf(x, 0) && c.Numeric {
					byNum := make([]float64, c.Width())
					if err := c.EncodeNumber(x, byNum, 1); err != nil || !slices.EqualFunc(byNum, got, eq) {
						t.Errorf("%s: EncodeNumber %v, %v; Encode %v", what, byNum, err, got)
					}
				}
			}
		}
	}
}
