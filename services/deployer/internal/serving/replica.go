package serving

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gyrehq/gyre/libs/signing"
)

// Serve is every replica's part: it watches the deployment records and
// puts in force what each says — the models loaded, the traffic split of
// the rollout step — and watches the pipeline specs for their serving
// settings, until ctx ends. The replica is ready (Ready) once every record
// there was when it started is in force; a record it cannot put in force
// (its model does not load here) keeps the replica not ready, serving what
// it served before, and is tried again.
func (d *Deployer) Serve(ctx context.Context) error {
	records, err := d.watchRecords(ctx)
	if err != nil {
		return err
	}
	specs, err := d.watchSpecs(ctx)
	if err != nil {
		return err
	}
	pending := map[string]RecordChange{}
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	report := time.NewTicker(TallyInterval)
	defer report.Stop()
	reported := map[string]Tally{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case ch, ok := <-records:
			if !ok {
				return nil
			}
			if ch.Ready {
				initial = false
				if len(pending) == 0 {
					d.markRestored()
				}
				continue
			}
			pending[ch.Pipeline] = ch
			d.applyPending(ctx, pending)
			if !initial && len(pending) == 0 {
				d.markRestored()
			}
		case name, ok := <-specs:
			if !ok {
				return nil
			}
			if changed, err := d.ApplySpec(ctx, name); err != nil {
				d.opts.Logger.Warn("serving settings not applied; the next change applies them", "pipeline", name, "error", err)
			} else if len(changed) > 0 {
				d.opts.Logger.Info("serving settings applied", "pipeline", name, "changed", changed)
			}
		case <-report.C:
			d.reportTallies(ctx, reported)
		case <-retry.C:
			d.applyPending(ctx, pending)
			if !initial && len(pending) == 0 {
				d.markRestored()
			}
		}
	}
}

func (d *Deployer) markRestored() { d.restoredOnce.Do(func() { close(d.restored) }) }

// watchRecords watches the deployment records, retrying until the bucket
// is there (it is provisioned as the service starts).
func (d *Deployer) watchRecords(ctx context.Context) (<-chan RecordChange, error) {
	var ch <-chan RecordChange
	err := retry(ctx, d.opts.Logger, "watch deployment records", func() error {
		var err error
		ch, err = d.deployments.Watch(ctx)
		return err
	})
	return ch, err
}

func (d *Deployer) watchSpecs(ctx context.Context) (<-chan string, error) {
	var ch <-chan string
	err := retry(ctx, d.opts.Logger, "watch pipeline specs", func() error {
		var err error
		ch, err = d.specs.Watch(ctx)
		return err
	})
	return ch, err
}

// applyPending puts in force each record waiting, dropping those done (or
// never to be done: a pipeline deleted) and keeping those that failed for
// the next try.
func (d *Deployer) applyPending(ctx context.Context, pending map[string]RecordChange) {
	for name, ch := range pending {
		err := d.apply(ctx, ch.Record, ch.Revision)
		d.mu.Lock()
		if err != nil {
			d.failed[name] = err
		} else {
			delete(d.failed, name)
		}
		d.mu.Unlock()
		switch {
		case err == nil:
			delete(pending, name)
		case isPermanent(err):
			// It never will be: what served keeps serving, and the
			// controller rolls back a model that does not load.
			delete(pending, name)
			d.opts.Logger.Error("deployment record cannot be put in force on this replica", "pipeline", name,
				"deployment_id", ch.Record.DeploymentID, "revision", ch.Revision, "error", err)
		default:
			d.opts.Logger.Warn("deployment record not in force on this replica yet; retrying", "pipeline", name,
				"deployment_id", ch.Record.DeploymentID, "revision", ch.Revision, "error", err)
		}
	}
}

