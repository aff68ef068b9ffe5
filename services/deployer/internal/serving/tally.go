package serving

import (
	"context"
	"maps"
	"time"
)

// A rollout step is judged on the traffic of every replica: each replica
// counts what it served of the step (its Rollout) and reports it as a
// Tally; the controller adds the others' tallies of the same deployment and
// step to its own counts (Rollout.StatusWith). A replica that dies takes its
// uncounted requests with it (its tally expires), which a judgement on the
// rest survives.

// Tally is what one replica counted of a rollout step.
type Tally struct {
	Pipeline     string `json:"pipeline"`
	Replica      string `json:"replica"`
	DeploymentID string `json:"deploymentId"`
	Step         int    `json:"step"`
	// Candidate and Champion are each variant's counts in the step.
	Candidate SideTally `json:"candidate"`
	Champion  SideTally `json:"champion"`
	// Labelled predictions and the correct ones, over the whole rollout.
	Labelled         int64     `json:"labelled"`
	Correct          int64     `json:"correct"`
	ChampionLabelled int64     `json:"championLabelled"`
	ChampionCorrect  int64     `json:"championCorrect"`
	Skipped          int64     `json:"skipped"`
	At               time.Time `json:"at"`
}

// SideTally is one variant's counts in a step.
type SideTally struct {
	Requests  int64 `json:"requests"`
	Errors    int64 `json:"errors"`
	LatencyNs int64 `json:"latencyNs"`
	// Latency holds the latency histogram's non-empty buckets.
	Latency map[int]int64 `json:"latency,omitempty"`
	// Sample is a uniform sample of the predictions, of Seen in all.
	Seen       int64     `json:"seen"`
	Regression bool      `json:"regression,omitempty"`
	Labels     []string  `json:"labels,omitempty"`
	Values     []float64 `json:"values,omitempty"`
}

// tallySampleSize bounds the predictions a tally carries per variant, so
// that a report stays small; the drift check merges them.
const tallySampleSize = 1024

// TallyStore keeps what each replica counted of the rollouts in progress.
type TallyStore interface {
	// Report stores this replica's tally of a pipeline's step.
	Report(ctx context.Context, t Tally) error
	// Watch sends every tally stored, then each one as it changes, until
	// ctx ends.
	Watch(ctx context.Context) (<-chan Tally, error)
}

// tallyMaxAge is how old another replica's tally may be and still count:
// its reports come every TallyInterval while it serves the step.
const tallyMaxAge = 15 * time.Second

// TallyInterval is how often a replica reports its counts of a step.
const TallyInterval = 500 * time.Millisecond

// tally returns what the rollout counted, as replica's report.
func (r *Rollout) tally(pipeline, replica string, now time.Time) Tally {
	t := Tally{Pipeline: pipeline, Replica: replica, DeploymentID: r.DeploymentID, Step: r.Step,
		Candidate: r.side[1].tally(), Champion: r.side[0].tally(), Skipped: r.skipped.Load(), At: now}
	t.Labelled, t.Correct, t.ChampionLabelled, t.ChampionCorrect = r.labels.counts()
	return t
}

func (s *side) tally() SideTally {
	t := SideTally{Requests: s.requests.Load(), Errors: s.errors.Load(), LatencyNs: s.latencyNs.Load()}
	for i := range s.latency.counts {
		if n := s.latency.counts[i].Load(); n > 0 {
			if t.Latency == nil {
				t.Latency = map[int]int64{}
			}
			t.Latency[i] = n
		}
	}
	labels, values, regression := s.predictions.snapshot()
	s.predictions.mu.Lock()
	t.Seen = s.predictions.n
	s.predictions.mu.Unlock()
	t.Regression = regression
	t.Labels, t.Values = thin(labels, tallySampleSize), thin(values, tallySampleSize)
	return t
}

// thin keeps at most n evenly spaced elements of a (already a uniform
// sample, so the kept ones are too).
func thin[T any](a []T, n int) []T {
	if len(a) <= n {
		return a
	}
	out := make([]T, 0, n)
	for i := range n {
		out = append(out, a[i*len(a)/n])
	}
	return out
}

