module github.com/gyrehq/gyre/services/feature

go 1.26.8
