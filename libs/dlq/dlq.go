// Package dlq reads, redrives and purges Gyre's dead letters: the messages
// a handler could not handle, which the bus router (libs/bus) stores in the
// GYRE_DLQ stream on gyre.dlq.<service>, headers and body intact, with
// Gyre-Dlq-* headers saying who failed, how and why.
//
// Redrive republishes a dead letter to its original subject as it was
// (same CloudEvents id, same headers, the body byte for byte) once its
// cause is fixed. It is idempotent: gyre-state records each redrive under
// dlq.redriven.<seq>, so a second redrive of the same dead letter is
// refused unless asked for explicitly (RedriveOptions.Again).
//
// Everything here reads the streams as any identity may; Redrive and
// Purge publish to any subject and delete stream messages, which only the
// admin identity may do (docs/security.md).
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
)

// Headers a redrive adds to the republished message.
const (
	// HeaderRedriveAttempt counts the redrives of the original message, 1
	// for the first: across dead letters too, when a redriven message
	// failed again and its new dead letter is redriven.
	HeaderRedriveAttempt = "Gyre-Redrive-Attempt"
	// HeaderRedriveOf is the GYRE_DLQ sequence of the dead letter redriven.
	HeaderRedriveOf = "Gyre-Redrive-Of"
)

// Kinds are the dead-letter kinds the bus router writes in Gyre-Dlq-Kind
// (libs/bus errorKind): a --kind filter must name one of them.
func Kinds() []string {
	return []string{"malformed", "contract", "permanent", "panic", "retries-exhausted"}
}

// ErrNotFound is wrapped by the errors about a dead letter that is not in
// GYRE_DLQ (never was, or was purged).
var ErrNotFound = errors.New("dead letter not found")

// Filter selects dead letters; its zero value selects every one.
type Filter struct {
	// Service is the service whose handler failed (Gyre-Dlq-Service).
	Service string
	// Reason matches a substring of the reason, case-insensitively.
	Reason string
	// Kind is the failure's kind (see Kinds).
	Kind string
	// Pipeline is the pipeline of the original subject (or, for a job,
	// of its pipeline extension).
	Pipeline string
	// Since and Until bound when the dead letter was stored, inclusive;
	// zero is unbounded.
	Since, Until time.Time
	// Limit keeps the newest Limit matches; 0 keeps every one.
	Limit int
}

// FilterError is a filter setting that cannot be used. Field names it as
// the CLI flag and the HTTP query parameter do: service, reason, kind,
// pipeline, since, until, limit.
type FilterError struct {
	Field string
	Value string
	Err   error
}

func (e *FilterError) Error() string { return fmt.Sprintf("%s %q: %v", e.Field, e.Value, e.Err) }
func (e *FilterError) Unwrap() error { return e.Err }

// Validate checks the filter and names the setting that is wrong.
func (f Filter) Validate() error {
	var errs []error
	if f.Service != "" {
		if err := events.ValidateService(f.Service); err != nil {
			errs = append(errs, &FilterError{Field: "service", Value: f.Service, Err: err})
		}
	}
	if f.Pipeline != "" {
		if err := events.ValidatePipeline(f.Pipeline); err != nil {
			errs = append(errs, &FilterError{Field: "pipeline", Value: f.Pipeline, Err: err})
		}
	}
	if f.Kind != "" && !slices.Contains(Kinds(), f.Kind) {
		errs = append(errs, &FilterError{Field: "kind", Value: f.Kind, Err: fmt.Errorf("want one of %s", strings.Join(Kinds(), ", "))})
	}
	if f.Limit < 0 {
		errs = append(errs, &FilterError{Field: "limit", Value: strconv.Itoa(f.Limit), Err: errors.New("must not be negative")})
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		errs = append(errs, &FilterError{Field: "until", Value: f.Until.Format(time.RFC3339), Err: fmt.Errorf("is before since (%s)", f.Since.Format(time.RFC3339))})
	}
	return errors.Join(errs...)
}

// Empty reports whether the filter selects every dead letter.
func (f Filter) Empty() bool { return f == Filter{} }

// ParseTime reads a since or until value: a duration ago (30m, 2h, 48h) or
// an RFC 3339 time; "" is the zero time (unbounded).
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, errors.New("a duration ago must not be negative")
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New("want a duration ago (30m, 2h) or an RFC 3339 time (2025-01-02T15:04:05Z)")
}

