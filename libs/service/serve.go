package service

import (
	"context"
	"errors"
	"fmt"
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
}

// Serve serves HTTP while run runs, and stops serving once run returns, so
// that /healthz and /readyz keep answering while the service drains. If the
// HTTP server fails first, run's context is canceled and both errors are
// returned once run has returned.
func Serve(ctx context.Context, sc ServeConfig, run func(context.Context) error) error {
	srv := &http.Server{
		Handler:           sc.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(sc.Logger.Handler(), slog.LevelWarn),
	}
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
