package features_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

func mustParse(t *testing.T, spec string) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRead(t *testing.T, csv string) *table.Table {
	t.Helper()
	tb, err := table.Read("csv", []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

const spec = `
apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p}
spec:
  dataset: {label: y}
  features:
    - {name: a, transform: standardize}
    - {name: b, transform: minmax}
    - {name: c, transform: onehot}
    - {name: d, transform: log1p}
    - {name: e, transform: bucketize, buckets: [0, 10]}
    - {name: c2}
`

func TestFitAndTransform(t *testing.T) {
	t.Parallel()
	p := mustParse(t, spec)
	w1 := mustRead(t, "a,b,c,d,e,c2,y\n1,0,x,0,-5,u,1\n3,10,y,1,5,v,0\n")
	w2 := mustRead(t, "a,b,c,d,e,c2,y\n2,5,x,3,50,u,1\n")
	s, err := features.Fit(p, w1, w2)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.Outputs(), ","); got != "a,b,c=x,c=y,d,e,c2" {
		t.Fatalf("outputs = %s", got)
	}
	if s.Task != ml.Classification || strings.Join(s.Classes, ",") != "0,1" {
		t.Errorf("task %s classes %v", s.Task, s.Classes)
	}
	again, _ := features.Fit(p, w1, w2)
	if again.Version != s.Version || len(s.Version) != 16 {
		t.Errorf("versions %q %q", s.Version, again.Version)
	}
	ds, err := s.Dataset(mustRead(t, "a,b,c,d,e,c2,y\n2,5,y,0,10,w,1\n,,,,,,0\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0, 0.5, 0, 1, 0, 1, math.NaN()} // c2=w is unseen: missing
	for j, w := range want {
		got := ds.X[j][0]
		if !(got == w || math.IsNaN(got) && math.IsNaN(w)) {
			t.Errorf("%s = %v, want %v", ds.Features[j], got, w)
		}
	}
	if !math.IsNaN(ds.X[0][1]) || ds.X[2][1] != 0 || ds.Label[0] != 1 || ds.Label[1] != 0 {
		t.Errorf("row 2 = %v label %v", []float64{ds.X[0][1], ds.X[2][1]}, ds.Label)
	}
	row, err := s.Row(map[string]string{"a": "2", "b": "5", "c": "y", "d": "0", "e": "10", "c2": "u"})
	if err != nil || row[0] != 0 || row[3] != 1 || row[6] != 0 {
		t.Errorf("Row = %v, %v", row, err)
	}
}

func TestErrorsNameRowAndColumn(t *testing.T) {
	t.Parallel()
	p := mustParse(t, spec)
	s, err := features.Fit(p, mustRead(t, "a,b,c,d,e,c2,y\n1,0,x,0,1,u,1\n3,10,y,1,5,v,0\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ csv, want string }{
		{"a,b,c,d,e,c2,y\n1,0,x,0,1,u,1\n1,zz,x,0,1,u,0\n", `row 2, column "b"`},
		{"a,b,c,d,e,c2,y\n1,0,x,0,1,u,7\n", `row 1, column "y": class "7"`},
		{"a,b,c,d,e,c2,y\n1,0,x,-3,1,u,1\n", `row 1, column "d": log1p`},
		{"a,b,c,e,c2,y\n1,0,x,1,u,1\n", `column "d"`},
	} {
		_, err := s.Dataset(mustRead(t, c.csv), true)
		var fe *features.Error
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want it to mention %s", err, c.want)
		}
	}
}

func TestDefaultFeaturesAndRegression(t *testing.T) {
	t.Parallel()
	p := mustParse(t, "apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  dataset: {label: price}\n")
	var b strings.Builder
	b.WriteString("x,price\n")
	for i := range 30 {
		b.WriteString(strings.Repeat("1", 1) + "," + string(rune('0'+i%10)) + "." + string(rune('0'+i/10)) + "\n")
	}
	s, err := features.Fit(p, mustRead(t, b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if s.Task != ml.Regression || strings.Join(s.Outputs(), ",") != "x" {
		t.Errorf("task %s outputs %v", s.Task, s.Outputs())
	}
}
