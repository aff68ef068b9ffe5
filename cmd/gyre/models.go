package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/services/registry"
)

// The model registry commands read the gyre-registry bucket directly and,
// for promote and rollback, call the registry's own Registrar: the same
// effects as its HTTP API, without finding the service's address.

// registryOptions are the flags of the registry commands.
type registryOptions struct {
	clientOptions
	output string
}

func (o *registryOptions) flags(cmd *cobra.Command, withOutput bool) {
	f := cmd.Flags()
	if withOutput {
		f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	}
	o.clientOptions.register(f)
}

// registryBucket connects and binds the gyre-registry bucket; close the
// connection when done.
func (o registryOptions) registryBucket(ctx context.Context) (func(), jetstream.JetStream, jetstream.KeyValue, error) {
	if o.output != "" {
		if err := checkOutput(o.output, "table", "json"); err != nil {
			return nil, nil, nil, err
		}
	}
	nc, js, err := o.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	kv, err := js.KeyValue(ctx, events.BucketRegistry)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("bucket %s not found on %s: start Gyre with 'gyre up', which provisions it", events.BucketRegistry, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("bucket %s: %w", events.BucketRegistry, err)
	}
	return nc.Close, js, kv, nil
}

func newModelsCmd() *cobra.Command {
	var o registryOptions
	cmd := &cobra.Command{
		Use:   "models [PIPELINE]",
		Short: "List the registered model versions of a pipeline, or of every pipeline",
		Long: `List the model versions the registry recorded, newest first: every candidate the
evaluator judged, blessed or rejected, with the aliases it holds (champion serves,
previous is what 'gyre rollback' returns to), its evaluation accuracy, its algorithm,
when it was registered and the training request it came from.

Without PIPELINE, every pipeline with a model is listed. -o json prints the registry's
list (the same as GET /v1/pipelines/{pipeline}/models of the registry service).
'gyre models register' adds a version trained outside Gyre (an XGBoost or Gyre model file).

The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json).`,
		Example: `  gyre models elec2
  gyre models -o json elec2 | jq '.versions[0]'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runModels(cmd.Context(), o, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.flags(cmd, true)
	cmd.AddCommand(newRegisterCmd())
	return cmd
}

func runModels(ctx context.Context, o registryOptions, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 {
		if err := events.ValidatePipeline(args[0]); err != nil {
			return err
		}
	}
	closeConn, _, kv, err := o.registryBucket(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	pipelines := args
	if len(pipelines) == 0 {
		if pipelines, err = models.Pipelines(ctx, kv); err != nil {
			return err
		}
	}
	var lists []registry.ModelList
	for _, p := range pipelines {
		rec, _, found, err := models.Get(ctx, kv, p)
		if err != nil {
			return err
		}
		if !found && len(args) == 1 {
			return fmt.Errorf("pipeline %s has no model yet (the registry records one when the evaluator judges its first candidate)", p)
		}
		lists = append(lists, registry.List(rec))
	}
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		if len(args) == 1 {
			return enc.Encode(lists[0])
		}
		return enc.Encode(lists)
	}
	if len(lists) == 0 {
		fmt.Fprintln(stderr, "No models registered yet.")
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if len(args) == 0 {
		fmt.Fprint(w, "PIPELINE\t")
	}
	fmt.Fprintln(w, "VERSION\tVERDICT\tALIASES\tACCURACY\tALGORITHM\tCREATED\tREQUEST")
	for _, l := range lists {
		for _, v := range l.Versions {
			if len(args) == 0 {
				fmt.Fprintf(w, "%s\t", l.Pipeline)
			}
			verdict := v.Verdict
			if v.Registered != nil && v.Registered.SkippedGates {
				verdict = "unevaluated" // registered with its gates skipped
			}
			if v.Withdrawn != "" {
				// A rollback moved champion away from it: not what the next
				// rollback returns to (gyre models -o json says why).
				verdict += ",withdrawn"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Version, verdict, dashIfEmpty(strings.Join(v.Aliases, ",")),
				fmtMetric(v.Metrics, "accuracy"), v.Algorithm, v.CreatedAt.Local().Format(time.DateTime), v.RequestID)
		}
	}
	return w.Flush()
}

func newLineageCmd() *cobra.Command {
	var o registryOptions
	cmd := &cobra.Command{
		Use:   "lineage PIPELINE[@VERSION]",
		Short: "Show where a model version comes from: data, features, training, the events that made it",
		Long: `Show the lineage of a model version: the batches of its training window and their
dataset version, the feature-set version, the training request and job, the event that
triggered training (data.batch.validated for the first model, drift.detected,
performance.degraded, or a manual training.requested), the correlation id of the cascade
and its events in order, and how it was evaluated.

VERSION is a number or an alias (champion, previous, latest); without it, the champion
(or the latest version when there is no champion). -o json prints the registry's view
(GET /v1/pipelines/{pipeline}/lineage?version=N). Every event id can be looked up with
'gyre events -o json | jq'.`,
		Example: `  gyre lineage elec2
  gyre lineage elec2@3
  gyre lineage elec2@previous -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLineage(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	o.flags(cmd, true)
	return cmd
}

func runLineage(ctx context.Context, o registryOptions, arg string, stdout io.Writer) error {
	p, ref, _ := strings.Cut(arg, "@")
	if err := events.ValidatePipeline(p); err != nil {
		return err
	}
	closeConn, _, kv, err := o.registryBucket(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	rec, _, found, err := models.Get(ctx, kv, p)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("pipeline %s has no model yet", p)
	}
	v, err := registry.Resolve(rec, ref)
	if err != nil {
		return err
	}
	l := registry.Lineage(rec, v)
	if o.output == "json" {
		return json.NewEncoder(stdout).Encode(l)
	}
	aliases := ""
	if len(l.Aliases) > 0 {
		aliases = " (" + strings.Join(l.Aliases, ", ") + ")"
	}
	fmt.Fprintf(stdout, "%s v%d%s: %s, registered %s\n", l.Pipeline, l.Version, aliases, l.Verdict, l.CreatedAt.Local().Format(time.DateTime))
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "batches:\t%s\n", dashIfEmpty(strings.Join(l.Batches, ", ")))
	fmt.Fprintf(w, "dataset version:\t%s\n", dashIfEmpty(l.DatasetVersion))
	fmt.Fprintf(w, "feature set:\t%s\n", dashIfEmpty(l.FeatureSetVersion))
	fmt.Fprintf(w, "training request:\t%s (job %s, pipeline revision %d)\n", l.TrainingRequestID, dashIfEmpty(l.TrainingJobID), l.PipelineRevision)
	trigger := dashIfEmpty(l.Reason)
	if l.Trigger != nil {
		trigger += " — " + l.Trigger.Type + " " + l.Trigger.ID
	}
	fmt.Fprintf(w, "triggered by:\t%s\n", trigger)
	fmt.Fprintf(w, "correlation id:\t%s\n", dashIfEmpty(l.CorrelationID))
	eval := "batch " + dashIfEmpty(l.EvalBatchID) + ", accuracy " + fmtMetric(l.Metrics, "accuracy")
	if l.ChampionVersion != 0 {
		eval += fmt.Sprintf(", against champion v%d", l.ChampionVersion)
	}
	fmt.Fprintf(w, "evaluated on:\t%s\n", eval)
	if reg := l.Registered; reg != nil {
		gates := ""
		if reg.SkippedGates {
			gates = ", gates skipped"
		}
		fmt.Fprintf(w, "registered:\t%s (%s file, sha256 %s, %d bytes, inputs named from the %s%s)\n",
			reg.Who(), reg.Format, reg.FileSha256, reg.FileBytes, reg.Signature, gates)
	}
	fmt.Fprintf(w, "artifact:\t%s\n", dashIfEmpty(l.Artifact.URI))
	if l.Reference != nil {
		fmt.Fprintf(w, "reference:\t%s\n", dashIfEmpty(l.Reference.URI))
	}
	fmt.Fprintln(w, "events:")
	for _, e := range l.Events {
		fmt.Fprintf(w, "  %s\t%s\n", e.Type, e.ID)
	}
	return w.Flush()
}

func newPromoteCmd() *cobra.Command {
	var o registryOptions
	cmd := &cobra.Command{
		Use:   "promote PIPELINE VERSION",
		Short: "Make a model version the pipeline's champion",
		Long: `Make VERSION the champion of PIPELINE by hand, whatever its verdict: the current
champion becomes previous, and model.promoted (reason "manual") tells the deployer to
roll VERSION out and the monitor to measure drift against its training data.

Promoting the champion again changes nothing. This is what the registry service's
POST /v1/pipelines/{pipeline}/promote does, done here directly on the registry bucket.`,
		Example: `  gyre promote elec2 3`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(strings.TrimPrefix(args[1], "v"), 10, 64)
			if err != nil || n < 1 {
				return fmt.Errorf("VERSION %q: want a version number (1, 2, …)", args[1])
			}
			return runMove(cmd.Context(), o, args[0], cmd.OutOrStdout(), func(ctx context.Context, r *registry.Registrar) (registry.Promotion, error) {
				return r.Promote(ctx, args[0], n)
			})
		},
	}
	o.flags(cmd, false)
	return cmd
}

