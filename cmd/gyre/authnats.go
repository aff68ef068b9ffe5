package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/service"
)

// defaultNATSAuthDir is gyre up's identities directory, in --data-dir.
func defaultNATSAuthDir() string {
	return filepath.Join(service.Env(envDataDir, defaultDataDir), natsAuthDir)
}

func newNATSConfigCmd() *cobra.Command {
	var dir, out string
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Write the NATS identities of every service and the nats-server configuration that admits them",
		Long: `Make sure --dir holds an nkey seed for every identity Gyre runs with — one per service
(` + strings.Join(events.ServiceNames(), ", ") + `), admin (the CLI, provisioning) and reader
(dashboards, 'gyre events') — as <identity>.nk, mode 0600, keeping those already there;
then write the nats-server configuration that admits exactly them (and every producer
made with 'gyre auth producer' in --dir) to --out, or print it.

Each user's permissions are derived from Gyre's event catalog: a service may publish the
events it emits and its dead letters, read and acknowledge its own durable consumers
only, write only the buckets it owns, create missing streams but never change or delete
one, and subscribe to its own inbox (_INBOX.<identity>.>) only; the reader publishes
nothing; a producer may publish data.batch.arrived and label.received (of its pipeline)
only; the admin may do anything.

Include the output in the server's configuration (include ./gyre-auth.conf, a path
relative to the including file) and give each service its seed with --nats-nkey (env
GYRE_NATS_NKEY); infra/k8s keeps both in Secrets. 'gyre up' does all of this by itself for
its embedded server (<data-dir>/` + natsAuthDir + `).

To rotate an identity: delete its .nk, run this again, reload the server (nats-server
--signal reload) with the new configuration, then restart the clients that use it.`,
		Example: `  gyre auth config --dir ./nats-auth --out ./nats-auth/gyre-auth.conf
  nats-server -c nats.conf   # nats.conf: include ./nats-auth/gyre-auth.conf
  ingest --nats nats://127.0.0.1:4222 --nats-nkey ./nats-auth/ingest.nk ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			users, err := natsauth.EnsureAll(dir)
			if err != nil {
				return fmt.Errorf("--dir %s: %w", dir, err)
			}
			conf, err := natsauth.ServerConfig(users)
			if err != nil {
				return err
			}
			if out == "" {
				_, err := fmt.Fprint(cmd.OutOrStdout(), conf)
				return err
			}
			if err := os.WriteFile(out, []byte(conf), 0o600); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %d identities (seeds in %s)\n", out, len(users), dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultNATSAuthDir(), "directory of the identities' seeds (gyre up's: <data-dir>/"+natsAuthDir+")")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the server configuration to this file (mode 0600) instead of printing it")
	return cmd
}

func newProducerCmd() *cobra.Command {
	var dir, pipeline string
	cmd := &cobra.Command{
		Use:   "producer",
		Short: "Write the NATS identity of a data producer outside Gyre",
		Long: `Write the nkey seed of a producer: a client outside Gyre that may publish
data.batch.arrived and label.received — of --pipeline only, when given — and nothing
else; it reads nothing but the acknowledgements in its own inbox.

The seed goes to <dir>/producer-<pipeline>.nk (producer.nk without --pipeline), mode 0600.
The server must know it: 'gyre up' admits every producer in its data dir's ` + natsAuthDir + `/
when it starts (restart it after adding one); for another server, run 'gyre auth config'
again and reload the server.

A producer connects with its seed and replies under _INBOX.<identity> — nats.go:
nats.NkeyOptionFromSeed(file) and nats.CustomInboxPrefix("_INBOX.producer-elec2");
nats.py: nkeys_seed=file, inbox_prefix=b"_INBOX.producer-elec2"; the nats CLI:
--nkey file --inbox-prefix _INBOX.producer-elec2. An event for another pipeline, or of
another type, is refused by the server; a payload whose pipeline differs from its
subject's is dead-lettered by the service that reads it.`,
		Example: `  gyre auth producer --pipeline elec2
  gyre ingest elec2 batch.csv --nats-nkey .gyre/nats-auth/producer-elec2.nk`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pipeline != "" {
				if err := events.ValidatePipeline(pipeline); err != nil {
					return fmt.Errorf("--pipeline: %w", err)
				}
			}
			id := natsauth.ProducerIdentity(pipeline)
			u, created, err := natsauth.EnsureIdentity(dir, id)
			if err != nil {
				return fmt.Errorf("--dir %s: %w", dir, err)
			}
			state := "exists"
			if created {
				state = "new"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s): identity %s, public key %s, inbox prefix %s\n",
				u.Seed, state, id, u.PublicKey, natsauth.InboxPrefix(id))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultNATSAuthDir(), "directory of the identities' seeds (gyre up's: <data-dir>/"+natsAuthDir+")")
	cmd.Flags().StringVar(&pipeline, "pipeline", "", "the one pipeline it may publish for (default: any)")
	return cmd
}
