package ingest_test

import (
	"bufio"
	"context"
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
)

// The tests in this file run ingest as its own process — the binary of
// cmd/ingest, as a Deployment runs it — against a JetStream server, with
// HTTP authentication on, and measure it from outside: its memory in
// /proc/<pid>/status, its connections as a client sees them. They need
// Linux's /proc and the go command, and fail without them.

// EnvLoad names the variable that makes TestUploadMemory send the full
// load of the acceptance (eight 200 MiB uploads) instead of eight 32 MiB.
const EnvLoad = "GYRE_INGEST_LOAD"

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// ingestBinary builds cmd/ingest once per test binary.
func ingestBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		goCmd, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is needed to build cmd/ingest: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "gyre-ingest-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "ingest")
		out, err := exec.Command(goCmd, "build", "-o", binary, "./cmd/ingest").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ingest: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		_ = os.RemoveAll(filepath.Dir(binary))
	}
	os.Exit(code)
}

// process is ingest running as its own process.
type process struct {
	cmd    *exec.Cmd
	url    string // http://host:port
	tokens *servicetest.Tokens
	logs   *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) add(s string) {
	l.mu.Lock()
	l.b.WriteString(s + "\n")
	l.mu.Unlock()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcess provisions a JetStream server (natstest: embedded, or the
// one at NATS_URL) with pipeline p1, starts the ingest binary on it with a
// token file and args, and waits until it is ready. It is stopped with
// SIGTERM at cleanup, and must exit cleanly.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	bin := ingestBinary(t)
	srv, js, _ := servicetest.Provisioned(t)
	if srv.External {
		// Registered before the process's cleanup, so run after it: the
		// batches do not stay on the shared server.
		t.Cleanup(func() { natstest.Reset(t, js) })
	}
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.ApplyPipeline(ctx, js, bus.NewPublisher(js, "test"), p, "test"); err != nil {
		t.Fatalf("apply: %v", err)
	}
	tokens := servicetest.NewTokens(t)
	cmd := exec.Command(bin, append([]string{"--nats", srv.URL, "--http", "127.0.0.1:0", "--auth-tokens", tokens.File, "--log-level", "info"}, args...)...)
	// The spool under the test's own directory, removed with it.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ingest: %v", err)
	}
	proc := &process{cmd: cmd, tokens: tokens, logs: &lockedBuffer{}}
	addr := make(chan string, 1)
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			proc.logs.add(line)
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving http" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-logsDone // Wait closes the pipe: read it to its end first
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("ingest exited with %v after SIGTERM; logs:\n%s", err, tail(proc.logs.String(), 20))
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("ingest still running 30s after SIGTERM")
		}
	})
	select {
	case a := <-addr:
		proc.url = "http://" + a
	case err := <-exited:
		t.Fatalf("ingest exited at start: %v\n%s", err, proc.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("ingest did not serve HTTP within 60s:\n%s", proc.logs.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(proc.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest not ready after 30s:\n%s", proc.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return proc
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// memory reads VmRSS and VmHWM (peak RSS) of the process, in bytes.
func (p *process) memory(t *testing.T) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the process's memory (Linux /proc needed): %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		field, value, ok := strings.Cut(line, ":")
		if !ok || (field != "VmRSS" && field != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc status %q: %v", line, err)
		}
		if field == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", p.cmd.Process.Pid)
	}
	return rss, hwm
}

// csvBatch is a CSV batch of about size bytes generated as it is read, so
// that the test holds none of it: a header, then fixed-width rows, the
// first of which is the seed (so that every batch is different content).
type csvBatch struct {
	header, first []byte
	row           []byte
	rows          int64 // data rows, the first included
	// read position
	off int64
}

const batchRow = "0000000001,0.5000,0.2500,1\n" // x,a,b,y

func newCSVBatch(seed int, size int64) *csvBatch {
	header := []byte("x,a,b,y\n")
	first := fmt.Appendf(nil, "%010d,0.1234,0.5678,0\n", seed)
	rows := (size - int64(len(header))) / int64(len(batchRow))
	return &csvBatch{header: header, first: first, row: []byte(batchRow), rows: rows}
}

func (c *csvBatch) Len() int64 { return int64(len(c.header)) + c.rows*int64(len(c.row)) }

func (c *csvBatch) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && c.off < c.Len() {
		var src []byte
		var at int64
		switch h, r := int64(len(c.header)), int64(len(c.row)); {
		case c.off < h:
			src, at = c.header, c.off
		case c.off < h+r:
			src, at = c.first, c.off-h
		default:
			src, at = c.row, (c.off-h)%r
		}
		k := copy(p[n:], src[at:])
		n += k
		c.off += int64(k)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// TestUploadMemory: eight parallel uploads of a large CSV batch, to ingest
// running as its own process, are all accepted with every row counted,
// while the process's peak RSS stays under 300 MB and grows by far less
// than the bytes uploaded: uploads stream to a temporary file, are parsed a
// record at a time and put in the object store a chunk at a time.
//
// By default each upload is 32 MiB (256 MiB in all, seconds). The
// acceptance load, eight 200 MiB uploads, runs with GYRE_INGEST_LOAD=1:
//
//	cd services/ingest && GYRE_INGEST_LOAD=1 go test -count=1 -run TestUploadMemory -v .
func TestUploadMemory(t *testing.T) {
	const uploads = 8
	size := int64(32 << 20)
	if os.Getenv(EnvLoad) != "" {
		size = 200 << 20
	}
	maxBatch := size + size/4
	proc := startProcess(t,
		"--max-batch-bytes", strconv.FormatInt(maxBatch, 10),
		"--max-concurrent-uploads", strconv.Itoa(uploads),
		"--max-upload-buffer-bytes", strconv.FormatInt(uploads*maxBatch, 10))
	baseRSS, _ := proc.memory(t)

	// Sample RSS while the uploads run.
	var peakRSS atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.cmd.Process.Pid))
				if err != nil {
					continue
				}
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
						if kb<<10 > peakRSS.Load() {
							peakRSS.Store(kb << 10)
						}
					}
				}
			}
		}
	}()

	start := time.Now()
	type result struct {
		code int
		body string
		rows int64
		err  error
	}
	results := make([]result, uploads)
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Go(func() {
			batch := newCSVBatch(i, size)
			req, err := http.NewRequest(http.MethodPost, proc.url+"/v1/pipelines/p1/batches?batchId=load-"+strconv.Itoa(i), batch)
			if err != nil {
				results[i].err = err
				return
			}
			req.ContentLength = batch.Len()
			req.Header.Set("Content-Type", "text/csv")
			proc.tokens.Authorize(req, service.ScopeIngest)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			results[i] = result{code: resp.StatusCode, body: string(body), rows: batch.rows}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	rss, hwm := proc.memory(t)
	for i, r := range results {
		if r.err != nil || r.code != http.StatusAccepted {
			t.Errorf("upload %d: %d %s %v", i, r.code, r.body, r.err)
			continue
		}
		var out struct {
			Rows  int64 `json:"rows"`
			Bytes int64 `json:"bytes"`
		}
		if err := json.Unmarshal([]byte(r.body), &out); err != nil || out.Rows != r.rows || out.Bytes != newCSVBatch(i, size).Len() {
			t.Errorf("upload %d: %s, want %d rows", i, r.body, r.rows)
		}
	}
	const limit = 300 << 20
	total := int64(uploads) * size
	t.Logf("%d parallel uploads of %d MiB (%d MiB) in %s: ingest RSS %d MiB before, peak %d MiB sampled, VmHWM %d MiB, %d MiB after",
		uploads, size>>20, total>>20, took.Round(100*time.Millisecond), baseRSS>>20, peakRSS.Load()>>20, hwm>>20, rss>>20)
	if hwm >= limit {
		t.Errorf("ingest's peak RSS (VmHWM) %d MiB, want under %d MB", hwm>>20, limit/1000/1000)
	}
	// Buffering even half the uploads in memory would show here.
	if grew := hwm - baseRSS; grew > total/4 {
		t.Errorf("ingest's RSS grew by %d MiB for %d MiB uploaded: the uploads are held in memory", grew>>20, total>>20)
	}
}

// slowConn is a client that sends a request's headers, then its body one
// byte at a time, and records what the server answered and when it closed
// the connection.
type slowConn struct {
	status   string // the response's status line, if any came
	closedAt time.Duration
	err      error
}

// TestSlowBodies: 300 connections sending an upload's body at 1 byte per 5
// seconds — half with a token of scope ingest, half without — are all
// closed by the server's own limits (the body guard: 10 s of grace, then
// 4 KiB/s), while /healthz answers every poll in time; afterwards a normal
// upload is accepted, and the process is still up.
func TestSlowBodies(t *testing.T) {
	const (
		conns    = 300
		interval = 5 * time.Second
		limit    = 30 * time.Second // DefaultHTTPLimits' grace is 10 s
	)
	proc := startProcess(t)
	host := strings.TrimPrefix(proc.url, "http://")
	secret := proc.tokens.Secret(service.ScopeIngest)

	// /healthz, every 200 ms, each answer within 2 s.
	var healthPolls, healthFailures atomic.Int64
	stopHealth := make(chan struct{})
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stopHealth:
				return
			case <-time.After(200 * time.Millisecond):
			}
			healthPolls.Add(1)
			resp, err := client.Get(proc.url + "/healthz")
			if err != nil {
				healthFailures.Add(1)
				t.Logf("/healthz: %v", err)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				healthFailures.Add(1)
			}
		}
	}()

	start := time.Now()
	results := make([]slowConn, conns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			results[i] = slow(host, secret, i%2 == 0, start, interval, limit)
		})
	}
	wg.Wait()
	close(stopHealth)
	<-healthDone

	var times []time.Duration
	statuses := map[string]int{}
	for i, r := range results {
		if r.err != nil {
			t.Errorf("connection %d: %v", i, r.err)
			continue
		}
		times = append(times, r.closedAt)
		statuses[r.status]++
	}
	slices.Sort(times)
	if len(times) > 0 {
		t.Logf("%d slow-body connections (1 byte per %s): all closed by the server, after %s (first), %s (median), %s (last); answers %v; /healthz %d polls, %d failed",
			conns, interval, times[0].Round(10*time.Millisecond), times[len(times)/2].Round(10*time.Millisecond), times[len(times)-1].Round(10*time.Millisecond),
			statuses, healthPolls.Load(), healthFailures.Load())
	}
	if healthFailures.Load() > 0 || healthPolls.Load() == 0 {
		t.Errorf("/healthz failed %d of %d polls during the slow connections", healthFailures.Load(), healthPolls.Load())
	}

	// A normal upload is taken afterwards.
	req, err := http.NewRequest(http.MethodPost, proc.url+"/v1/pipelines/p1/batches", strings.NewReader(goodCSV))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/csv")
	proc.tokens.Authorize(req, service.ScopeIngest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("upload after the slow connections: %d %s", resp.StatusCode, body)
	}
	if rss, _ := proc.memory(t); rss <= 0 {
		t.Error("ingest is gone")
	}
}

