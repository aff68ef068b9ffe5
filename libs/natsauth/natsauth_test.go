package natsauth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/natstest"
)

// violations records the permission errors the server sent a connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			v.mu.Lock()
			v.errs = append(v.errs, err.Error())
			v.mu.Unlock()
		}
	})
}

// saw reports whether a violation naming subject arrived within 5 seconds.
func (v *violations) saw(subject string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, e := range v.errs {
			if strings.Contains(e, `"`+subject+`"`) {
				v.mu.Unlock()
				return true
			}
		}
		v.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func provisioned(t *testing.T) (*natstest.Secured, context.Context) {
	t.Helper()
	srv := natstest.StartSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	js, err := jetstream.New(srv.ConnectAs(t, events.IdentityAdmin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Provision(ctx, js, bus.FullTopology()); err != nil {
		t.Fatalf("admin provisions: %v", err)
	}
	return srv, ctx
}

func TestOutsiderCannotConnect(t *testing.T) {
	t.Parallel()
	srv := natstest.StartSecured(t)
	_, err := nats.Connect(srv.URL, nats.Timeout(2*time.Second))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("a client without credentials connected (err %v)", err)
	}
	// A seed the server does not know is no better.
	other := natstest.StartSecured(t)
	opts, err := natsauth.ConnectOptions(other.Seed(events.IdentityAdmin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nats.Connect(srv.URL, append(opts, nats.Timeout(2*time.Second))...); err == nil {
		t.Fatal("another installation's admin seed connected")
	}
}

// TestEachIdentityPublishesOnlyItsEvents publishes every event type of the
// catalog as every identity: exactly the catalog's emitters are stored,
// everyone else is refused by the server.
func TestEachIdentityPublishesOnlyItsEvents(t *testing.T) {
	t.Parallel()
	srv, ctx := provisioned(t)
	identities := append(events.Identities(), natsauth.ProducerIdentity(""), natsauth.ProducerIdentity("elec2"))
	for _, id := range identities {
		t.Run(id, func(t *testing.T) {
			var v violations
			js, err := jetstream.New(srv.ConnectAs(t, id, v.handler()))
			if err != nil {
				t.Fatal(err)
			}
			role := id
			if strings.HasPrefix(id, events.IdentityProducer) {
				role = events.IdentityProducer
			}
			for _, spec := range events.Catalog() {
				for _, pipeline := range []string{"elec2", "other"} {
					subject, err := events.Subject(pipeline, spec.Name)
					if err != nil {
						t.Fatal(err)
					}
					want := slices.Contains(spec.Emitters, role) || role == events.IdentityAdmin
					if id == natsauth.ProducerIdentity("elec2") && pipeline != "elec2" {
						want = false
					}
					if want {
						pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
						if _, err := js.Publish(pctx, subject, []byte("{}")); err != nil {
							t.Errorf("%s may publish %s, got %v", id, subject, err)
						}
						cancel()
						continue
					}
					// The server refuses it and says so.
					if err := js.Conn().Publish(subject, []byte("{}")); err != nil {
						t.Fatal(err)
					}
					if !v.saw(subject) {
						t.Errorf("%s published %s, which it does not emit: no permissions violation from the server", id, subject)
					}
				}
			}
		})
	}
}

// TestServicesRunOnTheirGrants checks what every service does at start with
// its own identity: provision (all there: only reads), read its own
// consumers, watch and read buckets — and that it can neither write a
// bucket it does not own, nor read or delete another service's consumer,
// nor change a stream.
func TestServicesRunOnTheirGrants(t *testing.T) {
	t.Parallel()
	srv, ctx := provisioned(t)
	for _, svc := range events.ServiceNames() {
		t.Run(svc, func(t *testing.T) {
			var v violations
			js, err := jetstream.New(srv.ConnectAs(t, svc, v.handler()))
			if err != nil {
				t.Fatal(err)
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			changes, err := bus.Provision(pctx, js, bus.ServiceTopology(svc))
			if err != nil {
				t.Fatalf("provision as %s: %v", svc, err)
			}
			for _, c := range changes {
				if c.Action != bus.Unchanged {
					t.Errorf("%s %s: %s", c.Kind, c.Name, c.Action)
				}
			}
			for _, c := range events.ServiceConsumers()[svc] {
				if c.PerReplica {
					continue
				}
				cons, err := js.Consumer(pctx, c.Stream, c.Durable())
				if err != nil {
					t.Fatalf("its consumer %s: %v", c.Durable(), err)
				}
				if _, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond)); err != nil {
					t.Errorf("fetch from its consumer %s: %v", c.Durable(), err)
				}
			}
			for _, b := range events.KeyValues() {
				kv, err := js.KeyValue(pctx, b.Bucket)
				if err != nil {
					t.Fatalf("kv %s: %v", b.Bucket, err)
				}
				w, err := kv.WatchAll(pctx)
				if err != nil {
					t.Fatalf("watch %s: %v", b.Bucket, err)
				}
				select {
				case <-w.Updates(): // nil: the initial values are in
				case <-time.After(3 * time.Second):
					t.Errorf("watch %s: nothing within 3s", b.Bucket)
				}
				_ = w.Stop()
				owns := slices.Contains(events.BucketWriters(b.Bucket), svc)
				wctx, cancel := context.WithTimeout(pctx, timeoutFor(owns))
				_, err = kv.Put(wctx, "probe", []byte("x"))
				cancel()
				if owns != (err == nil) || (!owns && !v.saw("$KV."+b.Bucket+".probe")) {
					t.Errorf("put in %s: owner %v, err %v", b.Bucket, owns, err)
				}
			}
			for _, o := range events.ObjectStores() {
				obs, err := js.ObjectStore(pctx, o.Bucket)
				if err != nil {
					t.Fatalf("object store %s: %v", o.Bucket, err)
				}
				owns := slices.Contains(events.BucketWriters(o.Bucket), svc)
				wctx, cancel := context.WithTimeout(pctx, timeoutFor(owns))
				_, err = obs.PutBytes(wctx, "probe-"+svc, []byte("x"))
				cancel()
				if owns != (err == nil) {
					t.Errorf("put object in %s: owner %v, err %v", o.Bucket, owns, err)
				}
				if owns {
					if got, err := obs.GetBytes(pctx, "probe-"+svc); err != nil || string(got) != "x" {
						t.Errorf("read back its object in %s: %q, %v", o.Bucket, got, err)
					}
				}
			}
			// Another service's consumer is out of reach.
			for _, c := range events.DurableConsumers() {
				if c.Service == svc {
					continue
				}
				next := "$JS.API.CONSUMER.MSG.NEXT." + c.Stream + "." + c.Durable()
				if _, err := js.Conn().Request(next, nil, 300*time.Millisecond); err == nil || !v.saw(next) {
					t.Errorf("%s read %s's consumer %s (err %v)", svc, c.Service, c.Durable(), err)
				}
				dctx, cancel := context.WithTimeout(pctx, 300*time.Millisecond)
				err := js.DeleteConsumer(dctx, c.Stream, c.Durable())
				cancel()
				if err == nil {
					t.Errorf("%s deleted %s's consumer %s", svc, c.Service, c.Durable())
				}
				break
			}
			uctx, cancel := context.WithTimeout(pctx, 300*time.Millisecond)
			defer cancel()
			cfg := events.Streams()[0]
			cfg.MaxAge = time.Hour
			if _, err := js.UpdateStream(uctx, cfg); err == nil {
				t.Errorf("%s changed stream %s", svc, cfg.Name)
			}
		})
	}
}

// timeoutFor is how long a write waits: an allowed one gets plenty (the
// machine may be loaded), a refused one gets no answer, so waits briefly.
func timeoutFor(allowed bool) time.Duration {
	if allowed {
		return 5 * time.Second
	}
	return 300 * time.Millisecond
}

func TestReaderReadsAndWritesNothing(t *testing.T) {
	t.Parallel()
	srv, ctx := provisioned(t)
	admin, err := jetstream.New(srv.ConnectAs(t, events.IdentityAdmin))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := events.Subject("elec2", events.PipelineApplied)
	if _, err := admin.Publish(ctx, subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(srv.ConnectAs(t, events.IdentityReader))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("reader's ordered consumer: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(3 * time.Second))
	if err != nil || msg.Subject() != subject {
		t.Fatalf("reader reads %v, %v", msg, err)
	}
	kv, err := js.KeyValue(ctx, events.BucketRegistry)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := kv.Put(wctx, "elec2", []byte("{}")); err == nil {
		t.Fatal("the reader wrote the registry")
	}
}

// TestServerConfigIsWhatTheEmbeddedServerGets parses `gyre auth config`'s
// output the way nats-server does and compares it with the permissions the
// embedded server gets.
func TestServerConfigIsWhatTheEmbeddedServerGets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seeds := filepath.Join(dir, "seeds")
	if _, _, err := natsauth.EnsureIdentity(seeds, natsauth.ProducerIdentity("elec2")); err != nil {
		t.Fatal(err)
	}
	users, err := natsauth.EnsureAll(seeds)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != len(events.Identities())+1 {
		t.Fatalf("%d users, want %d", len(users), len(events.Identities())+1)
	}
	text, err := natsauth.ServerConfig(users)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(filepath.Join(dir, "gyre-auth.conf"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("port: -1\njetstream: {store_dir: \""+dir+"/js\"}\ninclude ./gyre-auth.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server rejects the configuration: %v\n%s", err, text)
	}
	if len(opts.Nkeys) != len(users) {
		t.Fatalf("server config has %d nkey users, want %d", len(opts.Nkeys), len(users))
	}
	for i, u := range users {
		want, err := u.NkeyUser()
		if err != nil {
			t.Fatal(err)
		}
		got := opts.Nkeys[i]
		if got.Nkey != want.Nkey || !slices.Equal(got.Permissions.Publish.Allow, want.Permissions.Publish.Allow) ||
			!slices.Equal(got.Permissions.Publish.Deny, want.Permissions.Publish.Deny) ||
			!slices.Equal(got.Permissions.Subscribe.Allow, want.Permissions.Subscribe.Allow) {
			t.Errorf("%s: config gives %+v, embedded server %+v", u.Identity, got.Permissions, want.Permissions)
		}
	}
}

func TestSeedsAreTheOwnersOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	u, created, err := natsauth.EnsureIdentity(dir, events.ServiceIngest)
	if err != nil || !created {
		t.Fatalf("created %v, %v", created, err)
	}
	st, err := os.Stat(u.Seed)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed mode %v, %v", st.Mode().Perm(), err)
	}
	again, created, err := natsauth.EnsureIdentity(dir, events.ServiceIngest)
	if err != nil || created || again.PublicKey != u.PublicKey {
		t.Fatalf("a second call made a new key (%v, %v)", created, err)
	}
	if err := os.Chmod(u.Seed, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.PublicKey(u.Seed); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a seed others may read was accepted: %v", err)
	}
	for _, bad := range []string{"nobody", "producer-Bad.Name"} {
		if _, _, err := natsauth.EnsureIdentity(dir, bad); err == nil {
			t.Errorf("identity %q accepted", bad)
		}
	}
}
