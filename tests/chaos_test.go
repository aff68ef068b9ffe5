package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
)

// The chaos suite runs the loop's services as separate OS processes — two
// deployers and two monitors among them — on the real server (NATS_URL in
// integration runs; a three-node cluster of nats-server processes for the
// cluster scenario), streams Elec2 through them as production traffic
// would, injects one fault mid-stream, lets the loop settle and checks one
// invariant:
//
//   - the registry's champion = every deployer replica's served version =
//     the version the monitor judges, and every blessed promotion was judged
//     against the champion it replaced (the evaluator's champion);
//   - every batch validated and materialized exactly once, in arrival order;
//   - one model version per training request;
//   - labels joined ≥ 99 % of those whose predictions were logged.
//
// GYRE_CHAOS selects the scenarios (a comma list, or "all"; default: the
// short set make test runs), GYRE_CHAOS_RUNS the runs of each (default 1;
// make test-chaos: all, 3 runs), GYRE_CHAOS_REPORT a file for the table.
const (
	envChaos       = "GYRE_CHAOS"
	envChaosRuns   = "GYRE_CHAOS_RUNS"
	envChaosReport = "GYRE_CHAOS_REPORT"
)

// chaosBatches is how many Elec2 batches of chaosRows rows a run streams.
const (
	chaosBatches = 10
	chaosRows    = 1000
)

// scenario is one fault and when it strikes: after batch at is published,
// before the loop settles.
type scenario struct {
	name string
	// at is the 0-based batch after whose publication the fault strikes.
	at int
	// spec replaces the Elec2 pipeline spec.
	spec func(t *testing.T) []byte
	// cluster runs the scenario on three nats-server processes with every
	// stream and bucket replicated three times.
	cluster bool
	// fault strikes; it may wait for the loop itself.
	fault func(ctx context.Context, r *chaosRun)
}

// chaosRun is one run of a scenario.
type chaosRun struct {
	t       *testing.T
	f       *fleet
	d       *driver
	js      jetstream.JetStream
	cluster *natsCluster
	notes   []string
}

func (r *chaosRun) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.t.Logf(format, args...)
}

// killAndRestart kills an instance with SIGKILL a moment into the cascade
// the batch just published caused, and starts it again.
func killAndRestart(instance func(r *chaosRun) string) func(ctx context.Context, r *chaosRun) {
	return func(ctx context.Context, r *chaosRun) {
		in := instance(r)
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond)
		r.f.kill(in)
		r.note("kill -9 %s", in)
		time.Sleep(500 * time.Millisecond)
		r.f.start(in)
		r.f.waitReady(in)
	}
}

func fixed(instance string) func(*chaosRun) string { return func(*chaosRun) string { return instance } }

// theController is the deployer replica that controls the rollouts.
func theController(r *chaosRun) string { return r.f.controller("deployer-a", "deployer-b") }

// chaosScenarios are every scenario of the suite.
func chaosScenarios() []scenario {
	s := []scenario{
		{name: "frozen-deployer", at: 5, fault: frozenDeployer(true)},
		{name: "thawed-deployer", at: 5, fault: frozenDeployer(false)},
		{name: "stale-verdict", at: 6, fault: staleVerdict},
		{name: "canary-rollback", at: 5, spec: canarySpec, fault: canaryRollback},
		{name: "cluster-node", at: 5, cluster: true, fault: killNATSNode},
	}
	for _, in := range []string{"ingest", "validation", "feature", "monitor-a", "trainer", "evaluator", "registry"} {
		s = append(s, scenario{name: "kill-" + serviceOf(in), at: 4, fault: killAndRestart(fixed(in))})
	}
	s = append(s, scenario{name: "kill-deployer", at: 4, fault: killAndRestart(theController)})
	return s
}

// shortChaos are the scenarios make test runs, once each.
var shortChaos = []string{"kill-deployer", "canary-rollback"}

