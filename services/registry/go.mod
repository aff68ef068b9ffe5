module github.com/gyrehq/gyre/services/registry

go 1.26.8
