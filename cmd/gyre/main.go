// Command gyre is Gyre's command line: `gyre up` runs the whole platform on
// one machine, and the other commands are clients of a running Gyre.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gyre:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	return newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
}