// TestChaos runs the selected scenarios and prints their table.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the services as processes")
	}
	selected := shortChaos
	if v := os.Getenv(envChaos); v == "all" {
		selected = nil
		for _, s := range chaosScenarios() {
			selected = append(selected, s.name)
		}
	} else if v != "" {
		selected = strings.Split(v, ",")
	}
	runs := 1
	if v := os.Getenv(envChaosRuns); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a number of runs >= 1", envChaosRuns, v)
		}
		runs = n
	}
	bins := buildLoop(t, t.TempDir())
	var rows []chaosRow
	for _, name := range selected {
		i := slices.IndexFunc(chaosScenarios(), func(s scenario) bool { return s.name == name })
		if i < 0 {
			t.Fatalf("%s: no scenario %q", envChaos, name)
		}
		sc := chaosScenarios()[i]
		for run := 1; run <= runs; run++ {
			t.Run(fmt.Sprintf("%s/run%d", sc.name, run), func(t *testing.T) {
				row := runScenario(t, bins, sc)
				row.run = run
				rows = append(rows, row)
			})
		}
	}
	table := chaosTable(rows)
	t.Logf("chaos suite:\n%s", table)
	if path := os.Getenv(envChaosReport); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Errorf("%s: %v", envChaosReport, err)
		}
	}
}

// runScenario runs one scenario once and checks the invariant.
func runScenario(t *testing.T, bins map[string]string, sc scenario) chaosRow {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	r := &chaosRun{t: t}
	var natsURL string
	var args []string
	if sc.cluster {
		r.cluster = startNATSCluster(t)
		natsURL = r.cluster.url()
		args = []string{"--stream-replicas", "3"}
	} else {
		srv := natstest.Start(t)
		natsURL = srv.URL
	}
	_, r.js = connectTo(t, natsURL)
	r.f = startFleet(t, bins, natsURL, args...)
	var all []string
	for _, in := range fleetInstances {
		all = append(all, in.instance)
	}
	r.f.waitReady(all...)
	spec := elec2Spec(t)
	if sc.spec != nil {
		spec = sc.spec(t)
	}
	r.d = newDriver(ctx, t, r.js, r.f, spec, chaosRows)
	var faulted time.Duration
	faultAt, faultBatches := -1, 1
	// A fault may stream batches itself (the stale verdict streams on until
	// a candidate waits): the run goes on from the next batch.
	for i := r.d.batchCount(); i < chaosBatches; i = r.d.batchCount() {
		if i != sc.at {
			r.d.step(ctx, i)
			continue
		}
		start := time.Now()
		r.d.publish(ctx, i)
		sc.fault(ctx, r)
		r.d.settle(ctx)
		faulted = time.Since(start)
		faultAt = len(r.d.settles)
		r.d.settles = append(r.d.settles, faulted)
		faultBatches = r.d.batchCount() - i
	}
	r.d.settle(ctx)
	r.d.finishRollouts(ctx)
	row := r.check(ctx)
	row.scenario = sc.name
	normal := slices.Clone(r.d.settles)
	normal = slices.Delete(normal, faultAt, faultAt+1)
	slices.Sort(normal)
	// What the fault added to the batches it spanned, each worth a median
	// step.
	row.stall = faulted - time.Duration(faultBatches)*normal[len(normal)/2]
	row.notes = r.notes
	return row
}

