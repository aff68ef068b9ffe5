package service

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServeConfig configures Serve.
type ServeConfig struct {
	// Listener is where HTTP is served (see net.Listen).
	Listener net.Listener
	// Handler serves the requests.
	Handler http.Handler
	// ShutdownTimeout bounds the wait for in-flight requests once run returns.
	ShutdownTimeout time.Duration
	// Logger receives the HTTP server's errors.
	Logger *slog.Logger
	// Limits bound what a client can hold of the server; zero fields take
	// DefaultHTTPLimits' values.
	Limits HTTPLimits
}

// Serve serves HTTP while run runs, and stops serving once run returns, so
// that /healthz and /readyz keep answering while the service drains. If the
// HTTP server fails first, run's context is canceled and both errors are
// returned once run has returned. The server is NewHTTPServer's.
func Serve(ctx context.Context, sc ServeConfig, run func(context.Context) error) error {
	srv := NewHTTPServer(sc.Handler, sc.Limits, sc.Logger)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	httpErr := make(chan error, 1)
	go func() {
		err := srv.Serve(sc.Listener)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			cancel()
		}
		httpErr <- err
	}()
	runErr := run(runCtx)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), sc.ShutdownTimeout)
	defer scancel()
	var shutErr error
	if err := srv.Shutdown(sctx); err != nil {
		shutErr = fmt.Errorf("http shutdown: %w", err)
		_ = srv.Close()
	}
	if err := <-httpErr; err != nil {
		shutErr = errors.Join(shutErr, fmt.Errorf("http server: %w", err))
	}
	return errors.Join(runErr, shutErr)
}

// HTTPLimits bound what one client can hold of a server: a connection that
// sends its headers or its body too slowly, reads the response too slowly,
// or idles is closed, so that a few hundred slow connections cannot pin the
// server's goroutines and memory. None of them bounds a whole request: a
// large upload that keeps flowing and a live feed (server-sent events) that
// keeps writing are never cut.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds the request line and headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request headers.
	MaxHeaderBytes int
	// WriteTimeout bounds each write (and flush) of a response: a client
	// that stops reading is cut off, a response that keeps flowing is not.
	WriteTimeout time.Duration
	// BodyGrace is how long a request body may take before its rate counts.
	BodyGrace time.Duration
	// MinBodyRate is the slowest a request body may arrive on average once
	// BodyGrace has passed, in bytes per second.
	MinBodyRate int64
	// BodyIdleTimeout bounds any wait for the next bytes of a body, however
	// fast it came before.
	BodyIdleTimeout time.Duration
}

// DefaultHTTPLimits returns the limits of every Gyre HTTP server. A body
// arriving at 1 byte per 5 s is cut after BodyGrace (10 s); one arriving at
// 4 KiB/s or faster, whatever its size, is not.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		WriteTimeout:      time.Minute,
		BodyGrace:         10 * time.Second,
		MinBodyRate:       4 << 10,
		BodyIdleTimeout:   30 * time.Second,
	}
}

// withDefaults fills the zero fields from DefaultHTTPLimits.
func (l HTTPLimits) withDefaults() HTTPLimits {
	d := DefaultHTTPLimits()
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.BodyGrace <= 0 {
		l.BodyGrace = d.BodyGrace
	}
	if l.MinBodyRate <= 0 {
		l.MinBodyRate = d.MinBodyRate
	}
	if l.BodyIdleTimeout <= 0 {
		l.BodyIdleTimeout = d.BodyIdleTimeout
	}
	return l
}

