package lease_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/libs/lease"
	"github.com/gyrehq/gyre/libs/natstest"
)

// ttl is the test bucket's: short, so that expiry is seen within a test.
const ttl = 1500 * time.Millisecond

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "gyre-leases", History: 1, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// candidate runs one holder's campaign and records its tenures.
type candidate struct {
	name    string
	leading atomic.Bool
	mu      sync.Mutex
	tokens  []uint64
	stop    context.CancelFunc
	done    chan struct{}
}

func (c *candidate) tokenList() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.tokens...)
}

func campaign(t *testing.T, kv jetstream.KeyValue, name string, overlap *atomic.Int32) *candidate {
	t.Helper()
	c := &candidate{name: name, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	l := lease.New(kv, "role", name, ttl, quiet)
	go func() {
		defer close(c.done)
		l.Run(ctx, func(ctx context.Context, tn lease.Tenure) {
			if overlap.Add(1) > 1 {
				t.Errorf("%s leads while another holder does", name)
			}
			c.leading.Store(true)
			c.mu.Lock()
			c.tokens = append(c.tokens, tn.Token)
			c.mu.Unlock()
			<-ctx.Done()
			c.leading.Store(false)
			overlap.Add(-1)
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func waitLeader(t *testing.T, d time.Duration, cs ...*candidate) *candidate {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, c := range cs {
			if c.leading.Load() {
				return c
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leader within %s", d)
	return nil
}

// TestOneHolderAndHandOver: of two candidates one leads; when it stops, it
// gives the lease back and the other leads at once, with a larger token.
func TestOneHolderAndHandOver(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	var overlap atomic.Int32
	a := campaign(t, kv, "a", &overlap)
	b := campaign(t, kv, "b", &overlap)
	first := waitLeader(t, 5*time.Second, a, b)
	other := b
	if first == b {
		other = a
	}
	// Hold through several renewals: the other never leads meanwhile.
	time.Sleep(2 * ttl)
	if other.leading.Load() {
		t.Fatal("both lead")
	}
	start := time.Now()
	first.stop()
	<-first.done
	waitLeader(t, ttl, other)
	t.Logf("handed over in %s", time.Since(start).Round(time.Millisecond))
	ft, ot := first.tokenList(), other.tokenList()
	if len(ft) == 0 || len(ot) == 0 || ft[0] >= ot[0] {
		t.Fatalf("tokens: first %v, then %v: want a larger token for the later tenure", ft, ot)
	}
}

// TestDeadHolderExpires: a holder that stops renewing without giving the
// lease back (a crash) loses it one TTL after its last renewal.
func TestDeadHolderExpires(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := context.Background()
	// A crashed holder: the key written once and never renewed.
	value, _ := json.Marshal(lease.Record{Holder: "crashed", Since: time.Now(), RenewedAt: time.Now()})
	if _, err := kv.Create(ctx, "role", value); err != nil {
		t.Fatal(err)
	}
	var overlap atomic.Int32
	start := time.Now()
	b := campaign(t, kv, "b", &overlap)
	time.Sleep(ttl / 2)
	if b.leading.Load() {
		t.Fatal("b leads while the crashed holder's lease is live")
	}
	waitLeader(t, 3*ttl, b)
	took := time.Since(start)
	t.Logf("taken over %s after the crash (ttl %s)", took.Round(time.Millisecond), ttl)
	if took < ttl*9/10 {
		t.Fatalf("taken over after %s, before the ttl %s", took, ttl)
	}
	rec, _, ok, err := lease.Holder(ctx, kv, "role")
	if err != nil || !ok || rec.Holder != "b" {
		t.Fatalf("holder: %+v %v %v", rec, ok, err)
	}
}

// TestTakenOverHolderStops: a holder whose key another has replaced (it
// was frozen past the TTL) stops leading at its next renewal.
func TestTakenOverHolderStops(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	var overlap atomic.Int32
	a := campaign(t, kv, "a", &overlap)
	waitLeader(t, 5*time.Second, a)
	// Another holder's write, as if a's lease had expired meanwhile.
	value, _ := json.Marshal(lease.Record{Holder: "intruder"})
	if _, err := kv.Put(context.Background(), "role", value); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(ttl)
	for a.leading.Load() {
		if time.Now().After(deadline) {
			t.Fatal("a still leads after its key was taken over")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
