module github.com/gyrehq/gyre/services/trainer

go 1.26.8