func newRollbackCmd() *cobra.Command {
	var o registryOptions
	cmd := &cobra.Command{
		Use:   "rollback PIPELINE",
		Short: "Return the pipeline's champion to the previous version",
		Long: `Make the previous version the champion of PIPELINE again, and emit model.promoted
(reason "rollback"). Previous is the newest version, other than the champion, whose
deployment completed (it served all traffic): a version that failed its rollout never is.
The version rolled back from is withdrawn and does not become previous, so rolling back
again keeps going back. The deployer rolls the champion out, and the monitor and the
evaluator follow it.

This is what the registry service's POST /v1/pipelines/{pipeline}/rollback does, done
here directly on the registry bucket.`,
		Example: `  gyre rollback elec2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMove(cmd.Context(), o, args[0], cmd.OutOrStdout(), func(ctx context.Context, r *registry.Registrar) (registry.Promotion, error) {
				return r.Rollback(ctx, args[0], "gyre rollback")
			})
		},
	}
	o.flags(cmd, false)
	return cmd
}

// runMove moves the champion with the registry's Registrar.
func runMove(ctx context.Context, o registryOptions, pipeline string, stdout io.Writer,
	do func(context.Context, *registry.Registrar) (registry.Promotion, error)) error {
	if err := events.ValidatePipeline(pipeline); err != nil {
		return err
	}
	closeConn, js, kv, err := o.registryBucket(ctx)
	if err != nil {
		return err
	}
	defer closeConn()
	// The registrar logs for a service's log; the command says what it did.
	ctx = bus.WithLogger(ctx, slog.New(slog.DiscardHandler))
	p, err := do(ctx, registry.NewRegistrar(kv, bus.NewPublisher(js, cliSource)))
	if err != nil {
		return err
	}
	if p.Unchanged {
		fmt.Fprintf(stdout, "%s: v%d is already champion\n", pipeline, p.Move.Version)
		return nil
	}
	prev := "none"
	if p.Move.Previous != 0 {
		prev = "v" + strconv.FormatInt(p.Move.Previous, 10)
	}
	fmt.Fprintf(stdout, "%s: champion is v%d (was %s, reason %s); model.promoted %s\n",
		pipeline, p.Move.Version, prev, p.Move.Reason, p.Move.EventID)
	return nil
}

// fmtMetric formats a metric, "-" when absent.
func fmtMetric(m map[string]float64, name string) string {
	v, ok := m[name]
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// registryCommands are the model registry's commands.
func registryCommands() []*cobra.Command {
	return []*cobra.Command{newModelsCmd(), newLineageCmd(), newPromoteCmd(), newRollbackCmd()}
}
