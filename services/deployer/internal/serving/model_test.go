package serving

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// trainBundle fits a bundle on a synthetic batch with every transform: a
// classifier on label "class" or a regressor on "y".
func trainBundle(t *testing.T, algorithm, label string) *bundle.Bundle {
	t.Helper()
	spec := fmt.Sprintf(`apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: toy}
spec:
  dataset: {label: %s}
  features:
    - {name: a, transform: standardize}
    - {name: b, transform: minmax}
    - {name: c, transform: log1p}
    - {name: d, transform: bucketize, buckets: [0.25, 0.5, 0.75]}
    - {name: color, transform: onehot}
    - {name: shape, transform: identity}
    - {name: e, transform: identity}
  model: {algorithm: %s}
`, label, algorithm)
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	var csv strings.Builder
	csv.WriteString("a,b,c,d,color,shape,e," + label + "\n")
	for range 400 {
		a, b, c, d, e := r.NormFloat64(), r.Float64()*10, r.Float64()*5, r.Float64(), r.Float64()
		color := []string{"red", "green", "blue"}[r.IntN(3)]
		shape := []string{"round", "square"}[r.IntN(2)]
		y := a + b/10 - c/5 + d
		if color == "red" {
			y++
		}
		out := strconv.FormatFloat(y, 'f', 4, 64)
		if label == "class" {
			out = map[bool]string{true: "yes", false: "no"}[y > 0.8]
		}
		fmt.Fprintf(&csv, "%.4f,%.4f,%.4f,%.4f,%s,%s,%.4f,%s\n", a, b, c, d, color, shape, e, out)
	}
	tab, err := table.Read(table.FormatCSV, []byte(csv.String()))
	if err != nil {
		t.Fatal(err)
	}
	set, err := features.Fit(p, tab)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := set.Dataset(tab, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ml.Train(context.Background(), p.Spec.Model.Algorithm, p.Spec.Model.Params, ds, ml.TrainOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &bundle.Bundle{Pipeline: "toy", Features: set, Model: m}
}

// toyColumns are the raw columns of the toy bundles.
var toyColumns = []string{"a", "b", "c", "d", "color", "shape", "e"}

// toyRows returns rows of raw cells over toyColumns: numbers, text (some
// unseen categories, some padded), and nil for a missing cell.
func toyRows(n int, seed uint64) [][]any {
	r := rand.New(rand.NewPCG(seed, 9))
	out := make([][]any, n)
	for i := range out {
		row := []any{r.NormFloat64(), r.Float64() * 12, r.Float64() * 6, r.Float64(),
			[]string{"red", "green", "blue", "violet", " red "}[r.IntN(5)], []string{"round", "square", "oval"}[r.IntN(3)], r.Float64()}
		for k := range row {
			if r.IntN(12) == 0 {
				row[k] = nil
			}
		}
		out[i] = row
	}
	return out
}

// cleanRows replaces the missing cells and unseen categories of rows.
func cleanRows(rows [][]any) [][]any {
	for _, r := range rows {
		for k := range r {
			switch {
			case k == 5:
				r[k] = "round"
			case k == 4:
				r[k] = "blue"
			case r[k] == nil:
				r[k] = 0.5
			}
		}
	}
	return rows
}

// frames returns the rows as a frame of typed columns, the same as text
// columns, and as records.
func frames(rows [][]any) (typed, text *Frame, records []map[string]string) {
	typed, text = &Frame{Rows: len(rows)}, &Frame{Rows: len(rows)}
	records = make([]map[string]string, len(rows))
	for i := range records {
		records[i] = map[string]string{}
	}
	for k, name := range toyColumns {
		tc := Column{Name: name}
		xc := Column{Name: name, Text: make([]string, len(rows)), Missing: make([]bool, len(rows))}
		for i, row := range rows {
			switch v := row[k].(type) {
			case nil:
				xc.Missing[i] = true
				if tc.Text != nil {
					tc.Missing[i] = true
				} else {
					tc.Numbers = append(tc.Numbers, math.NaN())
				}
				continue
			case float64:
				tc.Numbers = append(tc.Numbers, v)
				xc.Text[i] = strconv.FormatFloat(v, 'g', -1, 64)
			case string:
				if tc.Text == nil {
					tc.Text, tc.Missing = make([]string, len(rows)), make([]bool, len(rows))
					for j := range i {
						tc.Missing[j] = rows[j][k] == nil
					}
				}
				tc.Text[i] = v
				xc.Text[i] = v
			}
			records[i][name] = xc.Text[i]
		}
		typed.Columns = append(typed.Columns, tc)
		text.Columns = append(text.Columns, xc)
	}
	return typed, text, records
}

func samePredictions(t *testing.T, what string, got, want *bundle.Predictions) {
	t.Helper()
	eq := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
	if got.Task != want.Task || !slices.Equal(got.Classes, want.Classes) || !slices.Equal(got.Labels, want.Labels) ||
		!slices.EqualFunc(got.Values, want.Values, eq) ||
		!slices.EqualFunc(got.Proba, want.Proba, func(a, b []float64) bool { return slices.EqualFunc(a, b, eq) }) {
		t.Errorf("%s: predictions differ from the bundle's\n got %+v\nwant %+v", what, got, want)
	}
}

// TestModelPredictsAsTheBundle: a frame, typed or text, scores exactly as
// bundle.PredictRecords scores the same records, alone or batched with
// concurrent requests, for a classifier and a regressor.
func TestModelPredictsAsTheBundle(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ algorithm, label string }{
		{"gbdt", "class"}, {"logreg", "class"}, {"gbdt", "y"},
	} {
		t.Run(tc.algorithm+" "+tc.label, func(t *testing.T) {
			t.Parallel()
			b := trainBundle(t, tc.algorithm, tc.label)
			m := NewModel(1, Artifact{}, b, nil)
			unbatched := NewModel(1, Artifact{}, b, nil, WithBatching(pipeline.Batching{MaxBatchSize: 1}))
			rows := toyRows(300, 1)
			if tc.algorithm == "logreg" {
				// A logistic regression cannot score a missing value.
				rows = cleanRows(rows)
			}
			typed, text, records := frames(rows)
			want, err := b.PredictRecords(records)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name  string
				m     *Model
				frame *Frame
			}{{"typed", m, typed}, {"text", m, text}, {"typed unbatched", unbatched, typed}} {
				got, err := c.m.predict(context.Background(), c.frame)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				samePredictions(t, c.name, got, want)
			}
			// One row at a time from many goroutines: batched together,
			// each row still gets its own prediction.
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < len(rows); i += 8 {
						ty, _, rec := frames(rows[i : i+1])
						got, err := m.predict(context.Background(), ty)
						if err != nil {
							t.Errorf("row %d: %v", i, err)
							return
						}
						one, err := b.PredictRecords(rec)
						if err != nil {
							t.Errorf("row %d: %v", i, err)
							return
						}
						samePredictions(t, fmt.Sprint("row ", i), got, one)
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestModelInputErrors: a value the feature set cannot transform fails the
// request, naming the row and column.
func TestModelInputErrors(t *testing.T) {
	t.Parallel()
	m := NewModel(1, Artifact{}, trainBundle(t, "gbdt", "class"), nil)
	for _, tc := range []struct {
		name string
		edit func(f *Frame)
		want string
	}{
		{"text that is not a number", func(f *Frame) {
			f.Columns[0] = Column{Name: "a", Text: []string{"1", "abc"}}
		}, `row 2, column "a": "abc" is not a number`},
		{"log1p of -1", func(f *Frame) { f.Columns[2].Numbers[0] = -1 }, `row 1, column "c": log1p of -1 is undefined`},
		{"infinity", func(f *Frame) { f.Columns[1].Numbers[1] = math.Inf(1) }, `row 2, column "b"`},
		{"missing input", func(f *Frame) { f.Columns = f.Columns[1:] }, `missing input "a"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, _, _ := frames(cleanRows(toyRows(2, 5)))
			tc.edit(f)
			_, err := m.predict(context.Background(), f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("predict: %v, want an error containing %q", err, tc.want)
			}
			if _, ok := err.(*InputError); !ok {
				t.Errorf("error %T, want *InputError", err)
			}
		})
	}
}
