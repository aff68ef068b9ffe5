package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/services/validation"
)

// The schema commands read and write what validation keeps at gyre-state
// schema.<pipeline> directly, with the validation package's own readers
// and writers (validation.ShowSchema, FreezeSchema), as the data
// commands do.

func newSchemaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Show the schema validation checks a pipeline's batches against, and freeze a learned one",
		Long: `A pipeline's batches are checked against its schema: the one its spec declares
(spec.dataset.schema), or, without one, the schema validation learns from the first
spec.dataset.inferSchema.batches validated batches (default 1): types (an int column
may widen to float while learning), numeric min/max, categories (at most
inferSchema.maxCategories distinct values, default 100, else none), presence (the
lowest share of rows with a value). Beside either, it learns the reference shares of
the category and bool columns from the same batches.

What a batch outside the schema gets (anomalies in data.batch.validated / rejected):
  declared or frozen  values outside min/max or the categories are bad rows,
                      quarantined (within spec.dataset.maxRowErrors)
  learned             types are enforced; values outside the learned categories are a
                      warning and the rows go on; learned min/max are only shown
  learning            types only, and the batch widens the schema
A type change or a dropped required column rejects the batch in every state;
presence below the schema's and a category share shift are warnings.

  gyre schema show    the schema, its state, who froze it, the reference shares
  gyre schema freeze  pin the learned schema: never widened again, enforced like a
                      declared one

The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSchemaShowCmd(), newSchemaFreezeCmd())
	return cmd
}

type schemaOptions struct {
	clientOptions
	output string
}

func newSchemaShowCmd() *cobra.Command {
	var o schemaOptions
	cmd := &cobra.Command{
		Use:   "show PIPELINE",
		Short: "Show the schema a pipeline's batches are checked against",
		Long: `Show PIPELINE's schema: declared in its spec, or learned from its first batches
(learning, learned or frozen), with the batches it was learned from, who froze it, and
the reference shares of its category and bool columns.

-o table (default) prints a line on its state, then one line per column: type,
required, min, max, categories, minPresence and the reference shares.
-o yaml prints the same as -o json in YAML; its schema: list pastes into
spec.dataset.schema as it is, which makes the learned schema the declared one.`,
		Example: `  gyre schema show elec2
  gyre schema show elec2 -o yaml
  gyre schema show elec2 -o json | jq '.schema[] | select(.categories)'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSchemaShow(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, yaml or json")
	o.clientOptions.register(f)
	return cmd
}

