package deployer

import (
	"fmt"
	"testing"

	"github.com/gyrehq/gyre/services/deployer/internal/serving"
)

// TestPredictionLogMerges: queued predictions of one model version and
// variant leave in one event, in order, up to maxMergedRows rows; those of
// another version or variant leave apart.
func TestPredictionLogMerges(t *testing.T) {
	t.Parallel()
	rec := func(version int64, variant serving.Variant, rows int, id string) *serving.PredictionRecord {
		r := &serving.PredictionRecord{Pipeline: "p", ModelVersion: version, DeploymentID: "d", Variant: variant,
			SampleRate: 1, Features: []string{"x"}, LatencyMs: float64(rows)}
		for i := range rows {
			r.IDs = append(r.IDs, fmt.Sprint(id, i))
			r.Outputs = append(r.Outputs, "yes")
			r.Values = append(r.Values, float64(i))
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		queued []*serving.PredictionRecord
		// want is, per event, its first row id, rows and requests.
		want []string
	}{
		{"one request", []*serving.PredictionRecord{rec(1, "champion", 2, "a")}, []string{"a0 2 1"}},
		{"same model merged", []*serving.PredictionRecord{rec(1, "champion", 2, "a"), rec(1, "champion", 1, "b"), rec(1, "champion", 3, "c")},
			[]string{"a0 6 3"}},
		{"variants apart", []*serving.PredictionRecord{rec(1, "champion", 1, "a"), rec(2, "canary", 1, "b"), rec(1, "champion", 1, "c"), rec(2, "shadow", 1, "d")},
			[]string{"a0 2 2", "b0 1 1", "d0 1 1"}},
		{"row bound", []*serving.PredictionRecord{rec(1, "champion", 400, "a"), rec(1, "champion", 200, "b"), rec(1, "champion", 100, "c")},
			[]string{"a0 500 2", "b0 200 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := &predictionLog{queue: make(chan *serving.PredictionRecord, 16)}
			for _, m := range tc.queued[1:] {
				q.queue <- m
			}
			evs := q.take(tc.queued[0])
			var got []string
			for _, ev := range evs {
				got = append(got, fmt.Sprint(ev.recs[0].IDs[0], " ", ev.rows, " ", len(ev.recs)))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("merged into %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPredictionLogRoundBound: one round takes at most about roundRows
// rows; the rest stay queued for the next round.
func TestPredictionLogRoundBound(t *testing.T) {
	t.Parallel()
	const requests = 3 * roundRows / 100
	q := &predictionLog{queue: make(chan *serving.PredictionRecord, requests)}
	for i := range requests {
		r := &serving.PredictionRecord{Pipeline: "p", ModelVersion: 1, Variant: "champion", SampleRate: 1}
		for k := range 100 {
			r.IDs = append(r.IDs, fmt.Sprint(i, "-", k))
		}
		r.Outputs = make([]string, 100)
		q.queue <- r
	}
	rows := 0
	for _, ev := range q.take(<-q.queue) {
		if ev.rows > maxMergedRows {
			t.Errorf("an event of %d rows, over %d", ev.rows, maxMergedRows)
		}
		rows += ev.rows
	}
	if rows < roundRows || rows > roundRows+100 {
		t.Errorf("a round took %d rows, want about %d", rows, roundRows)
	}
	if len(q.queue) != requests-rows/100 {
		t.Errorf("%d requests left queued, want %d", len(q.queue), requests-rows/100)
	}
}