// slow runs one slow connection: headers (with a token when withToken),
// then a byte per interval of a 100,000-byte body, until the server closes
// the connection; an error if it is still open after limit.
func slow(host, secret string, withToken bool, start time.Time, interval, limit time.Duration) slowConn {
	conn, err := net.Dial("tcp", host)
	if err != nil {
		return slowConn{err: err}
	}
	defer conn.Close()
	auth := ""
	if withToken {
		auth = "Authorization: Bearer " + secret + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "POST /v1/pipelines/p1/batches HTTP/1.1\r\nHost: %s\r\nContent-Type: text/csv\r\n%sContent-Length: 100000\r\n\r\nx", host, auth); err != nil {
		return slowConn{err: err}
	}
	var res slowConn
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		r := bufio.NewReader(conn)
		if line, err := r.ReadString('\n'); err == nil {
			res.status = strings.TrimSpace(strings.TrimPrefix(line, "HTTP/1.1 "))
		}
		_, _ = io.Copy(io.Discard, r) // until the server closes
		res.closedAt = time.Since(start)
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-closed:
			return res
		case <-tick.C:
			if time.Since(start) > limit {
				_ = conn.Close()
				<-closed
				return slowConn{err: fmt.Errorf("still open after %s", limit)}
			}
			_, _ = conn.Write([]byte("1"))
		}
	}
}
