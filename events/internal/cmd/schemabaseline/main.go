// Command schemabaseline writes the payload schemas compiled into
// events/gyrev1 as the baseline the breaking-change check compares against
// (schemas/baseline/gyre-v1.json). Run it on a release, through
// `make schema-baseline`, and commit the result with the release: from then
// on, CI refuses any change that would break a consumer of that release.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gyrehq/gyre/events/internal/schemacompat"
)

func main() {
	out := flag.String("o", "schemas/baseline/gyre-v1.json", "file to write")
	flag.Parse()
	data, err := schemacompat.Marshal(schemacompat.Current())
	if err == nil {
		err = os.MkdirAll(filepath.Dir(*out), 0o755)
	}
	if err == nil {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemabaseline:", err)
		os.Exit(1)
	}
	fmt.Printf("schemabaseline: wrote %s (%d files of package %s)\n", *out, len(schemacompat.Current().GetFile()), schemacompat.Package)
}
