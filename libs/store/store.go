// Package store gives services typed access to Gyre's JetStream buckets: the
// key-value buckets that hold state (pipelines, registry, deployments,
// per-service state) and the object stores that hold data (batches, feature
// snapshots, model artifacts). Every write a handler makes goes through an
// idempotent or compare-and-set operation here, so a redelivered event has
// the same effect as the first delivery.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// Buckets holds every bucket of the topology.
type Buckets struct {
	Pipelines   jetstream.KeyValue
	Registry    jetstream.KeyValue
	Deployments jetstream.KeyValue
	Workers     jetstream.KeyValue
	State       jetstream.KeyValue
	// Online is the online feature store (gyre-online).
	Online jetstream.KeyValue
	// Leases, Rollouts and Joins: see events.BucketLeases,
	// BucketRollouts and BucketJoins.
	Leases   jetstream.KeyValue
	Rollouts jetstream.KeyValue
	Joins    jetstream.KeyValue
	Batches  Objects
	Features Objects
	Models   Objects
}

// Objects is an object store bucket with its name (which the jetstream API
// only gives through a server round trip).
type Objects struct {
	Name string
	jetstream.ObjectStore
}

// Open binds the buckets (provisioned beforehand by bus.Provision).
func Open(ctx context.Context, js jetstream.JetStream) (*Buckets, error) {
	b := &Buckets{}
	kvs := []struct {
		name string
		dst  *jetstream.KeyValue
	}{
		{events.BucketPipelines, &b.Pipelines}, {events.BucketRegistry, &b.Registry},
		{events.BucketDeployments, &b.Deployments}, {events.BucketWorkers, &b.Workers},
		{events.BucketState, &b.State}, {events.BucketOnline, &b.Online},
		{events.BucketLeases, &b.Leases}, {events.BucketRollouts, &b.Rollouts}, {events.BucketJoins, &b.Joins},
	}
	for _, k := range kvs {
		kv, err := js.KeyValue(ctx, k.name)
		if err != nil {
			return nil, fmt.Errorf("kv bucket %s: %w", k.name, err)
		}
		*k.dst = kv
	}
	objs := []struct {
		name string
		dst  *Objects
	}{
		{events.ObjectBatches, &b.Batches}, {events.ObjectFeatures, &b.Features}, {events.ObjectModels, &b.Models},
	}
	for _, o := range objs {
		os, err := js.ObjectStore(ctx, o.name)
		if err != nil {
			return nil, fmt.Errorf("object store %s: %w", o.name, err)
		}
		*o.dst = Objects{Name: o.name, ObjectStore: os}
	}
	return b, nil
}

// NotFoundError says a pipeline, model or object does not exist. It is
// permanent: an event naming something that is not there will not find it
// by being retried.
type NotFoundError struct {
	What string
}

func (e *NotFoundError) Error() string   { return e.What + " not found" }
func (e *NotFoundError) Permanent() bool { return true }

// IsNotFound reports whether err is a NotFoundError.
func IsNotFound(err error) bool {
	var nf *NotFoundError
	return errors.As(err, &nf)
}

// GetJSON reads a JSON value; found is false when the key does not exist.
func GetJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (v T, rev uint64, found bool, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, false, nil
	}
	if err != nil {
		return v, 0, false, fmt.Errorf("kv %s get %s: %w", kv.Bucket(), key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, false, fmt.Errorf("kv %s key %s: stored value is not the expected JSON: %w", kv.Bucket(), key, err)
	}
	return v, e.Revision(), true, nil
}

// PutJSON writes a JSON value unconditionally.
func PutJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("kv %s key %s: %w", kv.Bucket(), key, err)
	}
	rev, err := kv.Put(ctx, key, b)
	if err != nil {
		return 0, fmt.Errorf("kv %s put %s: %w", kv.Bucket(), key, err)
	}
	return rev, nil
}

// ErrNoChange returned by an UpdateJSON function leaves the value as it is.
var ErrNoChange = errors.New("no change")

