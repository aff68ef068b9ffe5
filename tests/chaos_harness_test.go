package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/settle"
	"github.com/gyrehq/gyre/libs/store"
)

// fleet is the loop's services as OS processes: one instance of each, and
// two of the deployer and of the monitor (instances "deployer-a",
// "deployer-b", "monitor-a", "monitor-b"), on one NATS server or cluster.
type fleet struct {
	t       *testing.T
	natsURL string
	bins    map[string]string
	args    []string

	mu    sync.Mutex
	procs map[string]*serviceProcess
}

// fleetInstances are the instances a fleet runs, and each one's service.
var fleetInstances = []struct{ instance, service string }{
	{"ingest", events.ServiceIngest}, {"validation", events.ServiceValidation}, {"feature", events.ServiceFeature},
	{"monitor-a", events.ServiceMonitor}, {"monitor-b", events.ServiceMonitor}, {"trainer", events.ServiceTrainer},
	{"evaluator", events.ServiceEvaluator}, {"registry", events.ServiceRegistry},
	{"deployer-a", events.ServiceDeployer}, {"deployer-b", events.ServiceDeployer},
}

// serviceOf returns an instance's service.
func serviceOf(instance string) string {
	for _, f := range fleetInstances {
		if f.instance == instance {
			return f.service
		}
	}
	return instance
}

// buildLoop builds every service of the loop (and the gyre CLI) into dir.
func buildLoop(t *testing.T, dir string) map[string]string {
	t.Helper()
	bins := map[string]string{"gyre": buildGyre(t, dir)}
	for _, name := range loopServices {
		bins[name] = buildService(t, dir, name)
	}
	return bins
}

// startFleet starts every instance against natsURL with the shared args.
func startFleet(t *testing.T, bins map[string]string, natsURL string, args ...string) *fleet {
	t.Helper()
	f := &fleet{t: t, natsURL: natsURL, bins: bins, args: args, procs: map[string]*serviceProcess{}}
	for _, in := range fleetInstances {
		f.start(in.instance)
	}
	return f
}

// start runs an instance (again).
func (f *fleet) start(instance string) *serviceProcess {
	f.t.Helper()
	args := slices.Clone(f.args)
	if serviceOf(instance) == events.ServiceDeployer {
		args = append(args, "--replica-id", instance)
	}
	p := startService(f.t, instance, f.bins[serviceOf(instance)], f.natsURL, args...)
	f.mu.Lock()
	f.procs[instance] = p
	f.mu.Unlock()
	return p
}

func (f *fleet) proc(instance string) *serviceProcess {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs[instance]
}

// kill sends SIGKILL to an instance and waits for it to die.
func (f *fleet) kill(instance string) {
	f.t.Helper()
	p := f.proc(instance)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		f.t.Fatalf("kill %s: %v", instance, err)
	}
	_ = p.cmd.Wait()
}

// freeze stops an instance (SIGSTOP): it holds what it holds, says nothing.
func (f *fleet) freeze(instance string) {
	f.t.Helper()
	if err := f.proc(instance).cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		f.t.Fatalf("freeze %s: %v", instance, err)
	}
}

// thaw resumes a frozen instance (SIGCONT).
func (f *fleet) thaw(instance string) {
	f.t.Helper()
	if err := f.proc(instance).cmd.Process.Signal(syscall.SIGCONT); err != nil {
		f.t.Fatalf("thaw %s: %v", instance, err)
	}
}

