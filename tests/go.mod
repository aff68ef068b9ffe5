module github.com/gyrehq/gyre/tests

go 1.26.8
