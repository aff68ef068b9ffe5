package deployer_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// TestRolloutWaitsForLabels: with rollback.labelTimeoutSeconds, a canary
// step that is due without minLabels labelled candidate predictions keeps
// its traffic and waits. Labels that come during the wait decide it (a
// worse candidate is rolled back on accuracy, where without the wait it
// would have been promoted on errors and latency alone); labels that never
// come roll it back when the wait runs out, saying why.
func TestRolloutWaitsForLabels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		timeout    float64
		labelLate  bool
		wantReason []string
		wantFigure string
	}{
		{name: "late labels decide", timeout: 60, labelLate: true,
			wantReason: []string{"accuracy", "below the champion's"}, wantFigure: "accuracy"},
		{name: "no labels in time", timeout: 1,
			wantReason: []string{"0 of the 10 labelled candidate predictions needed", "labelTimeoutSeconds 1", "could not be checked", "version 1 keeps serving"},
			wantFigure: "labelWaitSeconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			name := strings.ReplaceAll(tc.name, " ", "-")
			h.env.ApplyPipeline(spec(name, fmt.Sprintf("{strategy: canary, steps: [50, 100], stepRequests: 10, rollback: {minLabels: 10, labelTimeoutSeconds: %g}}", tc.timeout), false))
			h.run(nil)
			h.startRollout(name, h.storeBundleOf(name, "champion", truth, false), h.storeBundleOf(name, "candidate", flippedTruth, false))

			// Traffic without labels until the step is due: the candidate
			// has served stepRequests.
			r := rand.New(rand.NewPCG(9, 9))
			var candidateLabels []*gyrev1.Label
			for i := 0; len(candidateLabels) < 4*10; i++ {
				if i > 500 {
					t.Fatal("the candidate answered too few requests")
				}
				rows := randomRows(r, 4)
				code, body := h.do(http.MethodPost, "/v2/models/"+name+"/infer", inferBody(rows), pipeline.DefaultRouteHeader, fmt.Sprint("client-", i))
				if code != http.StatusOK {
					t.Fatalf("infer = %d %v", code, body)
				}
				if fmt.Sprint(body["model_version"]) == "2" {
					candidateLabels = append(candidateLabels, labelsOf(rows, output(body, "prediction_id"))...)
				}
			}
			if tc.labelLate {
				// Due, and waiting: still a canary a while later.
				time.Sleep(1500 * time.Millisecond)
				if status, _, _ := h.deployment(name); status != "canary" {
					t.Fatalf("status %q while the step waits for labels, want canary", status)
				}
				h.env.Emit("/gyre/test", name, &gyrev1.LabelReceived{Pipeline: name, Labels: candidateLabels})
			}
			ev := h.waitEmitted(name, events.DeploymentRolledBack, 1)[0]
			rb := looptest.Decode(t, ev, &gyrev1.DeploymentRolledBack{})
			for _, w := range tc.wantReason {
				if !strings.Contains(rb.Reason, w) {
					t.Errorf("rolledback reason %q does not name %q", rb.Reason, w)
				}
			}
			if _, ok := rb.Figures[tc.wantFigure]; !ok {
				t.Errorf("figures %v lack %s", rb.Figures, tc.wantFigure)
			}
			if rb.Step != 1 || rb.TrafficPercent != 50 {
				t.Errorf("rolled back at step %d, %d %%; want step 1 at 50 %%", rb.Step, rb.TrafficPercent)
			}
			if n := len(h.env.Events(name, events.DeploymentProgressed)); n != 0 {
				t.Errorf("%d deployment.progressed: the step should not have passed", n)
			}
			h.waitServing(name, "1")
		})
	}
}
