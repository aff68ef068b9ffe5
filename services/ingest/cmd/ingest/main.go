// Command ingest runs Gyre's ingest service on its own, as one Deployment
// of a cluster does; `gyre up` runs it in-process with every other service.
// Run it with --help for what it does and its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/services/ingest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ingest.Name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := ingest.DefaultConfig()
	fs := flag.NewFlagSet(ingest.Name, flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.Usage = service.Usage(fs, ingest.Name, ingest.About)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return service.Standalone(ctx, cfg.Config, ingest.Name, func(deps service.Deps) (service.Runner, error) {
		return ingest.New(cfg, deps)
	})
}