// elec2Spec is the shipped Elec2 pipeline.
func elec2Spec(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "elec2", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// canarySpec is Elec2 rolled out by canary: half the traffic, judged after
// 5 requests of the candidate.
func canarySpec(t *testing.T) []byte {
	return []byte(strings.Replace(string(elec2Spec(t)), "    strategy: immediate",
		"    strategy: canary\n    steps: [50, 100]\n    stepRequests: 5", 1))
}

func connectTo(t *testing.T, url string) (any, jetstream.JetStream) {
	t.Helper()
	srv := &natstest.Server{URL: url, External: true}
	nc, js := srv.Connect(t)
	return nc, js
}

// frozenDeployer freezes the deployer that controls the rollouts (SIGSTOP:
// it holds what it holds), moves champion by hand meanwhile, lets the other
// replica take over, then kills the frozen one and starts it again (kill)
// or lets it run on (SIGCONT: it wakes up deposed), and moves champion
// back: the frozen replica must serve what the registry says, never what
// it held when it froze, and act no more as the controller.
func frozenDeployer(kill bool) func(ctx context.Context, r *chaosRun) {
	return func(ctx context.Context, r *chaosRun) {
		r.d.settle(ctx)
		c := theController(r)
		other := "deployer-a"
		if c == other {
			other = "deployer-b"
		}
		rec := r.registry(ctx)
		champion := rec.Aliases[models.AliasChampion]
		target := int64(1)
		if champion == 1 {
			target = 2
		}
		r.f.freeze(c)
		r.note("SIGSTOP %s (the controller), champion v%d", c, champion)
		frozen := time.Now()
		r.gyre(ctx, "promote", r.d.spec.Name(), strconv.FormatInt(target, 10))
		waitUntil(r.t, fmt.Sprintf("%s serving v%d", other, target), 30*time.Second, func() bool { return r.d.served(other) == strconv.FormatInt(target, 10) })
		r.note("%s took over and served v%d %s after the freeze", other, target, time.Since(frozen).Round(100*time.Millisecond))
		if kill {
			r.f.kill(c)
			r.f.start(c)
			r.note("kill -9 and restart %s", c)
		} else {
			r.f.thaw(c)
			r.note("SIGCONT %s: it wakes up deposed", c)
		}
		r.f.waitReady(c)
		waitUntil(r.t, fmt.Sprintf("%s serving v%d", c, target), 30*time.Second, func() bool { return r.d.served(c) == strconv.FormatInt(target, 10) })
		var claiming []string
		for _, d := range []string{"deployer-a", "deployer-b"} {
			if strings.HasPrefix(r.f.check(d, "controller"), "controlling") {
				claiming = append(claiming, d)
			}
		}
		if len(claiming) != 1 || claiming[0] != other {
			r.t.Errorf("controllers %v after %s took over, want %s alone", claiming, other, other)
		}
		r.gyre(ctx, "promote", r.d.spec.Name(), strconv.FormatInt(champion, 10))
		r.note("champion moved back to v%d by hand", champion)
	}
}

// staleVerdict freezes the registry while a candidate is being evaluated,
// moves champion by hand meanwhile, then kills the registry and starts it
// again: the verdict it gets back was judged against another champion and
// must not be promoted over the one in force.
func staleVerdict(ctx context.Context, r *chaosRun) {
	r.f.freeze("registry")
	r.note("SIGSTOP registry")
	// Stream on until a candidate is evaluated: the registry holds it.
	evaluated := func() int { return len(r.eventsOf(events.ModelEvaluated)) }
	before := evaluated()
	next := r.d.batchCount()
	for evaluated() == before {
		if next >= chaosBatches+6 {
			r.t.Fatalf("no candidate evaluated while the registry was frozen: the scenario did not run")
		}
		r.d.publish(ctx, next)
		r.d.settleExcept(ctx, "registry_")
		next++
	}
	rec := r.registry(ctx)
	champion := rec.Aliases[models.AliasChampion]
	var target int64
	for _, v := range rec.Versions {
		if v.Version != champion {
			target = v.Version
		}
	}
	if target == 0 {
		r.t.Fatalf("only one version registered: nothing to promote by hand")
	}
	r.gyre(ctx, "promote", r.d.spec.Name(), strconv.FormatInt(target, 10))
	r.note("a candidate judged against v%d waits; v%d promoted by hand", champion, target)
	r.f.kill("registry")
	r.f.start("registry")
	r.f.waitReady("registry")
	r.note("kill -9 and restart registry")
	r.d.settle(ctx)
	after := r.registry(ctx)
	if after.Aliases[models.AliasChampion] != target {
		r.t.Errorf("champion v%d after the stale verdict, want v%d (promoted by hand)", after.Aliases[models.AliasChampion], target)
	}
	last := after.Versions[len(after.Versions)-1]
	if last.Verdict != models.VerdictRejected || !strings.Contains(last.Reason, "judged against") {
		r.t.Errorf("the late verdict: v%d %s %q, want rejected as judged against another champion", last.Version, last.Verdict, last.Reason)
	} else {
		r.note("late verdict v%d registered, not promoted: %s", last.Version, last.Reason)
	}
}

// canaryRollback registers a blessed candidate that fails every request
// (it takes an input the traffic does not have); the canary rolls it back
// and the registry moves champion back to what kept serving.
func canaryRollback(ctx context.Context, r *chaosRun) {
	r.d.settle(ctx)
	rec := r.registry(ctx)
	champion := rec.Aliases[models.AliasChampion]
	env := looptest.Attach(r.t, &natstest.Server{URL: "", External: true}, r.js)
	p, err := pipeline.Parse([]byte(strings.Replace(string(canarySpec(r.t)), "      - {name: class,", "      - {name: extra, type: float}\n      - {name: class,", 1)))
	if err != nil {
		r.t.Fatal(err)
	}
	p.Spec.Features = nil
	csv := []byte("period,nswprice,nswdemand,vicprice,vicdemand,transfer,extra,class\n")
	for i := range 200 {
		csv = fmt.Appendf(csv, "%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%d\n", float64(i%48)/48, 0.05, 0.4, 0.003, 0.4, 0.4, float64(i%7), i%2)
	}
	art := env.StoreBundle(p, "chaos-broken", csv)
	ev := &gyrev1.ModelEvaluated{
		Pipeline: r.d.spec.Name(), RequestId: "chaos-broken", CandidateArtifact: art, Verdict: models.VerdictBlessed,
		Reason: "planted by the chaos suite: takes an input the traffic lacks", Algorithm: "logreg",
		CandidateMetrics: map[string]float64{"accuracy": 0.99}, ChampionAtEvaluation: proto.Int64(champion),
		Lineage: &gyrev1.Lineage{TrainingRequestId: "chaos-broken"},
	}
	env.Emit("/gyre/evaluator", r.d.spec.Name(), ev)
	var broken int64
	waitUntil(r.t, "the broken candidate registered", time.Minute, func() bool {
		broken = r.registry(ctx).Requests["chaos-broken"]
		return broken > 0
	})
	r.note("a broken candidate, v%d, blessed over v%d", broken, champion)
	// Traffic drives the canary to its judgement.
	next := r.d.batchCount()
	rolledBack := func() *gyrev1.DeploymentRolledBack {
		for _, e := range r.eventsOf(events.DeploymentRolledBack) {
			var m gyrev1.DeploymentRolledBack
			if events.Decode(e, &m) == nil && m.GetModelVersion() == broken {
				return &m
			}
		}
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for rolledBack() == nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("the broken candidate v%d was never rolled back", broken)
		}
		r.d.score(ctx, next%chaosBatches)
		time.Sleep(100 * time.Millisecond)
	}
	r.note("the deployer rolled v%d back: %s", broken, rolledBack().GetReason())
	r.d.settle(ctx)
	for _, e := range r.eventsOf(events.ModelPromoted) {
		var m gyrev1.ModelPromoted
		if events.Decode(e, &m) == nil && m.GetReason() == models.ReasonRolledBack && m.GetPreviousVersion() == broken {
			r.note("the registry moved champion back to v%d (generation %d)", m.GetModelVersion(), m.GetGeneration())
			return
		}
	}
	r.t.Errorf("no model.promoted with reason rolledback away from v%d", broken)
}

