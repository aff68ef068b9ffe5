module github.com/gyrehq/gyre/services/validation

go 1.26.8
