package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/registry"
)

// envRegistryURL is the environment variable of --registry.
const envRegistryURL = "GYRE_REGISTRY_URL"

// registerOptions are the flags of gyre models register.
type registerOptions struct {
	file, format        string
	fromSchema          bool
	inputs, classes     []string
	skipGates, promote  bool
	registryURL, output string
	dataDir             string
}

func newRegisterCmd() *cobra.Command {
	var o registerOptions
	cmd := &cobra.Command{
		Use:   "register PIPELINE --file F --format xgboost|gyre",
		Short: "Register a model trained outside Gyre as a version of a pipeline",
		Long: `Register a model trained elsewhere as the pipeline's next version: the registry bundles
the file under the pipeline's names, stores it in gyre-models, has the evaluator's gates
judge it on the pipeline's newest validated batch (against the champion, as for a trained
candidate), signs it and records it with who registered it. It can then be promoted
('gyre promote') and rolled out like any other version; deployers verify its signature and
bytes before they serve it.

Formats: xgboost (an XGBoost JSON or UBJSON model file: gbtree; binary:logistic,
multi:softprob or reg:squarederror; see docs/runtimes.md) and gyre (a gyre.model/v1
artifact from 'gyre train', or a gyre.bundle/v1 bundle).

The model takes the pipeline's raw columns, untransformed: its inputs are named by
  --signature-from-schema   the pipeline's feature columns (spec.features, or every schema
                            column but the label), in order;
  --inputs a,b,c            these columns, in the model's feature order;
  neither                   the model's own names (XGBoost's feature_names, f0, f1, … when
                            it has none; a Gyre model's inputs).
A classifier's classes, in its output order, are --classes, else the label's declared
categories, else 0, 1, … for an int or bool label. A file that does not fit the pipeline
(another number of features, a text column, another task) is refused, saying why.

The same file under the same names is one version: registering it again changes nothing.
With --skip-gates the version is recorded without evaluation (verdict rejected, gates
skipped); --promote makes it champion when the gates bless it (with --skip-gates, at once).

This calls the registry's POST /v1/pipelines/{pipeline}/models (admin scope): --registry,
else the one a running 'gyre up' serves (<data-dir>/up.json), with the token in GYRE_TOKEN,
else gyre up's admin token. The registry records the token's name and, beside it, who you
are here (user@host).`,
		Example: `  gyre models register cancer --file model.json --format xgboost --signature-from-schema
  gyre models register cancer --file model.ubj --format xgboost --inputs f0,f1,f2 --classes benign,malignant
  gyre models register elec2 --file m.model --format gyre --promote
  gyre models register cancer --file model.json --format xgboost --skip-gates --promote
  gyre models register cancer --file model.json --format xgboost --registry http://registry:8080`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRegister(cmd.Context(), o, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "the model's file (required; - reads stdin)")
	f.StringVar(&o.format, "format", "", "the model's format: "+strings.Join(bundle.ModelFormats(), " or ")+" (required)")
	f.BoolVar(&o.fromSchema, "signature-from-schema", false, "name the model's inputs after the pipeline's feature columns, in order")
	f.StringSliceVar(&o.inputs, "inputs", nil, "the pipeline columns the model takes, in its feature order")
	f.StringSliceVar(&o.classes, "classes", nil, "a classifier's class names, in its output order")
	f.BoolVar(&o.skipGates, "skip-gates", false, "record it without running the evaluator's gates (recorded as skipped)")
	f.BoolVar(&o.promote, "promote", false, "make it champion if the gates bless it (with --skip-gates: at once)")
	f.StringVar(&o.registryURL, "registry", service.Env(envRegistryURL, ""),
		"the registry's HTTP address; default: gyre up's, from <data-dir>/up.json (env "+envRegistryURL+")")
	f.StringVar(&o.dataDir, "data-dir", service.Env(envDataDir, defaultDataDir), "where 'gyre up' keeps up.json and its admin token (env "+envDataDir+")")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json (the registry's answer)")
	return cmd
}

func runRegister(ctx context.Context, o registerOptions, pipeline string, stdout io.Writer) error {
	if err := events.ValidatePipeline(pipeline); err != nil {
		return err
	}
	switch {
	case o.file == "":
		return errors.New("--file is required: the model's file")
	case o.format == "":
		return fmt.Errorf("--format is required: %s", strings.Join(bundle.ModelFormats(), " or "))
	case o.fromSchema && len(o.inputs) > 0:
		return errors.New("--signature-from-schema and --inputs both name the inputs: give one")
	case o.output != "text" && o.output != "json":
		return fmt.Errorf("-o %q: want text or json", o.output)
	}
	var data []byte
	var err error
	if o.file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, registry.MaxModelBytes+1))
	} else {
		data, err = os.ReadFile(o.file)
	}
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	base := strings.TrimRight(o.registryURL, "/")
	if base == "" {
		st, err := (clientOptions{dataDir: o.dataDir}).upState()
		if err != nil {
			return fmt.Errorf("%w (or give the registry's address: --registry URL)", err)
		}
		base = strings.TrimRight(st.HTTPURL, "/") + "/services/" + events.ServiceRegistry
	}
	q := url.Values{"format": {o.format}}
	if o.fromSchema {
		q.Set("signature", registry.SignatureSchema)
	}
	if len(o.inputs) > 0 {
		q.Set("inputs", strings.Join(o.inputs, ","))
	}
	if len(o.classes) > 0 {
		q.Set("classes", strings.Join(o.classes, ","))
	}
	if o.skipGates {
		q.Set("skipGates", "true")
	}
	if o.promote {
		q.Set("promote", "true")
	}
	if who := localUser(); who != "" {
		q.Set("for", who)
	}
	target := base + "/v1/pipelines/" + pipeline + "/models?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	client := &http.Client{Timeout: 10 * time.Minute, Transport: bearer(adminToken(o.dataDir))}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("registry at %s: %w", base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<22))
	if err != nil {
		return fmt.Errorf("registry at %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("the registry refused the model (%s): %s", resp.Status, e.Error)
		}
		return fmt.Errorf("the registry answered %s: %s", resp.Status, strings.TrimSpace(string(raw)))
	}
	if o.output == "json" {
		_, err := stdout.Write(append(bytes.TrimSpace(raw), '\n'))
		return err
	}
	var r registry.Registered
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("the registry's answer: %w", err)
	}
	printRegistered(stdout, r)
	return nil
}

