// Command busbench measures libs/bus against raw nats.go jetstream on the same
// server in the same run: events per second through publish → handler → ack,
// and the publish → handler latency at a fixed rate below saturation.
//
// Both sides move the same 1 KiB bodies with async publishes and a durable
// pull consumer that acknowledges each message: the raw side with
// jetstream.PublishAsync and Consumer.Consume, the bus side with
// Publisher.PublishBatch (CloudEvents binary mode, Nats-Msg-Id) and a
// Router handler (Watermill middleware: decode, lineage, retry, dead-letter,
// metrics). Runs alternate raw and bus and the median of each is reported.
//
//	go run ./libs/cmd/busbench                     # embedded server, file storage in a temp dir
//	go run ./libs/cmd/busbench --nats nats://127.0.0.1:4222 --events 200000
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/embednats"
)

type config struct {
	natsURL     string
	events      int
	size        int
	runs        int
	rate        int
	latencyFor  time.Duration
	batch       int
	concurrency int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "busbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var cfg config
	fs := flag.NewFlagSet("busbench", flag.ContinueOnError)
	fs.StringVar(&cfg.natsURL, "nats", "", "NATS server URL (default: an embedded server with file storage in a temp dir)")
	fs.IntVar(&cfg.events, "events", 50000, "events per throughput run")
	fs.IntVar(&cfg.size, "size", 1024, "body size in bytes")
	fs.IntVar(&cfg.runs, "runs", 3, "runs of each side; the median is reported")
	fs.IntVar(&cfg.rate, "rate", 2000, "events per second in the latency runs")
	fs.DurationVar(&cfg.latencyFor, "latency-for", 3*time.Second, "length of each latency run")
	fs.IntVar(&cfg.batch, "batch", 1000, "events per async publish batch (both sides)")
	fs.IntVar(&cfg.concurrency, "concurrency", 1, "bus handler concurrency (the raw callback is serial)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.size < 8 || cfg.events < 1 || cfg.runs < 1 || cfg.rate < 1 || cfg.batch < 1 {
		return errors.New("--size ≥ 8, --events, --runs, --rate and --batch ≥ 1")
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	url := cfg.natsURL
	where := url
	if url == "" {
		dir, err := os.MkdirTemp("", "busbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := embednats.Run(embednats.Options{StoreDir: dir})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
		where = "embedded nats-server " + srv.Name() + " (file storage)"
	}
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*cfg.batch))
	if err != nil {
		return err
	}

	var raw, wrapped []result
	var rawLat, busLat []latency
	for i := range cfg.runs {
		fmt.Fprintf(os.Stderr, "run %d/%d: raw throughput…\n", i+1, cfg.runs)
		r, err := throughput(ctx, js, cfg, rawSide{})
		if err != nil {
			return fmt.Errorf("raw: %w", err)
		}
		raw = append(raw, r)
		fmt.Fprintf(os.Stderr, "run %d/%d: bus throughput…\n", i+1, cfg.runs)
		b, err := throughput(ctx, js, cfg, busSide{concurrency: cfg.concurrency})
		if err != nil {
			return fmt.Errorf("bus: %w", err)
		}
		wrapped = append(wrapped, b)
		fmt.Fprintf(os.Stderr, "run %d/%d: latency at %d ev/s…\n", i+1, cfg.runs, cfg.rate)
		rl, err := paced(ctx, js, cfg, rawSide{})
		if err != nil {
			return fmt.Errorf("raw latency: %w", err)
		}
		rawLat = append(rawLat, rl)
		bl, err := paced(ctx, js, cfg, busSide{concurrency: cfg.concurrency})
		if err != nil {
			return fmt.Errorf("bus latency: %w", err)
		}
		busLat = append(busLat, bl)
	}
	rr, br := median(raw), median(wrapped)
	rl, bl := medianLat(rawLat), medianLat(busLat)

	fmt.Fprintf(out, "\nlibs/bus vs raw nats.go jetstream — %d × %d B events per throughput run, median of %d runs; latency at %d ev/s for %s\n",
		cfg.events, cfg.size, cfg.runs, cfg.rate, cfg.latencyFor)
	fmt.Fprintf(out, "server: %s\n\n", where)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tevents/s\tpublish→handler p50\tp99\t(at saturation p50\tp99)\t")
	fmt.Fprintf(tw, "raw jetstream\t%.0f\t%s\t%s\t%s\t%s\t\n", rr.rate, ms(rl.p50), ms(rl.p99), ms(rr.p50), ms(rr.p99))
	fmt.Fprintf(tw, "libs/bus\t%.0f\t%s\t%s\t%s\t%s\t\n", br.rate, ms(bl.p50), ms(bl.p99), ms(br.p50), ms(br.p99))
	fmt.Fprintf(tw, "bus / raw\t%.0f%%\t%.2f×\t%.2f×\t%.2f×\t%.2f×\t\n", 100*br.rate/rr.rate,
		ratio(bl.p50, rl.p50), ratio(bl.p99, rl.p99), ratio(br.p50, rr.p50), ratio(br.p99, rr.p99))
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "meets"
	if br.rate < 0.7*rr.rate {
		verdict = "MISSES"
	}
	fmt.Fprintf(out, "\ntarget: libs/bus ≥ 70%% of raw throughput — %s (%.0f%%)\n", verdict, 100*br.rate/rr.rate)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

type result struct {
	rate     float64
	p50, p99 time.Duration
}

type latency struct{ p50, p99 time.Duration }

func median(rs []result) result {
	slices.SortFunc(rs, func(a, b result) int {
		switch {
		case a.rate < b.rate:
			return -1
		case a.rate > b.rate:
			return 1
		}
		return 0
	})
	return rs[len(rs)/2]
}

func medianLat(ls []latency) latency {
	p50 := make([]time.Duration, len(ls))
	p99 := make([]time.Duration, len(ls))
	for i, l := range ls {
		p50[i], p99[i] = l.p50, l.p99
	}
	slices.Sort(p50)
	slices.Sort(p99)
	return latency{p50[len(ls)/2], p99[len(ls)/2]}
}

// side is one path under test: it sets up a consumer that calls onMessage with
// each body, and publishes bodies in async batches.
type side interface {
	name() string
	start(ctx context.Context, js jetstream.JetStream, onMessage func(body []byte)) (stop func() error, err error)
	publish(ctx context.Context, js jetstream.JetStream, bodies [][]byte) error
}

// recorder counts handled messages and their latencies (the publish time is
// the body's first 8 bytes).
type recorder struct {
	mu    sync.Mutex
	lat   []time.Duration
	n     atomic.Int64
	want  int64
	done  chan struct{}
	last  atomic.Int64
	close sync.Once
}

func newRecorder(want int) *recorder {
	return &recorder{want: int64(want), done: make(chan struct{}), lat: make([]time.Duration, 0, want)}
}

func (r *recorder) onMessage(body []byte) {
	now := time.Now()
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(body)))
	r.mu.Lock()
	r.lat = append(r.lat, now.Sub(sent))
	r.mu.Unlock()
	r.last.Store(now.UnixNano())
	if r.n.Add(1) == r.want {
		r.close.Do(func() { close(r.done) })
	}
}

