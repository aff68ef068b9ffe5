package main

import (
	"io"

	"github.com/spf13/cobra"
)

// Defaults shared by the commands.
const (
	defaultDataDir = ".gyre"
	envDataDir     = "GYRE_DATA_DIR"
)

// newRootCmd returns the gyre command tree writing to stdout and stderr; tests
// run it in-process with buffers.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "gyre",
		Short: "Gyre: a continuous-ML platform on NATS JetStream",
		Long: `Gyre is a continuous-ML platform: independent services that talk only through
CloudEvents on NATS JetStream, so that new data, a drift signal or a drop in live
accuracy cascades by itself into retraining, evaluation and redeployment.

  data.batch.arrived → ingest → validation → feature → monitor → trainer
  → evaluator → registry → deployer → serving → prediction.logged + label.received → monitor

Every arrow is an event on NATS; no service calls another.

Start everything on this machine with 'gyre up' (an embedded NATS server keeps its
data in .gyre/), then watch the loop's events with 'gyre events -f' in another
terminal.`,
		Example: `  # run every service and an embedded NATS server
  gyre up

  # in another terminal: follow the lifecycle events
  gyre events -f

  # run against an existing NATS server instead
  gyre up --nats nats://127.0.0.1:4222`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newUpCmd(), newEventsCmd(), newVersionCmd())
	root.AddCommand(newApplyCmd(), newIngestCmd())
	root.AddCommand(newDemoCmd())
	root.AddCommand(newTrainCmd(), newPredictCmd(), newEvaluateCmd())
	root.AddCommand(registryCommands()...)
	root.AddCommand(newAuthCmd())
	root.AddCommand(newDataCmd())
	root.AddCommand(newDlqCmd())
	root.AddCommand(newSchemaCmd())
	return root
}
