package serving

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/signing"
)

// errDeposed: a record carries a newer controller's token than ours; we
// lost the lease and write no more.
var errDeposed = errors.New("deposed: another controller wrote the deployment record with a newer token")

// Lead runs the controller — the rollouts — while ctx lasts: the replica
// holds the deployer's lease, with fencing token token. It is
// level-triggered: each change of a pipeline's registry record (and every
// Resync) reconciles that pipeline's deployment with the registry's
// champion, starting a rollout for a newer generation; each rollout step
// is judged as it falls due. Records are written with compare-and-set and
// the token, so a deposed controller's late write is refused.
func (d *Deployer) Lead(ctx context.Context, token uint64) {
	select {
	case <-d.restored:
	case <-ctx.Done():
		return
	}
	names, err := d.watchDesired(ctx)
	if err != nil {
		return
	}
	d.leading.Store(true)
	defer d.leading.Store(false)
	// The other replicas' counts of the steps, while this one controls.
	tctx, stopTallies := context.WithCancel(ctx)
	tallied := make(chan struct{})
	go func() {
		defer close(tallied)
		d.watchTallies(tctx)
	}()
	defer func() { stopTallies(); <-tallied }()
	d.opts.Logger.Info("controlling rollouts", "token", token)
	resync := time.NewTicker(d.opts.Resync)
	defer resync.Stop()
	judge := time.NewTicker(time.Second)
	defer judge.Stop()
	// known are the pipelines the registry has a record of; failed those
	// whose reconciliation failed, tried again each second.
	known, failed := map[string]bool{}, map[string]bool{}
	reconcile := func(name string) {
		if d.reconcileLogged(ctx, token, name) {
			delete(failed, name)
		} else {
			failed[name] = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case name, ok := <-names:
			if !ok {
				return
			}
			known[name] = true
			reconcile(name)
		case <-resync.C:
			for name := range known {
				reconcile(name)
			}
		case <-d.wake:
			d.judgeDue(ctx, token)
		case <-judge.C:
			for name := range failed {
				reconcile(name)
			}
			d.judgeDue(ctx, token)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func (d *Deployer) watchDesired(ctx context.Context) (<-chan string, error) {
	var ch <-chan string
	err := retry(ctx, d.opts.Logger, "watch the registry", func() error {
		var err error
		ch, err = d.desired.Watch(ctx)
		return err
	})
	return ch, err
}

// reconcileLogged reconciles a pipeline, retrying a conflict (someone
// wrote the record meanwhile: read it again) and logging the rest; it
// reports whether the pipeline is done with (false: try again shortly).
func (d *Deployer) reconcileLogged(ctx context.Context, token uint64, name string) bool {
	for attempt := 0; ; attempt++ {
		err := d.reconcile(ctx, token, name)
		switch {
		case err == nil || ctx.Err() != nil:
			return true
		case errors.Is(err, ErrConflict) && attempt < 5:
			continue
		case errors.Is(err, errDeposed):
			d.opts.Logger.Warn("not controlling rollouts any more", "pipeline", name, "error", err)
			return true
		case isPermanent(err):
			d.opts.Logger.Error("reconcile failed; the next change of the pipeline tries again", "pipeline", name, "error", err)
			return true
		}
		d.opts.Logger.Warn("reconcile failed; retrying", "pipeline", name, "error", err)
		return false
	}
}

// reconcile makes a pipeline's deployment follow the registry's champion:
// nothing when the record follows its generation already (but events the
// record has not announced yet are published), a new rollout otherwise.
func (d *Deployer) reconcile(ctx context.Context, token uint64, name string) error {
	want, ok, err := d.desired.Champion(ctx, name)
	if err != nil || !ok {
		return err
	}
	rec, rev, found, err := d.deployments.Get(ctx, name)
	if err != nil {
		return err
	}
	if found && rec.Token > token {
		return errDeposed
	}
	if found && rec.Generation >= want.Generation {
		return d.announce(ctx, token, rec, rev)
	}
	if found && rec.Generation == 0 && !InProgress(rec.Status) && rec.Champion != nil && rec.Champion.Version == want.Version {
		// A record of a deployer older than generations that serves the
		// champion: adopt the generation, nothing to roll out.
		rec.Generation = want.Generation
		_, err := d.write(ctx, token, rec, rev)
		return err
	}
	return d.start(ctx, token, want, rec, rev, found)
}

// start rolls the desired version out with the pipeline's strategy:
//   - immediate swaps it in at once;
//   - canary gives it the first step's share of traffic, and the step
//     judgements the rest;
//   - shadow has it score a copy of the traffic the champion answers, and
//     one judgement promotes it to all traffic or drops it;
//   - blue-green verifies it on the rows served last, beside the champion,
//     then switches all traffic to it at once, keeping the champion loaded
//     until the judgement to switch back instantly if it fails.
//
// The first model of a pipeline goes live at once whatever the strategy:
// there is nothing to compare it with; so does a version that serves all
// traffic already (a rollback to it). A rollout in progress is superseded
// first: rolled back, its champion serving.
func (d *Deployer) start(ctx context.Context, token uint64, want Desired, prev Record, rev uint64, found bool) error {
	spec, err := d.specs.Pipeline(ctx, want.Pipeline)
	if err != nil {
		if d.notFound(err) {
			d.opts.Logger.Warn("champion of a pipeline without a spec: not deployed", "pipeline", want.Pipeline, "version", want.Version)
			return nil
		}
		return err
	}
	if found && InProgress(prev.Status) {
		prev, rev, err = d.supersede(ctx, token, prev, rev, want.Version)
		if err != nil {
			return err
		}
	}
	dep := spec.Spec.Deployment
	strategy := dep.Strategy
	cur := d.server.routing(want.Pipeline)
	// What serves all traffic is the record's champion (level-triggered:
	// not whatever this replica happens to have in force), loaded — the
	// routing in force has it, unless this replica lags behind the record.
	var champion *Model
	if found {
		if champion, err = d.model(ctx, want.Pipeline, cur, prev.Champion, WithBatching(dep.Batching)); err != nil {
			return fmt.Errorf("version %d serving %s: %w", prev.Champion.Version, want.Pipeline, err)
		}
	}
	rec := Record{
		Pipeline: want.Pipeline, DeploymentID: want.DeploymentID, Generation: want.Generation, Strategy: strategy,
		Version: want.Version, Artifact: want.Artifact, PromotionReason: want.Reason, StartedAt: d.now().UTC(),
		Cause: Cause{ID: want.EventID, Type: events.Type(events.ModelPromoted), CorrelationID: want.CorrelationID, Pipeline: want.Pipeline},
	}
	if strategy == pipeline.StrategyCanary {
		rec.Steps = slices.Clone(dep.Steps)
	}
	if champion != nil {
		rec.PreviousVersion, rec.Champion = champion.Version, servingOf(champion)
	}
	if champion != nil && champion.Version == want.Version && champion.Artifact == want.Artifact && champion.Signature == want.Signature {
		// It serves all traffic already (a rollback to the version that
		// kept serving): nothing to load or roll out.
		rec.Status, rec.Champion, rec.TrafficPercent = StatusCompleted, servingOf(champion), 100
		return d.commit(ctx, token, rec, rev)
	}
	candidate, err := d.load(ctx, want.Pipeline, &Serving{Version: want.Version, Artifact: want.Artifact, Accuracy: want.Accuracy,
		Signature: want.Signature}, WithBatching(dep.Batching))
	if err != nil {
		if !isPermanent(err) {
			return err
		}
		// A bundle that does not load — or is not the one the registry
		// signed — never will: the rollout is over before it starts, and
		// what served keeps serving.
		what := "the model cannot be loaded: "
		var ve *signing.VerifyError
		if errors.As(err, &ve) {
			what = "refused: "
		}
		rec.Status, rec.Reason = StatusRolledBack, what+err.Error()+"; "+keeps(rec.PreviousVersion)
		return d.commit(ctx, token, rec, rev)
	}
	if champion == nil || champion.Version == want.Version {
		rec.Status, rec.Champion, rec.TrafficPercent = StatusCompleted, servingOf(candidate), 100
		return d.commit(ctx, token, rec, rev)
	}
	rec.StepRequests = dep.StepRequests
	switch {
	case strategy == pipeline.StrategyCanary && len(dep.Steps) > 0 && dep.Steps[0] < 100:
		rec.Status, rec.Step, rec.TrafficPercent, rec.Candidate = StatusCanary, 1, dep.Steps[0], servingOf(candidate)
	case strategy == pipeline.StrategyShadow:
		rec.Status, rec.Step, rec.TrafficPercent, rec.Candidate = StatusShadow, 1, 0, servingOf(candidate)
	case strategy == pipeline.StrategyBlueGreen:
		var reqs []*Request
		if cur != nil && cur.recent != nil {
			reqs = cur.recent.snapshot()
		}
		figures, reason := d.verify(champion, candidate, reqs, PolicyOf(dep.Rollback))
		rec.Figures = figures
		if reason != "" {
			rec.Status, rec.Reason = StatusRolledBack, "verification failed: "+reason+"; "+keeps(rec.PreviousVersion)
			break
		}
		rec.Status, rec.Step, rec.TrafficPercent, rec.Candidate = StatusBlueGreen, 1, 100, servingOf(candidate)
	default:
		rec.Status, rec.Champion, rec.TrafficPercent = StatusCompleted, servingOf(candidate), 100
	}
	return d.commit(ctx, token, rec, rev)
}

// supersede abandons a rollout in progress for a newer promotion: rolled
// back, its champion (or, after a blue-green switch, again) serving all
// traffic. The registry ignores its rollback: its generation is not the
// newest.
func (d *Deployer) supersede(ctx context.Context, token uint64, rec Record, rev uint64, by int64) (Record, uint64, error) {
	var figures map[string]float64
	if r := d.server.routing(rec.Pipeline); r != nil && r.Rollout != nil && r.Rollout.DeploymentID == rec.DeploymentID {
		figures = Judge(Policy{MaxErrorRate: math.Inf(1)}, d.statusOf(r), nil).Figures
	}
	rec.Status, rec.Candidate, rec.Figures = StatusRolledBack, nil, figures
	rec.Reason = fmt.Sprintf("superseded by version %d", by)
	if err := d.commit(ctx, token, rec, rev); err != nil {
		return Record{}, 0, err
	}
	d.mu.Lock()
	a := d.applied[rec.Pipeline]
	d.mu.Unlock()
	return a.rec, a.rev, nil
}

// commit writes a record (compare-and-set, with the token), puts it in
// force on this replica at once — the other replicas follow through their
// watch — and publishes its events.
func (d *Deployer) commit(ctx context.Context, token uint64, rec Record, rev uint64) error {
	newRev, err := d.write(ctx, token, rec, rev)
	if err != nil {
		return err
	}
	rec.Token, rec.UpdatedAt = token, d.now().UTC()
	if err := d.apply(ctx, rec, newRev); err != nil {
		d.opts.Logger.Error("deployment record written but not in force on the controller's replica; retried with the watch",
			"pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID, "error", err)
	}
	d.logTransition(rec)
	d.mu.Lock()
	cur := d.applied[rec.Pipeline]
	d.mu.Unlock()
	if cur.rev != newRev {
		// Not in force here (a load failure): announce what was written.
		cur = applied{rec: rec, rev: newRev}
	}
	return d.announce(ctx, token, cur.rec, cur.rev)
}

// write stores a record with compare-and-set against rev and the token.
func (d *Deployer) write(ctx context.Context, token uint64, rec Record, rev uint64) (uint64, error) {
	rec.Token, rec.UpdatedAt = token, d.now().UTC()
	return d.deployments.Write(ctx, rec.Pipeline, rec, rev)
}

func (d *Deployer) logTransition(rec Record) {
	attrs := []any{"pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID, "generation", rec.Generation,
		"strategy", rec.Strategy, "version", rec.Version, "previous_version", rec.PreviousVersion}
	switch rec.Status {
	case StatusCompleted:
		d.opts.Logger.Info("deployment completed", attrs...)
	case StatusRolledBack:
		d.opts.Logger.Warn("deployment rolled back", append(attrs, "reason", rec.Reason)...)
	default:
		d.opts.Logger.Info("rollout step in force", append(attrs, "status", rec.Status, "step", rec.Step, "traffic_percent", rec.TrafficPercent)...)
	}
}

// announcements are the events a record's state owes, in order: started,
// each step reached, and the outcome.
func announcements(rec Record) []string {
	out := []string{events.DeploymentStarted}
	switch {
	case rec.Strategy == pipeline.StrategyBlueGreen && rec.Step >= 1:
		// The switch of all traffic to the verified candidate.
		out = append(out, progressedKey(1))
	case rec.Strategy == pipeline.StrategyCanary:
		for s := 2; s <= rec.Step; s++ {
			out = append(out, progressedKey(s))
		}
	}
	switch rec.Status {
	case StatusCompleted:
		out = append(out, events.DeploymentCompleted)
	case StatusRolledBack:
		out = append(out, events.DeploymentRolledBack)
	}
	return out
}

func progressedKey(step int) string { return events.DeploymentProgressed + "/" + strconv.Itoa(step) }

// announce publishes the events the record owes and has not announced
// (deterministic ids: publishing again within the stream's duplicate
// window stores nothing new), then records them as announced.
func (d *Deployer) announce(ctx context.Context, token uint64, rec Record, rev uint64) error {
	var missing []string
	for _, k := range announcements(rec) {
		if !slices.Contains(rec.Announced, k) {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	for _, k := range missing {
		var err error
		switch k {
		case events.DeploymentStarted:
			err = d.emitStarted(ctx, &rec)
		case events.DeploymentCompleted:
			err = d.emitCompleted(ctx, &rec)
		case events.DeploymentRolledBack:
			err = d.emitRolledBack(ctx, &rec)
		default:
			step, _ := strconv.Atoi(k[len(events.DeploymentProgressed)+1:])
			err = d.emitProgressed(ctx, &rec, step)
		}
		if err != nil {
			return err
		}
	}
	rec.Announced = append(rec.Announced, missing...)
	newRev, err := d.write(ctx, token, rec, rev)
	if err != nil {
		return err
	}
	rec.Token = token
	// The change is of bookkeeping only: the routing in force stays.
	d.mu.Lock()
	if a, ok := d.applied[rec.Pipeline]; ok && a.rev == rev {
		d.applied[rec.Pipeline] = applied{rec: rec, rev: newRev}
	}
	d.mu.Unlock()
	return nil
}

// verify scores the requests served last with both models — which also
// warms the candidate — and says why the candidate may not take traffic:
// it fails on them, or its predictions drift from the champion's beyond the
// policy. No requests (no traffic yet) verify nothing.
func (d *Deployer) verify(champion, candidate *Model, reqs []*Request, p Policy) (figures map[string]float64, reason string) {
	figures = map[string]float64{"verifiedRequests": float64(len(reqs))}
	var cs, ws predictionSample
	rows, agree := 0, 0
	start := time.Now()
	for _, req := range reqs {
		got, err := d.predict(context.Background(), *req, candidate)
		if err != nil {
			figures["verifiedRows"] = float64(rows)
			return figures, fmt.Sprintf("version %d cannot score the requests served last: %v", candidate.Version, err)
		}
		want, err := d.predict(context.Background(), *req, champion)
		if err != nil {
			// The champion failing on its own traffic says nothing of
			// the candidate.
			continue
		}
		rows += len(got.Labels)
		for i := range got.Labels {
			if canonical(got.Labels[i]) == canonical(want.Labels[i]) {
				agree++
			}
		}
		cs.add(got)
		ws.add(want)
	}
	figures["verifyMs"] = float64(time.Since(start).Microseconds()) / 1000
	figures["verifiedRows"] = float64(rows)
	if rows > 0 {
		figures["verifyAgreement"] = float64(agree) / float64(rows)
	}
	if psi, _, _, ok := predictionDrift(&ws, &cs); ok {
		figures["verifyPredictionDrift"] = psi
		if p.MaxPredictionDrift > 0 && psi > p.MaxPredictionDrift+tolerance {
			return figures, fmt.Sprintf("predictionDrift %.4g > maxPredictionDrift %.4g (PSI over the %d rows served last)",
				psi, p.MaxPredictionDrift, rows)
		}
	}
	return figures, ""
}

// judgeDue judges every rollout step in force that has fallen due: its
// candidate served the step's requests on all replicas together.
func (d *Deployer) judgeDue(ctx context.Context, token uint64) {
	d.mu.Lock()
	var inProgress []applied
	for name, a := range d.applied {
		r := d.server.routing(name)
		if InProgress(a.rec.Status) && r != nil && r.Rollout != nil && r.Rollout.DeploymentID == a.rec.DeploymentID {
			inProgress = append(inProgress, a)
		}
	}
	d.mu.Unlock()
	var due []applied
	for _, a := range inProgress {
		if r := d.server.routing(a.rec.Pipeline); r != nil && r.Rollout != nil && d.statusOf(r).Requests >= int64(r.Rollout.StepRequests) {
			due = append(due, a)
		}
	}
	for _, a := range due {
		if err := d.judge(ctx, token, a.rec, a.rev); err != nil && ctx.Err() == nil {
			d.opts.Logger.Error("rollout step: record or event failed; judged again shortly", "pipeline", a.rec.Pipeline,
				"deployment_id", a.rec.DeploymentID, "error", err)
		}
	}
}

// judge ends the step in force: on to the next canary step
// (deployment.progressed), to all traffic (deployment.completed), or back
// to the champion (deployment.rolledback), each with the figures that
// decided it.
func (d *Deployer) judge(ctx context.Context, token uint64, rec Record, rev uint64) error {
	r := d.server.routing(rec.Pipeline)
	if r == nil || r.Rollout == nil || r.Rollout.DeploymentID != rec.DeploymentID {
		return nil
	}
	spec, err := d.specs.Pipeline(ctx, rec.Pipeline)
	if err != nil {
		return err
	}
	policy := PolicyOf(spec.Spec.Deployment.Rollback)
	status := d.statusOf(r)
	v := Judge(policy, status, r.Champion.Accuracy)
	back := keeps(rec.PreviousVersion)
	if rec.Status == StatusBlueGreen {
		back = fmt.Sprintf("all traffic switched back to version %d", rec.PreviousVersion)
	}
	if !v.Pass {
		rec.Status, rec.Candidate, rec.Reason, rec.Figures = StatusRolledBack, nil, v.Reason+"; "+back, v.Figures
		return d.commit(ctx, token, rec, rev)
	}
	if need := int64(max(policy.MinLabels, 1)); policy.LabelTimeout > 0 && status.Labelled < need {
		// Accuracy must be judged, and too few labels have come: the step
		// keeps its traffic and waits for them, judged again each second
		// (errors, latency and drift still roll it back meanwhile).
		now := d.now()
		if r.Rollout.waitingSince.IsZero() {
			r.Rollout.waitingSince = now
			d.opts.Logger.Info("rollout step due; waiting for labels", "pipeline", rec.Pipeline, "deployment_id", rec.DeploymentID,
				"step", rec.Step, "labelled", status.Labelled, "min_labels", need, "label_timeout", policy.LabelTimeout)
		}
		waited := now.Sub(r.Rollout.waitingSince)
		if waited < policy.LabelTimeout {
			return nil
		}
		v.Figures["labelWaitSeconds"] = waited.Seconds()
		reason := fmt.Sprintf("%d of the %d labelled candidate predictions needed (minLabels) arrived within labelTimeoutSeconds %g: its live accuracy could not be checked",
			status.Labelled, need, policy.LabelTimeout.Seconds())
		rec.Status, rec.Candidate, rec.Reason, rec.Figures = StatusRolledBack, nil, reason+"; "+back, v.Figures
		return d.commit(ctx, token, rec, rev)
	}
	next := rec.Step + 1
	if rec.Status != StatusCanary || next > len(rec.Steps) || rec.Steps[next-1] >= 100 {
		candidate := rec.Candidate
		rec.Status, rec.Candidate, rec.Champion = StatusCompleted, nil, candidate
		rec.TrafficPercent, rec.Figures = 100, v.Figures
		return d.commit(ctx, token, rec, rev)
	}
	rec.Step, rec.TrafficPercent, rec.Figures = next, rec.Steps[next-1], v.Figures
	return d.commit(ctx, token, rec, rev)
}

// statusOf is the status of a routing's rollout step over every
// replica's traffic: this one's counts and the others' tallies.
func (d *Deployer) statusOf(r *Routing) Status {
	return r.Rollout.StatusWith(d.othersOf(r.Pipeline, r.Rollout.DeploymentID, r.Rollout.Step))
}

func (d *Deployer) emitStarted(ctx context.Context, rec *Record) error {
	msg := &gyrev1.DeploymentStarted{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Reason: startReason(rec.PromotionReason),
		Artifact: &gyrev1.ObjectRef{Bucket: rec.Artifact.Bucket, Key: rec.Artifact.Key, Sha256: rec.Artifact.Sha256,
			Uri: events.ObjectURI(rec.Artifact.Bucket, rec.Artifact.Key)},
		Generation: rec.Generation,
	}
	for _, s := range rec.Steps {
		msg.Steps = append(msg.Steps, int32(math.Round(s)))
	}
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, msg, rec.Version, events.DeploymentStarted, rec.DeploymentID)
}

// emitProgressed announces a step reached and the figures that allowed
// the move.
func (d *Deployer) emitProgressed(ctx context.Context, rec *Record, step int) error {
	percent := rec.TrafficPercent
	if rec.Strategy == pipeline.StrategyBlueGreen {
		percent = 100
	} else if step >= 1 && step <= len(rec.Steps) {
		percent = rec.Steps[step-1]
	}
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentProgressed{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Step: int32(step),
		TrafficPercent: int32(math.Round(percent)), Figures: maps.Clone(rec.Figures), Generation: rec.Generation,
	}, rec.Version, events.DeploymentProgressed, rec.DeploymentID, fmt.Sprint(step))
}

func (d *Deployer) emitCompleted(ctx context.Context, rec *Record) error {
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentCompleted{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, TrafficPercent: 100,
		Figures: maps.Clone(rec.Figures), DurationMs: rec.UpdatedAt.Sub(rec.StartedAt).Milliseconds(),
		Generation: rec.Generation,
	}, rec.Version, events.DeploymentCompleted, rec.DeploymentID)
}

func (d *Deployer) emitRolledBack(ctx context.Context, rec *Record) error {
	return d.emit.Emit(ctx, rec.Cause, rec.Pipeline, &gyrev1.DeploymentRolledBack{
		Pipeline: rec.Pipeline, DeploymentId: rec.DeploymentID, ModelVersion: rec.Version,
		PreviousVersion: rec.PreviousVersion, Strategy: rec.Strategy, Step: int32(rec.Step),
		TrafficPercent: int32(math.Round(rec.TrafficPercent)), Reason: rec.Reason, Figures: maps.Clone(rec.Figures),
		Generation: rec.Generation,
	}, rec.Version, events.DeploymentRolledBack, rec.DeploymentID)
}
