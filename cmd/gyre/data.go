package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/validation"
)

// The data commands read what validation keeps in gyre-state and
// gyre-batches directly, with the validation package's own readers: the
// same answers as its HTTP routes, without finding the service's address.

func newDataCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Inspect the data of a pipeline: what validation kept out of its batches",
	}
	cmd.AddCommand(newDataRejectedCmd())
	return cmd
}

// dataOptions are the flags of the data commands.
type dataOptions struct {
	clientOptions
	output string
}

func newDataRejectedCmd() *cobra.Command {
	var o dataOptions
	cmd := &cobra.Command{
		Use:   "rejected PIPELINE [BATCH]",
		Short: "List the batches and rows validation kept out of a pipeline, with the reasons",
		Long: `List what validation kept out of PIPELINE's batches: batches rejected whole (more bad
rows than spec.dataset.maxRowErrors, or a problem of the whole batch), and the rows it
quarantined from batches it validated (at most maxRowErrors bad rows: the batch goes on
without them) together with the columns it dropped because nothing declares them.
Quarantined rows and dropped columns never reach features, training, snapshots, the
online store or drift references.

With BATCH, every reason of that batch: the row (1-based, as in the file received), the
column, the offending value, the check that failed and what is wrong. -o json prints
the validation service's answer (GET /v1/pipelines/{pipeline}/rejected[/{batch}]).

The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json).`,
		Example: `  gyre data rejected elec2
  gyre data rejected elec2 2024-05-01T10
  gyre data rejected elec2 2024-05-01T10 -o json | jq '.reasons[] | select(.check == "range")'`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDataRejected(cmd.Context(), o, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	o.clientOptions.register(f)
	return cmd
}

func runDataRejected(ctx context.Context, o dataOptions, args []string, stdout, stderr io.Writer) error {
	p := args[0]
	if err := events.ValidatePipeline(p); err != nil {
		return err
	}
	if err := checkOutput(o.output, "table", "json"); err != nil {
		return err
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, events.BucketState)
	if err != nil {
		return bucketError(events.BucketState, nc.ConnectedUrlRedacted(), err)
	}
	if len(args) == 1 {
		list, err := validation.Quarantines(ctx, kv, p)
		if err != nil {
			return err
		}
		if o.output == "json" {
			return json.NewEncoder(stdout).Encode(list)
		}
		return printQuarantines(list, stdout, stderr)
	}
	objs, err := js.ObjectStore(ctx, events.ObjectBatches)
	if err != nil {
		return bucketError(events.ObjectBatches, nc.ConnectedUrlRedacted(), err)
	}
	q, err := validation.QuarantineOf(ctx, kv, store.Objects{Name: events.ObjectBatches, ObjectStore: objs}, p, args[1])
	if err != nil {
		return err
	}
	if o.output == "json" {
		return json.NewEncoder(stdout).Encode(q)
	}
	return printQuarantine(q, stdout)
}

func bucketError(bucket, server string, err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("bucket %s not found on %s: start Gyre with 'gyre up', which provisions it", bucket, server)
	}
	return fmt.Errorf("bucket %s: %w", bucket, err)
}

func printQuarantines(list validation.QuarantineList, stdout, stderr io.Writer) error {
	if len(list.Batches) == 0 {
		fmt.Fprintf(stderr, "Nothing kept out of %s's batches.\n", list.Pipeline)
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "BATCH\tSTATUS\tROWS\tQUARANTINED\tCOLUMNS DROPPED\tREASONS\tAT")
	for _, q := range list.Batches {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%d\t%s\n", q.BatchID, q.Status, q.RowsIn, q.RowsQuarantined,
			dashIfEmpty(strings.Join(q.ColumnsDropped, ",")), q.ReasonsTotal, q.At.Local().Format(time.DateTime))
	}
	return w.Flush()
}

func printQuarantine(q validation.Quarantine, stdout io.Writer) error {
	switch q.Status {
	case validation.StatusRejected:
		fmt.Fprintf(stdout, "batch %s of %s: rejected whole, %d rows, %d problems", q.BatchID, q.Pipeline, q.RowsIn, q.ReasonsTotal)
		if len(q.Reasons) < q.ReasonsTotal {
			fmt.Fprintf(stdout, " (the first %d listed)", len(q.Reasons))
		}
		fmt.Fprintln(stdout)
	default:
		fmt.Fprintf(stdout, "batch %s of %s: validated, %d of %d rows quarantined", q.BatchID, q.Pipeline, q.RowsQuarantined, q.RowsIn)
		if len(q.ColumnsDropped) > 0 {
			fmt.Fprintf(stdout, ", columns dropped: %s", strings.Join(q.ColumnsDropped, ", "))
		}
		fmt.Fprintln(stdout)
		fmt.Fprintf(stdout, "passed on as:  %s\n", events.ObjectURI(events.ObjectBatches, q.Validated))
	}
	fmt.Fprintf(stdout, "as received:   %s\n", events.ObjectURI(events.ObjectBatches, q.Object))
	for _, a := range q.Anomalies {
		fmt.Fprintf(stdout, "anomaly:       %s %s: %s\n", a.GetKind(), a.GetColumn(), a.GetReason())
	}
	if len(q.Reasons) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ROW\tCOLUMN\tVALUE\tCHECK\tREASON")
	for _, r := range q.Reasons {
		row := "-"
		if r.Row > 0 {
			row = fmt.Sprint(r.Row)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", row, dashIfEmpty(r.Column), dashIfEmpty(oneLine(r.Value)), r.Check, oneLine(r.Reason))
	}
	return w.Flush()
}

// oneLine keeps a table row on one line whatever a value holds.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}
