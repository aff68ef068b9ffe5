package dashboard

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	gyrev1 "github.com/gyrehq/gyre/events/gyrev1"
)

// step is one event fed to a board.
type step struct {
	name    string
	payload proto.Message
}

func feed(b *Board, pipeline string, steps ...step) []Update {
	var out []Update
	for _, s := range steps {
		seq := b.LastSeq() + 1
		out = append(out, b.Add(Entry{Seq: seq, Time: time.Unix(int64(seq), 0).UTC(), Pipeline: pipeline, Type: s.name, ID: "id"}, s.payload))
	}
	return out
}

func TestBoardFolds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, p Pipeline)
	}{
		{
			name: "a training request's reason follows its job to the end",
			steps: []step{
				{"training.requested", &gyrev1.TrainingRequested{RequestId: "r1", Reason: "drift.detected on batch b7", Algorithm: "gbdt", Pool: "cpu"}},
				{"training.started", &gyrev1.TrainingStarted{RequestId: "r1", JobId: "j1", Worker: "w1", Pool: "cpu", Attempt: 1}},
				{"training.completed", &gyrev1.TrainingCompleted{RequestId: "r1", JobId: "j1", Worker: "w1", Pool: "cpu", Attempt: 1,
					Metrics: map[string]float64{"accuracy": 0.84}, DurationMs: 2300}},
			},
			check: func(t *testing.T, p Pipeline) {
				tr := p.Training
				if tr == nil || tr.State != "completed" || tr.Reason != "drift.detected on batch b7" || tr.Metrics["accuracy"] != 0.84 || tr.DurationMs != 2300 {
					t.Errorf("training = %+v", tr)
				}
			},
		},
		{
			name: "a canary rolled back keeps the model that served, and its steps",
			steps: []step{
				{"deployment.completed", &gyrev1.DeploymentCompleted{DeploymentId: "d1", ModelVersion: 1, Strategy: "immediate", TrafficPercent: 100}},
				{"deployment.started", &gyrev1.DeploymentStarted{DeploymentId: "d2", ModelVersion: 2, PreviousVersion: 1, Strategy: "canary", Steps: []int32{10, 50}}},
				{"deployment.progressed", &gyrev1.DeploymentProgressed{DeploymentId: "d2", ModelVersion: 2, PreviousVersion: 1, Strategy: "canary", Step: 1, TrafficPercent: 10}},
				{"deployment.rolledback", &gyrev1.DeploymentRolledBack{DeploymentId: "d2", ModelVersion: 2, PreviousVersion: 1, Strategy: "canary", Step: 1,
					TrafficPercent: 10, Reason: "error rate 0.20 > 0.05", Figures: map[string]float64{"candidate_error_rate": 0.2}}},
			},
			check: func(t *testing.T, p Pipeline) {
				r := p.Rollout
				if r == nil || r.State != RolloutRolledBack || r.Candidate != 2 || len(r.Steps) != 2 || r.Reason != "error rate 0.20 > 0.05" {
					t.Errorf("rollout = %+v", r)
				}
				if p.Serving == nil || p.Serving.Version != 1 {
					t.Errorf("serving = %+v, want version 1", p.Serving)
				}
			},
		},
		{
			name: "a canary in progress, then completed, serves the candidate",
			steps: []step{
				{"model.promoted", &gyrev1.ModelPromoted{ModelVersion: 3, Alias: "champion", PreviousVersion: 2, Algorithm: "gbdt"}},
				{"deployment.started", &gyrev1.DeploymentStarted{DeploymentId: "d3", ModelVersion: 3, PreviousVersion: 2, Strategy: "canary", Steps: []int32{50}}},
				{"deployment.progressed", &gyrev1.DeploymentProgressed{DeploymentId: "d3", ModelVersion: 3, Strategy: "canary", Step: 1, TrafficPercent: 50}},
			},
			check: func(t *testing.T, p Pipeline) {
				if r := p.Rollout; r == nil || r.State != RolloutInProgress || r.TrafficPercent != 50 || len(r.Steps) != 1 {
					t.Errorf("rollout = %+v", r)
				}
				if p.Serving != nil {
					t.Errorf("serving = %+v before the rollout completed", p.Serving)
				}
				if p.Champion == nil || p.Champion.Version != 3 {
					t.Errorf("champion = %+v", p.Champion)
				}
			},
		},
		{
			name: "batches are counted by outcome, a duplicate once",
			steps: []step{
				{"data.batch.received", &gyrev1.DataBatchReceived{BatchId: "b1", Rows: 10}},
				{"data.batch.received", &gyrev1.DataBatchReceived{BatchId: "b1", Duplicate: true}},
				{"data.batch.validated", &gyrev1.DataBatchValidated{BatchId: "b1", Rows: 10}},
				{"data.batch.received", &gyrev1.DataBatchReceived{BatchId: "b2", Rows: 5}},
				{"data.batch.rejected", &gyrev1.DataBatchRejected{BatchId: "b2", ReasonsTotal: 3, Reasons: []*gyrev1.RejectReason{
					{Column: "nswdemand", Row: 4, Message: "-1 < 0"}}}},
				{"label.received", &gyrev1.LabelReceived{Labels: []*gyrev1.Label{{}, {}}}},
			},
			check: func(t *testing.T, p Pipeline) {
				b := p.Batches
				if b.Received != 2 || b.Validated != 1 || b.Rejected != 1 || b.LastBatchID != "b2" {
					t.Errorf("batches = %+v", b)
				}
				if want := "column nswdemand, row 4: -1 < 0 (and 2 more)"; b.LastRejected != want {
					t.Errorf("last rejected = %q, want %q", b.LastRejected, want)
				}
				if p.Labelled != 2 {
					t.Errorf("labelled = %d, want 2", p.Labelled)
				}
			},
		},
		{
			name: "drift and a fall in live accuracy",
			steps: []step{
				{"drift.measured", &gyrev1.DriftMeasured{BatchId: "b9", Method: "psi", ShareDrifted: 0.5, ShareThreshold: 0.3, Drifted: true, ReferenceModelVersion: 2,
					Features: []*gyrev1.FeatureDrift{{Feature: "nswprice", Score: 0.4, Threshold: 0.2, Drifted: true}}}},
				// A batch compared with nothing (no reference) leaves the last comparison.
				{"drift.measured", &gyrev1.DriftMeasured{BatchId: "b10", Method: "psi"}},
				{"performance.degraded", &gyrev1.PerformanceDegraded{ModelVersion: 3, Metric: "accuracy", BaselineAccuracy: 0.85, LiveAccuracy: 0.7, Drop: 0.15, MaxDrop: 0.05}},
			},
			check: func(t *testing.T, p Pipeline) {
				if d := p.Drift; d == nil || !d.Drifted || d.BatchID != "b9" || d.ReferenceVersion != 2 || len(d.Features) != 1 || d.Features[0].Feature != "nswprice" {
					t.Errorf("drift = %+v", d)
				}
				if g := p.Degraded; g == nil || g.Live != 0.7 || g.ModelVersion != 3 {
					t.Errorf("degraded = %+v", g)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := NewBoard(10)
			ups := feed(b, "elec2", tc.steps...)
			got := b.Snapshot().Pipelines
			if len(got) != 1 || got[0].Events != int64(len(tc.steps)) {
				t.Fatalf("pipelines = %+v", got)
			}
			tc.check(t, got[0])
			// The update of the last event carries the same state.
			tc.check(t, ups[len(ups)-1].Pipeline)
		})
	}
}