// UpdateJSON reads a JSON value, lets fn change it and writes it back with
// compare-and-set, retrying when another writer got there first. fn sees the
// zero value and exists=false for a missing key; it may return ErrNoChange to
// write nothing. Any other error from fn is returned as is.
func UpdateJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(v *T, exists bool) error) (T, error) {
	for attempt := 0; ; attempt++ {
		v, rev, found, err := GetJSON[T](ctx, kv, key)
		if err != nil {
			return v, err
		}
		if err := fn(&v, found); err != nil {
			if errors.Is(err, ErrNoChange) {
				return v, nil
			}
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, fmt.Errorf("kv %s key %s: %w", kv.Bucket(), key, err)
		}
		if found {
			_, err = kv.Update(ctx, key, b, rev)
		} else {
			_, err = kv.Create(ctx, key, b)
		}
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			return v, fmt.Errorf("kv %s update %s: %w", kv.Bucket(), key, err)
		}
		if attempt >= 50 {
			return v, fmt.Errorf("kv %s update %s: too much contention: %w", kv.Bucket(), key, err)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Pipeline reads a pipeline spec; a pipeline that was never applied is a
// permanent NotFoundError.
func Pipeline(ctx context.Context, kv jetstream.KeyValue, name string) (*pipeline.Pipeline, uint64, error) {
	if err := events.ValidatePipeline(name); err != nil {
		return nil, 0, &NotFoundError{What: fmt.Sprintf("pipeline %q (%v)", name, err)}
	}
	e, err := kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, &NotFoundError{What: fmt.Sprintf("pipeline %q (apply its spec first: gyre apply -f pipeline.yaml)", name)}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("pipeline %s: %w", name, err)
	}
	p, err := pipeline.Parse(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("stored spec of pipeline %s: %w", name, err)
	}
	return p, e.Revision(), nil
}

// PutObject stores data under key unless an object with the same sha256 is
// already there, and returns its reference; existed reports the latter. Content addressing makes it
// idempotent: storing the same batch twice stores it once.
func PutObject(ctx context.Context, os Objects, key, mediaType string, data []byte) (ref *gyrev1.ObjectRef, existed bool, err error) {
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	ref = &gyrev1.ObjectRef{
		Bucket: os.Name, Key: key, Sha256: digest, SizeBytes: int64(len(data)), MediaType: mediaType,
		Uri: events.ObjectURI(os.Name, key),
	}
	if info, err := os.GetInfo(ctx, key); err == nil && info.Headers.Get("Gyre-Sha256") == digest {
		return ref, true, nil
	}
	meta := jetstream.ObjectMeta{Name: key, Headers: map[string][]string{"Gyre-Sha256": {digest}, "Content-Type": {mediaType}}}
	if _, err := os.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return nil, false, fmt.Errorf("object store %s put %s: %w", ref.Bucket, key, err)
	}
	return ref, false, nil
}

// GetObject reads an object whole; a missing one is a NotFoundError.
func GetObject(ctx context.Context, os Objects, key string) ([]byte, error) {
	r, err := os.Get(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, &NotFoundError{What: fmt.Sprintf("object %s/%s", os.Name, key)}
	}
	if err != nil {
		return nil, fmt.Errorf("object store %s get %s: %w", os.Name, key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("object store %s read %s: %w", os.Name, key, err)
	}
	return data, nil
}

// Lazy opens the buckets on first use and keeps them: a service registers its
// handlers before Run provisions the topology, so the buckets may not exist
// when the service is built. A failed open is retried on the next call.
type Lazy struct {
	js jetstream.JetStream
	mu sync.Mutex
	b  *Buckets
}

// NewLazy returns a Lazy over js.
func NewLazy(js jetstream.JetStream) *Lazy { return &Lazy{js: js} }

// Get returns the buckets, opening them if needed.
func (l *Lazy) Get(ctx context.Context) (*Buckets, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b != nil {
		return l.b, nil
	}
	b, err := Open(ctx, l.js)
	if err != nil {
		return nil, err
	}
	l.b = b
	return b, nil
}