// httpURL returns an instance's HTTP base URL, from its log.
func (f *fleet) httpURL(instance string) string {
	f.t.Helper()
	p := f.proc(instance)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for line := range strings.SplitSeq(p.logs(), "\n") {
			if !strings.Contains(line, `"msg":"serving http"`) {
				continue
			}
			var entry struct {
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Addr != "" {
				return "http://" + entry.Addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("%s: no 'serving http' line in its log:\n%s", instance, tail(p.logs(), 2000))
	return ""
}

// readiness returns an instance's /readyz body (nil when it does not answer).
func (f *fleet) readiness(instance string) map[string]any {
	resp, err := quickClient.Get(f.httpURL(instance) + "/readyz")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out map[string]any
	if json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	return out
}

// check returns the detail of a named check of an instance's readiness.
func (f *fleet) check(instance, name string) string {
	rd := f.readiness(instance)
	checks, _ := rd["checks"].([]any)
	for _, c := range checks {
		m, _ := c.(map[string]any)
		if m["name"] == name {
			d, _ := m["detail"].(string)
			return d
		}
	}
	return ""
}

// waitReady waits until every live instance answers /readyz with 200.
func (f *fleet) waitReady(instances ...string) {
	f.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, in := range instances {
		for {
			resp, err := quickClient.Get(f.httpURL(in) + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				f.t.Fatalf("%s not ready: %v\n%s", in, f.readiness(in), tail(f.proc(in).logs(), 3000))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// controller returns the deployer instance that controls the rollouts.
func (f *fleet) controller(deployers ...string) string {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, d := range deployers {
			if strings.HasPrefix(f.check(d, "controller"), "controlling") {
				return d
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("no deployer controls the rollouts")
	return ""
}

var quickClient = &http.Client{Timeout: 5 * time.Second}

// driver feeds the loop as production traffic would, one batch at a
// time: score the batch on the deployers, publish it labelled and its
// labels, wait until the loop settles.
type driver struct {
	t        *testing.T
	js       jetstream.JetStream
	pub      *bus.Publisher
	spec     *pipeline.Pipeline
	header   []string
	rows     [][]string
	label    int
	perBatch int
	// deployers names the deployer instances to score on.
	deployers []string
	fleet     *fleet

	batchIDs []string
	// predictionIDs are every prediction scored, labelled.
	predictionIDs []string
	// settles is how long each step took to settle.
	settles []time.Duration
}

// newDriver applies spec and reads the Elec2 rows the driver streams.
func newDriver(ctx context.Context, t *testing.T, js jetstream.JetStream, f *fleet, spec []byte, perBatch int) *driver {
	t.Helper()
	p, err := pipeline.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(filepath.Join(repoRoot(t), "examples", "elec2", "elec2.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r := csv.NewReader(bufio.NewReader(fh))
	all, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, js: js, pub: bus.NewPublisher(js, "chaos"), spec: p, header: all[0], rows: all[1:], perBatch: perBatch,
		deployers: []string{"deployer-a", "deployer-b"}, fleet: f}
	d.label = slices.Index(d.header, p.Spec.Dataset.Label)
	for {
		if _, err := store.Open(ctx, js); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := store.ApplyPipeline(ctx, js, d.pub, p, "chaos"); err != nil {
		t.Fatal(err)
	}
	return d
}

// batchCSV is batch i as CSV.
func (d *driver) batchCSV(i int) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write(d.header)
	for _, row := range d.rows[i*d.perBatch : (i+1)*d.perBatch] {
		_ = w.Write(row)
	}
	w.Flush()
	return buf.Bytes()
}

// publish scores batch i and publishes it and its labels, without waiting.
func (d *driver) publish(ctx context.Context, i int) {
	d.t.Helper()
	labels := d.score(ctx, i)
	id := fmt.Sprintf("%s-%03d", d.spec.Name(), i+1)
	ev, err := events.New("/chaos/producer", d.spec.Name(), &gyrev1.DataBatchArrived{
		Pipeline: d.spec.Name(), BatchId: id, Format: "csv", Content: d.batchCSV(i),
	})
	if err != nil {
		d.t.Fatal(err)
	}
	d.mustPublish(ctx, ev)
	d.batchIDs = append(d.batchIDs, id)
	if len(labels) > 0 {
		ev, err := events.New("/chaos/producer", d.spec.Name(), &gyrev1.LabelReceived{Pipeline: d.spec.Name(), Labels: labels})
		if err != nil {
			d.t.Fatal(err)
		}
		d.mustPublish(ctx, ev)
	}
}

// mustPublish publishes, retrying while a cluster elects a stream leader.
func (d *driver) mustPublish(ctx context.Context, ev event.Event) {
	d.t.Helper()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = d.pub.Publish(ctx, ev); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.t.Fatalf("publish: %v", err)
}

// step publishes batch i and waits until the loop settles, recording how
// long that took.
func (d *driver) step(ctx context.Context, i int) time.Duration {
	d.t.Helper()
	start := time.Now()
	d.publish(ctx, i)
	d.settle(ctx)
	took := time.Since(start)
	d.settles = append(d.settles, took)
	return took
}

func (d *driver) settle(ctx context.Context) {
	d.t.Helper()
	if err := settle.Wait(ctx, d.js, 3*time.Minute); err != nil {
		d.t.Fatalf("settle: %v", err)
	}
}

// settleExcept waits until the loop settles but for the consumers of a
// service that is down on purpose (their prefix, e.g. "registry_").
func (d *driver) settleExcept(ctx context.Context, prefixes ...string) {
	d.t.Helper()
	if err := settle.Wait(ctx, d.js, 3*time.Minute, settle.Except(prefixes...)); err != nil {
		d.t.Fatalf("settle: %v", err)
	}
}

// batchCount is how many batches were published.
func (d *driver) batchCount() int { return len(d.batchIDs) }

// eventLike is a stored lifecycle event.
type eventLike = event.Event

// score asks the deployers, in turn, for predictions of batch i's rows in
// requests of 100 rows, retrying a failed request (on the other deployer:
// one may be down); it returns the labels of the predictions made.
func (d *driver) score(ctx context.Context, i int) []*gyrev1.Label {
	rows := d.rows[i*d.perBatch : (i+1)*d.perBatch]
	var labels []*gyrev1.Label
	for c := 0; c*100 < len(rows); c++ {
		chunk := rows[c*100 : min((c+1)*100, len(rows))]
		body := d.inferBody(chunk)
		var ids []string
		for attempt := 0; attempt < 6 && ids == nil; attempt++ {
			dep := d.deployers[(c+attempt)%len(d.deployers)]
			ids = d.infer(ctx, dep, body)
		}
		for k, id := range ids {
			labels = append(labels, &gyrev1.Label{PredictionId: id, Value: chunk[k][d.label]})
			d.predictionIDs = append(d.predictionIDs, id)
		}
	}
	return labels
}

func (d *driver) inferBody(rows [][]string) []byte {
	type tensor struct {
		Name     string    `json:"name"`
		Shape    []int     `json:"shape"`
		Datatype string    `json:"datatype"`
		Data     []float64 `json:"data"`
	}
	var inputs []tensor
	for j, col := range d.header {
		if j == d.label {
			continue
		}
		t := tensor{Name: col, Shape: []int{len(rows)}, Datatype: "FP64"}
		for _, r := range rows {
			v, _ := strconv.ParseFloat(r[j], 64)
			t.Data = append(t.Data, v)
		}
		inputs = append(inputs, t)
	}
	b, _ := json.Marshal(map[string]any{"inputs": inputs})
	return b
}

// infer returns the prediction ids of one request, nil when it failed
// (nothing serves yet, the deployer is down, the variant failed).
func (d *driver) infer(ctx context.Context, deployer string, body []byte) []string {
	p := d.fleet.proc(deployer)
	if p == nil || p.cmd.ProcessState != nil {
		return nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.fleet.httpURL(deployer)+"/v2/models/"+d.spec.Name()+"/infer", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := quickClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var out struct {
		Outputs []struct {
			Name string `json:"name"`
			Data []any  `json:"data"`
		} `json:"outputs"`
	}
	if json.Unmarshal(raw, &out) != nil {
		return nil
	}
	for _, o := range out.Outputs {
		if o.Name == "prediction_id" {
			ids := make([]string, len(o.Data))
			for k, v := range o.Data {
				ids[k], _ = v.(string)
			}
			return ids
		}
	}
	return nil
}

// rolloutInProgress reports whether a deployer has a rollout of the
// pipeline in progress (a canary's steps wait for traffic).
func (d *driver) rolloutInProgress(deployer string) bool {
	resp, err := quickClient.Get(d.fleet.httpURL(deployer) + "/v1/deployments/" + d.spec.Name())
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Deployment struct {
			Status string `json:"status"`
		} `json:"deployment"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return false
	}
	switch body.Deployment.Status {
	case "canary", "shadow", "blue-green":
		return true
	}
	return false
}

// finishRollouts sends traffic (the stream's first batches again, scored
// only) until no rollout is in progress: a rollout's steps are judged on
// traffic, and a run that ends mid-rollout has two versions serving.
func (d *driver) finishRollouts(ctx context.Context) {
	d.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		busy := false
		for _, dep := range d.deployers {
			busy = busy || d.rolloutInProgress(dep)
		}
		if !busy {
			d.settle(ctx)
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("a rollout still in progress after 2 minutes of traffic")
		}
		d.score(ctx, i%len(d.batchIDs))
	}
}

// served returns the version a deployer serves the pipeline with ("" when
// none or down).
func (d *driver) served(deployer string) string {
	resp, err := quickClient.Get(d.fleet.httpURL(deployer) + "/v2/models/" + d.spec.Name())
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var body struct {
		Versions []string `json:"versions"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Versions) == 0 {
		return ""
	}
	return body.Versions[0]
}

// natsCluster is three nats-server processes (Debian's, the real server)
// in one JetStream cluster.
type natsCluster struct {
	bin   string
	urls  []string
	procs []*exec.Cmd
	confs []string
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNATSCluster runs a three-node JetStream cluster of nats-server
// processes until the test ends.
func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	bin := requireTool(t, "GYRE_NATS_SERVER", "nats-server", "nats-server")
	dir := t.TempDir()
	c := &natsCluster{bin: bin}
	client := []int{freePort(t), freePort(t), freePort(t)}
	route := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range route {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range 3 {
		conf := filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1))
		text := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: gyre-chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, i+1, client[i], filepath.Join(dir, fmt.Sprintf("js%d", i+1)), route[i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		c.confs = append(c.confs, conf)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", client[i]))
	}
	for i := range 3 {
		c.start(t, bin, i)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p != nil && p.ProcessState == nil {
				_ = p.Process.Kill()
				_ = p.Wait()
			}
		}
	})
	// Ready when JetStream answers through every node's client port.
	deadline := time.Now().Add(30 * time.Second)
	for _, u := range c.urls {
		for {
			nc, err := nats.Connect(u)
			if err == nil {
				js, _ := jetstream.New(nc)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err = js.AccountInfo(ctx)
				cancel()
				nc.Close()
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("nats cluster node %s: %v", u, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return c
}

func (c *natsCluster) start(t *testing.T, bin string, i int) {
	t.Helper()
	cmd := exec.Command(bin, "-c", c.confs[i])
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("nats-server n%d: %v", i+1, err)
	}
	for len(c.procs) <= i {
		c.procs = append(c.procs, nil)
	}
	c.procs[i] = cmd
}

// restart starts node i again, with its data.
func (c *natsCluster) restart(t *testing.T, i int) {
	t.Helper()
	c.start(t, c.bin, i)
}

// kill stops node i with SIGKILL.
func (c *natsCluster) kill(i int) {
	_ = c.procs[i].Process.Kill()
	_ = c.procs[i].Wait()
}

// url is every node's client URL, comma-separated, as services take it.
func (c *natsCluster) url() string { return strings.Join(c.urls, ",") }
