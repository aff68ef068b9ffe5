package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
)

// ClaimTimeout is how long an unfinished redrive holds off another redrive
// of the same dead letter. It is longer than a redrive takes, and shorter
// than the streams' duplicate window (events.DedupWindow): a redrive that
// resumes a crashed one republishes under the same message id, so that if
// the crashed one had published, JetStream stores the message once.
const ClaimTimeout = time.Minute

// RedriveRecord is one redrive of a dead letter: what gyre-state records under
// dlq.redriven.<seq> (RedriveKey), and what Redrive returns.
type RedriveRecord struct {
	// Seq is the dead letter's sequence in GYRE_DLQ.
	Seq uint64 `json:"seq"`
	// Attempt counts the redrives of the original message (see
	// HeaderRedriveAttempt).
	Attempt int `json:"attempt"`
	// MsgID is the republished message's Nats-Msg-Id:
	// redrive-<seq>-<attempt>.
	MsgID string `json:"msgId"`
	// Subject and Stream are where it was republished; StreamSeq is its
	// sequence there.
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	StreamSeq uint64 `json:"streamSeq,omitempty"`
	// Duplicate is true when the stream already held the message id (a
	// resumed redrive whose first try had published): it is stored once.
	Duplicate bool `json:"duplicate,omitempty"`
	// ClaimedAt is when the redrive began; At when the stream stored the
	// message (zero while it is under way, and in a dry run).
	ClaimedAt time.Time `json:"claimedAt"`
	At        time.Time `json:"at,omitzero"`
	// DeadLetteredAt is when GYRE_DLQ stored the dead letter: it ties the
	// record to that dead letter, since a stream made again numbers its
	// messages from 1 again.
	DeadLetteredAt time.Time `json:"deadLetteredAt"`
}

// Done reports whether the message was republished.
func (r RedriveRecord) Done() bool { return !r.At.IsZero() }

func (r RedriveRecord) isFor(deadLettered time.Time) bool {
	return r.DeadLetteredAt.Equal(deadLettered)
}

// RedriveKey is the gyre-state key of a dead letter's redrive record.
func RedriveKey(seq uint64) string { return redrivePrefix + strconv.FormatUint(seq, 10) }

const redrivePrefix = "dlq.redriven."

// ErrAlreadyRedriven is matched (errors.Is) by an *AlreadyRedrivenError.
var ErrAlreadyRedriven = errors.New("dead letter already redriven")

// ErrNotRedrivable is wrapped by the errors about a dead letter that names
// no subject Redrive may publish to.
var ErrNotRedrivable = errors.New("dead letter cannot be redriven")

// AlreadyRedrivenError refuses a redrive of a dead letter that was
// redriven already (RedriveOptions.Again redrives it once more), or that
// another redrive is republishing right now.
type AlreadyRedrivenError struct{ Record RedriveRecord }

func (e *AlreadyRedrivenError) Error() string {
	r := e.Record
	if !r.Done() {
		return fmt.Sprintf("dead letter %d is being redriven (attempt %d, begun at %s)", r.Seq, r.Attempt, r.ClaimedAt.Format(time.RFC3339))
	}
	return fmt.Sprintf("dead letter %d already redriven at %s (attempt %d, %s seq %d)", r.Seq, r.At.Format(time.RFC3339), r.Attempt, r.Stream, r.StreamSeq)
}

// Is makes errors.Is(err, ErrAlreadyRedriven) true.
func (e *AlreadyRedrivenError) Is(target error) bool { return target == ErrAlreadyRedriven }

// RedriveOptions tune Redrive.
type RedriveOptions struct {
	// Again redrives a dead letter that was redriven already, as the next
	// attempt.
	Again bool
	// DryRun checks and returns what would be redriven, and publishes and
	// records nothing.
	DryRun bool
}

