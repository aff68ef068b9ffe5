module github.com/gyrehq/gyre/services/ingest

go 1.26.8
