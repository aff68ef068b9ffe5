package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
)

// applyOptions are the flags of `gyre apply`.
type applyOptions struct {
	clientOptions
	file string
}

func newApplyCmd() *cobra.Command {
	var o applyOptions
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or change a pipeline from its spec (YAML or JSON)",
		Long: `Check a pipeline spec (apiVersion gyre.dev/v1, kind Pipeline) and make it the pipeline's
current spec: it is stored, canonical, in the gyre-pipelines bucket under its name, and
announced with pipeline.applied, which the services follow.

A spec that does not check is refused with every problem, each naming its field
(spec.features[2].transform: ...), and nothing is stored. Applying the same spec again
changes nothing and keeps its revision. -f - reads the spec from stdin.

It prints what happened:
  pipeline/<name> created (revision N)      a new pipeline
  pipeline/<name> configured (revision N)   the spec changed
  pipeline/<name> unchanged (revision N)    the same spec was there already

The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json).`,
		Example: `  gyre apply -f examples/elec2/pipeline.yaml

  # from another program
  generate-spec | gyre apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runApply(cmd.Context(), o, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "filename", "f", "", "the spec file (YAML or JSON); - for stdin")
	_ = cmd.MarkFlagRequired("filename")
	o.clientOptions.register(f)
	return cmd
}

// cliSource is the service name of events the CLI publishes: /gyre/cli.
const cliSource = "cli"

func runApply(ctx context.Context, o applyOptions, stdin io.Reader, stdout io.Writer) error {
	// Check the spec before reaching for a server: a bad spec is refused
	// the same with or without one.
	p, err := readSpec(o.file, stdin)
	if err != nil {
		return err
	}
	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := store.ApplyPipeline(ctx, js, bus.NewPublisher(js, cliSource), p, cliSource)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "pipeline/%s %s (revision %d)\n", res.Pipeline, res.Action, res.Revision)
	return err
}

// readSpec reads and checks a spec from a file, or stdin for "-".
func readSpec(file string, stdin io.Reader) (*pipeline.Pipeline, error) {
	var data []byte
	var err error
	source := file
	if file == "-" {
		source = "stdin"
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	p, err := pipeline.Parse(data)
	var perr *pipeline.Error
	if errors.As(err, &perr) {
		perr.Source = source
		return nil, perr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return p, nil
}
