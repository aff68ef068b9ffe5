package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
)

// eventsOptions are the flags of `gyre events`.
type eventsOptions struct {
	clientOptions
	follow   bool
	typ      string
	pipeline string
	output   string
	since    time.Duration
}

func newEventsCmd() *cobra.Command {
	var o eventsOptions
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the lifecycle events of the loop, or follow them as they happen",
		Long: `Print Gyre's lifecycle events — every CloudEvent stored in the GYRE_EVENTS stream,
oldest first — and exit; with -f, keep following new ones until Ctrl-C.

Filter by event with --type, which takes a catalog name (model.promoted) or a full
CloudEvents type (dev.gyre.model.promoted.v1), and by pipeline with --pipeline;
the filters become a NATS subject filter (gyre.ev.<pipeline>.<noun>.<verb>), so the
server does the filtering. --type prediction.logged reads the GYRE_PREDICTIONS
stream instead. --since 10m starts ten minutes ago instead of at the beginning.

-o table (default) prints one aligned line per event:
  TIME  PIPELINE  TYPE (catalog name)  ID  CORRELATION (the cascade it belongs to)  SOURCE
-o json prints each event as one line of structured-mode CloudEvents JSON, for jq
or any CloudEvents SDK.

The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json).

Event names: ` + strings.Join(events.Names(), ", "),
		Example: `  # everything stored so far
  gyre events

  # follow promotions of one pipeline
  gyre events -f --type model.promoted --pipeline elec2

  # the last hour as JSON, one CloudEvent per line
  gyre events --since 1h -o json | jq .type

  # a server that gyre up did not start
  gyre events --nats nats://nats.example:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEvents(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new events until Ctrl-C")
	f.StringVar(&o.typ, "type", "", "only events of this name (model.promoted) or CloudEvents type")
	f.StringVar(&o.pipeline, "pipeline", "", "only events of this pipeline")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&o.since, "since", 0, "start this long ago (e.g. 30m, 2h) instead of at the oldest stored event")
	o.clientOptions.register(f)
	return cmd
}

// query resolves the flags into the stream and subject filter to read.
func (o eventsOptions) query() (stream, filter string, err error) {
	if err := checkOutput(o.output, "table", "json"); err != nil {
		return "", "", err
	}
	if o.since < 0 {
		return "", "", fmt.Errorf("--since %s: must not be negative", o.since)
	}
	stream, name := events.StreamEvents, ""
	if o.typ != "" {
		spec, err := events.ResolveType(o.typ)
		if err != nil {
			return "", "", fmt.Errorf("--type: %w", err)
		}
		stream, name = spec.Stream, spec.Name
	}
	filter, err = events.FilterSubject(o.pipeline, name)
	if err != nil {
		return "", "", fmt.Errorf("--pipeline: %w", err)
	}
	return stream, filter, nil
}

func runEvents(ctx context.Context, o eventsOptions, stdout, stderr io.Writer) error {
	stream, filter, err := o.query()
	if err != nil {
		return err
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()

	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if o.since > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		start := time.Now().Add(-o.since)
		cfg.OptStartTime = &start
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s not found on %s: start Gyre with 'gyre up', which provisions it", stream, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		return fmt.Errorf("read %s (%s): %w", stream, filter, err)
	}
	// What is stored now is what a run without -f prints.
	var pending uint64
	if info := cons.CachedInfo(); info != nil {
		pending = info.NumPending
	}
	p := newPrinter(o.output, stdout)
	if !o.follow && pending == 0 {
		if o.output == "table" {
			fmt.Fprintf(stderr, "No events in %s matching %s.\n", stream, filter)
		}
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	defer it.Stop()
	for n := uint64(0); o.follow || n < pending; n++ {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return fmt.Errorf("read %s: %w", stream, err)
		}
		ev, err := bus.Decode(msg.Headers(), msg.Data())
		if err != nil {
			seq := uint64(0)
			if md, mdErr := msg.Metadata(); mdErr == nil {
				seq = md.Sequence.Stream
			}
			fmt.Fprintf(stderr, "skipping message %d on %s: %v\n", seq, msg.Subject(), err)
			continue
		}
		if err := p.print(msg.Subject(), ev); err != nil {
			return err
		}
	}
	return nil
}

// printer writes events in one output format.
type printer interface {
	print(subject string, ev event.Event) error
}

func newPrinter(format string, w io.Writer) printer {
	if format == "json" {
		return jsonPrinter{w: w}
	}
	return &tablePrinter{w: w, widths: []int{24, 8, 21, 36, 36, 6}}
}

// jsonPrinter writes structured-mode CloudEvents JSON, one event per line.
type jsonPrinter struct{ w io.Writer }

func (p jsonPrinter) print(_ string, ev event.Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event %s: %w", ev.ID(), err)
	}
	_, err = fmt.Fprintf(p.w, "%s\n", body)
	return err
}

// tablePrinter writes aligned columns as events come (so -f can stream): the
// widths start at what the catalog's values need and grow when a value is
// wider, so most lines align without buffering.
type tablePrinter struct {
	w       io.Writer
	widths  []int
	started bool
}

var tableHeader = []string{"TIME", "PIPELINE", "TYPE", "ID", "CORRELATION", "SOURCE"}

func (p *tablePrinter) print(subject string, ev event.Event) error {
	if !p.started {
		p.started = true
		if err := p.row(tableHeader); err != nil {
			return err
		}
	}
	typ := ev.Type()
	if spec, ok := events.LookupType(typ); ok {
		typ = spec.Name
	}
	return p.row([]string{
		ev.Time().UTC().Format("2006-01-02T15:04:05.000Z"),
		bus.PipelineOf(subject, ev),
		typ,
		ev.ID(),
		bus.Ext(ev, bus.ExtCorrelationID),
		ev.Source(),
	})
}

func (p *tablePrinter) row(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		if i == len(cells)-1 {
			b.WriteString(c)
			break
		}
		p.widths[i] = max(p.widths[i], len(c))
		fmt.Fprintf(&b, "%-*s  ", p.widths[i], c)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}
