module github.com/gyrehq/gyre/services/monitor

go 1.26.8
