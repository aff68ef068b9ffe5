package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// Publisher publishes one event and waits until it is stored; *bus.Publisher
// is one.
type Publisher interface {
	Publish(ctx context.Context, ev event.Event) error
}

// What ApplyPipeline did to the stored spec.
const (
	// PipelineCreated: the pipeline did not exist.
	PipelineCreated = "created"
	// PipelineConfigured: the spec changed; it has a new revision.
	PipelineConfigured = "configured"
	// PipelineUnchanged: the same spec was stored already; same revision.
	PipelineUnchanged = "unchanged"
)

// Applied reports what ApplyPipeline did.
type Applied struct {
	// Pipeline is the pipeline's name.
	Pipeline string
	// Action is PipelineCreated, PipelineConfigured or PipelineUnchanged.
	Action string
	// Revision is the spec's revision: the gyre-pipelines KV revision of the
	// pipeline's key, which is what store.Pipeline returns to every service,
	// so that pipeline_revision means the same everywhere. It grows on every
	// change and stays on an unchanged apply.
	Revision uint64
	// Sha256 is the digest of the canonical spec.
	Sha256 string
	// EventID is the id of the pipeline.applied event of this revision.
	EventID string
	// Published is false when the event of this revision had been published
	// already (an unchanged apply) and nothing was sent.
	Published bool
}

// ApplyPipeline makes p the current spec of its pipeline: it writes the
// canonical spec to gyre-pipelines under the pipeline's name (compare-and-set,
// so two concurrent applies cannot lose one another's write) and announces it
// with pipeline.applied, published through pub with ctx (so an apply made on
// behalf of an event inherits its lineage). An unchanged spec writes nothing
// and keeps its revision.
//
// The event's id is deterministic — (pipeline, revision, sha256) — so an
// apply retried after a crash between the write and the publish announces the
// same event again, and an unchanged apply publishes only when the newest
// pipeline.applied of the pipeline is not that event already (it was lost).
// appliedBy says who applied it ("cli", "demo").
func ApplyPipeline(ctx context.Context, js jetstream.JetStream, pub Publisher, p *pipeline.Pipeline, appliedBy string) (Applied, error) {
	name := p.Name()
	if err := events.ValidatePipeline(name); err != nil {
		return Applied{}, bus.Permanentf("apply pipeline: metadata.name: %w", err)
	}
	kv, err := js.KeyValue(ctx, events.BucketPipelines)
	if err != nil {
		return Applied{}, fmt.Errorf("apply pipeline %s: kv bucket %s: %w", name, events.BucketPipelines, err)
	}
	spec, digest := p.Canonical(), p.Digest()
	res := Applied{Pipeline: name, Sha256: digest}
	for attempt := 0; ; attempt++ {
		res.Action, res.Revision, err = writeSpec(ctx, kv, name, spec, digest)
		if err == nil {
			break
		}
		// Another apply of the same pipeline got in between: read again.
		if (!errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err)) || attempt >= 10 {
			return Applied{}, fmt.Errorf("apply pipeline %s: %w", name, err)
		}
	}
	created := res.Action == PipelineCreated
	if res.Action == PipelineUnchanged {
		// Was the stored revision the first one? Then its event said
		// created, and a re-announcement must say so too.
		created, err = firstRevision(ctx, kv, name, res.Revision)
		if err != nil {
			return Applied{}, fmt.Errorf("apply pipeline %s: %w", name, err)
		}
	}
	res.EventID = bus.StableID(events.PipelineApplied, name, fmt.Sprint(res.Revision), digest)
	if res.Action == PipelineUnchanged {
		last, err := lastEventID(ctx, js, name, events.PipelineApplied)
		if err != nil {
			return Applied{}, fmt.Errorf("apply pipeline %s: %w", name, err)
		}
		if last == res.EventID {
			return res, nil
		}
	}
	ev, err := events.New("/gyre", name, &gyrev1.PipelineApplied{
		Pipeline: name, SpecJson: string(spec), Revision: int64(res.Revision), Sha256: digest,
		Created: created, AppliedBy: appliedBy,
	})
	if err != nil {
		return Applied{}, fmt.Errorf("apply pipeline %s: %w", name, err)
	}
	ev.SetID(res.EventID)
	// Left empty, the source is the publisher's own (/gyre/<who>).
	ev.SetSource("")
	if err := pub.Publish(ctx, ev); err != nil {
		return Applied{}, fmt.Errorf("apply pipeline %s: stored revision %d, but announcing it failed (apply again to retry): %w", name, res.Revision, err)
	}
	res.Published = true
	return res, nil
}

// writeSpec stores spec under name unless it is there already.
func writeSpec(ctx context.Context, kv jetstream.KeyValue, name string, spec []byte, digest string) (string, uint64, error) {
	e, err := kv.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := kv.Create(ctx, name, spec)
		return PipelineCreated, rev, err
	case err != nil:
		return "", 0, fmt.Errorf("kv %s get %s: %w", kv.Bucket(), name, err)
	}
	if sum := sha256.Sum256(e.Value()); hex.EncodeToString(sum[:]) == digest {
		return PipelineUnchanged, e.Revision(), nil
	}
	rev, err := kv.Update(ctx, name, spec, e.Revision())
	return PipelineConfigured, rev, err
}

// firstRevision reports whether rev is the first revision of key that the
// bucket remembers, and the only one.
func firstRevision(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64) (bool, error) {
	hist, err := kv.History(ctx, key)
	if err != nil {
		return false, fmt.Errorf("kv %s history %s: %w", kv.Bucket(), key, err)
	}
	return len(hist) == 1 && hist[0].Revision() == rev, nil
}

// lastEventID returns the id of the newest stored event of a name for a
// pipeline, or "" when there is none.
func lastEventID(ctx context.Context, js jetstream.JetStream, pipeline, name string) (string, error) {
	subject, err := events.Subject(pipeline, name)
	if err != nil {
		return "", err
	}
	spec, _ := events.Lookup(name)
	s, err := js.Stream(ctx, spec.Stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", spec.Stream, err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("stream %s: last message on %s: %w", spec.Stream, subject, err)
	}
	return msg.Header.Get(bus.HeaderID), nil
}