func (r *recorder) percentiles() (p50, p99 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.Sort(r.lat)
	if len(r.lat) == 0 {
		return 0, 0
	}
	return r.lat[len(r.lat)/2], r.lat[len(r.lat)*99/100]
}

func bodies(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, size)
		for j := 8; j < size; j++ {
			b[j] = byte('a' + (i+j)%26)
		}
		out[i] = b
	}
	return out
}

func stamp(b []byte) { binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano())) }

// throughput publishes cfg.events as fast as the side allows while its
// consumer runs, and measures from the first publish to the last handled.
func throughput(ctx context.Context, js jetstream.JetStream, cfg config, s side) (result, error) {
	rec := newRecorder(cfg.events)
	stop, err := s.start(ctx, js, rec.onMessage)
	if err != nil {
		return result{}, err
	}
	all := bodies(cfg.events, cfg.size)
	start := time.Now()
	for i := 0; i < len(all); i += cfg.batch {
		chunk := all[i:min(i+cfg.batch, len(all))]
		for _, b := range chunk {
			stamp(b)
		}
		if err := s.publish(ctx, js, chunk); err != nil {
			_ = stop()
			return result{}, err
		}
	}
	select {
	case <-rec.done:
	case <-time.After(2 * time.Minute):
		_ = stop()
		return result{}, fmt.Errorf("%s: %d of %d handled after 2 minutes", s.name(), rec.n.Load(), cfg.events)
	case <-ctx.Done():
		_ = stop()
		return result{}, ctx.Err()
	}
	elapsed := time.Unix(0, rec.last.Load()).Sub(start)
	if err := stop(); err != nil {
		return result{}, err
	}
	p50, p99 := rec.percentiles()
	return result{rate: float64(cfg.events) / elapsed.Seconds(), p50: p50, p99: p99}, nil
}