// StatusWith is the step's status over this replica's counts and the
// others' tallies of the same deployment and step.
func (r *Rollout) StatusWith(others []Tally) Status {
	if len(others) == 0 {
		return r.Status()
	}
	merged := []Tally{r.tally("", "", time.Time{})}
	for _, o := range others {
		if o.DeploymentID == r.DeploymentID && o.Step == r.Step {
			merged = append(merged, o)
		}
	}
	s := Status{Step: r.Step, Percent: r.Percent, StepRequests: r.StepRequests}
	var cand, champ sideSum
	for _, t := range merged {
		cand.add(t.Candidate)
		champ.add(t.Champion)
		s.Labelled += t.Labelled
		s.Correct += t.Correct
		s.ChampionLabelled += t.ChampionLabelled
		s.ChampionCorrect += t.ChampionCorrect
		s.Skipped += t.Skipped
	}
	s.Requests, s.Errors, s.P99Ms = cand.requests, cand.errors, cand.hist.quantileMs(0.99)
	s.ChampionRequests, s.ChampionErrors, s.ChampionP99Ms = champ.requests, champ.errors, champ.hist.quantileMs(0.99)
	if s.Requests > 0 {
		s.LatencyMs = float64(cand.latencyNs) / float64(s.Requests) / 1e6
	}
	s.Drift, s.DriftRows, s.ChampionDriftRows, s.DriftOK = predictionDrift(&champ.sample, &cand.sample)
	return s
}

// sideSum adds up one variant's tallies.
type sideSum struct {
	requests, errors, latencyNs int64
	hist                        latencyHist
	sample                      predictionSample
}

func (s *sideSum) add(t SideTally) {
	s.requests += t.Requests
	s.errors += t.Errors
	s.latencyNs += t.LatencyNs
	for i, n := range t.Latency {
		if i >= 0 && i < latencyBuckets {
			s.hist.counts[i].Add(n)
			s.hist.n.Add(n)
		}
	}
	// Samples are concatenated: each replica's is uniform over what it
	// served, and replicas behind one load balancer serve alike.
	s.sample.regression = s.sample.regression || t.Regression
	s.sample.labels = append(s.sample.labels, t.Labels...)
	s.sample.values = append(s.sample.values, t.Values...)
	s.sample.n += t.Seen
}

// reportTallies reports this replica's counts of every rollout step in
// force that changed since the last report.
func (d *Deployer) reportTallies(ctx context.Context, last map[string]Tally) {
	if d.tallies == nil {
		return
	}
	now := d.now().UTC()
	for name, r := range d.routings() {
		if r.Rollout == nil {
			delete(last, name)
			continue
		}
		t := r.Rollout.tally(name, d.opts.Replica, now)
		if prev, ok := last[name]; ok && sameCounts(prev, t) && now.Sub(prev.At) < tallyMaxAge/3 {
			continue
		}
		if err := d.tallies.Report(ctx, t); err != nil {
			d.opts.Logger.Warn("rollout counts not reported; the next report carries them", "pipeline", name, "error", err)
			continue
		}
		last[name] = t
	}
}

func sameCounts(a, b Tally) bool {
	return a.DeploymentID == b.DeploymentID && a.Step == b.Step &&
		a.Candidate.Requests == b.Candidate.Requests && a.Champion.Requests == b.Champion.Requests &&
		a.Labelled == b.Labelled && a.ChampionLabelled == b.ChampionLabelled && a.Skipped == b.Skipped
}

// routings returns the routing in force of every pipeline.
func (s *server) routings() map[string]*Routing {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]*Routing, len(s.slots))
	for name, p := range s.slots {
		if r := p.Load(); r != nil {
			out[name] = r
		}
	}
	return out
}

func (d *Deployer) routings() map[string]*Routing { return d.server.routings() }

// watchTallies keeps the other replicas' latest tallies, for the
// controller, until ctx ends.
func (d *Deployer) watchTallies(ctx context.Context) {
	if d.tallies == nil {
		return
	}
	var ch <-chan Tally
	if err := retry(ctx, d.opts.Logger, "watch rollout counts", func() error {
		var err error
		ch, err = d.tallies.Watch(ctx)
		return err
	}); err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case t, ok := <-ch:
			if !ok {
				return
			}
			if t.Replica == d.opts.Replica {
				continue
			}
			d.mu.Lock()
			d.others[t.Pipeline+"\x00"+t.Replica] = t
			d.mu.Unlock()
			d.poke()
		}
	}
}

// othersOf returns the other replicas' fresh tallies of a pipeline's step.
func (d *Deployer) othersOf(pipeline, deploymentID string, step int) []Tally {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	var out []Tally
	for t := range maps.Values(d.others) {
		if t.Pipeline == pipeline && t.DeploymentID == deploymentID && t.Step == step && now.Sub(t.At) < tallyMaxAge {
			out = append(out, t)
		}
	}
	return out
}
