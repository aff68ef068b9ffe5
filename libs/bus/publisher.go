package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
)

// Publisher publishes CloudEvents in binary mode on JetStream and waits for
// the server's acknowledgement: a nil error means the event is stored.
type Publisher struct {
	js      jetstream.JetStream
	source  string
	timeout time.Duration
	metrics *Metrics
	service string
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithPublishTimeout bounds each publish (default 5s) when ctx has no earlier deadline.
func WithPublishTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) { p.timeout = d }
}

// WithPublisherMetrics counts published events.
func WithPublisherMetrics(m *Metrics) PublisherOption {
	return func(p *Publisher) { p.metrics = m }
}

// NewPublisher returns a publisher whose events have source /gyre/<service>
// unless they set their own.
func NewPublisher(js jetstream.JetStream, service string, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, source: "/gyre/" + service, timeout: 5 * time.Second, service: service}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Source returns the source attribute the publisher stamps.
func (p *Publisher) Source() string { return p.source }

// SubjectOf returns the NATS subject of a catalog event: its type names the
// event and its pipeline extension (or, failing that, its CloudEvents subject)
// names the pipeline.
func SubjectOf(ev event.Event) (string, error) {
	spec, ok := events.LookupType(ev.Type())
	if !ok {
		return "", Permanentf("event type %q is not in the Gyre catalog; use PublishTo with an explicit subject", ev.Type())
	}
	pipeline := extString(ev, ExtPipeline)
	if pipeline == "" {
		pipeline = ev.Subject()
	}
	subject, err := events.Subject(pipeline, spec.Name)
	if err != nil {
		return "", Permanentf("event %s: %w", ev.Type(), err)
	}
	return subject, nil
}

// PipelineOf names the pipeline of an event read from subject: its pipeline
// extension, else its CloudEvents subject, else the pipeline token of the
// NATS subject; "" when none says.
func PipelineOf(subject string, ev event.Event) string {
	if p := extString(ev, ExtPipeline); p != "" {
		return p
	}
	if s := ev.Subject(); s != "" {
		return s
	}
	if p, _, err := events.ParseSubject(subject); err == nil {
		return p
	}
	return ""
}

// Publish stamps ev (see Stamp), publishes it on its catalog subject and waits
// for the publish acknowledgement.
func (p *Publisher) Publish(ctx context.Context, ev event.Event) error {
	p.stamp(ctx, &ev)
	subject, err := SubjectOf(ev)
	if err != nil {
		return err
	}
	_, err = p.publish(ctx, subject, &ev)
	return err
}

// PublishTo publishes ev on an explicit subject (a job queue, a test subject)
// and returns the acknowledgement; Duplicate is true when JetStream had
// already stored an event with the same id.
func (p *Publisher) PublishTo(ctx context.Context, subject string, ev event.Event) (*jetstream.PubAck, error) {
	p.stamp(ctx, &ev)
	return p.publish(ctx, subject, &ev)
}

func (p *Publisher) stamp(ctx context.Context, ev *event.Event) { Stamp(ctx, ev, p.source) }

func (p *Publisher) publish(ctx context.Context, subject string, ev *event.Event) (*jetstream.PubAck, error) {
	msg, err := EncodeBinary(subject, ev)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish %s %s on %s: %w", ev.Type(), ev.ID(), subject, err)
	}
	p.metrics.published(p.service, ev.Type())
	return ack, nil
}

// PublishBatch publishes many events asynchronously — every publish in flight
// at once, acknowledgements awaited together — which is several times the
// throughput of one Publish after another. It returns once every event is
// acknowledged or has failed; the error joins the failures, each naming its
// event id, and the events it does not name are stored.
func (p *Publisher) PublishBatch(ctx context.Context, evs []event.Event) error {
	futures := make([]jetstream.PubAckFuture, len(evs))
	var errs []error
	for i := range evs {
		ev := &evs[i]
		p.stamp(ctx, ev)
		subject, err := SubjectOf(*ev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		msg, err := EncodeBinary(subject, ev)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s: %w", ev.ID(), err))
			continue
		}
		futures[i] = f
	}
	timeout := time.After(p.timeout + time.Duration(len(evs))*time.Millisecond)
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			p.metrics.published(p.service, evs[i].Type())
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("publish %s: %w", evs[i].ID(), err))
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-timeout:
			return errors.Join(append(errs, fmt.Errorf("publish batch: acknowledgements of %d events not received in time", len(evs)-i))...)
		}
	}
	return errors.Join(errs...)
}
