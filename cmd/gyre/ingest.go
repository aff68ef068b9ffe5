package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// ingestOptions are the flags of `gyre ingest`.
type ingestOptions struct {
	clientOptions
	format  string
	batchID string
}

func newIngestCmd() *cobra.Command {
	var o ingestOptions
	cmd := &cobra.Command{
		Use:   "ingest PIPELINE FILE",
		Short: "Send a batch of rows (CSV, JSON Lines or Parquet) into a pipeline",
		Long: `Send the rows of FILE into the loop as one batch of PIPELINE: it is published, inline,
as a data.batch.arrived event, and the ingest service stores it and starts the
cascade (validation, features, drift, ...). Follow it with 'gyre events -f'.

The format is --format, else the file's extension: .csv, .jsonl or .ndjson, .parquet.
The batch id is --batch-id, else the first 16 hex digits of the file's sha256, so the
same file sent twice is one batch. It prints the batch id.

Before publishing, it checks that the pipeline exists, that the file parses (naming
the row and column that does not) and that it fits in one NATS message; a larger
batch goes by URI (data.batch.arrived with nats-object://BUCKET/KEY) or by HTTP
(POST /services/ingest/v1/pipelines/PIPELINE/batches on 'gyre up').

The server is --nats, else the one a running 'gyre up' recorded in
<data-dir>/up.json (default .gyre/up.json).`,
		Example: `  gyre ingest elec2 batch-001.csv

  # another format, and your own batch id
  gyre ingest elec2 rows.txt --format jsonl --batch-id 2024-05-01T10`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runIngest(cmd.Context(), o, args[0], args[1], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.format, "format", "", "csv, jsonl or parquet (default: from the file's extension)")
	f.StringVar(&o.batchID, "batch-id", "", "the batch's id (default: the first 16 hex digits of its sha256)")
	o.clientOptions.register(f)
	return cmd
}

// formatOf returns the batch format of a file name's extension.
func formatOf(file string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(file)); ext {
	case ".csv":
		return table.FormatCSV, nil
	case ".jsonl", ".ndjson":
		return table.FormatJSONL, nil
	case ".parquet":
		return table.FormatParquet, nil
	default:
		return "", fmt.Errorf("cannot tell the format of %s from its extension %q: pass --format csv, jsonl or parquet", file, ext)
	}
}

// envelopeBytes is room left in a NATS message for the CloudEvents headers
// and the JSON around the (base64) content.
const envelopeBytes = 8 << 10

func runIngest(ctx context.Context, o ingestOptions, pipelineName, file string, stdout io.Writer) error {
	if err := events.ValidatePipeline(pipelineName); err != nil {
		return fmt.Errorf("PIPELINE: %w", err)
	}
	format := o.format
	if format == "" {
		f, err := formatOf(file)
		if err != nil {
			return err
		}
		format = f
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read batch: %w", err)
	}
	// Refuse what ingest would refuse, here, where the user sees why.
	if _, err := table.Read(format, data); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	sum := sha256.Sum256(data)
	batchID := o.batchID
	if batchID == "" {
		batchID = hex.EncodeToString(sum[:])[:16]
	}
	msg := &gyrev1.DataBatchArrived{Pipeline: pipelineName, BatchId: batchID, Format: format, Content: data}
	if err := events.Validate(msg); err != nil {
		return fmt.Errorf("--batch-id: %w", err)
	}

	nc, js, err := o.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, events.BucketPipelines)
	if err != nil {
		return fmt.Errorf("kv bucket %s: %w (is Gyre's topology provisioned? 'gyre up' does it)", events.BucketPipelines, err)
	}
	if _, _, err := store.Pipeline(ctx, kv, pipelineName); err != nil {
		return err
	}
	// Inline content travels base64-encoded in the JSON payload.
	if size := int64(len(data))*4/3 + envelopeBytes; size > nc.MaxPayload() {
		return fmt.Errorf("%s is %d bytes, too large to send inline in one NATS message (max payload %d bytes, with base64 and headers): upload it over HTTP (POST /services/ingest/v1/pipelines/%s/batches on 'gyre up') or put it in an object store and publish its nats-object:// URI",
			file, len(data), nc.MaxPayload(), pipelineName)
	}
	ev, err := events.New("/gyre/"+cliSource, pipelineName, msg)
	if err != nil {
		return err
	}
	if err := bus.NewPublisher(js, cliSource).Publish(ctx, ev); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, batchID)
	return err
}
