// Package tests holds Gyre's end-to-end tests: they build the real binaries
// and run them as separate processes against the NATS server at NATS_URL.
package tests
