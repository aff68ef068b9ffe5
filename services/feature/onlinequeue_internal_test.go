package feature

import (
	"bytes"
	"math"
	"testing"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/table"
)

// TestSnapshotOnlineRowsAreTheDirectOnes: the catch-up re-derives a queued
// batch's online rows from its snapshot; they are the rows Materialize
// builds from the same columns, key for key and byte for byte — floats of
// every kind, missing values, text, a classification and a regression label.
func TestSnapshotOnlineRowsAreTheDirectOnes(t *testing.T) {
	t.Parallel()
	nan := math.NaN()
	for _, tc := range []struct {
		name  string
		cols  []table.Column
		label string
	}{
		{"classification", []table.Column{
			{Name: "x", Float: []float64{0.1, -1.0 / 3, nan, 1e-300, 12345678.90123, 0}},
			{Name: "c=a", Float: []float64{1, 0, 0, 1, 0, 0}},
			{Name: "city", Text: []string{"Paris", "", "Zürich", "a,b", " ", "x"}},
			{Name: "class", Text: []string{"0", "1", "", "1", "0", "2"}},
		}, "class"},
		{"regression", []table.Column{
			{Name: "z", Float: []float64{math.MaxFloat64, math.SmallestNonzeroFloat64, -0.5}},
			{Name: "y", Float: []float64{1.25, nan, 3}},
		}, "y"},
		{"unlabelled", []table.Column{
			{Name: "b", Float: []float64{2}},
			{Name: "a", Float: []float64{nan}},
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := onlineRows("p1", "batch:1", "fsv", tc.cols, tc.label)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := table.WriteParquet(&buf, tc.cols); err != nil {
				t.Fatal(err)
			}
			got, err := snapshotOnlineRows("p1", pendingBatch{
				BatchID: "batch:1", FeatureSetVersion: "fsv", Snapshot: "p1/batch:1/fsv.parquet",
				Columns: pendingColumns(tc.cols), LabelColumn: tc.label,
			}, buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d rows from the snapshot, %d direct", len(got), len(want))
			}
			for i := range want {
				if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
					t.Errorf("row %d: from the snapshot %s = %s, direct %s = %s", i+1, got[i].Key, got[i].Value, want[i].Key, want[i].Value)
				}
			}
		})
	}
}

// TestSnapshotOnlineRowsMissingColumn: a snapshot that lacks a column the
// queue entry names cannot give the rows, for good (the catch-up drops it).
func TestSnapshotOnlineRowsMissingColumn(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := table.WriteParquet(&buf, []table.Column{{Name: "x", Float: []float64{1}}}); err != nil {
		t.Fatal(err)
	}
	_, err := snapshotOnlineRows("p1", pendingBatch{BatchID: "b", Snapshot: "k", Columns: []pendingColumn{{Name: "y"}}}, buf.Bytes())
	if err == nil || !bus.IsPermanent(err) {
		t.Fatalf("err = %v, want a permanent error", err)
	}
}
