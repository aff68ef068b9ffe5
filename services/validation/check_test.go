package validation_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/validation"
)

func ptr(f float64) *float64 { return &f }

// reason is an expected reject reason: the fields set must match, the
// message by substring.
type reason struct {
	Column, Rule, Value, Message string
	Row                          int64
}

func (w reason) matches(r *gyrev1.RejectReason) bool {
	return r.Column == w.Column && r.Row == w.Row && r.Rule == w.Rule &&
		(w.Value == "" || r.Value == w.Value) && strings.Contains(r.Message, w.Message)
}

// schema is the test's declared schema: x float in [0, 1] required, n int,
// b bool, y category {0, 1} required (the label).
var schema = []pipeline.Column{
	{Name: "x", Type: pipeline.TypeFloat, Min: ptr(0), Max: ptr(1), Required: true},
	{Name: "n", Type: pipeline.TypeInt},
	{Name: "b", Type: pipeline.TypeBool},
	{Name: "y", Type: pipeline.TypeCategory, Categories: []string{"0", "1"}, Required: true},
}

func mustRead(t *testing.T, csv string) *table.Table {
	t.Helper()
	tb, err := table.Read("csv", []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func checker(t *testing.T, ds pipeline.Dataset) *validation.Checker {
	t.Helper()
	rules, err := pipeline.NewRuleSet(ds.Rules, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ds.MaxMissingShare == 0 {
		ds.MaxMissingShare = 0.5
	}
	return validation.NewChecker(schema, ds, rules)
}

// TestCheck: each kind of problem is found and named by column, row, rule
// and value; a clean batch passes every check.
func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		csv   string
		ds    pipeline.Dataset
		pass  bool
		wants []reason // expected first reasons, in order
	}{
		{name: "clean", csv: "x,n,b,y\n0.5,3,true,1\n0.25,4,false,0\n", pass: true},
		{name: "not a float", csv: "x,n,b,y\n0.5,3,true,1\nabc,4,false,0\n",
			wants: []reason{{Column: "x", Row: 2, Rule: "type", Value: "abc", Message: `value "abc" is not a float`}}},
		{name: "NaN", csv: "x,n,b,y\nNaN,3,true,1\n", wants: []reason{{Column: "x", Row: 1, Rule: "type", Value: "NaN", Message: "not a finite number"}}},
		{name: "Inf", csv: "x,n,b,y\n0.1,3,true,1\n0.2,3,true,1\n+Inf,3,true,1\n", wants: []reason{{Column: "x", Row: 3, Rule: "type", Value: "+Inf", Message: "not a finite number"}}},
		// The only value of the column is not of its type: the column
		// changed type, which rejects the batch before its bad row.
		{name: "not an int", csv: "x,n,b,y\n0.5,3.5,true,1\n", wants: []reason{
			{Column: "n", Rule: "type_change", Message: `column "n" is int in the schema but float in this batch (1 of 1 values are not int)`},
			{Column: "n", Row: 1, Rule: "type", Value: "3.5", Message: "not an int"}}},
		{name: "not a bool", csv: "x,n,b,y\n0.5,3,maybe,1\n", wants: []reason{
			{Column: "b", Rule: "type_change", Message: `column "b" is bool in the schema but category in this batch (1 of 1 values are not bool)`},
			{Column: "b", Row: 1, Rule: "type", Value: "maybe", Message: "not a bool"}}},
		{name: "a bad int among good ones", csv: "x,n,b,y\n0.5,3,true,1\n0.5,3.5,true,1\n0.5,4,true,1\n",
			wants: []reason{{Column: "n", Row: 2, Rule: "type", Value: "3.5", Message: "not an int"}}},
		{name: "above max", csv: "x,n,b,y\n1.5,3,true,1\n", wants: []reason{{Column: "x", Row: 1, Rule: "range", Value: "1.5", Message: "above max 1"}}},
		{name: "below min", csv: "x,n,b,y\n-0.5,3,true,1\n", wants: []reason{{Column: "x", Row: 1, Rule: "range", Value: "-0.5", Message: "below min 0"}}},
		{name: "not a category", csv: "x,n,b,y\n0.5,3,true,2\n", wants: []reason{{Column: "y", Row: 1, Rule: "category", Value: "2", Message: "not one of the categories 0, 1"}}},
		{name: "numeric category", csv: "x,n,b,y\n0.5,3,true,1.0\n", pass: true},
		{name: "required value missing", csv: "x,n,b,y\n0.5,3,true,1\n,3,true,0\n0.5,3,true,1\n",
			wants: []reason{{Column: "x", Row: 2, Rule: "required", Message: `required column "x" has no value`}}},
		{name: "required column absent", csv: "n,b,y\n3,true,1\n", wants: []reason{{Column: "x", Rule: "required", Message: `required column "x" is not in the batch`}}},
		{name: "label absent", csv: "x,n,b\n0.5,3,true\n", ds: pipeline.Dataset{Label: "y"},
			wants: []reason{{Column: "y", Rule: "label", Message: `the label column "y" is not in the batch`}, {Column: "y", Rule: "required"}}},
		{name: "too many missing", csv: "x,n,b,y\n0.5,,true,1\n0.5,,true,1\n0.5,3,true,1\n",
			wants: []reason{{Column: "n", Rule: "missing", Message: "66.7% of the values"}}},
		{name: "missing share at the limit", csv: "x,n,b,y\n0.5,,true,1\n0.5,3,true,1\n", pass: true},
		{name: "optional column absent counts as missing", csv: "x,b,y\n0.5,true,1\n",
			wants: []reason{{Column: "n", Rule: "missing", Message: "100.0%"}}},
		{name: "rule violated", csv: "x,n,b,y\n0.5,3,true,1\n0.5,-3,true,1\n", ds: pipeline.Dataset{Rules: []string{"row.n >= 0.0"}},
			wants: []reason{{Row: 2, Rule: "rule:row.n >= 0.0", Message: `rule "row.n >= 0.0" does not hold`}}},
		{name: "rule on a missing value", csv: "x,n,b,y\n0.5,3,true,1\n0.5,,true,1\n0.5,4,true,1\n", ds: pipeline.Dataset{Rules: []string{"row.n >= 0.0"}},
			wants: []reason{{Row: 2, Rule: "rule:row.n >= 0.0", Message: "cannot be evaluated"}}},
		{name: "rule with has()", csv: "x,n,b,y\n0.5,3,true,1\n0.5,,true,1\n0.5,4,true,1\n", ds: pipeline.Dataset{Rules: []string{"!has(row.n) || row.n >= 0.0", "row.b"}}, pass: true},
		{name: "row errors tolerated", csv: "x,n,b,y\n0.5,3,true,1\nabc,3,true,1\n", ds: pipeline.Dataset{MaxRowErrors: 1}, pass: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := checker(t, tt.ds).Check(mustRead(t, tt.csv))
			if got := r.Passed(tt.ds.MaxRowErrors); got != tt.pass {
				t.Fatalf("Passed = %v, want %v; reasons %v", got, tt.pass, r.Reasons)
			}
			if len(r.Reasons) < len(tt.wants) {
				t.Fatalf("reasons %v, want at least %d", r.Reasons, len(tt.wants))
			}
			for i, w := range tt.wants {
				if !w.matches(r.Reasons[i]) {
					t.Errorf("reason %d = %v, want %+v", i, r.Reasons[i], w)
				}
			}
			if tt.pass != r.AllChecksPassed() && tt.ds.MaxRowErrors == 0 {
				t.Errorf("AllChecksPassed = %v", r.AllChecksPassed())
			}
		})
	}
}

