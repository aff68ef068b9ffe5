package deployer

import (
	"fmt"
	"testing"

	"github.com/gyrehq/gyre/events/gyrev1"
)

// TestPredictionLogMerges: queued predictions of one model version and
// variant leave in one message, in order, up to maxMergedRows rows; those
// of another version or variant leave apart; the counts say how many
// requests each message carries.
func TestPredictionLogMerges(t *testing.T) {
	t.Parallel()
	msg := func(version int64, variant string, rows int, id string) *gyrev1.PredictionLogged {
		m := &gyrev1.PredictionLogged{Pipeline: "p", ModelVersion: version, DeploymentId: "d", Variant: variant,
			SampleRate: 1, Features: []string{"x"}, LatencyMs: float64(rows)}
		for i := range rows {
			m.Rows = append(m.Rows, &gyrev1.Prediction{PredictionId: fmt.Sprint(id, i)})
		}
		return m
	}
	for _, tc := range []struct {
		name   string
		queued []*gyrev1.PredictionLogged
		// want is, per message, its first row id, rows and requests.
		want []string
	}{
		{"one request", []*gyrev1.PredictionLogged{msg(1, "champion", 2, "a")}, []string{"a0 2 1"}},
		{"same model merged", []*gyrev1.PredictionLogged{msg(1, "champion", 2, "a"), msg(1, "champion", 1, "b"), msg(1, "champion", 3, "c")},
			[]string{"a0 6 3"}},
		{"variants apart", []*gyrev1.PredictionLogged{msg(1, "champion", 1, "a"), msg(2, "canary", 1, "b"), msg(1, "champion", 1, "c"), msg(2, "shadow", 1, "d")},
			[]string{"a0 2 2", "b0 1 1", "d0 1 1"}},
		{"row bound", []*gyrev1.PredictionLogged{msg(1, "champion", 400, "a"), msg(1, "champion", 200, "b"), msg(1, "champion", 100, "c")},
			[]string{"a0 500 2", "b0 200 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := &predictionLog{queue: make(chan *gyrev1.PredictionLogged, 16)}
			for _, m := range tc.queued[1:] {
				q.queue <- m
			}
			msgs, counts := q.take(tc.queued[0])
			var got []string
			for i, m := range msgs {
				got = append(got, fmt.Sprint(m.Rows[0].PredictionId, " ", len(m.Rows), " ", counts[i]))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("merged into %v, want %v", got, tc.want)
			}
			if tc.name == "same model merged" && (msgs[0].Rows[2].PredictionId != "b0" || msgs[0].LatencyMs != 3) {
				t.Errorf("rows %v latency %v: want request order, the slowest latency", msgs[0].Rows, msgs[0].LatencyMs)
			}
		})
	}
}
