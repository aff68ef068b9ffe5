package validation

import (
	"slices"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

func fptr(f float64) *float64 { return &f }

// quarantineSchema: x float in [0, 1] required, n int, b bool, y category
// {0, 1} required (the label).
var quarantineSchema = []pipeline.Column{
	{Name: "x", Type: pipeline.TypeFloat, Min: fptr(0), Max: fptr(1), Required: true},
	{Name: "n", Type: pipeline.TypeInt},
	{Name: "b", Type: pipeline.TypeBool},
	{Name: "y", Type: pipeline.TypeCategory, Categories: []string{"0", "1"}, Required: true},
}

// TestQuarantineReasons is the matrix of the row checks: with
// maxRowErrors 1, a batch with one bad row of each kind is validated
// without that row, and the row's reason — what `gyre data rejected` and
// GET /v1/pipelines/{pipeline}/rejected/{batch} show — reads as below,
// word for word. The cleaned batch reads back as the other rows, the bad
// one gone.
func TestQuarantineReasons(t *testing.T) {
	t.Parallel()
	const good1, good2 = "0.5,3,true,1", "0.25,4,false,0"
	tests := []struct {
		kind   string
		row    string // the middle row of three
		column string
		check  string
		value  string
		reason string
	}{
		{"required value missing", ",3,true,0", "x", "required", "", `required column "x" has no value`},
		{"not a float", "abc,3,true,0", "x", "type", "abc", `value "abc" is not a float`},
		{"NaN", "NaN,3,true,0", "x", "type", "NaN", `value "NaN" is not a finite number (NaN and Inf are invalid in numeric columns)`},
		{"Inf", "-Inf,3,true,0", "x", "type", "-Inf", `value "-Inf" is not a finite number (NaN and Inf are invalid in numeric columns)`},
		{"not an int", "0.5,3.5,true,0", "n", "type", "3.5", `value "3.5" is not an int`},
		{"not a bool", "0.5,3,maybe,0", "b", "type", "maybe", `value "maybe" is not a bool (want true or false)`},
		{"below min", "-0.5,3,true,0", "x", "range", "-0.5", `value -0.5 is below min 0`},
		{"above max", "1000,3,true,0", "x", "range", "1000", `value 1000 is above max 1`},
		{"impossible class", "0.5,3,true,7", "y", "category", "7", `value "7" is not one of the categories 0, 1`},
		{"rule broken", "0.5,-3,true,0", "", "rule:row.n >= 0.0", "", `rule "row.n >= 0.0" does not hold`},
		{"rule not evaluable", "0.5,,true,0", "", "rule:row.n >= 0.0", "", `rule "row.n >= 0.0" cannot be evaluated: no such key: n`},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			t.Parallel()
			ds := pipeline.Dataset{Label: "y", Rules: []string{"row.n >= 0.0"}, MaxMissingShare: 0.5, MaxRowErrors: 1}
			rules, err := pipeline.NewRuleSet(ds.Rules, nil)
			if err != nil {
				t.Fatal(err)
			}
			tb := readCSV(t, "x,n,b,y\n"+good1+"\n"+tt.row+"\n"+good2+"\n")
			r := NewChecker(quarantineSchema, ds, rules).Check(tb)
			if !r.Passed(ds.MaxRowErrors) || r.AllChecksPassed() {
				t.Fatalf("passed %v, all checks passed %v; want a batch validated with a failed check (reasons %v)", r.Passed(1), r.AllChecksPassed(), r.Reasons)
			}
			if len(r.Quarantine) != 1 || r.Quarantine[0].Row != 2 || len(r.Quarantine[0].Reasons) != 1 {
				t.Fatalf("quarantine %+v, want row 2 with one reason", r.Quarantine)
			}
			got := reasonOf(r.Quarantine[0].Reasons[0])
			want := Reason{Row: 2, Column: tt.column, Value: tt.value, Check: tt.check, Reason: tt.reason}
			if got != want {
				t.Errorf("reason\n got %+v\nwant %+v", got, want)
			}
			c := cleaned(tb, r)
			if c == nil {
				t.Fatal("nothing cleaned")
			}
			back := roundTrip(t, c)
			if !slices.Equal(back.Columns, tb.Columns) || len(back.Rows) != 2 ||
				strings.Join(back.Rows[0], ",") != good1 || strings.Join(back.Rows[1], ",") != good2 {
				t.Errorf("cleaned batch %v %v, want the two good rows", back.Columns, back.Rows)
			}
			// The statistics describe the rows passed on.
			if x := r.Columns[0]; x.Count+x.Missing != 2 {
				t.Errorf("x statistics over %d rows, want 2", x.Count+x.Missing)
			}
		})
	}
}

