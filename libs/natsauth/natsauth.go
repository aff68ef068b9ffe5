// Package natsauth gives every Gyre identity on NATS its credentials and its
// permissions: one nkey user per service, the admin, the reader and each
// producer, each allowed to publish only the events the catalog says it
// emits (events.AccessOf), to ack only its own consumers, to write only the
// buckets it owns, and to subscribe only to its own inbox. `gyre up` gives
// the users to its embedded server; `gyre auth config` writes them as a
// nats-server configuration for any other server.
package natsauth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/gyrehq/gyre/events"
)

// SeedExt is the extension of a seed file: <identity>.nk.
const SeedExt = ".nk"

// InboxPrefix is where an identity's replies arrive (nats.CustomInboxPrefix):
// the one subject tree it may subscribe to besides what its role reads, so
// that no identity sees the replies — JetStream acks, consumer deliveries,
// key-value reads — of another.
func InboxPrefix(identity string) string { return "_INBOX." + identity }

// ProducerIdentity names the producer identity of one pipeline ("" for a
// producer of every pipeline): producer-<pipeline>, or producer.
func ProducerIdentity(pipeline string) string {
	if pipeline == "" {
		return events.IdentityProducer
	}
	return events.IdentityProducer + "-" + pipeline
}

// parseIdentity splits an identity name into its role and, for a producer
// of one pipeline, the pipeline.
func parseIdentity(name string) (role, pipeline string, err error) {
	if p, ok := strings.CutPrefix(name, events.IdentityProducer+"-"); ok {
		if err := events.ValidatePipeline(p); err != nil {
			return "", "", fmt.Errorf("producer identity %q: %w", name, err)
		}
		return events.IdentityProducer, p, nil
	}
	if _, err := events.AccessOf(name); err != nil {
		return "", "", err
	}
	return name, "", nil
}

// Permissions returns the NATS permissions of an identity: a service's name,
// admin, reader, producer or producer-<pipeline>.
func Permissions(identity string) (*server.Permissions, error) {
	role, pipeline, err := parseIdentity(identity)
	if err != nil {
		return nil, err
	}
	a, err := events.AccessOf(role)
	if err != nil {
		return nil, err
	}
	if a.Provisions {
		// The admin provisions, repairs and tears down: everything.
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}},
		}, nil
	}
	var pub, deny []string
	for _, name := range a.Emits {
		subject, err := events.FilterSubject(pipeline, name)
		if err != nil {
			return nil, err
		}
		pub = append(pub, subject)
	}
	if a.DeadLetters {
		dlq, err := events.DLQSubject(identity)
		if err != nil {
			return nil, err
		}
		pub = append(pub, dlq)
	}
	if a.Jobs {
		pub = append(pub, events.JobsPrefix+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+events.StreamJobs+".*",
			"$JS.API.CONSUMER.CREATE."+events.StreamJobs+".>",
			"$JS.ACK."+events.StreamJobs+".>")
	}
	for _, b := range a.KeyValues {
		pub = append(pub, "$KV."+b+".>")
	}
	for _, b := range a.Objects {
		// Chunks and metadata; replacing or deleting an object purges its
		// old chunks.
		pub = append(pub, "$O."+b+".>", "$JS.API.STREAM.PURGE.OBJ_"+b)
	}
	own := map[string]bool{}
	for _, c := range a.Consumers {
		if c.PerReplica {
			continue // ordered and ephemeral: the read permissions cover it
		}
		own[c.Stream+"."+c.Durable()] = true
		pub = append(pub,
			"$JS.API.CONSUMER.DURABLE.CREATE."+c.Stream+"."+c.Durable(),
			"$JS.API.CONSUMER.CREATE."+c.Stream+"."+c.Durable(),
			"$JS.API.CONSUMER.CREATE."+c.Stream+"."+c.Durable()+".>",
			"$JS.ACK."+c.Stream+"."+c.Durable()+".>")
	}
	if role == events.IdentityProducer {
		// Clients check the stream before they publish (the CloudEvents
		// SDK's JetStream sender does): its information, nothing else.
		pub = append(pub, "$JS.API.INFO", "$JS.API.STREAM.INFO."+events.StreamEvents)
	}
	if a.Reads {
		pub = append(pub, readSubjects()...)
		// Every other durable consumer is another identity's: reading it
		// would take its messages, and changing or deleting it would stop
		// its service.
		for _, c := range events.DurableConsumers() {
			if own[c.Stream+"."+c.Durable()] || (a.Jobs && c.Stream == events.StreamJobs) {
				continue
			}
			id := c.Stream + "." + c.Durable()
			deny = append(deny,
				"$JS.API.CONSUMER.CREATE."+id, "$JS.API.CONSUMER.CREATE."+id+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+id, "$JS.API.CONSUMER.DELETE."+id)
		}
		if !a.Jobs {
			deny = append(deny,
				"$JS.API.CONSUMER.CREATE."+events.StreamJobs+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+events.StreamJobs+".>",
				"$JS.API.CONSUMER.DELETE."+events.StreamJobs+".>")
		}
	}
	if a.DeadLetters {
		// A service creates Gyre's streams and buckets when they are
		// missing (a service may start before anyone provisioned), but
		// never changes one: an update could rewrite what a stream stores
		// (its subjects, a subject transform). The admin updates.
		for _, name := range gyreStreams() {
			pub = append(pub, "$JS.API.STREAM.CREATE."+name)
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(identity) + ".>"}},
	}, nil
}