// ParseFilter reads a filter from query parameters named as the Filter's
// fields: service, reason, kind, pipeline, since, until (see ParseTime) and
// limit. The error is a *FilterError naming the parameter, or several
// joined.
func ParseFilter(q url.Values, now time.Time) (Filter, error) {
	f := Filter{Service: q.Get("service"), Reason: q.Get("reason"), Kind: q.Get("kind"), Pipeline: q.Get("pipeline")}
	var errs []error
	var err error
	if f.Since, err = ParseTime(q.Get("since"), now); err != nil {
		errs = append(errs, &FilterError{Field: "since", Value: q.Get("since"), Err: err})
	}
	if f.Until, err = ParseTime(q.Get("until"), now); err != nil {
		errs = append(errs, &FilterError{Field: "until", Value: q.Get("until"), Err: err})
	}
	if s := q.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 {
			errs = append(errs, &FilterError{Field: "limit", Value: s, Err: errors.New("want a positive integer")})
		}
	}
	if len(errs) > 0 {
		return Filter{}, errors.Join(errs...)
	}
	return f, f.Validate()
}

// Entry is one dead letter, as its headers describe it.
type Entry struct {
	// Seq is its sequence in GYRE_DLQ: what Get, Redrive and Delete take.
	Seq uint64 `json:"seq"`
	// Time is when GYRE_DLQ stored it.
	Time time.Time `json:"time"`
	// Service and Handler name the consumer whose handler failed.
	Service string `json:"service"`
	Handler string `json:"handler"`
	// Kind and Reason say how and why (see Kinds).
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	// Deliveries is how many times the message was delivered to the handler.
	Deliveries uint64 `json:"deliveries"`
	// Subject, Stream and StreamSeq are where the original message was.
	Subject   string `json:"subject"`
	Stream    string `json:"stream"`
	StreamSeq uint64 `json:"streamSeq,omitempty"`
	// Pipeline is the original subject's pipeline ("" when none says).
	Pipeline string `json:"pipeline,omitempty"`
	// EventID and EventType are the original CloudEvent's id and type.
	EventID   string `json:"ceId,omitempty"`
	EventType string `json:"ceType,omitempty"`
	// RedriveOf is the dead letter whose redrive this message was, when it
	// failed again after a redrive; Attempt is that redrive's attempt.
	RedriveOf uint64 `json:"redriveOf,omitempty"`
	Attempt   int    `json:"attempt,omitempty"`
	// Redriven is its redrive, nil if it was never redriven.
	Redriven *RedriveRecord `json:"redriven,omitempty"`
}

// entryOf reads a dead letter's headers.
func entryOf(seq uint64, stored time.Time, h nats.Header) Entry {
	e := Entry{
		Seq: seq, Time: stored.UTC(),
		Service: h.Get(bus.HeaderDLQService), Handler: h.Get(bus.HeaderDLQHandler),
		Kind: h.Get(bus.HeaderDLQKind), Reason: h.Get(bus.HeaderDLQReason),
		Subject: h.Get(bus.HeaderDLQSubject), Stream: h.Get(bus.HeaderDLQStream),
		EventID: h.Get(bus.HeaderID), EventType: h.Get(bus.HeaderType),
	}
	e.Deliveries, _ = strconv.ParseUint(h.Get(bus.HeaderDLQDeliveries), 10, 64)
	e.StreamSeq, _ = strconv.ParseUint(h.Get(bus.HeaderDLQStreamSeq), 10, 64)
	e.RedriveOf, _ = strconv.ParseUint(h.Get(HeaderRedriveOf), 10, 64)
	e.Attempt, _ = strconv.Atoi(h.Get(HeaderRedriveAttempt))
	if p, _, err := events.ParseSubject(e.Subject); err == nil {
		e.Pipeline = p
	} else {
		// A job's subject names its pool, not its pipeline; the event says.
		e.Pipeline = h.Get(bus.HeaderPrefix + bus.ExtPipeline)
	}
	return e
}

func (f Filter) matches(e Entry) bool {
	switch {
	case f.Service != "" && e.Service != f.Service,
		f.Kind != "" && e.Kind != f.Kind,
		f.Pipeline != "" && e.Pipeline != f.Pipeline,
		f.Reason != "" && !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(f.Reason)),
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && e.Time.After(f.Until):
		return false
	}
	return true
}

// Page is what List returns.
type Page struct {
	// DeadLetters are the matches kept, oldest first.
	DeadLetters []Entry `json:"deadLetters"`
	// Matched counts every match, also those Limit left out.
	Matched int `json:"matched"`
}

// List reads GYRE_DLQ with an ordered consumer (nothing durable is left on
// the server) and returns the dead letters f selects, each with its
// redrive if it has one. The service and the start time are filtered by
// the server; the rest here.
func List(ctx context.Context, js jetstream.JetStream, f Filter) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	page := Page{DeadLetters: []Entry{}}
	err := scan(ctx, js, f, func(e Entry) {
		page.Matched++
		page.DeadLetters = append(page.DeadLetters, e)
		// The newest Limit: drop the oldest once there are more.
		if f.Limit > 0 && len(page.DeadLetters) > f.Limit {
			page.DeadLetters = slices.Delete(page.DeadLetters, 0, 1)
		}
	})
	if err != nil {
		return Page{}, err
	}
	redrives, err := redrivesOf(ctx, js)
	if err != nil {
		return Page{}, err
	}
	for i := range page.DeadLetters {
		e := &page.DeadLetters[i]
		if r, ok := redrives[e.Seq]; ok && r.isFor(e.Time) {
			e.Redriven = &r
		}
	}
	return page, nil
}

