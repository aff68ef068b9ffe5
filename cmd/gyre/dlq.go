package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/dlq"
)

// dlqOptions are the flags the dlq commands share: the connection, the
// filters, the output.
type dlqOptions struct {
	clientOptions
	service, reason, kind, pipeline string
	since, until                    string
	limit                           int
	output                          string
}

// filterFlags adds the filters to a command's flags.
func (o *dlqOptions) filterFlags(f *pflag.FlagSet) {
	f.StringVar(&o.service, "service", "", "only dead letters of this service (ingest, validation, …)")
	f.StringVar(&o.reason, "reason", "", "only dead letters whose reason contains this text (any case)")
	f.StringVar(&o.kind, "kind", "", "only dead letters of this kind: "+strings.Join(dlq.Kinds(), ", "))
	f.StringVar(&o.pipeline, "pipeline", "", "only dead letters of this pipeline")
	f.StringVar(&o.since, "since", "", "only dead letters stored since then: a duration ago (30m, 2h) or an RFC 3339 time")
	f.StringVar(&o.until, "until", "", "only dead letters stored until then: a duration ago (30m, 2h) or an RFC 3339 time")
	f.IntVar(&o.limit, "limit", 0, "only the newest N that match (default: every one)")
}

// filter resolves the filter flags; an error names the flag.
func (o dlqOptions) filter(now time.Time) (dlq.Filter, error) {
	f := dlq.Filter{Service: o.service, Reason: o.reason, Kind: o.kind, Pipeline: o.pipeline, Limit: o.limit}
	var errs []error
	var err error
	if f.Since, err = dlq.ParseTime(o.since, now); err != nil {
		errs = append(errs, fmt.Errorf("--since %q: %w", o.since, err))
	}
	if f.Until, err = dlq.ParseTime(o.until, now); err != nil {
		errs = append(errs, fmt.Errorf("--until %q: %w", o.until, err))
	}
	if len(errs) > 0 {
		return dlq.Filter{}, errors.Join(errs...)
	}
	if err := f.Validate(); err != nil {
		// Each *dlq.FilterError begins with the setting's name, which is
		// the flag's.
		var out []error
		for _, e := range unjoin(err) {
			out = append(out, fmt.Errorf("--%w", e))
		}
		return dlq.Filter{}, errors.Join(out...)
	}
	return f, nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (o dlqOptions) checkOutput() error {
	return checkOutput(o.output, "table", "json")
}

// parseSeqs reads SEQ arguments.
func parseSeqs(args []string) ([]uint64, error) {
	seqs := make([]uint64, 0, len(args))
	for _, a := range args {
		seq, err := strconv.ParseUint(a, 10, 64)
		if err != nil || seq == 0 {
			return nil, fmt.Errorf("SEQ %q: want a dead letter's sequence number, a positive integer ('gyre dlq ls' shows them)", a)
		}
		if !slices.Contains(seqs, seq) {
			seqs = append(seqs, seq)
		}
	}
	return seqs, nil
}

// selection resolves what redrive and purge act on: the SEQ arguments, or
// every dead letter the filters select (--all: with no filter, every one).
func (o dlqOptions) selection(verb string, args []string, all bool, now time.Time) (seqs []uint64, f dlq.Filter, bulk bool, err error) {
	f, err = o.filter(now)
	if err != nil {
		return nil, dlq.Filter{}, false, err
	}
	switch {
	case len(args) > 0 && (all || !f.Empty()):
		return nil, dlq.Filter{}, false, fmt.Errorf("name the dead letters to %s (SEQ...) or select them (--all, filters), not both", verb)
	case len(args) > 0:
		seqs, err = parseSeqs(args)
		return seqs, dlq.Filter{}, false, err
	case !all && f.Empty():
		return nil, dlq.Filter{}, false, fmt.Errorf("which dead letters? name them (SEQ...), select them with filters (--service, --reason, --kind, --pipeline, --since, --until), or pass --all for every one")
	}
	return nil, f, true, nil
}

const dlqConnectionHelp = `The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json), as its admin identity.`

func newDlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, redrive and purge dead letters",
		Long: `Dead letters are the messages a service's handler could not handle: a permanent
error (a payload that breaks its contract, a pipeline not applied yet), a panic, or a
transient error still failing at the consumer's last delivery. The bus stores each in
the GYRE_DLQ stream on gyre.dlq.<service>, intact, with Gyre-Dlq-* headers saying which
handler failed, how (its kind) and why (its reason), and the service moves on.

Once the cause is fixed, redrive the dead letter: it is republished to its original
subject as it was (the same CloudEvents id and headers, the body byte for byte) with
Gyre-Redrive-Attempt: N and Gyre-Redrive-Of: SEQ. Every consumer of that subject gets
it again, not only the one that failed: Gyre's handlers are idempotent. A dead letter
is redriven once: the redrive is recorded in the gyre-state bucket, and another is
refused unless --again.

  gyre dlq ls       the dead letters, with filters
  gyre dlq show     one dead letter: its headers and body
  gyre dlq redrive  republish dead letters to their original subjects
  gyre dlq purge    delete dead letters for good

'gyre up' serves the same over HTTP: GET /v1/dlq (read scope; the filters as query
parameters), GET /v1/dlq/{seq} (read) and POST /v1/dlq/{seq}/redrive (admin;
?again=true).

` + dlqConnectionHelp,
		Example: `  # what failed in the last hour, and why
  gyre dlq ls --since 1h

  # one dead letter in full
  gyre dlq show 42

  # ingest refused batches of a pipeline not applied yet: apply it, then redrive them
  gyre apply -f pipeline.yaml
  gyre dlq redrive --service ingest --reason "not found" --pipeline elec2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDlqLsCmd(), newDlqShowCmd(), newDlqRedriveCmd(), newDlqPurgeCmd())
	return cmd
}

func newDlqLsCmd() *cobra.Command {
	var o dlqOptions
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List dead letters, oldest first",
		Long: `List the dead letters in GYRE_DLQ, oldest first, with the filters given (all of
them must match). --limit N keeps the newest N that match.

-o table (default) prints one line per dead letter:
  SEQ (what show, redrive and purge take)  TIME (stored)  SERVICE  KIND  PIPELINE
  TYPE (the event's catalog name)  REASON (its first line, shortened)
  REDRIVEN (#attempt and when, or -)
-o json prints {"deadLetters": [...], "matched": N}, as GET /v1/dlq does: every header
the dead letter carries as a field, its full reason, and its redrive.

Kinds: ` + strings.Join(dlq.Kinds(), ", ") + `.

` + dlqConnectionHelp,
		Example: `  gyre dlq ls
  gyre dlq ls --service ingest --kind contract --since 24h
  gyre dlq ls --reason "not applied" --pipeline elec2 --limit 20
  gyre dlq ls -o json | jq '.deadLetters[] | select(.redriven == null) | .seq'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDlqLs(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.filterFlags(f)
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	o.clientOptions.register(f)
	return cmd
}

func runDlqLs(ctx context.Context, o dlqOptions, stdout, stderr io.Writer) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	f, err := o.filter(time.Now())
	if err != nil {
		return err
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	page, err := dlq.List(ctx, js, f)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return json.NewEncoder(stdout).Encode(page)
	}
	if page.Matched == 0 {
		if f.Empty() {
			fmt.Fprintf(stderr, "No dead letters in %s.\n", events.StreamDLQ)
		} else {
			fmt.Fprintf(stderr, "No dead letters in %s match the filters.\n", events.StreamDLQ)
		}
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tTIME\tSERVICE\tKIND\tPIPELINE\tTYPE\tREASON\tREDRIVEN")
	for _, e := range page.DeadLetters {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339),
			dashIfEmpty(e.Service), dashIfEmpty(e.Kind), dashIfEmpty(e.Pipeline), dashIfEmpty(eventName(e.EventType)),
			dashIfEmpty(shorten(e.Reason, 60)), redrivenCell(e.Redriven))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(page.DeadLetters) < page.Matched {
		fmt.Fprintf(stderr, "The newest %d of %d matching (--limit).\n", len(page.DeadLetters), page.Matched)
	}
	return nil
}

// eventName is a CloudEvents type's catalog name, when it has one.
func eventName(ceType string) string {
	if spec, ok := events.LookupType(ceType); ok {
		return spec.Name
	}
	return ceType
}

// shorten returns the first line of s, at most n characters.
func shorten(s string, n int) string {
	s, _, cut := strings.Cut(s, "\n")
	if utf8.RuneCountInString(s) > n {
		s, cut = string([]rune(s)[:n-1]), true
	}
	if cut {
		s += "…"
	}
	return s
}

func redrivenCell(r *dlq.RedriveRecord) string {
	switch {
	case r == nil:
		return "-"
	case !r.Done():
		return fmt.Sprintf("#%d under way", r.Attempt)
	}
	return fmt.Sprintf("#%d %s", r.Attempt, r.At.UTC().Format(time.RFC3339))
}

func newDlqShowCmd() *cobra.Command {
	var o dlqOptions
	cmd := &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one dead letter: why it failed, its headers and its body",
		Long: `Show the dead letter SEQ of GYRE_DLQ ('gyre dlq ls' lists them): which handler
failed, how and why, where the original message was, whether it was redriven, then
every header it carries (the original's and the Gyre-Dlq-* ones) and its body,
indented when it is JSON.

-o json prints it as GET /v1/dlq/{seq} does: the fields of 'gyre dlq ls -o json', its
headers, and its body (body when it is JSON, bodyText when it is other text,
bodyBase64 otherwise).

` + dlqConnectionHelp,
		Example: `  gyre dlq show 42
  gyre dlq show 42 -o json | jq .body`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDlqShow(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "output format: table (for people) or json")
	o.clientOptions.register(f)
	return cmd
}

func runDlqShow(ctx context.Context, o dlqOptions, arg string, stdout io.Writer) error {
	if err := o.checkOutput(); err != nil {
		return err
	}
	seqs, err := parseSeqs([]string{arg})
	if err != nil {
		return err
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	d, err := dlq.Get(ctx, js, seqs[0])
	if err != nil {
		return err
	}
	if o.output == "json" {
		return json.NewEncoder(stdout).Encode(d.View())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Dead letter %d of %s, stored %s\n", d.Seq, events.StreamDLQ, d.Time.UTC().Format(time.RFC3339Nano))
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  service\t%s (handler %s)\n", dashIfEmpty(d.Service), dashIfEmpty(d.Handler))
	fmt.Fprintf(w, "  kind\t%s (deliveries: %d)\n", dashIfEmpty(d.Kind), d.Deliveries)
	fmt.Fprintf(w, "  original\t%s, %s seq %d\n", dashIfEmpty(d.Subject), dashIfEmpty(d.Stream), d.StreamSeq)
	fmt.Fprintf(w, "  event\t%s %s\n", dashIfEmpty(d.EventType), dashIfEmpty(d.EventID))
	if d.RedriveOf != 0 {
		fmt.Fprintf(w, "  failed again\tafter redrive attempt %d of dead letter %d\n", d.Attempt, d.RedriveOf)
	}
	fmt.Fprintf(w, "  redriven\t%s\n", redrivenLine(d.Redriven))
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "Reason:\n  %s\n", strings.ReplaceAll(d.Reason, "\n", "\n  "))
	b.WriteString("Headers:\n")
	keys := make([]string, 0, len(d.Header))
	for k := range d.Header {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == bus.HeaderDLQReason {
			continue // above, in full
		}
		for _, v := range d.Header[k] {
			fmt.Fprintf(&b, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintf(&b, "Body (%d bytes):\n", len(d.Data))
	var pretty bytes.Buffer
	switch {
	case json.Indent(&pretty, d.Data, "", "  ") == nil:
		b.Write(pretty.Bytes())
		b.WriteByte('\n')
	case utf8.Valid(d.Data):
		b.Write(d.Data)
		if !bytes.HasSuffix(d.Data, []byte("\n")) {
			b.WriteByte('\n')
		}
	default:
		b.WriteString("(binary; -o json has it in base64)\n")
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

func redrivenLine(r *dlq.RedriveRecord) string {
	switch {
	case r == nil:
		return "no"
	case !r.Done():
		return fmt.Sprintf("attempt %d under way since %s", r.Attempt, r.ClaimedAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("attempt %d at %s, to %s seq %d", r.Attempt, r.At.UTC().Format(time.RFC3339), r.Stream, r.StreamSeq)
}

func newDlqRedriveCmd() *cobra.Command {
	var o dlqOptions
	var all, again, dryRun bool
	cmd := &cobra.Command{
		Use:   "redrive SEQ... | --all | FILTERS",
		Short: "Republish dead letters to their original subjects, once their cause is fixed",
		Long: `Republish dead letters to the subjects they were dead-lettered from, for their
consumers to handle again once the cause is fixed (a pipeline applied, a bug fixed and
deployed). Name them (SEQ..., as 'gyre dlq ls' shows them), or select them with the
filters of 'gyre dlq ls' (--all with no filter: every one).

Each is republished as it was: the same CloudEvents id and headers, the body byte for
byte, plus Gyre-Redrive-Attempt: N (1 for the first redrive of the message) and
Gyre-Redrive-Of: SEQ. Every consumer of the subject gets it, not only the one that
failed: Gyre's handlers are idempotent (ingest by the batch's content, the others by
the ids they derive), so those that handled it before do nothing new.

A dead letter is redriven once. The redrive is recorded in the gyre-state bucket
(dlq.redriven.<seq>) before the message is published, so another redrive of it,
even one running at the same moment, is refused ("already redriven") unless --again,
which redrives it once more as the next attempt. Named dead letters that were
redriven already are errors; selected ones are skipped and counted.

A message that fails again is dead-lettered again, as a new dead letter whose
Gyre-Redrive-Of names this one.

The admin identity redrives (it may publish to any subject); the subject must be one
of Gyre's streams', the one the dead letter came from. --dry-run says what would be
republished, and publishes nothing.

` + dlqConnectionHelp,
		Example: `  # one dead letter, after fixing its cause
  gyre dlq redrive 42

  # every contract failure of ingest in the last day, first without doing it
  gyre dlq redrive --service ingest --kind contract --since 24h --dry-run
  gyre dlq redrive --service ingest --kind contract --since 24h

  # once more, though it was redriven before
  gyre dlq redrive 42 --again`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDlqRedrive(cmd.Context(), o, args, all, dlq.RedriveOptions{Again: again, DryRun: dryRun}, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "every dead letter the filters select (with no filter: every one)")
	f.BoolVar(&again, "again", false, "redrive dead letters that were redriven before, once more")
	f.BoolVar(&dryRun, "dry-run", false, "say what would be republished, and publish nothing")
	o.filterFlags(f)
	o.clientOptions.register(f)
	return cmd
}

func runDlqRedrive(ctx context.Context, o dlqOptions, args []string, all bool, opts dlq.RedriveOptions, stdout io.Writer) error {
	seqs, f, bulk, err := o.selection("redrive", args, all, time.Now())
	if err != nil {
		return err
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	if bulk {
		if seqs, err = selected(ctx, js, f); err != nil {
			return err
		}
		if len(seqs) == 0 {
			fmt.Fprintln(stdout, "No dead letters match; nothing to redrive.")
			return nil
		}
	}
	var errs []error
	redriven, skipped := 0, 0
	for _, seq := range seqs {
		rec, err := dlq.Redrive(ctx, js, seq, opts)
		var already *dlq.AlreadyRedrivenError
		switch {
		case errors.As(err, &already) && bulk:
			skipped++
			fmt.Fprintf(stdout, "skipped %d: %v\n", seq, err)
		case errors.As(err, &already) && already.Record.Done():
			errs = append(errs, fmt.Errorf("%w (use --again to redrive once more)", err))
		case err != nil:
			errs = append(errs, err)
		case opts.DryRun:
			redriven++
			fmt.Fprintf(stdout, "would redrive %d → %s (%s) as attempt %d\n", seq, rec.Subject, rec.Stream, rec.Attempt)
		default:
			redriven++
			dup := ""
			if rec.Duplicate {
				dup = ", already stored: a duplicate of an earlier try"
			}
			fmt.Fprintf(stdout, "redriven %d → %s (%s seq %d) as attempt %d%s\n", seq, rec.Subject, rec.Stream, rec.StreamSeq, rec.Attempt, dup)
		}
	}
	if bulk || len(seqs) > 1 {
		verb := "Redriven"
		if opts.DryRun {
			verb = "Would redrive"
		}
		fmt.Fprintf(stdout, "%s %d of %d", verb, redriven, len(seqs))
		if skipped > 0 {
			fmt.Fprintf(stdout, "; skipped %d redriven before (--again redrives them once more)", skipped)
		}
		fmt.Fprintln(stdout, ".")
	}
	return errors.Join(errs...)
}

// selected lists the dead letters f selects.
func selected(ctx context.Context, js jetstream.JetStream, f dlq.Filter) ([]uint64, error) {
	page, err := dlq.List(ctx, js, f)
	if err != nil {
		return nil, err
	}
	seqs := make([]uint64, 0, len(page.DeadLetters))
	for _, e := range page.DeadLetters {
		seqs = append(seqs, e.Seq)
	}
	return seqs, nil
}

func newDlqPurgeCmd() *cobra.Command {
	var o dlqOptions
	var all, yes bool
	cmd := &cobra.Command{
		Use:   "purge SEQ... | --all | FILTERS --yes",
		Short: "Delete dead letters for good",
		Long: `Delete dead letters from GYRE_DLQ for good, with their redrive records: those
named (SEQ...), or those the filters of 'gyre dlq ls' select (--all with no filter:
every one). It refuses without --yes: run 'gyre dlq ls' with the same filters first
to see what would go. The admin identity purges.

` + dlqConnectionHelp,
		Example: `  gyre dlq purge 42 43 --yes

  # what was redriven long ago
  gyre dlq ls --until 720h
  gyre dlq purge --until 720h --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDlqPurge(cmd.Context(), o, args, all, yes, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "every dead letter the filters select (with no filter: every one)")
	f.BoolVar(&yes, "yes", false, "really delete them: there is no undo")
	o.filterFlags(f)
	o.clientOptions.register(f)
	return cmd
}

func runDlqPurge(ctx context.Context, o dlqOptions, args []string, all, yes bool, stdout io.Writer) error {
	seqs, f, bulk, err := o.selection("purge", args, all, time.Now())
	if err != nil {
		return err
	}
	if !yes {
		return errors.New("purge deletes dead letters for good: pass --yes to do it ('gyre dlq ls' with the same filters shows what would go)")
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	if bulk {
		if seqs, err = selected(ctx, js, f); err != nil {
			return err
		}
	}
	err = dlq.Delete(ctx, js, seqs...)
	failed := 0
	if err != nil {
		failed = len(unjoin(err))
	}
	fmt.Fprintf(stdout, "Deleted %d dead letter(s).\n", len(seqs)-failed)
	return err
}