// readSubjects are the JetStream API calls of reading: stream and consumer
// information, key-value and stream message gets, ephemeral (ordered)
// consumers — what key-value watches, object gets and `gyre events` make —
// and their flow control.
func readSubjects() []string {
	return []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO.*",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.MSG.GET.*",
		"$JS.API.DIRECT.GET.>",
		"$JS.API.CONSUMER.INFO.>",
		"$JS.API.CONSUMER.NAMES.*",
		"$JS.API.CONSUMER.LIST.*",
		"$JS.API.CONSUMER.CREATE.>",
		"$JS.API.CONSUMER.MSG.NEXT.>",
		"$JS.API.CONSUMER.DELETE.>",
		"$JS.FC.>",
	}
}

// gyreStreams names every stream of the topology, the buckets' included.
func gyreStreams() []string {
	var names []string
	for _, s := range events.Streams() {
		names = append(names, s.Name)
	}
	for _, kv := range events.KeyValues() {
		names = append(names, "KV_"+kv.Bucket)
	}
	for _, o := range events.ObjectStores() {
		names = append(names, "OBJ_"+o.Bucket)
	}
	return names
}

// User is one identity with its public nkey.
type User struct {
	Identity string
	// PublicKey is the user's public nkey (U...).
	PublicKey string
	// Seed is the file holding its seed.
	Seed string
}

// NkeyUser returns the user as the embedded server takes it.
func (u User) NkeyUser() (*server.NkeyUser, error) {
	perms, err := Permissions(u.Identity)
	if err != nil {
		return nil, err
	}
	return &server.NkeyUser{Nkey: u.PublicKey, Permissions: perms}, nil
}

// EnsureIdentity returns the identity's user in dir, making its seed
// (<dir>/<identity>.nk, 0600) when there is none.
func EnsureIdentity(dir, identity string) (u User, created bool, err error) {
	if _, _, err := parseIdentity(identity); err != nil {
		return User{}, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return User{}, false, err
	}
	path := filepath.Join(dir, identity+SeedExt)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return User{}, false, err
		}
		seed, err := kp.Seed()
		if err != nil {
			return User{}, false, err
		}
		if err := writeNew(path, seed); err != nil {
			return User{}, false, err
		}
		created = true
	}
	pub, err := PublicKey(path)
	if err != nil {
		return User{}, false, err
	}
	return User{Identity: identity, PublicKey: pub, Seed: path}, created, nil
}

// writeNew writes a file that must not exist yet, readable by its owner only.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	return errors.Join(err, f.Close())
}

// EnsureAll makes sure dir holds a seed for every identity Gyre runs with
// (events.Identities) and returns the users of every seed in dir, those of
// producers included.
func EnsureAll(dir string) ([]User, error) {
	for _, id := range events.Identities() {
		if _, _, err := EnsureIdentity(dir, id); err != nil {
			return nil, fmt.Errorf("nats identity %s: %w", id, err)
		}
	}
	return Users(dir)
}

