module github.com/gyrehq/gyre/services/evaluator

go 1.26.8