// nextWait bounds the wait for the next pending dead letter.
const nextWait = 5 * time.Second

// scan calls fn with each dead letter f selects, in stream order: those
// stored when it starts (the ones stored meanwhile are left for the next).
func scan(ctx context.Context, js jetstream.JetStream, f Filter, fn func(Entry)) error {
	subject := events.DLQPrefix + ".>"
	if f.Service != "" {
		s, err := events.DLQSubject(f.Service)
		if err != nil {
			return &FilterError{Field: "service", Value: f.Service, Err: err}
		}
		subject = s
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !f.Since.IsZero() {
		start := f.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamDLQ, cfg)
	if err != nil {
		return streamError(err)
	}
	var pending uint64
	if info := cons.CachedInfo(); info != nil {
		pending = info.NumPending
	}
	if pending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", events.StreamDLQ, err)
	}
	defer it.Stop()
	for n := uint64(0); n < pending; n++ {
		nctx, cancel := context.WithTimeout(ctx, nextWait)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(nctx.Err(), context.DeadlineExceeded) {
			// What was pending when we began was deleted meanwhile (a
			// purge): everything left has been read.
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", events.StreamDLQ, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", events.StreamDLQ, err)
		}
		e := entryOf(md.Sequence.Stream, md.Timestamp, msg.Headers())
		if !f.Until.IsZero() && e.Time.After(f.Until) {
			// The stream is in time order: nothing later matches.
			return nil
		}
		if f.matches(e) {
			fn(e)
		}
		if md.NumPending == 0 {
			return nil
		}
	}
	return nil
}

func streamError(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s not found: start Gyre with 'gyre up', which provisions it: %w", events.StreamDLQ, err)
	}
	return fmt.Errorf("read %s: %w", events.StreamDLQ, err)
}

// DeadLetter is one dead letter with everything stored: its headers (the
// original's and the Gyre-Dlq-* ones) and its body.
type DeadLetter struct {
	Entry
	Header nats.Header
	Data   []byte
}

// Original returns the headers of the original message: the stored ones
// without the dead letter's Gyre-Dlq-* and without the Nats-* transport
// headers, which belong to a publish (its Nats-Msg-Id, its expectations),
// not to the message.
func (d DeadLetter) Original() nats.Header {
	h := make(nats.Header, len(d.Header))
	for k, v := range d.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "gyre-dlq-") || strings.HasPrefix(lk, "nats-") {
			continue
		}
		h[k] = slices.Clone(v)
	}
	return h
}

// Get returns the dead letter at seq of GYRE_DLQ, with its redrive if it
// has one; the error wraps ErrNotFound when there is none.
func Get(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	s, err := js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return DeadLetter{}, streamError(err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("%w: %s has no message %d (gyre dlq ls lists them)", ErrNotFound, events.StreamDLQ, seq)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("get dead letter %d: %w", seq, err)
	}
	d := DeadLetter{Entry: entryOf(raw.Sequence, raw.Time, raw.Header), Header: raw.Header, Data: raw.Data}
	kv, err := stateBucket(ctx, js)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return d, nil // never provisioned: nothing was redriven
	}
	if err != nil {
		return DeadLetter{}, err
	}
	if st, err := getRecord(ctx, kv, seq); err != nil {
		return DeadLetter{}, err
	} else if st != nil && st.rec.isFor(d.Time) {
		d.Redriven = &st.rec
	}
	return d, nil
}

// View is a dead letter for people and JSON: its entry, every header, and
// the body as JSON when it is JSON, else as text when it is UTF-8, else
// base64 (encoding/json's []byte).
type View struct {
	Entry
	Headers    map[string][]string `json:"headers"`
	Body       any                 `json:"body,omitempty"`
	BodyText   string              `json:"bodyText,omitempty"`
	BodyBase64 []byte              `json:"bodyBase64,omitempty"`
}

// View returns the dead letter's view.
func (d DeadLetter) View() View {
	v := View{Entry: d.Entry, Headers: map[string][]string(d.Header)}
	switch {
	case len(d.Data) == 0:
	case json.Valid(d.Data):
		v.Body = json.RawMessage(d.Data)
	case utf8.Valid(d.Data):
		v.BodyText = string(d.Data)
	default:
		v.BodyBase64 = d.Data
	}
	return v
}
