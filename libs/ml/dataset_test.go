package ml

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestReadCSV(t *testing.T) {
	t.Parallel()
	in := "\ufeffperiod, price ,kind,class\n" +
		"0.1,0.5,a,UP\n" +
		"0.2,,b,DOWN\n" +
		"0.3,NaN,,UP\n" +
		"0.4,?,a,DOWN\n"
	d, err := ReadCSV(strings.NewReader(in), CSVOptions{Label: "class", Categorical: []string{"kind"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Features, []string{"period", "price", "kind"}) {
		t.Fatalf("features %v", d.Features)
	}
	if !slices.Equal(d.Classes, []string{"DOWN", "UP"}) || !slices.Equal(d.Label, []float64{1, 0, 1, 0}) {
		t.Fatalf("classes %v labels %v", d.Classes, d.Label)
	}
	if d.FeatureType(2) != Categorical || !slices.Equal(d.Categories[2], []string{"a", "b"}) {
		t.Fatalf("categorical column: %v %v", d.FeatureType(2), d.Categories)
	}
	if d.X[2][0] != 0 || d.X[2][1] != 1 || !math.IsNaN(d.X[2][2]) {
		t.Fatalf("categorical codes %v", d.X[2])
	}
	for i, want := range []bool{false, true, true, true} {
		if math.IsNaN(d.X[1][i]) != want {
			t.Fatalf("price[%d] = %v, missing=%v expected", i, d.X[1][i], want)
		}
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	// Numeric class names sort by value and are normalised.
	d, err = ReadCSV(strings.NewReader("x,y\n1,10\n2,2\n3,2.0\n4,1\n"), CSVOptions{Label: "y"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Classes, []string{"1", "2", "10"}) || !slices.Equal(d.Label, []float64{2, 1, 1, 0}) {
		t.Fatalf("classes %v labels %v", d.Classes, d.Label)
	}
	// Regression and an explicit feature list.
	d, err = ReadCSV(strings.NewReader("a;b;y\n1;2;0.5\n3;4;1.5\n"), CSVOptions{Label: "y", Task: Regression, Features: []string{"b"}, Comma: ';'})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Features, []string{"b"}) || !slices.Equal(d.Label, []float64{0.5, 1.5}) || d.Classes != nil {
		t.Fatalf("regression dataset %+v", d)
	}
}

func TestReadCSVErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   string
		opts CSVOptions
		row  int
		col  string
		msg  string
	}{
		{"empty file", "", CSVOptions{Label: "y"}, 0, "", "no header"},
		{"header only", "x,y\n", CSVOptions{Label: "y"}, 0, "", "no data rows"},
		{"label column missing", "x,z\n1,2\n", CSVOptions{Label: "y"}, 0, "y", "label column not found"},
		{"unknown feature", "x,y\n1,0\n", CSVOptions{Label: "y", Features: []string{"x", "w"}}, 0, "w", "unknown feature column"},
		{"unknown categorical", "x,y\n1,0\n", CSVOptions{Label: "y", Categorical: []string{"k"}}, 0, "k", "not a feature"},
		{"not a number", "x,y\n1,0\n2,1\nabc,0\n", CSVOptions{Label: "y"}, 3, "x", `"abc" is not a number`},
		{"infinite", "x,y\n1,0\ninf,1\n", CSVOptions{Label: "y"}, 2, "x", "not finite"},
		{"label empty", "x,y\n1,0\n2,\n", CSVOptions{Label: "y"}, 2, "y", "label is missing"},
		{"label NaN", "x,y\n1,0\n2,NaN\n", CSVOptions{Label: "y"}, 2, "y", "label is missing"},
		{"regression label text", "x,y\n1,0\n2,high\n", CSVOptions{Label: "y", Task: Regression}, 2, "y", "not a number"},
		{"ragged row", "x,y\n1,0\n2,1,3\n", CSVOptions{Label: "y"}, 2, "", "wrong number of fields"},
		{"bad quote", "x,y\n1,0\n\"2,1\n", CSVOptions{Label: "y"}, 2, "", "malformed CSV"},
		{"duplicate header", "x,x,y\n1,2,0\n", CSVOptions{Label: "y"}, 0, "x", "duplicate column"},
		{"label as feature", "x,y\n1,0\n", CSVOptions{Label: "y", Features: []string{"y"}}, 0, "y", "cannot also be a feature"},
		{"unknown task", "x,y\n1,0\n", CSVOptions{Label: "y", Task: "ranking"}, 0, "", "unknown task"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := ReadCSV(strings.NewReader(c.in), c.opts)
			var de *DataError
			if !errors.As(err, &de) {
				t.Fatalf("want *DataError, got %T %v", err, err)
			}
			if de.Row != c.row || de.Column != c.col || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got row %d column %q %q; want row %d column %q containing %q", de.Row, de.Column, err, c.row, c.col, c.msg)
			}
			if !de.Permanent() {
				t.Fatal("data errors must be permanent")
			}
		})
	}
}

