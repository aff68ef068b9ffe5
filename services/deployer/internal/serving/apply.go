package serving

import "context"

// ApplySpec brings the serving settings of the pipeline's current spec to
// what serves it now, without waiting for the next promotion:
// spec.deployment.batching (every model loaded: champion, candidate,
// mirror), sampleRate and routeHeader. It returns what changed, e.g.
// ["batching", "sampleRate"]; nothing when no model serves the pipeline
// (the next promotion or restore reads the spec anyway).
//
// Every replica calls it for each change its watch of gyre-pipelines
// sees; it reads the spec from the store rather than taking it from the
// watch, so that a late announcement never brings back an older spec.
//
// A new strategy waits for the next rollout: the one in progress goes on
// as it started. A new rollback policy needs nothing here: each judgement
// reads the spec.
func (d *Deployer) ApplySpec(ctx context.Context, name string) ([]string, error) {
	if d.server.routing(name) == nil {
		return nil, nil
	}
	p, err := d.specs.Pipeline(ctx, name)
	if err != nil {
		if d.notFound(err) {
			return nil, nil
		}
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.server.routing(name)
	if cur == nil {
		return nil, nil
	}
	dep := p.Spec.Deployment
	var changed []string
	batching := false
	for _, m := range []*Model{cur.Champion, cur.Candidate, cur.Mirror} {
		if m != nil && m.ApplyBatching(dep.Batching) {
			batching = true
		}
	}
	if batching {
		changed = append(changed, "batching")
	}
	rate := dep.LogRate()
	if cur.SampleRate == rate && cur.RouteHeader == dep.RouteHeader {
		return changed, nil
	}
	if cur.SampleRate != rate {
		changed = append(changed, "sampleRate")
	}
	if cur.RouteHeader != dep.RouteHeader {
		changed = append(changed, "routeHeader")
	}
	// Requests under way keep the routing they started with.
	next := *cur
	next.SampleRate, next.RouteHeader = rate, dep.RouteHeader
	d.server.set(name, &next)
	return changed, nil
}
