module github.com/gyrehq/gyre/services/dashboard

go 1.26.8