// paced publishes one event at a time at cfg.rate and measures publish →
// handler latency away from saturation.
func paced(ctx context.Context, js jetstream.JetStream, cfg config, s side) (latency, error) {
	n := max(1, int(float64(cfg.rate)*cfg.latencyFor.Seconds()))
	rec := newRecorder(n)
	stop, err := s.start(ctx, js, rec.onMessage)
	if err != nil {
		return latency{}, err
	}
	all := bodies(n, cfg.size)
	tick := time.NewTicker(time.Second / time.Duration(cfg.rate))
	defer tick.Stop()
	for _, b := range all {
		<-tick.C
		stamp(b)
		if err := s.publish(ctx, js, [][]byte{b}); err != nil {
			_ = stop()
			return latency{}, err
		}
	}
	select {
	case <-rec.done:
	case <-time.After(time.Minute):
		_ = stop()
		return latency{}, fmt.Errorf("%s: %d of %d handled after a minute", s.name(), rec.n.Load(), n)
	}
	if err := stop(); err != nil {
		return latency{}, err
	}
	p50, p99 := rec.percentiles()
	return latency{p50, p99}, nil
}

// rawSide is plain nats.go jetstream: its own stream, PublishAsync, Consume.
type rawSide struct{}

const rawStream, rawSubject = "BENCH_RAW", "bench.raw"

func (rawSide) name() string { return "raw" }

func (rawSide) start(ctx context.Context, js jetstream.JetStream, onMessage func([]byte)) (func() error, error) {
	_ = js.DeleteStream(ctx, rawStream)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{rawSubject}, Storage: jetstream.FileStorage, Duplicates: events.DedupWindow,
	}); err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: events.DefaultMaxAckPending,
	})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		onMessage(m.Data())
		_ = m.Ack()
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		return nil, err
	}
	return func() error { cc.Stop(); return js.DeleteStream(context.Background(), rawStream) }, nil
}

func (rawSide) publish(ctx context.Context, js jetstream.JetStream, bodies [][]byte) error {
	for _, b := range bodies {
		if _, err := js.PublishAsync(rawSubject, b); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("raw: async publishes not acknowledged in 30s")
	}
}

// busSide is libs/bus: the catalog's GYRE_EVENTS stream, PublishBatch, a Router handler.
type busSide struct{ concurrency int }

func (busSide) name() string { return "bus" }

func (s busSide) start(ctx context.Context, js jetstream.JetStream, onMessage func([]byte)) (func() error, error) {
	_ = js.DeleteStream(ctx, events.StreamEvents)
	_ = js.DeleteStream(ctx, events.StreamDLQ)
	decl := events.EventConsumer("busbench", "handler", events.DataBatchArrived)
	if _, err := bus.Provision(ctx, js, bus.Topology{Streams: events.Streams(), Consumers: []events.Consumer{decl}}); err != nil {
		return nil, err
	}
	metrics, err := bus.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	r, err := bus.NewRouter(js, bus.RouterConfig{Service: "busbench", Metrics: metrics, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if err := r.Handle(decl, func(_ context.Context, ev event.Event) error {
		// The body travels as the batch's content: the router checks every
		// payload against its contract before a handler sees it.
		var m gyrev1.DataBatchArrived
		if err := bus.DecodePayload(ev, &m); err != nil {
			return err
		}
		onMessage(m.GetContent())
		return nil
	}, bus.WithConcurrency(s.concurrency)); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	select {
	case <-r.Running():
	case err := <-done:
		cancel()
		return nil, err
	}
	return func() error { cancel(); return <-done }, nil
}

var busPublisher sync.Map // jetstream.JetStream → *bus.Publisher

func (busSide) publish(ctx context.Context, js jetstream.JetStream, bodies [][]byte) error {
	p, _ := busPublisher.LoadOrStore(js, bus.NewPublisher(js, "busbench"))
	evs := make([]event.Event, len(bodies))
	for i, b := range bodies {
		ev, err := events.NewProtobuf("/gyre/busbench", "bench", &gyrev1.DataBatchArrived{
			Pipeline: "bench", BatchId: strconv.Itoa(i), Format: events.FormatCSV, Content: b,
		})
		if err != nil {
			return err
		}
		evs[i] = ev
	}
	return p.(*bus.Publisher).PublishBatch(ctx, evs)
}