// TestCheckCapsReasons: a batch with thousands of bad rows carries 100
// reasons and the total: the type change of x (every value is text), then
// the first 99 rows.
func TestCheckCapsReasons(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("x,n,b,y\n")
	for i := range 1000 {
		fmt.Fprintf(&b, "bad%d,%d,true,1\n", i, i)
	}
	r := checker(t, pipeline.Dataset{}).Check(mustRead(t, b.String()))
	if len(r.Reasons) != validation.MaxReasons || r.ReasonsTotal != 1001 || r.RowsWithErrors != 1000 {
		t.Fatalf("%d reasons, total %d, rows %d", len(r.Reasons), r.ReasonsTotal, r.RowsWithErrors)
	}
	if r.Reasons[0].Rule != validation.RuleTypeChange || r.Reasons[1].Row != 1 || r.Reasons[99].Row != 99 {
		t.Errorf("reasons are not the type change, then the first rows in order: %v ... %v", r.Reasons[:2], r.Reasons[99])
	}
	var typ *gyrev1.Check
	for _, c := range r.Checks {
		if c.Name == "type:x" {
			typ = c
		}
	}
	if typ == nil || typ.Passed || typ.FailedRows != 1000 || !strings.Contains(typ.Message, "bad0") {
		t.Errorf("type:x check = %v", typ)
	}
}

// TestStats: numeric columns get moments, quantiles and a histogram,
// categorical ones their top categories; the label's presence is reported.
func TestStats(t *testing.T) {
	t.Parallel()
	r := checker(t, pipeline.Dataset{Label: "y"}).Check(mustRead(t, "x,n,b,y,extra\n0.2,1,true,1,a\n0.4,,false,0,b\n0.6,3,true,1,a\n"))
	if !r.Passed(0) || !r.Labelled || len(r.Columns) != 5 {
		t.Fatalf("passed %v, labelled %v, %d columns; reasons %v", r.Passed(0), r.Labelled, len(r.Columns), r.Reasons)
	}
	x, n, y, extra := r.Columns[0], r.Columns[1], r.Columns[3], r.Columns[4]
	if x.Name != "x" || x.Type != "float" || x.Count != 3 || x.Min != 0.2 || x.Max != 0.6 || len(x.Quantiles) == 0 || x.Histogram == nil {
		t.Errorf("x stats = %v", x)
	}
	if x.Mean < 0.3999 || x.Mean > 0.4001 {
		t.Errorf("x mean = %v", x.Mean)
	}
	if n.Type != "int" || n.Count != 2 || n.Missing != 1 {
		t.Errorf("n stats = %v", n)
	}
	if y.Type != "category" || len(y.TopCategories) != 2 || y.TopCategories[0].Value != "1" || y.TopCategories[0].Count != 2 {
		t.Errorf("y stats = %v", y)
	}
	if extra.Type != "category" || extra.TopCategories[0].Value != "a" {
		t.Errorf("undeclared column stats = %v", extra)
	}
}

// TestInferSchema: numbers are int or float, true/false bool, the rest
// category; a numeric label with few values is category.
func TestInferSchema(t *testing.T) {
	t.Parallel()
	tb := mustRead(t, "i,f,b,s,label,empty\n1,1.5,true,a,0,\n2,2,false,b,1,\n3,NaN,TRUE,c,1,\n")
	got := validation.InferSchema(tb, "label")
	want := map[string]string{"i": "int", "f": "float", "b": "bool", "s": "category", "label": "category", "empty": "string"}
	for _, c := range got {
		if want[c.Name] != c.Type || c.Required || c.Min != nil || len(c.Categories) > 0 {
			t.Errorf("column %s inferred as %+v, want type %s", c.Name, c, want[c.Name])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d columns, want %d", len(got), len(want))
	}
}