func newSchemaFreezeCmd() *cobra.Command {
	var o schemaOptions
	cmd := &cobra.Command{
		Use:   "freeze PIPELINE",
		Short: "Pin a pipeline's learned schema: never widened again, its domains enforced",
		Long: `Freeze PIPELINE's learned schema as it is now, even before it has seen
spec.dataset.inferSchema.batches batches: later batches never widen it (not even when
inferSchema.batches is raised), and values outside its min/max and categories are bad
rows, quarantined like those of a declared schema.

The frozen schema stays where validation reads it (gyre-state schema.<pipeline>),
with who froze it (user@host), the NATS identity the command wrote with, when, and the
spec's revision. A spec that declares a schema replaces it; to make the frozen schema
the declared one, paste the schema: list of 'gyre schema show PIPELINE -o yaml' into
spec.dataset.schema. Freezing a frozen schema changes nothing.

` + dlqConnectionHelp,
		Example: `  gyre schema freeze elec2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSchemaFreeze(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	o.clientOptions.register(cmd.Flags())
	return cmd
}

// schemaBuckets connects and opens gyre-pipelines and gyre-state.
func (o schemaOptions) buckets(ctx context.Context, p string) (pipelines, state jetstream.KeyValue, closeFn func(), err error) {
	if err := events.ValidatePipeline(p); err != nil {
		return nil, nil, nil, err
	}
	nc, js, err := o.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{events.BucketPipelines, &pipelines}, {events.BucketState, &state}} {
		if *b.kv, err = js.KeyValue(ctx, b.name); err != nil {
			nc.Close()
			return nil, nil, nil, bucketError(b.name, nc.ConnectedUrlRedacted(), err)
		}
	}
	return pipelines, state, nc.Close, nil
}

func runSchemaShow(ctx context.Context, o schemaOptions, p string, stdout io.Writer) error {
	if err := checkOutput(o.output, "table", "yaml", "json"); err != nil {
		return err
	}
	pipelines, state, closeFn, err := o.buckets(ctx, p)
	if err != nil {
		return err
	}
	defer closeFn()
	v, err := validation.ShowSchema(ctx, pipelines, state, p)
	if err != nil {
		return err
	}
	switch o.output {
	case "json":
		return json.NewEncoder(stdout).Encode(v)
	case "yaml":
		out, err := pipeline.YAML(v)
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	}
	return printSchema(v, stdout)
}

func runSchemaFreeze(ctx context.Context, o schemaOptions, p string, stdout io.Writer) error {
	_, seed, err := o.resolve()
	if err != nil {
		return err
	}
	pipelines, state, closeFn, err := o.buckets(ctx, p)
	if err != nil {
		return err
	}
	defer closeFn()
	who := validation.Freeze{By: localUser()}
	if seed != "" {
		who.Identity = strings.TrimSuffix(filepath.Base(seed), natsauth.SeedExt)
	}
	v, already, err := validation.FreezeSchema(ctx, pipelines, state, p, who)
	var fe *validation.FreezeError
	if errors.As(err, &fe) {
		return fmt.Errorf("gyre schema freeze %s: %w", p, err)
	}
	if err != nil {
		return err
	}
	if already {
		fmt.Fprintf(stdout, "schema of %s already %s; nothing changed\n", p, frozenBy(v.Frozen))
		return nil
	}
	fmt.Fprintf(stdout, "schema of %s %s, learned from %s: later batches never widen it, and values outside its min/max and categories are quarantined like those of a declared schema\n",
		p, frozenBy(v.Frozen), learnedFrom(v))
	return nil
}

func frozenBy(f *validation.Freeze) string {
	s := "frozen by " + f.By
	if f.Identity != "" {
		s += " (NATS identity " + f.Identity + ")"
	}
	return s + " at " + f.At.Local().Format(time.DateTime)
}

func learnedFrom(v validation.SchemaView) string {
	s := strconv.Itoa(v.Learned) + " batch"
	if v.Learned != 1 {
		s += "es"
	}
	if len(v.LearnedFrom) > 0 {
		s += " (" + strings.Join(v.LearnedFrom, ", ") + ")"
	}
	return s
}

// printSchema prints a line on the schema's state, then its columns.
func printSchema(v validation.SchemaView, stdout io.Writer) error {
	switch v.State {
	case validation.StateNone:
		fmt.Fprintf(stdout, "schema of %s: nothing learned yet; it is learned from the first %d validated batches (spec.dataset.inferSchema.batches)\n",
			v.Pipeline, v.LearnBatches)
		return nil
	case validation.StateDeclared:
		fmt.Fprintf(stdout, "schema of %s: declared in the spec (spec.dataset.schema); values outside its domains are quarantined\n", v.Pipeline)
		if v.Learned >= v.LearnBatches {
			fmt.Fprintf(stdout, "reference shares learned from %s\n", learnedFrom(v))
		} else {
			fmt.Fprintf(stdout, "reference shares being learned: %d of %d batches so far\n", v.Learned, v.LearnBatches)
		}
	case validation.StateLearning:
		ids := ""
		if len(v.LearnedFrom) > 0 {
			ids = " (" + strings.Join(v.LearnedFrom, ", ") + ")"
		}
		fmt.Fprintf(stdout, "schema of %s: learning, from %d of %d batches so far%s; only types are checked until then\n",
			v.Pipeline, v.Learned, v.LearnBatches, ids)
	case validation.StateLearned:
		fmt.Fprintf(stdout, "schema of %s: learned from %s, not frozen; values outside the learned categories are reported, "+
			"min/max only shown (gyre schema freeze %s enforces them)\n", v.Pipeline, learnedFrom(v), v.Pipeline)
	case validation.StateFrozen:
		fmt.Fprintf(stdout, "schema of %s: %s, learned from %s; values outside its domains are quarantined\n",
			v.Pipeline, frozenBy(v.Frozen), learnedFrom(v))
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "COLUMN\tTYPE\tREQUIRED\tMIN\tMAX\tCATEGORIES\tMIN PRESENCE\tREFERENCE")
	for _, c := range v.Schema {
		required := "-"
		if c.Required {
			required = "yes"
		}
		presence := "-"
		if c.MinPresence != nil {
			presence = strconv.FormatFloat(100**c.MinPresence, 'g', 4, 64) + "%"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Type, required, bound(c.Min), bound(c.Max),
			dashIfEmpty(abbreviate(c.Categories, 6)), presence, shares(v.Reference[c.Name]))
	}
	return w.Flush()
}

func bound(x *float64) string {
	if x == nil {
		return "-"
	}
	return strconv.FormatFloat(*x, 'g', -1, 64)
}

// abbreviate joins the first n values, and says how many there are when
// more.
func abbreviate(values []string, n int) string {
	if len(values) <= n {
		return strings.Join(values, ", ")
	}
	return strings.Join(values[:n], ", ") + fmt.Sprintf(", … (%d)", len(values))
}

// shares lists the reference's values by share, the largest first.
func shares(d *validation.Distribution) string {
	switch {
	case d == nil || d.Total == 0:
		return "-"
	case d.Overflow:
		return "(more values than inferSchema.maxCategories)"
	}
	vals := slices.Collect(maps.Keys(d.Counts))
	slices.SortFunc(vals, func(a, b string) int {
		if d.Counts[a] != d.Counts[b] {
			if d.Counts[a] > d.Counts[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(vals))
	for _, v := range vals {
		parts = append(parts, fmt.Sprintf("%s %s%%", v, strconv.FormatFloat(100*d.Share(v), 'g', 3, 64)))
	}
	return abbreviate(parts, 4)
}