// killNATSNode kills one node of the three-node cluster (SIGKILL) under
// load — the cascade of the batch just published in flight, the next batch
// published while it is down — and starts it again after 15 s, as a
// StatefulSet would. On Debian's NATS 2.9, while a node is down about one
// ephemeral consumer in three (what a KV watch or list, an object read
// creates) is placed on it and never answers: the services retry, and the
// loop catches up once the node is back.
func killNATSNode(ctx context.Context, r *chaosRun) {
	time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
	r.cluster.kill(0)
	r.note("kill -9 nats-server n1 of 3")
	down := time.Now()
	if next := r.d.batchCount(); next < chaosBatches {
		r.d.publish(ctx, next)
		r.note("batch %d published while n1 was down", next+1)
	}
	time.Sleep(15*time.Second - time.Since(down))
	r.cluster.restart(r.t, 0)
	r.note("nats-server n1 restarted after %s", time.Since(down).Round(100*time.Millisecond))
}

// gyre runs the gyre CLI against the run's server, as an operator would.
func (r *chaosRun) gyre(ctx context.Context, args ...string) {
	r.t.Helper()
	cmd := exec.CommandContext(ctx, r.f.bins["gyre"], append(args, "--nats", r.f.natsURL)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("gyre %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (r *chaosRun) registry(ctx context.Context) *models.Registry {
	r.t.Helper()
	kv, err := r.js.KeyValue(ctx, events.BucketRegistry)
	if err != nil {
		r.t.Fatal(err)
	}
	rec, _, _, err := models.Get(ctx, kv, r.d.spec.Name())
	if err != nil {
		r.t.Fatal(err)
	}
	return rec
}

func (r *chaosRun) eventsOf(name string) []eventLike {
	var out []eventLike
	for _, e := range storedEvents(r.t, r.js, r.d.spec.Name()) {
		if e.Type() == events.Type(name) {
			out = append(out, e)
		}
	}
	return out
}

// chaosRow is one run's line of the table.
type chaosRow struct {
	scenario string
	run      int
	// lost: batches published but never validated or materialized.
	lost int
	// duplicated: extra validations, materializations, or versions of one
	// training request.
	duplicated int
	// outOfOrder: inversions of the arrival order in the validated-batch
	// log and in the stream of validations and materializations.
	outOfOrder int
	// disagreeing: deployer replicas or the monitor not following the
	// registry's champion, and blessed promotions judged against another
	// champion than the one replaced.
	disagreeing int
	joinRate    float64
	stall       time.Duration
	champion    int64
	notes       []string
}

// check reads the loop's state and events, and counts what breaks the
// invariant; each violation fails the test.
func (r *chaosRun) check(ctx context.Context) chaosRow {
	t := r.t
	p := r.d.spec.Name()
	var row chaosRow
	rec := r.registry(ctx)
	row.champion = rec.Aliases[models.AliasChampion]
	want := strconv.FormatInt(row.champion, 10)
	for _, d := range []string{"deployer-a", "deployer-b"} {
		if got := r.d.served(d); got != want {
			row.disagreeing++
			t.Errorf("%s serves v%s, the registry's champion is v%s", d, got, want)
		}
	}
	st, err := r.js.KeyValue(ctx, events.BucketState)
	if err != nil {
		t.Fatal(err)
	}
	var mon struct {
		Reference *struct {
			ModelVersion int64 `json:"modelVersion"`
		} `json:"reference"`
	}
	if e, err := st.Get(ctx, "monitor."+p); err == nil {
		_ = json.Unmarshal(e.Value(), &mon)
	}
	if mon.Reference == nil || mon.Reference.ModelVersion != row.champion {
		row.disagreeing++
		t.Errorf("the monitor judges against %+v, the registry's champion is v%d", mon.Reference, row.champion)
	}

	evs := storedEvents(t, r.js, p)
	judged := map[string]int64{} // request id → champion it was judged against
	validated, materialized := map[string][]string{}, map[string][]string{}
	var validatedOrder, materializedOrder []string
	registered := map[string]int{}
	var blessed []*gyrev1.ModelPromoted
	for _, e := range evs {
		switch e.Type() {
		case events.Type(events.DataBatchValidated):
			var m gyrev1.DataBatchValidated
			if events.Decode(e, &m) == nil {
				validated[m.GetBatchId()] = append(validated[m.GetBatchId()], e.ID())
				validatedOrder = append(validatedOrder, m.GetBatchId())
			}
		case events.Type(events.FeaturesMaterialized):
			var m gyrev1.FeaturesMaterialized
			if events.Decode(e, &m) == nil {
				materialized[m.GetBatchId()] = append(materialized[m.GetBatchId()], e.ID())
				materializedOrder = append(materializedOrder, m.GetBatchId())
			}
		case events.Type(events.ModelEvaluated):
			var m gyrev1.ModelEvaluated
			if events.Decode(e, &m) == nil {
				judged[m.GetRequestId()] = m.GetChampionAtEvaluation()
			}
		case events.Type(events.ModelRegistered):
			var m gyrev1.ModelRegistered
			if events.Decode(e, &m) == nil {
				registered[m.GetLineage().GetTrainingRequestId()]++
			}
		case events.Type(events.ModelPromoted):
			var m gyrev1.ModelPromoted
			if events.Decode(e, &m) == nil && m.GetReason() == models.ReasonBlessed {
				blessed = append(blessed, &m)
			}
		}
	}
	for _, id := range r.d.batchIDs {
		if len(validated[id]) == 0 || len(materialized[id]) == 0 {
			row.lost++
			t.Errorf("batch %s: %d validations, %d materializations, want 1 each", id, len(validated[id]), len(materialized[id]))
		}
		if n := len(validated[id]) + len(materialized[id]); n > 2 {
			row.duplicated += n - 2
			t.Errorf("batch %s validated %d times, materialized %d times, want once each", id, len(validated[id]), len(materialized[id]))
		}
	}
	for rid, n := range registered {
		if n > 1 {
			row.duplicated += n - 1
			t.Errorf("training request %s registered %d times", rid, n)
		}
	}
	perRequest := map[string]int{}
	for _, v := range rec.Versions {
		perRequest[v.RequestID]++
	}
	for rid, n := range perRequest {
		if n > 1 {
			row.duplicated += n - 1
			t.Errorf("training request %s has %d versions", rid, n)
		}
	}
	b, err := store.Open(ctx, r.js)
	if err != nil {
		t.Fatal(err)
	}
	log, err := store.ValidatedBatches(ctx, b.State, p)
	if err != nil {
		t.Fatal(err)
	}
	var logOrder []string
	for _, e := range log {
		logOrder = append(logOrder, e.BatchID)
	}
	for what, order := range map[string][]string{"validated-batch log": logOrder, "data.batch.validated": validatedOrder, "features.materialized": materializedOrder} {
		if n := inversions(order, r.d.batchIDs); n > 0 {
			row.outOfOrder += n
			t.Errorf("%s out of arrival order (%d inversions): %v", what, n, order)
		}
	}
	for _, m := range blessed {
		v, ok := rec.Version(m.GetModelVersion())
		if !ok {
			continue
		}
		if j, ok := judged[v.RequestID]; ok && j != m.GetPreviousVersion() {
			row.disagreeing++
			t.Errorf("v%d promoted over v%d, but judged against v%d", m.GetModelVersion(), m.GetPreviousVersion(), j)
		}
	}
	row.joinRate = r.joinRate(ctx)
	if row.joinRate < 0.99 {
		t.Errorf("labels joined: %.3f of those whose predictions were logged, want >= 0.99", row.joinRate)
	}
	return row
}

// inversions counts the pairs of got in the opposite order to want.
func inversions(got, want []string) int {
	pos := map[string]int{}
	for i, id := range want {
		pos[id] = i
	}
	n := 0
	for i := range got {
		for j := i + 1; j < len(got); j++ {
			pi, oki := pos[got[i]]
			pj, okj := pos[got[j]]
			if oki && okj && pi > pj {
				n++
			}
		}
	}
	return n
}

// joinRate is the share of the predictions logged and labelled that the
// monitors joined (gyre-joins: both sides recorded, and the pair claimed by
// the event that completed it).
func (r *chaosRun) joinRate(ctx context.Context) float64 {
	kv, err := r.js.KeyValue(ctx, events.BucketJoins)
	if err != nil {
		r.t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		if strings.HasPrefix(k, r.d.spec.Name()+".") {
			keys = append(keys, k)
		}
	}
	var mu sync.Mutex
	both, joined := 0, 0
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, k := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			e, err := kv.Get(ctx, k)
			if err != nil {
				return
			}
			var entry struct {
				Prediction *json.RawMessage `json:"prediction"`
				Label      *json.RawMessage `json:"label"`
				JoinedBy   string           `json:"joinedBy"`
			}
			if json.Unmarshal(e.Value(), &entry) != nil || entry.Prediction == nil || entry.Label == nil {
				return
			}
			mu.Lock()
			both++
			if entry.JoinedBy != "" {
				joined++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if both == 0 {
		r.t.Errorf("no prediction both logged and labelled: nothing to join")
		return 0
	}
	return float64(joined) / float64(both)
}

// chaosTable renders the runs as a Markdown table.
func chaosTable(rows []chaosRow) string {
	var b strings.Builder
	b.WriteString("| scenario | run | lost | duplicated | out of order | disagreeing | labels joined | added stall | champion |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %.1f %% | %.1f s | v%d |\n", r.scenario, r.run, r.lost, r.duplicated,
			r.outOfOrder, r.disagreeing, 100*r.joinRate, r.stall.Seconds(), r.champion)
	}
	return b.String()
}

func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeployerReplicasFollowPromotions: two deployer processes on the real
// server; each of 20 promotions (the registry's record moved, as the
// registry moves it) is served by both, p95 under 2 s.
func TestDeployerReplicasFollowPromotions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs deployer processes")
	}
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	dir := t.TempDir()
	bin := buildService(t, dir, events.ServiceDeployer)
	f := &fleet{t: t, natsURL: srv.URL, bins: map[string]string{events.ServiceDeployer: bin}, procs: map[string]*serviceProcess{}}
	f.start("deployer-a")
	f.start("deployer-b")
	f.waitReady("deployer-a", "deployer-b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d := newDriver(ctx, t, js, f, elec2Spec(t), chaosRows)
	env := looptest.Attach(t, srv, js)
	arts := []*gyrev1.ObjectRef{env.StoreBundle(d.spec, "r-a", d.batchCSV(0)), env.StoreBundle(d.spec, "r-b", d.batchCSV(1))}
	var lags []time.Duration
	for v := int64(1); v <= 20; v++ {
		start := time.Now()
		env.Promote(looptest.Promotion{Pipeline: d.spec.Name(), Version: v, Artifact: arts[v%2], Metrics: map[string]float64{"accuracy": 0.8}})
		want := strconv.FormatInt(v, 10)
		waitUntil(t, "both deployers serving v"+want, 30*time.Second, func() bool {
			return d.served("deployer-a") == want && d.served("deployer-b") == want
		})
		lags = append(lags, time.Since(start))
	}
	slices.Sort(lags)
	p95 := lags[int(0.95*float64(len(lags)))-1]
	t.Logf("a promotion served by both deployer processes: p50 %s, p95 %s, max %s (20 promotions)",
		lags[len(lags)/2].Round(time.Millisecond), p95.Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond))
	if p95 > 2*time.Second {
		t.Errorf("p95 %s, want under 2s", p95)
	}
}
