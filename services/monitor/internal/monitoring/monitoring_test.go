package monitoring

import (
	"fmt"
	"math"
	"testing"

	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

func TestLiveAccuracy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		window string
		n      int
		acc    float64
		rows   int
	}{
		{"", 10, 0, 0},
		{"1100", 10, 0.5, 4},
		{"1100", 2, 0, 2},
		{"0011", 2, 1, 2},
	} {
		acc, rows := (&Live{Window: tc.window}).Accuracy(tc.n)
		if acc != tc.acc || rows != tc.rows {
			t.Errorf("Accuracy(%q, %d) = %v, %d; want %v, %d", tc.window, tc.n, acc, rows, tc.acc, tc.rows)
		}
	}
}

func TestCooldown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		c        Cooldown
		seq      int64
		cooldown int
		want     bool
	}{
		{Cooldown{}, 0, 2, true},
		{Cooldown{Emitted: true, Seq: 10}, 11, 2, false},
		{Cooldown{Emitted: true, Seq: 10}, 12, 2, true},
		{Cooldown{Emitted: true, Seq: 10}, 10, 0, true},
		{Cooldown{Emitted: true, Seq: 0}, 0, 1, false},
	} {
		if got := tc.c.allows(tc.seq, tc.cooldown); got != tc.want {
			t.Errorf("%+v.allows(%d, %d) = %v, want %v", tc.c, tc.seq, tc.cooldown, got, tc.want)
		}
	}
}

func TestSameLabel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want bool
	}{{"1", "1.0", true}, {" UP", "UP", true}, {"UP", "up", false}, {"0", "1", false}} {
		if got := sameLabel(tc.a, tc.b); got != tc.want {
			t.Errorf("sameLabel(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestFeatureColumnsAndReferences(t *testing.T) {
	t.Parallel()
	window := []*table.Table{{
		Columns: []string{"n", "s", "inferredNum", "inferredText", "label"},
		Rows: [][]string{
			{"1", "a", "0.5", "x", "0"},
			{"2", "b", "true", "1", "1"},
			{"", "a", "", "y", "1"},
		},
		Missing: [][]bool{nil, nil, {true, false, true, false, false}},
	}}
	p := &pipeline.Pipeline{Spec: pipeline.Spec{Dataset: pipeline.Dataset{Label: "label", Schema: []pipeline.Column{
		{Name: "n", Type: pipeline.TypeFloat}, {Name: "s", Type: pipeline.TypeCategory}, {Name: "label", Type: pipeline.TypeCategory},
	}}}}
	// The schema names two features; an inferred schema (none) takes every column.
	if got := fmt.Sprint(FeatureColumns(p, window)); got != "[{n true} {s false}]" {
		t.Errorf("declared columns = %s", got)
	}
	p.Spec.Dataset.Schema = nil
	cols := FeatureColumns(p, window)
	if got := fmt.Sprint(cols); got != "[{n true} {s false} {inferredNum true} {inferredText false}]" {
		t.Errorf("inferred columns = %s", got)
	}
	refs, rows, skipped := BuildReferences(append(cols, Column{Name: "absent", Numeric: true}), window)
	if rows != 3 || len(refs) != 4 || skipped["absent"] == "" {
		t.Fatalf("references of %d rows: %d built, skipped %v", rows, len(refs), skipped)
	}
	if r := refs["n"]; r.Kind != drift.KindNumeric || r.Rows != 2 || r.Missing != 1 {
		t.Errorf("n: %+v, want numeric, 2 values, 1 missing", r)
	}
	if r := refs["s"]; r.Kind != drift.KindCategorical || r.Rows != 3 {
		t.Errorf("s: %+v, want categorical of 3", r)
	}
	samples := Samples(refs, window[0])
	if v := samples["n"].Values; len(v) != 3 || !math.IsNaN(v[2]) {
		t.Errorf("n sample = %v, want 3 values, the last missing", v)
	}
	if c := samples["inferredText"].Categories; fmt.Sprint(c) != "[x 1 y]" {
		t.Errorf("inferredText sample = %v", c)
	}
}