// Users returns the user of every seed file in dir, sorted by identity. A
// seed file whose name is no identity is an error: a server given these
// users would otherwise lack one a client expects.
func Users(dir string) ([]User, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var users []User
	for _, e := range entries {
		identity, ok := strings.CutSuffix(e.Name(), SeedExt)
		if !ok || e.IsDir() {
			continue
		}
		if _, _, err := parseIdentity(identity); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e.Name()), err)
		}
		path := filepath.Join(dir, e.Name())
		pub, err := PublicKey(path)
		if err != nil {
			return nil, err
		}
		users = append(users, User{Identity: identity, PublicKey: pub, Seed: path})
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Identity < users[j].Identity })
	return users, nil
}

// PublicKey reads a seed file (refusing one others may read) and returns
// its public key.
func PublicKey(path string) (string, error) {
	seed, err := ReadSeed(path)
	if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("%s: not a user seed (want one starting SU)", path)
	}
	return pub, nil
}

// ReadSeed reads a seed file, refusing one that others may read or its
// group may write. Group read is allowed: Kubernetes mounts a Secret for
// a pod with an fsGroup readable by that group, whatever its defaultMode.
func ReadSeed(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o027 != 0 {
		return nil, fmt.Errorf("%s is open to others (mode %v): it is a NATS credential; chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed := []byte(strings.TrimSpace(string(data)))
	if len(seed) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return seed, nil
}

// ServerConfig writes the users as a nats-server configuration fragment:
// an authorization block with one nkey user per identity and its
// permissions, for a server's configuration to include.
func ServerConfig(users []User) (string, error) {
	var b strings.Builder
	b.WriteString("# Gyre's NATS identities, written by `gyre auth config`: one nkey user each,\n" +
		"# its permissions derived from Gyre's event catalog. Include it in the server's\n" +
		"# configuration (include ./gyre-auth.conf); every client then needs a seed.\n" +
		"authorization {\n  users = [\n")
	for _, u := range users {
		perms, err := Permissions(u.Identity)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "    # %s\n    {\n      nkey: %s\n      permissions: {\n", u.Identity, u.PublicKey)
		writeSubjects(&b, "publish", perms.Publish)
		writeSubjects(&b, "subscribe", perms.Subscribe)
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String(), nil
}

func writeSubjects(b *strings.Builder, kind string, p *server.SubjectPermission) {
	fmt.Fprintf(b, "        %s: {\n", kind)
	writeList(b, "allow", p.Allow)
	writeList(b, "deny", p.Deny)
	b.WriteString("        }\n")
}

// writeList writes one subject a line; quoted, since $ starts a variable
// in the configuration language.
func writeList(b *strings.Builder, key string, subjects []string) {
	if len(subjects) == 0 {
		return
	}
	fmt.Fprintf(b, "          %s: [\n", key)
	for _, s := range subjects {
		fmt.Fprintf(b, "            %q\n", s)
	}
	b.WriteString("          ]\n")
}

// NkeyOption is the connection option of a seed: the client proves it holds
// the seed by signing the server's nonce.
func NkeyOption(seed []byte) (nats.Option, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return nats.Nkey(pub, kp.Sign), nil
}

// ConnectOptions are the options of a client connecting as the identity
// whose seed file is path: its nkey, and its inbox (InboxPrefix) — the
// identity is the file's name, <identity>.nk, as `gyre auth` writes it.
func ConnectOptions(path string) ([]nats.Option, error) {
	seed, err := ReadSeed(path)
	if err != nil {
		return nil, err
	}
	opt, err := NkeyOption(seed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	identity := strings.TrimSuffix(filepath.Base(path), SeedExt)
	if _, _, err := parseIdentity(identity); err != nil {
		return nil, fmt.Errorf("%s: the file's name says whose identity it is (<identity>%s): %w", path, SeedExt, err)
	}
	return []nats.Option{opt, nats.CustomInboxPrefix(InboxPrefix(identity))}, nil
}