// TestBoardSnapshotsDoNotChange: a state handed out (to a browser's
// stream) stays as it was when later events change the pipeline.
func TestBoardSnapshotsDoNotChange(t *testing.T) {
	t.Parallel()
	b := NewBoard(10)
	first := feed(b, "p", step{"deployment.progressed", &gyrev1.DeploymentProgressed{DeploymentId: "d", ModelVersion: 2, Strategy: "canary", Step: 1, TrafficPercent: 10}})
	feed(b, "p", step{"deployment.progressed", &gyrev1.DeploymentProgressed{DeploymentId: "d", ModelVersion: 2, Strategy: "canary", Step: 2, TrafficPercent: 50}})
	if got := first[0].Pipeline.Rollout.TrafficPercent; got != 10 {
		t.Errorf("the first update's traffic changed to %d", got)
	}
}

func TestBoardSubscribe(t *testing.T) {
	t.Parallel()
	applied := step{"pipeline.applied", &gyrev1.PipelineApplied{Revision: 1}}

	t.Run("a new subscriber gets the latest entries and a reset", func(t *testing.T) {
		t.Parallel()
		b := NewBoard(5)
		feed(b, "p", applied, applied, applied)
		s := b.Subscribe(0, 2, 4)
		if !s.Reset || len(s.Missed) != 2 || s.Missed[0].Seq != 2 || s.LastSeq != 3 || len(s.Pipelines) != 1 {
			t.Fatalf("subscription = %+v", s)
		}
	})
	t.Run("a resuming subscriber gets what it missed, then updates", func(t *testing.T) {
		t.Parallel()
		b := NewBoard(5)
		feed(b, "p", applied, applied, applied)
		s := b.Subscribe(1, 100, 4)
		if s.Reset || len(s.Missed) != 2 || s.Missed[0].Seq != 2 {
			t.Fatalf("subscription = %+v", s)
		}
		feed(b, "p", applied)
		if u := <-s.C(); u.Entry.Seq != 4 {
			t.Errorf("update seq = %d, want 4", u.Entry.Seq)
		}
	})
	t.Run("entries no longer kept give a reset", func(t *testing.T) {
		t.Parallel()
		b := NewBoard(3)
		feed(b, "p", applied, applied, applied, applied, applied) // keeps 3..5
		if s := b.Subscribe(1, 100, 4); !s.Reset || len(s.Missed) != 3 || s.Missed[0].Seq != 3 {
			t.Errorf("resume after 1: %+v", s)
		}
		if s := b.Subscribe(2, 100, 4); s.Reset || len(s.Missed) != 3 {
			t.Errorf("resume after 2 (nothing lost): %+v", s)
		}
		if s := b.Subscribe(9, 100, 4); !s.Reset {
			t.Errorf("resume after 9, beyond the board: %+v", s)
		}
	})
	t.Run("a subscriber that falls behind is let go, the others not", func(t *testing.T) {
		t.Parallel()
		b := NewBoard(5)
		slow, fast := b.Subscribe(0, 0, 1), b.Subscribe(0, 0, 8)
		feed(b, "p", applied, applied)
		<-slow.C()
		if _, open := <-slow.C(); open {
			t.Error("the slow subscriber's channel is still open")
		}
		if n := len(fast.C()); n != 2 {
			t.Errorf("the fast subscriber holds %d updates, want 2", n)
		}
		if n := b.Subscribers(); n != 1 {
			t.Errorf("subscribers = %d, want 1", n)
		}
		b.Unsubscribe(slow) // safe after the drop
	})
	t.Run("close ends every feed", func(t *testing.T) {
		t.Parallel()
		b := NewBoard(5)
		s := b.Subscribe(0, 0, 1)
		b.Close()
		if _, open := <-s.C(); open {
			t.Error("open after Close")
		}
		if _, open := <-b.Subscribe(0, 0, 1).C(); open {
			t.Error("a subscription after Close is open")
		}
	})
}