// Redrive republishes the dead letter at seq to its original subject, as
// it was: its headers without the Gyre-Dlq-* ones, its body byte for byte,
// its CloudEvents id unchanged, plus Gyre-Redrive-Attempt and
// Gyre-Redrive-Of. Every consumer of that subject gets it again, not only
// the one that failed; Gyre's handlers are idempotent (docs/architecture.md).
//
// The Nats-Msg-Id is redrive-<seq>-<attempt>, not the CloudEvents id: a
// failure within the duplicate window would have the stream drop the
// message as a duplicate of the original.
//
// It is idempotent: the redrive is claimed in gyre-state (kv.Create of
// dlq.redriven.<seq>) before the publish, so a dead letter redriven before
// is refused with an *AlreadyRedrivenError, also when two redrives race,
// unless opts.Again asks for one more attempt. If the publish fails the
// claim is released, and running Redrive again tries again.
func Redrive(ctx context.Context, js jetstream.JetStream, seq uint64, opts RedriveOptions) (RedriveRecord, error) {
	d, err := Get(ctx, js, seq)
	if err != nil {
		return RedriveRecord{}, err
	}
	subject, stream, err := target(d)
	if err != nil {
		return RedriveRecord{}, err
	}
	kv, err := stateBucket(ctx, js)
	if err != nil {
		return RedriveRecord{}, fmt.Errorf("redrive dead letter %d: %w", seq, err)
	}
	prev, err := getRecord(ctx, kv, seq)
	if err != nil {
		return RedriveRecord{}, err
	}
	now := time.Now().UTC()
	// A message that failed again after a redrive carries its attempt: the
	// count goes on.
	attempt := d.Attempt + 1
	if prev != nil && prev.rec.isFor(d.Time) {
		p := prev.rec
		switch {
		case !p.Done() && now.Sub(p.ClaimedAt) < ClaimTimeout:
			return p, &AlreadyRedrivenError{Record: p}
		case !p.Done():
			// A redrive that never finished (its process died): resume it
			// under the same message id.
			attempt = p.Attempt
		case !opts.Again:
			return p, &AlreadyRedrivenError{Record: p}
		default:
			attempt = p.Attempt + 1
		}
	}
	rec := RedriveRecord{
		Seq: seq, Attempt: attempt, MsgID: fmt.Sprintf("redrive-%d-%d", seq, attempt),
		Subject: subject, Stream: stream, ClaimedAt: now, DeadLetteredAt: d.Time,
	}
	if opts.DryRun {
		return rec, nil
	}

	key := RedriveKey(seq)
	claim, err := json.Marshal(rec)
	if err != nil {
		return RedriveRecord{}, fmt.Errorf("redrive dead letter %d: %w", seq, err)
	}
	var claimRev uint64
	if prev == nil {
		claimRev, err = kv.Create(ctx, key, claim)
	} else {
		claimRev, err = kv.Update(ctx, key, claim, prev.rev)
	}
	if isConflict(err) {
		// Another redrive claimed it between our read and our write.
		cur, gerr := getRecord(ctx, kv, seq)
		if gerr != nil || cur == nil {
			return RedriveRecord{}, errors.Join(fmt.Errorf("redrive dead letter %d: another redrive claimed it: %w", seq, err), gerr)
		}
		return cur.rec, &AlreadyRedrivenError{Record: cur.rec}
	}
	if err != nil {
		return RedriveRecord{}, fmt.Errorf("redrive dead letter %d: claim %s in %s: %w", seq, key, events.BucketState, err)
	}

	msg := &nats.Msg{Subject: subject, Header: d.Original(), Data: d.Data}
	msg.Header.Set(HeaderRedriveAttempt, strconv.Itoa(attempt))
	msg.Header.Set(HeaderRedriveOf, strconv.FormatUint(seq, 10))
	msg.Header.Set(nats.MsgIdHdr, rec.MsgID)
	// The server checks that the subject lands in the stream the dead letter
	// came from.
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(stream))
	if err != nil {
		pubErr := fmt.Errorf("redrive dead letter %d to %s: %w", seq, subject, err)
		// Released so that the next try need not wait for ClaimTimeout; if it
		// was published after all, the next try's message id is the same and
		// the stream stores it once.
		if rerr := release(context.WithoutCancel(ctx), kv, key, claimRev, prev); rerr != nil {
			return RedriveRecord{}, errors.Join(pubErr, fmt.Errorf("release the claim %s (a redrive can resume it after %s): %w", key, ClaimTimeout, rerr))
		}
		return RedriveRecord{}, pubErr
	}
	rec.At, rec.StreamSeq, rec.Duplicate = time.Now().UTC(), ack.Sequence, ack.Duplicate
	done, err := json.Marshal(rec)
	if err == nil {
		_, err = kv.Update(context.WithoutCancel(ctx), key, done, claimRev)
	}
	if err != nil {
		return rec, fmt.Errorf("dead letter %d was republished to %s (%s seq %d), but recording that in %s failed: %w; "+
			"a redrive after %s resumes it under the same message id", seq, subject, stream, ack.Sequence, events.BucketState, err, ClaimTimeout)
	}
	return rec, nil
}

// release undoes a claim whose publish failed: back to the record before
// it, or none.
func release(ctx context.Context, kv jetstream.KeyValue, key string, claimRev uint64, prev *stored) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if prev == nil {
		return kv.Delete(ctx, key, jetstream.LastRevision(claimRev))
	}
	_, err := kv.Update(ctx, key, prev.raw, claimRev)
	return err
}

