// Command feature runs Gyre's feature service on its own, as one Deployment
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
	"github.com/gyrehq/gyre/services/feature"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", feature.Name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg := feature.DefaultConfig()
	fs := flag.NewFlagSet(feature.Name, flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	fs.Usage = service.Usage(fs, feature.Name, feature.About)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return service.Standalone(ctx, cfg.Config, feature.Name, func(deps service.Deps) (service.Runner, error) {
		return feature.New(cfg, deps)
	})
}
