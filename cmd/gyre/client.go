package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/libs/service"
)

// clientOptions are the connection flags of client commands.
type clientOptions struct {
	natsURL string
	dataDir string
}

// resolveNATSURL returns the server a client command talks to: --nats (or
// GYRE_NATS_URL), else the one a running `gyre up` recorded in
// <data-dir>/up.json.
func (o clientOptions) resolveNATSURL() (string, error) {
	if o.natsURL != "" {
		return o.natsURL, nil
	}
	st, err := readState(o.dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no NATS server to talk to: %s does not exist; start Gyre with 'gyre up' (it records its NATS URL there), or pass --nats URL", statePath(o.dataDir))
	}
	if err != nil {
		return "", err
	}
	if st.NATSURL == "" {
		return "", fmt.Errorf("%s names no NATS URL; pass --nats URL", statePath(o.dataDir))
	}
	if !processAlive(st.PID) {
		return "", fmt.Errorf("%s was written by gyre up (pid %d), which is no longer running; start it again with 'gyre up', or pass --nats URL", statePath(o.dataDir), st.PID)
	}
	return st.NATSURL, nil
}

// connect dials the server once, without retrying: a client command should
// say at once that the server is not there.
func (o clientOptions) connect() (*nats.Conn, jetstream.JetStream, error) {
	url, err := o.resolveNATSURL()
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, nats.Name("gyre-cli"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w (is 'gyre up' running?)", service.RedactURL(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