// NewHTTPServer returns the HTTP server of a Gyre process: handler behind
// LimitHTTP, and the header, idle and header-size limits of limits (zero
// fields: DefaultHTTPLimits). Serve uses it; a process with its own server
// should too.
func NewHTTPServer(handler http.Handler, limits HTTPLimits, logger *slog.Logger) *http.Server {
	l := limits.withDefaults()
	if logger == nil {
		logger = slog.Default()
	}
	return &http.Server{
		Handler:           LimitHTTP(handler, l),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// ReadTimeout and WriteTimeout stay 0: they bound a whole request,
		// which would cut a large upload or a live feed. LimitHTTP bounds
		// the body's rate and each write instead.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// ErrBodyTooSlow is wrapped by the error of a request body read that
// LimitHTTP cut off because the body arrived too slowly: answer 408.
var ErrBodyTooSlow = errors.New("request body arrived too slowly")

// LimitHTTP applies the body and write limits of l (zero fields:
// DefaultHTTPLimits) to every request through connection deadlines
// (http.ResponseController), which is how a slow client's connection is
// closed rather than left waiting:
//
//   - a request body must arrive at MinBodyRate on average once BodyGrace
//     has passed, with no pause over BodyIdleTimeout; otherwise its read
//     fails (ErrBodyTooSlow) and the connection is closed. A body the
//     handler does not read is drained, if at all, within BodyGrace.
//   - each write or flush of the response must complete within
//     WriteTimeout of its start.
//
// Handlers keep http.Flusher and http.ResponseController (the writer
// unwraps). NewHTTPServer applies it; it is exported for servers built
// otherwise, and for tests.
func LimitHTTP(h http.Handler, limits HTTPLimits) http.Handler {
	l := limits.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, timeout: l.WriteTimeout}
		// The connection's deadlines outlive a request on a keep-alive
		// connection: set fresh ones for this one.
		dw.extend()
		if r.Body != nil && r.Body != http.NoBody {
			gb := &guardedBody{body: r.Body, rc: rc, l: l}
			// Until the handler reads, the body must come within the grace:
			// net/http drains an unread body after the handler, and that
			// drain must not wait on a trickle.
			_ = rc.SetReadDeadline(time.Now().Add(l.BodyGrace))
			r.Body = gb
		}
		// The response net/http flushes after the handler gets a fresh
		// deadline too, however long the handler took.
		defer dw.extendNow()
		h.ServeHTTP(dw, r)
	})
}

// guardedBody is a request body whose reads must keep up with the minimum
// rate: each read runs under a connection read deadline that moves with the
// bytes received.
type guardedBody struct {
	body io.ReadCloser
	rc   *http.ResponseController
	l    HTTPLimits

	start time.Time // the first read
	n     int64
	set   time.Time // the read deadline last set
	done  bool
}

// deadline is when the next bytes must have come: the grace plus the time
// the bytes received earn at the minimum rate, counted from the first read,
// and no later than BodyIdleTimeout from now.
func (b *guardedBody) deadline(now time.Time) time.Time {
	earned := time.Duration(float64(b.n) / float64(b.l.MinBodyRate) * float64(time.Second))
	d := b.start.Add(b.l.BodyGrace + earned)
	if idle := now.Add(b.l.BodyIdleTimeout); idle.Before(d) {
		d = idle
	}
	return d
}

func (b *guardedBody) Read(p []byte) (int, error) {
	if !b.done {
		now := time.Now()
		if b.start.IsZero() {
			b.start = now
		}
		// The deadline only moves later; moving it costs a timer update, so
		// it is moved when it gained half a second.
		if d := b.deadline(now); d.Sub(b.set) > 500*time.Millisecond {
			b.set = d
			_ = b.rc.SetReadDeadline(d)
		}
	}
	n, err := b.body.Read(p)
	b.n += int64(n)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, io.EOF) && !b.done {
		// The whole body is in: net/http now reads the connection in the
		// background to notice a client going away, and a deadline passing
		// then would cancel the request's context. net/http clears the
		// deadline as it starts that read; so does the guard, not to depend
		// on it.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
		return n, err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return n, fmt.Errorf("%w: %d bytes in %s (at least %d bytes/s after %s, no pause over %s): %w",
			ErrBodyTooSlow, b.n, time.Since(b.start).Round(time.Millisecond), b.l.MinBodyRate, b.l.BodyGrace, b.l.BodyIdleTimeout, err)
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.body.Close() }

// deadlineWriter gives each write and flush of a response WriteTimeout to
// complete.
type deadlineWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	timeout  time.Duration
	deadline time.Time // the write deadline last set
}

// extend moves the write deadline to WriteTimeout from now when less than
// three quarters of it is left (moving it costs a timer update).
func (w *deadlineWriter) extend() {
	if time.Until(w.deadline) > w.timeout*3/4 {
		return
	}
	w.extendNow()
}

func (w *deadlineWriter) extendNow() {
	w.deadline = time.Now().Add(w.timeout)
	_ = w.rc.SetWriteDeadline(w.deadline)
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's io.ReaderFrom (sendfile).
func (w *deadlineWriter) ReadFrom(r io.Reader) (int64, error) {
	w.extend()
	return io.Copy(w.ResponseWriter, r)
}

// Flush implements http.Flusher, for handlers that assert it.
func (w *deadlineWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *deadlineWriter) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

// Hijack implements http.Hijacker, for handlers that assert it; the
// hijacked connection's deadlines are its new owner's.
func (w *deadlineWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := w.rc.Hijack()
	if err == nil {
		_ = conn.SetDeadline(time.Time{})
	}
	return conn, rw, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
