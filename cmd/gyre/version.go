package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time: go build -ldflags "-X main.version=v0.1.0".
var version = "dev"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print gyre's version, Go version and build information",
		Long: `Print the version of this gyre binary (set at build time with
-ldflags "-X main.version=..."; "dev" otherwise), the Go version it was built
with, its module, and the VCS revision when the build recorded one.`,
		Example: `  gyre version
  go build -ldflags "-X main.version=v0.1.0" -o gyre ./cmd/gyre`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "gyre %s\n", version)
			fmt.Fprintf(w, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				return nil
			}
			fmt.Fprintf(w, "module: %s %s\n", bi.Main.Path, bi.Main.Version)
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision", "vcs.time", "vcs.modified":
					fmt.Fprintf(w, "%s: %s\n", s.Key, s.Value)
				}
			}
			return nil
		},
	}
}
