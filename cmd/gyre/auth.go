package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/signing"
)

func newAuthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Keys and credentials: NATS identities, HTTP tokens, the registry's signing key",
		Long: `Keys and credentials of a Gyre installation.

'gyre up' makes what it needs in its data dir by itself; these commands make them for
services deployed on their own (infra/k8s keeps them in Secrets).`,
	}
	cmd.AddCommand(newNATSConfigCmd(), newProducerCmd(), newTokenCmd(), newSigningKeyCmd())
	return cmd
}

// defaultTokenFile is gyre up's token file, in --data-dir.
func defaultTokenFile() string {
	return filepath.Join(service.Env(envDataDir, defaultDataDir), tokensFile)
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke HTTP bearer tokens",
		Long: `HTTP bearer tokens: every service's API (except /healthz, /readyz, /metrics and the
inference health probes) takes 'Authorization: Bearer <token>' and checks its scopes:

  read    GET the registry, the deployments, the model metadata, the dashboard
  ingest  upload batches (ingest)
  infer   POST .../infer (the deployer)
  admin   everything, and moving the champion by hand (promote, rollback)

The token file holds only SHA-256 hashes of the tokens, with their names and scopes;
services read it with --auth-tokens (env GYRE_AUTH_TOKENS) and notice a change within a
second, so a revoked token stops working without a restart. 'gyre up' keeps one in its
data dir (tokens.json) with an admin token for the CLI (admin.token) and a read token for
the dashboard (dashboard.token).`,
	}
	var file string
	cmd.PersistentFlags().StringVar(&file, "file", defaultTokenFile(), "the token file (gyre up's: <data-dir>/tokens.json)")

	var name, scopes string
	var expires time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a token and print its secret (shown once)",
		Example: `  gyre auth token create --name producer-elec2 --scopes ingest
  gyre auth token create --name grafana --scopes read --expires 720h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := httpauth.ParseScopes(scopes)
			if err != nil {
				return fmt.Errorf("--scopes: %w", err)
			}
			var until time.Time
			if expires > 0 {
				until = time.Now().Add(expires)
			}
			secret, e, err := httpauth.CreateToken(file, name, sc, until)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created %s (%s, scopes %v) in %s; the secret, shown once:\n", e.ID, e.Name, e.Scopes, file)
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "who or what the token is for (required)")
	create.Flags().StringVar(&scopes, "scopes", "", "comma-separated scopes: read, ingest, infer, admin (required)")
	create.Flags().DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (default: none)")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("scopes")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, err := httpauth.ListTokens(file)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tSCOPES\tCREATED\tEXPIRES")
			for _, e := range entries {
				exp := "-"
				if e.Expires != nil {
					exp = e.Expires.Local().Format(time.DateTime)
				}
				fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\n", e.ID, e.Name, e.Scopes, e.Created.Local().Format(time.DateTime), exp)
			}
			return w.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a token: it stops working within a second",
		Example: `  gyre auth token revoke tok_3f9a…`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := httpauth.RevokeToken(file, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s)\n", e.ID, e.Name)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newSigningKeyCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "signing-key",
		Short: "Write a key pair that the registry signs model versions with",
		Long: `Write an ed25519 key pair into --dir: signing.key (PKCS #8 PEM, mode 0600) for the
registry (--signing-key, env GYRE_REGISTRY_SIGNING_KEY) and signing.pub (PKIX PEM) for
every deployer (--verify-keys, env GYRE_DEPLOYER_VERIFY_KEYS).

The registry signs each version it records — pipeline, version, artifact and the
artifact's SHA-256 — and deployers load only versions signed by a key they trust, whose
artifact's bytes match the signed digest: a registry record edited by anyone else, a
deployment record naming another artifact, or an artifact replaced in the object store
is refused (deployment.rolledback says why) and the model serving keeps serving.

To rotate: write a new pair elsewhere, append its signing.pub to the deployers' file
(they trust every key of it), restart the deployers, then give the registry the new
signing.key; versions signed by the old key stay valid while its public key is trusted.
An existing signing.key is never overwritten.`,
		Example: `  gyre auth signing-key --dir ./keys`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			pub, err := signing.Generate(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (registry: --signing-key) and %s (deployers: --verify-keys); key id %s\n",
				filepath.Join(dir, signing.PrivateKeyFile), filepath.Join(dir, signing.PublicKeyFile), signing.KeyID(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write signing.key and signing.pub into")
	return cmd
}