// TestNewColumnAndEveryRowBad: a column nothing declares is an anomaly and
// is dropped (a feature's column is declared); a batch whose every row is
// bad is rejected even within maxRowErrors, since nothing would be left.
func TestNewColumnAndEveryRowBad(t *testing.T) {
	t.Parallel()
	ds := pipeline.Dataset{Label: "y", MaxMissingShare: 0.5, MaxRowErrors: 5}
	tb := readCSV(t, "x,extra,n,b,y,kept\n0.5,a,3,true,1,k1\n0.25,b,,false,0,k2\n")
	r := NewChecker(quarantineSchema, ds, nil).WithFeatures([]pipeline.Feature{{Name: "kept"}}).Check(tb)
	if !r.Passed(ds.MaxRowErrors) || !r.AllChecksPassed() || len(r.Quarantine) != 0 {
		t.Fatalf("passed %v, reasons %v", r.Passed(5), r.Reasons)
	}
	if !slices.Equal(r.Undeclared, []string{"extra"}) || len(r.Anomalies) != 1 {
		t.Fatalf("undeclared %v, anomalies %v", r.Undeclared, r.Anomalies)
	}
	a := r.Anomalies[0]
	want := `column "extra" is not declared (not in the schema, not the label, not a feature): it is dropped from the batch passed on ` +
		`and not used until the spec declares it in spec.dataset.schema or spec.features`
	if a.GetColumn() != "extra" || a.GetKind() != AnomalyNewColumn || a.GetReason() != want {
		t.Errorf("anomaly %v, want reason %q", a, want)
	}
	back := roundTrip(t, cleaned(tb, r))
	if strings.Join(back.Columns, ",") != "x,n,b,y,kept" || len(back.Rows) != 2 || !back.IsMissing(1, 1) || back.Rows[1][4] != "k2" {
		t.Errorf("cleaned batch %v %v (missing %v)", back.Columns, back.Rows, back.Missing)
	}

	bad := readCSV(t, "x,n,b,y\n7,3,true,1\n8,3,true,1\n")
	r = NewChecker(quarantineSchema, ds, nil).Check(bad)
	if r.Passed(ds.MaxRowErrors) || r.BatchProblems != 1 {
		t.Fatalf("a batch of bad rows only: passed %v, batch problems %d", r.Passed(5), r.BatchProblems)
	}
	if got := reasonOf(r.Reasons[0]); got != (Reason{Check: "rows", Reason: "every one of the 2 rows has a problem (maxRowErrors 5): no row is left to pass on"}) {
		t.Errorf("first reason %+v", got)
	}
}

// TestCleanedKeepsCells: the cleaned copy of a JSON Lines batch reads back
// cell for cell — commas, quotes, new lines, leading spaces — with missing
// values missing.
func TestCleanedKeepsCells(t *testing.T) {
	t.Parallel()
	src := `{"x": 0.5, "y": "1", "s": "a, \"quoted\"\nline"}
{"x": 9, "y": "0", "s": "bad"}
{"x": 0.1, "y": "0", "s": null}
{"x": 0.2, "y": "1", "s": " lead"}
`
	tb, err := table.Read(table.FormatJSONL, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	schema := []pipeline.Column{{Name: "x", Type: pipeline.TypeFloat, Max: fptr(1)}, {Name: "y", Type: pipeline.TypeCategory}, {Name: "s", Type: pipeline.TypeString}}
	r := NewChecker(schema, pipeline.Dataset{Label: "y", MaxMissingShare: 1, MaxRowErrors: 1}, nil).Check(tb)
	back := roundTrip(t, cleaned(tb, r))
	// JSON Lines columns come in key order: s, x, y.
	want := [][]string{{"a, \"quoted\"\nline", "0.5", "1"}, {"", "0.1", "0"}, {" lead", "0.2", "1"}}
	if !slices.Equal(back.Columns, tb.Columns) || !slices.EqualFunc(back.Rows, want, slices.Equal[[]string]) || !back.IsMissing(1, 0) || back.IsMissing(2, 0) {
		t.Errorf("cleaned %v %q (missing %v), want %q", back.Columns, back.Rows, back.Missing, want)
	}
}

func readCSV(t *testing.T, csv string) *table.Table {
	t.Helper()
	tb, err := table.Read(table.FormatCSV, []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func roundTrip(t *testing.T, c *table.Table) *table.Table {
	t.Helper()
	data, err := encodeCSV(c)
	if err != nil {
		t.Fatal(err)
	}
	return readCSV(t, string(data))
}