// apply puts a record in force on this replica: the models it names
// loaded (those serving already are kept, not loaded again), and the
// routing of its status swapped in at once. A record at or below the
// revision in force changes nothing, so the controller's own writes, put
// in force as it writes them, are not put in force again when the watch
// brings them back. A rollout in force goes on counting while its record
// names the same deployment and step.
func (d *Deployer) apply(ctx context.Context, rec Record, rev uint64) error {
	name := rec.Pipeline
	d.mu.Lock()
	cur, had := d.applied[name]
	d.mu.Unlock()
	if had && rev != 0 && rev <= cur.rev {
		return nil
	}
	spec, err := d.specs.Pipeline(ctx, name)
	if err != nil {
		if d.notFound(err) {
			d.opts.Logger.Warn("deployment record of a pipeline without a spec: not served", "pipeline", name)
			return nil
		}
		return err
	}
	c := confOf(spec)
	batching := WithBatching(spec.Spec.Deployment.Batching)
	old := d.server.routing(name)
	champion, err := d.model(ctx, name, old, rec.Champion, batching)
	if err != nil {
		return fmt.Errorf("version %d: %w", rec.Champion.Version, err)
	}
	var r *Routing
	if InProgress(rec.Status) && rec.Candidate != nil {
		candidate, err := d.model(ctx, name, old, rec.Candidate, batching)
		if err != nil {
			return fmt.Errorf("candidate version %d: %w", rec.Candidate.Version, err)
		}
		if champion == nil {
			r = c.plain(name, rec.DeploymentID, candidate)
		} else {
			r = d.rollout(c, &rec, champion, candidate, old)
		}
	} else if champion != nil {
		r = c.plain(name, rec.DeploymentID, champion)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.applied[name]; ok && rev != 0 && rev <= a.rev {
		return nil // a newer record got there while the models loaded
	}
	d.applied[name] = applied{rec: rec, rev: rev}
	if r != nil {
		d.server.set(name, r)
	}
	return nil
}

// model returns the loaded model of s: the one the routing in force has
// for the same version, artifact and signature (verified when it was
// loaded), else loaded from the model store and verified (load).
func (d *Deployer) model(ctx context.Context, pipelineName string, cur *Routing, s *Serving, opts ...ModelOption) (*Model, error) {
	if s == nil {
		return nil, nil
	}
	if cur != nil {
		for _, m := range []*Model{cur.Champion, cur.Candidate, cur.Mirror} {
			if m != nil && m.Version == s.Version && m.Artifact == s.Artifact && m.Signature == s.Signature {
				return m, nil
			}
		}
	}
	return d.load(ctx, pipelineName, s, opts...)
}

// load reads the model of s from the model store after checking the
// registry's signature of its version and artifact, and checks the bytes
// read against the signed digest: a record edited or forged outside the
// registry, or an artifact replaced in the object store, is refused with a
// permanent signing.VerifyError naming what does not hold.
func (d *Deployer) load(ctx context.Context, pipelineName string, s *Serving, opts ...ModelOption) (*Model, error) {
	sub := signing.Subject{Pipeline: pipelineName, Version: s.Version, Bucket: s.Artifact.Bucket, Key: s.Artifact.Key, Sha256: s.Artifact.Sha256}
	if err := d.opts.Verifier.Verify(sub, s.Signature); err != nil {
		return nil, err
	}
	b, digest, err := d.models.Load(ctx, s.Artifact)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(digest, sub.Sha256) {
		return nil, &signing.VerifyError{Subject: sub, Reason: fmt.Sprintf(
			"the artifact's bytes have SHA-256 %s, the signed digest is %s: the artifact was replaced", digest, sub.Sha256)}
	}
	m := NewModel(s.Version, s.Artifact, b, s.Accuracy, opts...)
	m.Signature = s.Signature
	return m, nil
}

// rollout is the routing of a rollout in progress, at the step rec says:
// a canary's share of traffic, a shadow mirroring the champion, or after a
// blue-green switch the candidate answering and the previous model
// mirroring it. The counts of the step in force carry over when the
// routing in force is of the same deployment and step; the labels of its
// predictions carry over through the whole deployment.
func (d *Deployer) rollout(c conf, rec *Record, champion, candidate *Model, cur *Routing) *Routing {
	r := c.plain(rec.Pipeline, rec.DeploymentID, champion)
	switch rec.Status {
	case StatusCanary:
		r.Candidate, r.Percent = candidate, rec.TrafficPercent
	case StatusShadow:
		r.Mirror, r.MirrorAs = candidate, Shadow
	case StatusBlueGreen:
		r.Candidate, r.Percent = candidate, 100
		r.Mirror, r.MirrorAs = champion, Champion
	}
	step := max(rec.Step, 1)
	switch {
	case cur != nil && cur.Rollout != nil && cur.Rollout.DeploymentID == rec.DeploymentID && cur.Rollout.Step == step:
		r.Rollout = cur.Rollout
	case cur != nil && cur.Rollout != nil && cur.Rollout.DeploymentID == rec.DeploymentID:
		r.Rollout = cur.Rollout.at(step, r.Percent)
	default:
		r.Rollout = newRollout(rec.DeploymentID, step, r.Percent, rec.StepRequests, newLabelTracker(d.opts.TrackedPredictions), d.poke)
	}
	return r
}
