package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/settle"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
	"github.com/gyrehq/gyre/services/dashboard"
)

// Defaults of gyre demo: the Elec2 example shipped in the repository.
const (
	defaultDemoDataset  = "examples/elec2/elec2.csv"
	defaultDemoPipeline = "examples/elec2/pipeline.yaml"
	defaultDemoDataDir  = ".gyre/demo"
	defaultBatchRows    = 1000
)

type demoOptions struct {
	up            upOptions
	dataset       string
	pipelineFile  string
	batchRows     int
	pace          string
	exit          bool
	report        string
	reset         bool
	settleTimeout time.Duration
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole loop on a drifting dataset (Elec2 by default) and report how it did",
		Long: `Start Gyre (as 'gyre up' does), apply a pipeline spec, and stream a dataset through
the loop in time order, one batch of --batch-rows rows at a time, the way production
traffic would meet it:

  1. score the batch through the serving endpoint (Open Inference Protocol v2) with
     the model deployed at that moment — these are the prequential predictions;
  2. publish the batch, labelled, as data.batch.arrived, and its labels for the
     predictions of step 1 as label.received;
  3. wait (--pace sync, the default) until the cascade it caused has settled:
     validation, features, drift measurement, and — when drift or a fall in live
     accuracy calls for it — retraining, evaluation, registration and redeployment.

No step is scripted: every retrain is the loop's own decision. At the end it prints
a summary and, with --report FILE, writes it as JSON:

  dataset, rows, batches, prequential_accuracy (accuracy of the deployed model on each
  batch before it saw it), static_accuracy (the first deployed model, never replaced,
  on the same batches), retrains, deployments, rollbacks, drift_detections,
  performance_triggers, cascade_ms {p50, p95} (trigger event → deployment.completed),
  training_ms {p50, p95}, dlq_messages.

Without --nats the demo runs on a fresh embedded NATS server under --data-dir
(default .gyre/demo, emptied at start). With --nats it needs --reset, which deletes
Gyre's streams and buckets on that server first, so that two runs compare.

Without --exit, Gyre keeps running after the report (explore with 'gyre events',
'gyre models') until Ctrl-C.`,
		Example: `  # Elec2, the shipped example: prints progress, then the summary
  go run ./cmd/gyre demo --exit --report r.json

  # any other dataset: a CSV in time order and a pipeline spec for it
  go run ./cmd/gyre demo --dataset examples/sensors/sensors.csv --pipeline examples/sensors/pipeline.yaml --exit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.up.natsListenSet = cmd.Flags().Changed("nats-listen")
			return runDemo(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.up.natsURL, "nats", service.Env(service.EnvNATSURL, ""), "use the NATS server at this URL instead of an embedded one (needs --reset)")
	f.StringVar(&o.up.dataDir, "data-dir", defaultDemoDataDir, "directory for the embedded server's data and the demo's logs (emptied at start)")
	f.StringVar(&o.up.httpAddr, "http", "127.0.0.1:0", "host:port of the HTTP listener (serving, health, metrics); port 0 picks a free one")
	f.StringVar(&o.up.natsListen, "nats-listen", "127.0.0.1:0", "host:port the embedded NATS server listens on; port 0 picks a free one")
	f.StringVar(&o.up.logLevel, "log-level", defaultUpLogLevel, "level of the services' JSON logs, written to <data-dir>/demo.log")
	f.StringVar(&o.dataset, "dataset", defaultDemoDataset, "CSV file with a header, rows in time order, the pipeline's label column included")
	f.StringVar(&o.pipelineFile, "pipeline", defaultDemoPipeline, "pipeline spec (YAML or JSON) for the dataset")
	f.IntVar(&o.batchRows, "batch-rows", defaultBatchRows, "rows per batch")
	f.StringVar(&o.pace, "pace", "sync", "sync: wait for each batch's cascade to settle; or a duration between batches (e.g. 200ms)")
	f.BoolVar(&o.exit, "exit", false, "stop Gyre after the report instead of leaving it running")
	f.StringVar(&o.report, "report", "", "write the summary as JSON to this file")
	f.BoolVar(&o.reset, "reset", false, "with --nats: delete Gyre's streams and buckets on that server first")
	f.DurationVar(&o.settleTimeout, "settle-timeout", 2*time.Minute, "longest wait for one batch's cascade to settle")
	o.up.traceExporter = service.TraceNone
	o.up.shutdownTimeout = service.DefaultShutdownTimeout
	o.up.readyTimeout = 30 * time.Second
	return cmd
}

func (o demoOptions) validate() error {
	var errs []error
	if o.batchRows < 10 {
		errs = append(errs, &service.FieldError{Flag: "batch-rows", Value: strconv.Itoa(o.batchRows), Reason: "must be at least 10"})
	}
	if o.pace != "sync" {
		if d, err := time.ParseDuration(o.pace); err != nil || d < 0 {
			errs = append(errs, &service.FieldError{Flag: "pace", Value: o.pace, Reason: "is 'sync' or a duration such as 200ms"})
		}
	}
	if o.up.natsURL != "" && !o.reset {
		errs = append(errs, &service.FieldError{Flag: "reset", Value: "false",
			Reason: "the demo starts from an empty Gyre so that runs compare; with --nats, pass --reset to delete Gyre's streams and buckets on that server"})
	}
	if o.settleTimeout <= 0 {
		errs = append(errs, &service.FieldError{Flag: "settle-timeout", Value: o.settleTimeout.String(), Reason: "must be positive"})
	}
	if err := o.up.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// demoData is the dataset cut into batches, with the spec that drives it.
type demoData struct {
	spec    *pipeline.Pipeline
	table   *table.Table
	label   int
	batches [][2]int // row ranges
}

func loadDemoData(o demoOptions) (*demoData, error) {
	specBytes, err := os.ReadFile(o.pipelineFile)
	if err != nil {
		return nil, fmt.Errorf("--pipeline: %w (run from the repository root, or pass --pipeline FILE)", err)
	}
	spec, err := pipeline.Parse(specBytes)
	if err != nil {
		var pe *pipeline.Error
		if errors.As(err, &pe) {
			pe.Source = o.pipelineFile
		}
		return nil, err
	}
	raw, err := os.ReadFile(o.dataset)
	if err != nil {
		return nil, fmt.Errorf("--dataset: %w (run from the repository root, or pass --dataset FILE)", err)
	}
	t, err := table.Read(table.FormatCSV, raw)
	if err != nil {
		return nil, fmt.Errorf("--dataset %s: %w", o.dataset, err)
	}
	label := t.Index(spec.Spec.Dataset.Label)
	if label < 0 {
		return nil, fmt.Errorf("--dataset %s has no column %q, the label of %s", o.dataset, spec.Spec.Dataset.Label, o.pipelineFile)
	}
	d := &demoData{spec: spec, table: t, label: label}
	for start := 0; start < t.Len(); start += o.batchRows {
		d.batches = append(d.batches, [2]int{start, min(start+o.batchRows, t.Len())})
	}
	return d, nil
}

// csvOf returns rows [lo, hi) of the table as CSV with its header.
func (d *demoData) csvOf(lo, hi int) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write(d.table.Columns)
	for i := lo; i < hi; i++ {
		_ = w.Write(d.table.Rows[i])
	}
	w.Flush()
	return buf.Bytes()
}

func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	data, err := loadDemoData(o)
	if err != nil {
		return err
	}
	if o.up.natsURL == "" {
		// A fresh embedded server: the demo's figures must not depend on a
		// previous run's models and cooldowns.
		if err := os.RemoveAll(filepath.Join(o.up.dataDir, "nats")); err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
	}
	if err := os.MkdirAll(o.up.dataDir, 0o750); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	logPath := filepath.Join(o.up.dataDir, "demo.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	defer logFile.Close()

	if o.up.natsURL != "" {
		if err := resetServer(ctx, o.up.natsURL); err != nil {
			return err
		}
	}

	upCtx, stopUp := context.WithCancel(context.WithoutCancel(ctx))
	defer stopUp()
	upDone := make(chan error, 1)
	go func() { upDone <- runUp(upCtx, o.up, logFile, logFile) }()
	st, err := waitForUp(ctx, o.up.dataDir, upDone)
	if err != nil {
		return fmt.Errorf("starting Gyre: %w (see %s)", err, logPath)
	}
	fmt.Fprintf(stderr, "Gyre is up: NATS %s, HTTP %s (logs in %s)\n", service.RedactURL(st.NATSURL), st.HTTPURL, logPath)
	fmt.Fprintf(stderr, "Watch the loop at %s/services/%s/\n", st.HTTPURL, dashboard.Name)

	runErr := streamDemo(ctx, o, data, st, stdout, stderr)
	if runErr == nil && !o.exit {
		fmt.Fprintf(stderr, "\nGyre keeps running: serving at %s/services/deployer/v2/models/%s, events with 'gyre events --data-dir %s'. Ctrl-C stops it.\n",
			st.HTTPURL, data.spec.Name(), o.up.dataDir)
		<-ctx.Done()
	}
	stopUp()
	select {
	case err := <-upDone:
		return errors.Join(runErr, err)
	case <-time.After(o.up.shutdownTimeout + 10*time.Second):
		return errors.Join(runErr, errors.New("gyre did not stop in time"))
	}
}

// waitForUp waits until the in-process gyre up has written its state file.
func waitForUp(ctx context.Context, dataDir string, upDone <-chan error) (upState, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		if st, err := readState(dataDir); err == nil && st.PID == os.Getpid() {
			return st, nil
		}
		select {
		case err := <-upDone:
			if err == nil {
				err = errors.New("gyre up stopped")
			}
			return upState{}, err
		case <-ctx.Done():
			return upState{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return upState{}, errors.New("services not ready after a minute")
		}
	}
}

// resetServer deletes Gyre's streams and buckets on an external server.
func resetServer(ctx context.Context, url string) error {
	nc, err := dialClient(url, service.Env(service.EnvNATSNkey, ""), "gyre-demo")
	if err != nil {
		return fmt.Errorf("--nats %s: %w", service.RedactURL(url), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := bus.Teardown(ctx, js); err != nil {
		return fmt.Errorf("--reset: %w", err)
	}
	return nil
}

// demoRun is the state of one demo while it streams.
type demoRun struct {
	o       demoOptions
	data    *demoData
	st      upState
	js      jetstream.JetStream
	pub     *bus.Publisher
	client  *http.Client
	scored  int // rows scored by the deployed model
	correct int
	// static is the first deployed model, scored locally on every batch the
	// deployed model scores, for static_accuracy.
	static        staticScorer
	staticCorrect int
	staticScored  int
	predictions   int // prediction.logged events expected
	// pendingLabels are the truths of the scored batch, sent after the batch.
	pendingLabels []*gyrev1.Label
}

func streamDemo(ctx context.Context, o demoOptions, data *demoData, st upState, stdout, stderr io.Writer) error {
	nc, err := dialClient(st.NATSURL, st.NATSSeed, "gyre-demo")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	r := &demoRun{o: o, data: data, st: st, js: js, pub: bus.NewPublisher(js, "demo"), client: &http.Client{Timeout: time.Minute, Transport: bearer(adminToken(o.up.dataDir))}}
	if err := applySpec(ctx, js, r.pub, data.spec); err != nil {
		return fmt.Errorf("apply %s: %w", o.pipelineFile, err)
	}
	started := time.Now()
	name := data.spec.Name()
	for i, b := range data.batches {
		if err := r.scoreBatch(ctx, i, b); err != nil {
			return err
		}
		content := data.csvOf(b[0], b[1])
		arrived, err := events.New("/gyre/demo", name, &gyrev1.DataBatchArrived{
			Pipeline: name, BatchId: fmt.Sprintf("%s-%05d", name, i+1), Format: table.FormatCSV, Content: content,
			Labels: map[string]string{"source": filepath.Base(o.dataset)},
		})
		if err != nil {
			return err
		}
		if err := r.pub.Publish(ctx, arrived); err != nil {
			return fmt.Errorf("batch %d: %w", i+1, err)
		}
		// The batch's own cascade settles before its labels arrive, and the
		// labels' before the next batch: each trigger then sees the same
		// state on every run, so two runs take the same decisions.
		if err := r.settle(ctx); err != nil {
			return fmt.Errorf("batch %d: %w", i+1, err)
		}
		if err := r.publishLabels(ctx); err != nil {
			return fmt.Errorf("batch %d labels: %w", i+1, err)
		}
		if err := r.settle(ctx); err != nil {
			return fmt.Errorf("batch %d labels: %w", i+1, err)
		}
		r.progress(stderr, i+1, started)
	}
	fmt.Fprintln(stderr)
	rep, err := r.report(ctx)
	if err != nil {
		return err
	}
	printSummary(stdout, rep, time.Since(started))
	if o.report != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.report, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--report: %w", err)
		}
	}
	return nil
}

func (r *demoRun) settle(ctx context.Context) error {
	if r.o.pace != "sync" {
		d, _ := time.ParseDuration(r.o.pace)
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return settle.Wait(ctx, r.js, r.o.settleTimeout)
}

func (r *demoRun) progress(w io.Writer, done int, started time.Time) {
	total := len(r.data.batches)
	const width = 30
	filled := done * width / total
	acc := "  -  "
	if r.scored > 0 {
		acc = fmt.Sprintf("%.3f", float64(r.correct)/float64(r.scored))
	}
	fmt.Fprintf(w, "\r[%s%s] %d/%d batches  prequential accuracy %s  %s ",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total, acc, time.Since(started).Round(time.Second))
}

// demoReport is the JSON of --report: exactly the fields issue #3 names.
type demoReport struct {
	Dataset             string      `json:"dataset"`
	Rows                int         `json:"rows"`
	Batches             int         `json:"batches"`
	PrequentialAccuracy float64     `json:"prequential_accuracy"`
	StaticAccuracy      float64     `json:"static_accuracy"`
	Retrains            int         `json:"retrains"`
	Deployments         int         `json:"deployments"`
	Rollbacks           int         `json:"rollbacks"`
	DriftDetections     int         `json:"drift_detections"`
	PerformanceTriggers int         `json:"performance_triggers"`
	CascadeMS           percentiles `json:"cascade_ms"`
	TrainingMS          percentiles `json:"training_ms"`
	DLQMessages         uint64      `json:"dlq_messages"`
}

type percentiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
}

func percentilesOf(xs []float64) percentiles {
	if len(xs) == 0 {
		return percentiles{}
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return percentiles{P50: at(0.5), P95: at(0.95)}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// report reads the pipeline's lifecycle events and the dead-letter stream
// and computes the summary.
func (r *demoRun) report(ctx context.Context) (demoReport, error) {
	rep := demoReport{Dataset: filepath.Base(r.o.dataset), Rows: r.data.table.Len(), Batches: len(r.data.batches)}
	if r.scored > 0 {
		rep.PrequentialAccuracy = round3(float64(r.correct) / float64(r.scored))
	}
	if r.staticScored > 0 {
		rep.StaticAccuracy = round3(float64(r.staticCorrect) / float64(r.staticScored))
	}
	evs, err := readEvents(ctx, r.js, r.data.spec.Name())
	if err != nil {
		return rep, err
	}
	byID := map[string]event.Event{}
	for _, ev := range evs {
		byID[ev.ID()] = ev
	}
	var cascade, training []float64
	for _, ev := range evs {
		spec, _ := events.LookupType(ev.Type())
		switch spec.Name {
		case events.TrainingCompleted:
			rep.Retrains++
			var m gyrev1.TrainingCompleted
			if events.Decode(ev, &m) == nil {
				training = append(training, float64(m.GetDurationMs()))
			}
		case events.DeploymentCompleted:
			rep.Deployments++
			if t, ok := triggerTime(ev, byID); ok {
				cascade = append(cascade, float64(ev.Time().Sub(t).Milliseconds()))
			}
		case events.DeploymentRolledBack:
			rep.Rollbacks++
		case events.DriftDetected:
			rep.DriftDetections++
		case events.PerformanceDegraded:
			rep.PerformanceTriggers++
		}
	}
	rep.CascadeMS = percentilesOf(cascade)
	rep.TrainingMS = percentilesOf(training)
	dlq, err := r.js.Stream(ctx, events.StreamDLQ)
	if err != nil {
		return rep, err
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		return rep, err
	}
	rep.DLQMessages = info.State.Msgs
	return rep, nil
}

// triggerTime follows a deployment's causation chain back to the event that
// triggered its training (the cause named by training.requested) and returns
// that event's time.
func triggerTime(ev event.Event, byID map[string]event.Event) (time.Time, bool) {
	cur := ev
	for range 32 {
		cause, ok := byID[bus.Ext(cur, bus.ExtCausationID)]
		if !ok {
			return time.Time{}, false
		}
		if spec, _ := events.LookupType(cause.Type()); spec.Name == events.TrainingRequested {
			var m gyrev1.TrainingRequested
			if events.Decode(cause, &m) == nil {
				if trig, ok := byID[m.GetCauseEventId()]; ok {
					return trig.Time(), true
				}
			}
			return cause.Time(), true
		}
		cur = cause
	}
	return time.Time{}, false
}

// readEvents returns every stored lifecycle event of a pipeline, oldest first.
func readEvents(ctx context.Context, js jetstream.JetStream, pipelineName string) ([]event.Event, error) {
	filter, err := events.FilterSubject(pipelineName, "")
	if err != nil {
		return nil, err
	}
	c, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	pending := int(info.NumPending)
	var out []event.Event
	for len(out) < pending {
		batch, err := c.Fetch(min(pending-len(out), 500), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := bus.Decode(m.Headers(), m.Data())
			if err != nil {
				continue // not ours to judge here; it would be in the DLQ
			}
			out = append(out, ev)
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

func printSummary(w io.Writer, rep demoReport, elapsed time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nGyre demo: %s, %d rows in %d batches, %s\n\n", rep.Dataset, rep.Rows, rep.Batches, elapsed.Round(time.Second))
	fmt.Fprintf(tw, "prequential accuracy\t%.3f\t(the deployed model on each batch before seeing it)\n", rep.PrequentialAccuracy)
	fmt.Fprintf(tw, "static accuracy\t%.3f\t(the first deployed model, never replaced)\n", rep.StaticAccuracy)
	fmt.Fprintf(tw, "retrains\t%d\t\n", rep.Retrains)
	fmt.Fprintf(tw, "deployments\t%d\t(rollbacks %d)\n", rep.Deployments, rep.Rollbacks)
	fmt.Fprintf(tw, "triggers\t%d drift, %d performance\t\n", rep.DriftDetections, rep.PerformanceTriggers)
	fmt.Fprintf(tw, "cascade\tp50 %.0f ms, p95 %.0f ms\t(trigger event → deployment.completed)\n", rep.CascadeMS.P50, rep.CascadeMS.P95)
	fmt.Fprintf(tw, "training\tp50 %.0f ms, p95 %.0f ms\t\n", rep.TrainingMS.P50, rep.TrainingMS.P95)
	fmt.Fprintf(tw, "dead letters\t%d\t\n", rep.DLQMessages)
	_ = tw.Flush()
}

// applySpec stores the demo's pipeline spec and announces it, as 'gyre apply' does.
func applySpec(ctx context.Context, js jetstream.JetStream, pub *bus.Publisher, p *pipeline.Pipeline) error {
	_, err := store.ApplyPipeline(ctx, js, pub, p, "demo")
	return err
}
