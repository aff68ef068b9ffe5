module github.com/gyrehq/gyre/cmd/gyre

go 1.26.8