func TestFromRecords(t *testing.T) {
	t.Parallel()
	recs := []map[string]string{
		{"b": "1", "a": "x", "y": "1"},
		{"b": "2", "y": "0"}, // a missing
		{"b": "3", "a": "z", "y": "1"},
	}
	d, err := FromRecords(recs, CSVOptions{Label: "y", Categorical: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Features, []string{"a", "b"}) || !slices.Equal(d.Categories[0], []string{"x", "z"}) {
		t.Fatalf("features %v categories %v", d.Features, d.Categories)
	}
	if !math.IsNaN(d.X[0][1]) || d.X[0][2] != 1 {
		t.Fatalf("codes %v", d.X[0])
	}
	_, err = FromRecords([]map[string]string{{"b": "1", "y": "1"}, {"b": "oops", "y": "0"}}, CSVOptions{Label: "y"})
	if err == nil || err.Error() != `ml: row 2, column "b": value "oops" is not a number` {
		t.Fatalf("got %v", err)
	}
}

func TestSliceSubsetConcat(t *testing.T) {
	t.Parallel()
	a, err := ReadCSV(strings.NewReader("k,v,y\nred,1,a\nblue,2,a\nred,3,b\n"), CSVOptions{Label: "y", Categorical: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	// Different column order, a new category and a new class.
	b, err := ReadCSV(strings.NewReader("v,k,y\n4,green,c\n5,red,a\n"), CSVOptions{Label: "y", Categorical: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Concat(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Features, []string{"k", "v"}) || !slices.Equal(c.Categories[0], []string{"blue", "green", "red"}) {
		t.Fatalf("schema %v %v", c.Features, c.Categories)
	}
	if !slices.Equal(c.X[0], []float64{2, 0, 2, 1, 2}) || !slices.Equal(c.X[1], []float64{1, 2, 3, 4, 5}) {
		t.Fatalf("columns %v", c.X)
	}
	if !slices.Equal(c.Classes, []string{"a", "b", "c"}) || !slices.Equal(c.Label, []float64{0, 0, 1, 2, 0}) {
		t.Fatalf("classes %v labels %v", c.Classes, c.Label)
	}
	w, err := c.Slice(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if w.NumRows() != 3 || w.X[1][0] != 2 || w.Label[2] != 2 {
		t.Fatalf("slice %+v", w)
	}
	// Appending to a window must not overwrite the original.
	_ = append(w.X[1], 99)
	if c.X[1][4] != 5 {
		t.Fatal("append to a slice overwrote the dataset")
	}
	s, err := c.Subset([]int{4, 0})
	if err != nil || !slices.Equal(s.X[1], []float64{5, 1}) {
		t.Fatalf("subset %v %v", s, err)
	}
	for _, bad := range [][2]int{{-1, 2}, {3, 2}, {0, 6}} {
		if _, err := c.Slice(bad[0], bad[1]); err == nil {
			t.Fatalf("Slice(%d, %d) should fail", bad[0], bad[1])
		}
	}
	if _, err := c.Subset([]int{5}); err == nil {
		t.Fatal("Subset out of range should fail")
	}
	// Mismatched schemas are errors naming the column.
	other, _ := ReadCSV(strings.NewReader("k,w,y\nred,1,a\n"), CSVOptions{Label: "y", Categorical: []string{"k"}})
	if _, err := Concat(a, other); err == nil || !strings.Contains(err.Error(), `column "v"`) {
		t.Fatalf("got %v", err)
	}
	numeric, _ := ReadCSV(strings.NewReader("k,v,y\n1,1,a\n"), CSVOptions{Label: "y"})
	if _, err := Concat(a, numeric); err == nil || !strings.Contains(err.Error(), "categorical") {
		t.Fatalf("got %v", err)
	}
	if _, err := Concat(); err == nil {
		t.Fatal("empty concat should fail")
	}
}

func TestFromMatrixErrors(t *testing.T) {
	t.Parallel()
	if _, err := FromMatrix([]string{"a", "b"}, [][]float64{{1, 2}, {3}}, nil, ""); err == nil || !strings.Contains(err.Error(), "row 2") {
		t.Fatalf("got %v", err)
	}
	if _, err := FromMatrix([]string{"a"}, [][]float64{{1}, {2}}, []float64{0, math.NaN()}, Classification); err == nil || !strings.Contains(err.Error(), "row 2") {
		t.Fatalf("got %v", err)
	}
	if _, err := FromMatrix([]string{"a"}, [][]float64{{1}, {2}}, []float64{0, math.NaN()}, Regression); err == nil || !strings.Contains(err.Error(), "row 2") {
		t.Fatalf("got %v", err)
	}
	if _, err := FromMatrix([]string{"a"}, [][]float64{{math.Inf(1)}}, nil, ""); err == nil || !strings.Contains(err.Error(), "not finite") {
		t.Fatalf("got %v", err)
	}
	if _, err := FromMatrix([]string{"a", "a"}, [][]float64{{1, 2}}, nil, ""); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("got %v", err)
	}
}
