package serving

import (
	"math/rand/v2"
	"sync/atomic"
)

// Variant names the traffic a request was served as; prediction.logged
// carries it.
type Variant string

// Variants.
const (
	// Champion is the model serving all traffic, or what a canary leaves.
	Champion Variant = "champion"
	// Canary is the candidate under judgement answering live traffic: its
	// share during a canary step, all of it after a blue-green switch.
	Canary Variant = "canary"
	// Shadow is a candidate scoring a copy of the traffic; its answers are
	// logged and judged, never returned.
	Shadow Variant = "shadow"
)

// Routing is what serves a pipeline: one immutable snapshot, replaced as a
// whole (server.set) so that a request, which loads it once, finishes on
// the models it started with.
type Routing struct {
	Pipeline     string
	DeploymentID string
	// Strategy is the pipeline's rollout strategy (spec.deployment).
	Strategy string
	// Champion serves all traffic but the candidate's share; nil when no
	// model serves (never set so). After a blue-green switch it is the
	// previous model, kept loaded to switch back to.
	Champion *Model
	// Candidate answers Percent of the routed traffic: a canary step's
	// share, or 100 after a blue-green switch.
	Candidate *Model
	Percent   float64
	// Mirror scores a copy of every routed request the answering model
	// served, off the request path, and counts as MirrorAs in the rollout:
	// the shadow candidate (Shadow), or after a blue-green switch the
	// previous model (Champion), so that both are judged on the same
	// requests.
	Mirror   *Model
	MirrorAs Variant
	// Rollout counts the step in force of a rollout; nil otherwise.
	Rollout *Rollout
	// SampleRate is the share of requests logged as prediction.logged.
	SampleRate float64
	// RouteHeader is the request header whose value pins a caller to one
	// variant (spec.deployment.routeHeader).
	RouteHeader string
	// recent keeps the last requests served, for a blue-green candidate
	// to be verified on before traffic switches; nil unless the strategy
	// is blue-green.
	recent *recentRows
}

// pick chooses the variant of a request. With a routing key the choice is
// sticky: the same key goes to the same variant throughout a rollout, and a
// key on the candidate at one step stays there as its share grows.
func (r *Routing) pick(routingKey string) (*Model, Variant) {
	switch {
	case r.Candidate == nil || r.Percent <= 0:
		return r.Champion, Champion
	case r.Percent >= 100:
		return r.Candidate, Canary
	}
	var x float64
	if routingKey != "" {
		x = float64(fnv64(r.DeploymentID+"\x00"+routingKey)%10000) / 100
	} else {
		x = rand.Float64() * 100
	}
	if x < r.Percent {
		return r.Candidate, Canary
	}
	return r.Champion, Champion
}

// version returns the serving model of a version, and its variant.
func (r *Routing) version(v int64) (*Model, Variant, bool) {
	switch {
	case r.Candidate != nil && r.Candidate.Version == v:
		return r.Candidate, Canary, true
	case r.Champion != nil && r.Champion.Version == v:
		return r.Champion, Champion, true
	case r.Mirror != nil && r.Mirror.Version == v:
		return r.Mirror, r.MirrorAs, true
	}
	return nil, "", false
}

// Versions returns the versions loaded, the one answering routed traffic
// first (the candidate once it has all of it).
func (r *Routing) Versions() []int64 {
	var vs []int64
	add := func(m *Model) {
		if m == nil {
			return
		}
		for _, v := range vs {
			if v == m.Version {
				return
			}
		}
		vs = append(vs, m.Version)
	}
	if r.Candidate != nil && r.Percent >= 100 {
		add(r.Candidate)
	}
	add(r.Champion)
	add(r.Candidate)
	add(r.Mirror)
	return vs
}

// Serving returns the model answering routed traffic by default: the
// champion, or the candidate once it has all of it.
func (r *Routing) Serving() *Model {
	if r.Candidate != nil && r.Percent >= 100 {
		return r.Candidate
	}
	return r.Champion
}

// accepts reports whether any loaded model takes a column.
func (r *Routing) accepts(name string) bool {
	for _, m := range []*Model{r.Champion, r.Candidate, r.Mirror} {
		if m == nil {
			continue
		}
		for _, in := range m.inputs {
			if in.Name == name {
				return true
			}
		}
	}
	return false
}

// recentRows is a ring of the last requests served, written lock-free on
// the request path (one atomic add and one store per request).
type recentRows struct {
	next atomic.Uint64
	reqs [recentKept]atomic.Pointer[Request]
}

const (
	// recentKept bounds the requests a blue-green candidate is verified on.
	recentKept = 256
	// recentMaxRows keeps large batch requests out of the ring, which
	// would otherwise hold on to their memory.
	recentMaxRows = 100
)

func (r *recentRows) add(req *Request) {
	i := r.next.Add(1) - 1
	r.reqs[i%recentKept].Store(req)
}

// snapshot returns the requests kept, oldest first.
func (r *recentRows) snapshot() []*Request {
	n := r.next.Load()
	start := uint64(0)
	if n > recentKept {
		start = n - recentKept
	}
	out := make([]*Request, 0, n-start)
	for i := start; i < n; i++ {
		if p := r.reqs[i%recentKept].Load(); p != nil {
			out = append(out, p)
		}
	}
	return out
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
