package validation_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/services/validation"
)

// C is a column of a test's schema.
type C = pipeline.Column

// anomaly is an expected anomaly: kind, column and the reason a user sees,
// word for word.
type anomaly struct{ Kind, Column, Reason string }

// rowsCSV is a batch of n rows "<i>,<color>" with the given rows (1-based)
// replaced; colors cycle red, green, blue.
func rowsCSV(n int, replace map[int]string) string {
	var b strings.Builder
	b.WriteString("n,color\n")
	colors := []string{"red", "green", "blue"}
	for i := 1; i <= n; i++ {
		if r, ok := replace[i]; ok {
			b.WriteString(r + "\n")
			continue
		}
		fmt.Fprintf(&b, "%d,%s\n", i, colors[(i-1)%3])
	}
	return b.String()
}

// TestAnomalyMatrix is the matrix of TFDV's anomaly kinds: each case a
// batch, the schema it is checked against (declared, learned or frozen),
// what becomes of the batch (validated or rejected, rows quarantined) and
// the anomalies of data.batch.validated / rejected with the reason a user
// sees, word for word.
func TestAnomalyMatrix(t *testing.T) {
	t.Parallel()
	n := func(c pipeline.Column) pipeline.Column { c.Name, c.Type = "n", pipeline.TypeInt; return c }
	color := func(c pipeline.Column) pipeline.Column { c.Name, c.Type = "color", pipeline.TypeCategory; return c }
	rgb := []string{"blue", "green", "red"}
	// The reference: the colors in equal shares.
	even := map[string]*validation.Distribution{"color": {Counts: map[string]int64{"red": 10, "green": 10, "blue": 10}, Total: 30}}
	tests := []struct {
		name      string
		state     string // the Checker's; declared when empty
		schema    []pipeline.Column
		ds        pipeline.Dataset
		reference map[string]*validation.Distribution
		csv       string
		passed    bool
		// quarantined is the number of rows kept out of a validated batch.
		quarantined int
		want        []anomaly
	}{
		{name: "new column", schema: []pipeline.Column{n(C{}), color(C{})},
			csv: "n,color,sensor\n1,red,s1\n2,green,s2\n", passed: true,
			want: []anomaly{{"new_column", "sensor", `column "sensor" is not declared (not in the schema, not the label, not a feature): ` +
				`it is dropped from the batch passed on and not used until the spec declares it in spec.dataset.schema or spec.features`}}},
		{name: "dropped required column", schema: []pipeline.Column{n(C{}), color(C{Required: true})},
			csv:  "n\n1\n2\n",
			want: []anomaly{{"dropped_column", "color", `column "color" of the schema is not in the batch; it is required, so the batch is rejected`}}},
		{name: "dropped column, too many missing", schema: []pipeline.Column{n(C{}), color(C{})},
			csv: "n\n1\n2\n",
			want: []anomaly{{"dropped_column", "color", `column "color" of the schema is not in the batch; all its values count as missing, ` +
				`more than maxMissingShare 0.5 allows, so the batch is rejected`}}},
		{name: "dropped optional column", schema: []pipeline.Column{n(C{}), color(C{MaxMissingShare: ptr(1)})},
			csv: "n\n1\n2\n", passed: true,
			want: []anomaly{{"dropped_column", "color", `column "color" of the schema is not in the batch; all its values count as missing, ` +
				`which maxMissingShare 1 allows: the batch goes on`}}},
		{name: "type change to float", schema: []pipeline.Column{n(C{}), color(C{})},
			csv:  "n,color\n1.5,red\n2.5,green\n3,blue\n",
			want: []anomaly{{"type_change", "n", `column "n" is int in the schema but float in this batch (2 of 3 values are not int); the batch is rejected`}}},
		{name: "type change to text", state: validation.StateLearned, schema: []pipeline.Column{n(C{}), color(C{})}, ds: pipeline.Dataset{MaxRowErrors: 10},
			csv:  "n,color\nlow,red\nhigh,green\n3,blue\n",
			want: []anomaly{{"type_change", "n", `column "n" is int in the schema but category in this batch (2 of 3 values are not int); the batch is rejected`}}},
		{name: "a bad cell is not a type change", schema: []pipeline.Column{n(C{}), color(C{})}, ds: pipeline.Dataset{MaxRowErrors: 1},
			csv: "n,color\n1,red\nlow,green\n3,blue\n", passed: true, quarantined: 1},
		{name: "out of the declared range", schema: []pipeline.Column{n(C{Min: ptr(0), Max: ptr(10)}), color(C{})}, ds: pipeline.Dataset{MaxRowErrors: 5},
			csv: rowsCSV(9, map[int]string{2: "-3,green", 4: "25,red", 6: "1000,blue"}), passed: true, quarantined: 3,
			want: []anomaly{{"out_of_domain", "n", `3 values of "n" are outside the declared range [0, 10] (lowest -3, highest 1000); the rows holding them are quarantined`}}},
		{name: "out of the declared range, too many", schema: []pipeline.Column{n(C{Min: ptr(0), Max: ptr(10)}), color(C{})}, ds: pipeline.Dataset{MaxRowErrors: 1},
			csv:  rowsCSV(9, map[int]string{4: "25,red", 6: "1000,blue"}),
			want: []anomaly{{"out_of_domain", "n", `2 values of "n" are outside the declared range [0, 10] (highest 1000); the rows holding them are bad rows, and the batch is rejected`}}},
		{name: "below the declared min", schema: []pipeline.Column{n(C{Min: ptr(1)}), color(C{})}, ds: pipeline.Dataset{MaxRowErrors: 5},
			csv: rowsCSV(6, map[int]string{3: "0,blue"}), passed: true, quarantined: 1,
			want: []anomaly{{"out_of_domain", "n", `1 value of "n" is below the declared min 1 (lowest 0); the row holding it is quarantined`}}},
		{name: "out of the frozen range", state: validation.StateFrozen, schema: []pipeline.Column{n(C{Min: ptr(1), Max: ptr(9)}), color(C{Categories: rgb})},
			ds: pipeline.Dataset{MaxRowErrors: 5}, csv: rowsCSV(9, map[int]string{5: "12,green"}), passed: true, quarantined: 1,
			want: []anomaly{{"out_of_domain", "n", `1 value of "n" is outside the frozen range [1, 9] (highest 12); the row holding it is quarantined`}}},
		{name: "learned range not checked", state: validation.StateLearned, schema: []pipeline.Column{n(C{Min: ptr(1), Max: ptr(9)}), color(C{Categories: rgb})},
			csv: rowsCSV(9, map[int]string{5: "12,green"}), passed: true},
		{name: "not among the declared categories", schema: []pipeline.Column{n(C{}), color(C{Categories: rgb})}, ds: pipeline.Dataset{MaxRowErrors: 5},
			csv: rowsCSV(9, map[int]string{2: "2,purple", 5: "5,pink", 8: "8,purple"}), passed: true, quarantined: 3,
			want: []anomaly{{"out_of_domain", "color", `3 values of "color" are not among the declared categories blue, green, red: ` +
				`"purple" (2), "pink" (1); the rows holding them are quarantined`}}},
		{name: "not among the learned categories", state: validation.StateLearned, schema: []pipeline.Column{n(C{}), color(C{Categories: rgb})},
			csv: rowsCSV(9, map[int]string{2: "2,purple", 5: "5,pink", 8: "8,purple"}), passed: true,
			want: []anomaly{{"out_of_domain", "color", `3 values of "color" are not among the learned categories blue, green, red: ` +
				`"purple" (2), "pink" (1); a warning: learned categories hold rows back only once the schema is frozen (gyre schema freeze)`}}},
		{name: "not among the frozen categories", state: validation.StateFrozen, schema: []pipeline.Column{n(C{}), color(C{Categories: rgb})},
			ds: pipeline.Dataset{MaxRowErrors: 5}, csv: rowsCSV(9, map[int]string{2: "2,purple"}), passed: true, quarantined: 1,
			want: []anomaly{{"out_of_domain", "color", `1 value of "color" is not among the frozen categories blue, green, red: "purple" (1); the row holding it is quarantined`}}},
		{name: "many unseen values", state: validation.StateLearned, schema: []pipeline.Column{n(C{}), color(C{Categories: rgb})},
			csv: rowsCSV(9, map[int]string{1: "1,a", 2: "2,b", 3: "3,c", 4: "4,d", 5: "5,e", 6: "6,f", 7: "7,f"}), passed: true,
			want: []anomaly{{"out_of_domain", "color", `7 values of "color" are not among the learned categories blue, green, red: ` +
				`"f" (2), "a" (1), "b" (1), "c" (1), "d" (1) and 1 value more; a warning: learned categories hold rows back only once the schema is frozen (gyre schema freeze)`}}},
		{name: "learning: nothing but types", state: validation.StateLearning, schema: []pipeline.Column{n(C{Min: ptr(1), Max: ptr(2), MinPresence: ptr(1)}), color(C{Categories: rgb})},
			reference: even, csv: rowsCSV(6, map[int]string{1: "1,purple", 2: ",purple", 3: "300,purple"}), passed: true},
		{name: "presence below the declared minPresence", schema: []pipeline.Column{n(C{MinPresence: ptr(0.9)}), color(C{})},
			csv: rowsCSV(8, map[int]string{2: ",green", 4: ",red"}), passed: true,
			want: []anomaly{{"low_presence", "n", `column "n" has a value in 75% of the rows (6 of 8), below its declared minPresence 90%; a warning, the batch goes on`}}},
		{name: "presence below the learned minPresence", state: validation.StateLearned, schema: []pipeline.Column{n(C{MinPresence: ptr(1)}), color(C{})},
			csv: rowsCSV(3, map[int]string{3: ",blue"}), passed: true,
			want: []anomaly{{"low_presence", "n", `column "n" has a value in 66.67% of the rows (2 of 3), below its learned minPresence 100%; a warning, the batch goes on`}}},
		{name: "category shares shifted", state: validation.StateLearned, schema: []pipeline.Column{n(C{}), color(C{Categories: rgb})}, reference: even,
			csv: rowsCSV(10, map[int]string{2: "2,red", 3: "3,red", 5: "5,red", 6: "6,red", 8: "8,red", 9: "9,red"}), passed: true,
			want: []anomaly{{"category_shift", "color", `the shares of the values of "color" moved by 0.6667 from the reference learned from 3 batches ` +
				`(L-infinity distance, above maxShareShift 0.2): "red" is 100% of this batch, 33.33% of the reference; a warning, the batch goes on`}}},
		{name: "category shares shifted past the column's limit", schema: []pipeline.Column{n(C{}), color(C{MaxShareShift: ptr(0.05)})}, reference: even,
			csv: rowsCSV(10, nil), passed: true,
			want: []anomaly{{"category_shift", "color", `the shares of the values of "color" moved by 0.06667 from the reference learned from 3 batches ` +
				`(L-infinity distance, above maxShareShift 0.05): "red" is 40% of this batch, 33.33% of the reference; a warning, the batch goes on`}}},
		{name: "category shares within the limit", state: validation.StateLearned, schema: []pipeline.Column{n(C{}), color(C{Categories: rgb})}, reference: even,
			csv: rowsCSV(10, nil), passed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ds := tt.ds
			if ds.MaxMissingShare == 0 {
				ds.MaxMissingShare = 0.5
			}
			c := validation.NewChecker(tt.schema, ds, nil).WithReference(tt.reference, 3)
			if tt.state != "" {
				c.WithState(tt.state)
			}
			r := c.Check(mustRead(t, tt.csv))
			if got := r.Passed(ds.MaxRowErrors); got != tt.passed || tt.passed && len(r.Quarantine) != tt.quarantined {
				t.Fatalf("passed %v with %d rows quarantined, want %v with %d; reasons %v", got, len(r.Quarantine), tt.passed, tt.quarantined, r.Reasons)
			}
			var got []anomaly
			for _, a := range r.Anomalies {
				got = append(got, anomaly{a.GetKind(), a.GetColumn(), a.GetReason()})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("anomalies\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