func TestEntriesQuery(t *testing.T) {
	t.Parallel()
	b := NewBoard(10)
	for i, p := range []string{"a", "b", "a", "a"} {
		b.Add(Entry{Seq: uint64(i + 1), Pipeline: p, Type: "pipeline.applied", CorrelationID: map[bool]string{true: "c1", false: "c2"}[i < 2]},
			&gyrev1.PipelineApplied{})
	}
	tests := []struct {
		q    Query
		want []uint64
	}{
		{Query{}, []uint64{1, 2, 3, 4}},
		{Query{Pipeline: "a"}, []uint64{1, 3, 4}},
		{Query{CorrelationID: "c1"}, []uint64{1, 2}},
		{Query{Pipeline: "a", Limit: 2}, []uint64{3, 4}},
		{Query{After: 2}, []uint64{3, 4}},
		{Query{Type: "model.promoted"}, nil},
	}
	for _, tc := range tests {
		got, last := b.Entries(tc.q)
		var seqs []uint64
		for _, e := range got {
			seqs = append(seqs, e.Seq)
		}
		if last != 4 || !slices.Equal(seqs, tc.want) {
			t.Errorf("Entries(%+v) = %v (last %d), want %v", tc.q, seqs, last, tc.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		payload     proto.Message
		wantSummary string
		wantTone    string
	}{
		{&gyrev1.DeploymentRolledBack{ModelVersion: 4, PreviousVersion: 3, Step: 2, Reason: "p99 latency 40 ms > 25 ms"},
			"model 4 rolled back at step 2: p99 latency 40 ms > 25 ms; model 3 serves", ToneBad},
		{&gyrev1.DeploymentProgressed{ModelVersion: 4, Strategy: "canary", Step: 1, TrafficPercent: 10, Figures: map[string]float64{"requests": 200}},
			"canary step 1: model 4 takes 10% of traffic; requests 200", ToneInfo},
		{&gyrev1.DriftMeasured{BatchId: "b3", ShareDrifted: 0.5, ShareThreshold: 0.3, Drifted: true, ReferenceModelVersion: 1},
			"drift on batch b3: 50% of features (threshold 30%), drifted", ToneWarn},
		{&gyrev1.DriftMeasured{BatchId: "b4", ShareDrifted: 0.5, ShareThreshold: 0.3, Rows: 312, MinRows: 1000, ReferenceModelVersion: 1},
			"drift on batch b4: 50% of features (threshold 30%), not judged: 312 rows, fewer than the 1000 the policy needs", ToneInfo},
		{&gyrev1.DriftMeasured{BatchId: "b5"}, "batch b5 not compared: no champion to compare with yet", ToneInfo},
		{&gyrev1.ModelEvaluated{Verdict: "rejected", Reason: "accuracy 0.70 < champion 0.80", ChampionVersion: 2},
			"candidate evaluated: rejected (accuracy 0.70 < champion 0.80) against champion 2", ToneWarn},
		{&gyrev1.TrainingFailed{Attempt: 2, Error: "exit status 1", Retryable: true},
			"training failed (attempt 2, will be retried): exit status 1", ToneBad},
		{nil, "model.promoted (payload not readable)", ToneWarn},
	}
	for _, tc := range tests {
		summary, tone := describe("model.promoted", tc.payload)
		if summary != tc.wantSummary || tone != tc.wantTone {
			t.Errorf("describe(%T) = %q, %s; want %q, %s", tc.payload, summary, tone, tc.wantSummary, tc.wantTone)
		}
	}
}