// target is where a dead letter is redriven: its original subject, which
// must be a concrete subject of one of Gyre's streams other than GYRE_DLQ
// (and, when the dead letter names its stream, of that one). A service may
// publish its own dead letters with whatever headers it likes, and the
// redrive runs as the admin, who may publish anything: without this check
// a forged Gyre-Dlq-Subject would have the admin publish where it names.
func target(d DeadLetter) (subject, stream string, err error) {
	subject = d.Subject
	if subject == "" {
		return "", "", fmt.Errorf("%w: dead letter %d has no %s header", ErrNotRedrivable, d.Seq, "Gyre-Dlq-Subject")
	}
	if strings.ContainsAny(subject, "*> \t\r\n") {
		return "", "", fmt.Errorf("%w: dead letter %d names subject %q, not a concrete subject", ErrNotRedrivable, d.Seq, subject)
	}
	for _, s := range events.Streams() {
		if s.Name == events.StreamDLQ {
			continue
		}
		for _, filter := range s.Subjects {
			if subjectMatches(filter, subject) {
				if d.Stream != "" && d.Stream != s.Name {
					return "", "", fmt.Errorf("%w: dead letter %d says it came from stream %s, but its subject %s is %s's", ErrNotRedrivable, d.Seq, d.Stream, subject, s.Name)
				}
				return subject, s.Name, nil
			}
		}
	}
	return "", "", fmt.Errorf("%w: dead letter %d names subject %q, which no Gyre stream but %s holds", ErrNotRedrivable, d.Seq, subject, events.StreamDLQ)
}

// subjectMatches reports whether a concrete subject matches a NATS subject
// filter (* one token, > the rest).
func subjectMatches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, f := range ft {
		if f == ">" {
			return len(st) > i
		}
		if i >= len(st) || st[i] == "" || (f != "*" && f != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// stored is a redrive record as the bucket holds it.
type stored struct {
	rec RedriveRecord
	raw []byte
	rev uint64
}

func stateBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, events.BucketState)
	if err != nil {
		return nil, fmt.Errorf("bucket %s (start Gyre with 'gyre up', which provisions it): %w", events.BucketState, err)
	}
	return kv, nil
}

// getRecord returns the redrive record of seq, nil when it has none.
func getRecord(ctx context.Context, kv jetstream.KeyValue, seq uint64) (*stored, error) {
	e, err := kv.Get(ctx, RedriveKey(seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", RedriveKey(seq), err)
	}
	var r RedriveRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("read %s: %w", RedriveKey(seq), err)
	}
	return &stored{rec: r, raw: e.Value(), rev: e.Revision()}, nil
}

// redrivesOf returns every redrive record, by dead letter: one watch of
// the keys rather than one read per dead letter. No bucket, no records.
func redrivesOf(ctx context.Context, js jetstream.JetStream) (map[uint64]RedriveRecord, error) {
	out := map[uint64]RedriveRecord{}
	kv, err := js.KeyValue(ctx, events.BucketState)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", events.BucketState, err)
	}
	w, err := kv.Watch(ctx, redrivePrefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read %s*: %w", redrivePrefix, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s*: %w", redrivePrefix, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				// nil marks the end of the values stored now.
				return out, nil
			}
			var r RedriveRecord
			if json.Unmarshal(e.Value(), &r) == nil {
				out[r.Seq] = r
			}
		}
	}
}

// Delete deletes dead letters from GYRE_DLQ for good, and their redrive
// records. Only the admin identity may. An unknown seq is an error
// wrapping ErrNotFound; the others are deleted all the same.
func Delete(ctx context.Context, js jetstream.JetStream, seqs ...uint64) error {
	s, err := js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return streamError(err)
	}
	kv, err := js.KeyValue(ctx, events.BucketState)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("bucket %s: %w", events.BucketState, err)
	}
	var errs []error
	for _, seq := range seqs {
		if err := s.DeleteMsg(ctx, seq); err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) || strings.Contains(err.Error(), "no message found") {
				err = fmt.Errorf("%w: %s has no message %d", ErrNotFound, events.StreamDLQ, seq)
			}
			errs = append(errs, fmt.Errorf("delete dead letter %d: %w", seq, err))
			continue
		}
		if kv == nil {
			continue
		}
		// Only where there is one: a delete marker per purged dead letter
		// would pile up in the bucket.
		if rec, err := getRecord(ctx, kv, seq); err != nil {
			errs = append(errs, err)
		} else if rec != nil {
			if err := kv.Purge(ctx, RedriveKey(seq)); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", RedriveKey(seq), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Purge deletes the dead letters f selects (see Delete) and returns their
// sequences; the error names those that could not be deleted.
func Purge(ctx context.Context, js jetstream.JetStream, f Filter) ([]uint64, error) {
	page, err := List(ctx, js, f)
	if err != nil {
		return nil, err
	}
	seqs := make([]uint64, 0, len(page.DeadLetters))
	for _, e := range page.DeadLetters {
		seqs = append(seqs, e.Seq)
	}
	return seqs, Delete(ctx, js, seqs...)
}
