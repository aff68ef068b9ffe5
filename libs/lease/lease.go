// Package lease elects one holder of a role among a service's replicas: the
// deployer's rollout controller, the trainer's scheduler. A lease is a key
// in the gyre-leases bucket (JetStream KV), created by the replica that
// wins it and renewed by it every third of the bucket's TTL; a holder that
// dies stops renewing and the key is gone one TTL later, when another
// replica creates it. A holder that cannot renew (partitioned, frozen)
// gives the role up before the TTL runs out on its own clock, so that two
// replicas never both act; and every tenure has a fencing token, the KV
// revision that created it, larger for each later tenure, that writers put
// in the state they write so that a deposed holder's late write is refused.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Record is the value of a lease key.
type Record struct {
	Holder    string    `json:"holder"`
	Since     time.Time `json:"since"`
	RenewedAt time.Time `json:"renewedAt"`
}

// Tenure is one holding of a lease.
type Tenure struct {
	// Token is the fencing token: the KV revision that created the lease
	// key. Each later tenure, by any holder, has a larger one.
	Token uint64
	Since time.Time
}

// Lease campaigns for one role on behalf of one holder.
type Lease struct {
	kv     jetstream.KeyValue
	name   string
	holder string
	ttl    time.Duration
	logger *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	held *Tenure
	seen string // holder last seen (for Status)
}

// New returns the lease of role name for holder, in kv, a bucket whose TTL
// is ttl (events.LeaseTTL). Holders must be unique among the replicas
// (host name and process id, a pod's name).
func New(kv jetstream.KeyValue, name, holder string, ttl time.Duration, logger *slog.Logger) *Lease {
	if logger == nil {
		logger = slog.Default()
	}
	return &Lease{kv: kv, name: name, holder: holder, ttl: ttl, logger: logger.With("lease", name, "holder", holder), now: time.Now}
}

// Status says who holds the lease as this replica last saw it.
type Status struct {
	Name   string `json:"name"`
	Held   bool   `json:"held"`
	Holder string `json:"holder,omitempty"`
	Token  uint64 `json:"token,omitempty"`
}

// Status reports whether this replica holds the lease, and who does.
func (l *Lease) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Status{Name: l.name, Holder: l.seen}
	if l.held != nil {
		s.Held, s.Holder, s.Token = true, l.holder, l.held.Token
	}
	return s
}

// Run campaigns until ctx ends. Each time the lease is won, lead runs with
// a context that ends when the lease is lost or ctx ends, and the tenure's
// token; Run waits for lead to return before it campaigns again, and gives
// the lease back (deletes the key) when ctx ends while it holds it, so that
// a standby takes over at once rather than after the TTL.
func (l *Lease) Run(ctx context.Context, lead func(ctx context.Context, t Tenure)) {
	poll := l.ttl / 6
	for {
		t, rev, ok := l.acquire(ctx)
		if ok {
			l.hold(ctx, t, rev, lead)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

// acquire tries once to create the lease key.
func (l *Lease) acquire(ctx context.Context) (Tenure, uint64, bool) {
	now := l.now().UTC()
	value, _ := json.Marshal(Record{Holder: l.holder, Since: now, RenewedAt: now})
	actx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	rev, err := l.kv.Create(actx, l.name, value)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
			l.observeHolder(ctx)
		} else if ctx.Err() == nil {
			l.logger.Warn("lease campaign failed; retrying", "error", err)
		}
		return Tenure{}, 0, false
	}
	return Tenure{Token: rev, Since: now}, rev, true
}

// observeHolder remembers who holds the lease, for Status.
func (l *Lease) observeHolder(ctx context.Context) {
	e, err := l.kv.Get(ctx, l.name)
	if err != nil {
		return
	}
	var r Record
	if json.Unmarshal(e.Value(), &r) == nil {
		l.mu.Lock()
		l.seen = r.Holder
		l.mu.Unlock()
	}
}

// hold runs lead while renewing; it returns once lead has returned.
func (l *Lease) hold(ctx context.Context, t Tenure, rev uint64, lead func(context.Context, Tenure)) {
	l.mu.Lock()
	l.held, l.seen = &t, l.holder
	l.mu.Unlock()
	l.logger.Info("lease won", "token", t.Token)

	lctx, lose := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer lose()
		lead(lctx, t)
	}()

	// The role is ours until validUntil on our own clock: the TTL counted
	// from before the last renewal was sent, less a margin for clock rates.
	validUntil := l.now().Add(l.ttl * 9 / 10)
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	why := ""
renew:
	for {
		select {
		case <-lctx.Done():
			why = "stopped"
			break renew
		case <-tick.C:
		}
		sent := l.now()
		if sent.After(validUntil) {
			why = "not renewed in time"
			break renew
		}
		value, _ := json.Marshal(Record{Holder: l.holder, Since: t.Since, RenewedAt: sent.UTC()})
		rctx, cancel := context.WithDeadline(lctx, validUntil)
		next, err := l.kv.Update(rctx, l.name, value, rev)
		cancel()
		switch {
		case err == nil:
			rev, validUntil = next, sent.Add(l.ttl*9/10)
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err):
			why = "taken over: " + err.Error()
			break renew
		default:
			// Transient (the server is electing a leader, the connection is
			// back soon): keep trying until the lease would have expired.
			l.logger.Warn("lease renewal failed; retrying", "error", err, "valid_for", time.Until(validUntil).Round(time.Millisecond).String())
		}
	}
	lose()
	<-done
	l.mu.Lock()
	l.held = nil
	l.mu.Unlock()
	if why == "stopped" {
		// Give the role back at once: a standby need not wait for the TTL.
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := l.kv.Delete(dctx, l.name, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			l.logger.Warn("lease not given back; it expires by itself", "error", err)
		}
		cancel()
		l.logger.Info("lease given back", "token", t.Token)
		return
	}
	l.logger.Warn("lease lost", "token", t.Token, "why", why)
}

// Held returns the tenure in force, if this replica holds the lease.
func (l *Lease) Held() (Tenure, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		return Tenure{}, false
	}
	return *l.held, true
}

// Holder reads who holds a lease now; ok is false when nobody does.
func Holder(ctx context.Context, kv jetstream.KeyValue, name string) (Record, uint64, bool, error) {
	e, err := kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, false, nil
	}
	if err != nil {
		return Record{}, 0, false, fmt.Errorf("lease %s: %w", name, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, 0, false, fmt.Errorf("lease %s: %w", name, err)
	}
	return r, e.Revision(), true, nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