// printRegistered says what the registration did.
func printRegistered(w io.Writer, r registry.Registered) {
	v := r.Version
	how := "registered"
	if !r.Created {
		how = "already registered as"
	}
	fmt.Fprintf(w, "%s: %s v%d (%s, request %s)\n", r.Pipeline, how, v.Version, v.Algorithm, v.RequestID)
	if reg := v.Registered; reg != nil {
		fmt.Fprintf(w, "  %s; inputs named from the %s\n", reg.Who(), reg.Signature)
	}
	switch {
	case v.Registered != nil && v.Registered.SkippedGates:
		fmt.Fprintf(w, "  gates skipped: not evaluated\n")
	default:
		fmt.Fprintf(w, "  %s: %s\n", v.Verdict, v.Reason)
		for _, g := range v.Gates {
			mark := "passed"
			if !g.Passed {
				mark = "failed"
			}
			fmt.Fprintf(w, "    %s %s: %s\n", g.Metric, mark, g.Message)
		}
	}
	fmt.Fprintf(w, "  artifact %s (sha256 %s), signed\n", v.Artifact.URI, v.Artifact.Sha256)
	switch {
	case r.Promoted != nil:
		fmt.Fprintf(w, "  champion now (reason %s); model.promoted %s\n", r.Promoted.Reason, r.Promoted.EventID)
	case r.Stale:
		fmt.Fprintf(w, "  not promoted: judged against a champion since replaced\n")
	default:
		fmt.Fprintf(w, "  not promoted: gyre promote %s %s\n", r.Pipeline, strconv.FormatInt(v.Version, 10))
	}
}

// localUser is who runs the command, user@host, as far as this machine
// says: what the registry records beside the token.
func localUser() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if host, err := os.Hostname(); err == nil && host != "" && name != "" {
		return name + "@" + host
	}
	return name
}
