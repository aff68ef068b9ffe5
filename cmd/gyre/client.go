package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spf13/pflag"

	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/service"
)

// clientOptions are the connection flags of client commands.
type clientOptions struct {
	natsURL string
	dataDir string
	// natsNkey is the seed the command connects with; default: the admin's
	// that a running `gyre up` names in up.json.
	natsNkey string
}

// register adds the connection flags to a command's flags.
func (o *clientOptions) register(f *pflag.FlagSet) {
	f.StringVar(&o.natsURL, "nats", service.Env(service.EnvNATSURL, ""),
		"NATS server URL; default: the one in <data-dir>/up.json (env "+service.EnvNATSURL+")")
	f.StringVar(&o.dataDir, "data-dir", service.Env(envDataDir, defaultDataDir),
		"where 'gyre up' keeps up.json (env "+envDataDir+")")
	f.StringVar(&o.natsNkey, "nats-nkey", service.Env(service.EnvNATSNkey, ""),
		"NATS identity to connect with: an nkey seed file named <identity>.nk (`gyre auth config` and `gyre auth producer` write them); default: the admin's of the running 'gyre up' (env "+service.EnvNATSNkey+")")
}

// resolve returns the server and the seed a client command connects with:
// --nats (or GYRE_NATS_URL) and --nats-nkey, else the server and the admin
// seed a running `gyre up` recorded in <data-dir>/up.json.
func (o clientOptions) resolve() (url, seed string, err error) {
	if o.natsURL != "" {
		return o.natsURL, o.natsNkey, nil
	}
	st, err := o.upState()
	if err != nil {
		return "", "", err
	}
	seed = st.NATSSeed
	if o.natsNkey != "" {
		seed = o.natsNkey
	}
	return st.NATSURL, seed, nil
}

// upState reads the state file of a running `gyre up`.
func (o clientOptions) upState() (upState, error) {
	st, err := readState(o.dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return upState{}, fmt.Errorf("no NATS server to talk to: %s does not exist; start Gyre with 'gyre up' (it records its NATS URL there), or pass --nats URL", statePath(o.dataDir))
	}
	if err != nil {
		return upState{}, err
	}
	if st.NATSURL == "" {
		return upState{}, fmt.Errorf("%s names no NATS URL; pass --nats URL", statePath(o.dataDir))
	}
	if !processAlive(st.PID) {
		return upState{}, fmt.Errorf("%s was written by gyre up (pid %d), which is no longer running; start it again with 'gyre up', or pass --nats URL", statePath(o.dataDir), st.PID)
	}
	return st, nil
}

// connect dials the server once, without retrying: a client command should
// say at once that the server is not there.
func (o clientOptions) connect() (*nats.Conn, jetstream.JetStream, error) {
	url, seed, err := o.resolve()
	if err != nil {
		return nil, nil, err
	}
	nc, err := dialClient(url, seed, "gyre-cli")
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

// checkOutput checks an -o value against the formats a command writes,
// and names them when it is none of them.
func checkOutput(output string, formats ...string) error {
	if slices.Contains(formats, output) {
		return nil
	}
	want := formats[len(formats)-1]
	if len(formats) > 1 {
		want = strings.Join(formats[:len(formats)-1], ", ") + " or " + want
	}
	return fmt.Errorf("-o %q: want %s", output, want)
}

// dialClient connects a client command once, as the identity of seed (none
// when empty), without retrying.
func dialClient(url, seed, name string) (*nats.Conn, error) {
	who := "this client"
	if seed != "" {
		who = "identity " + strings.TrimSuffix(filepath.Base(seed), natsauth.SeedExt)
	}
	opts := []nats.Option{nats.Name(name), nats.Timeout(5 * time.Second),
		// A refused publish gets no reply: rather than wait for a timeout,
		// say what was refused and end the command.
		nats.ErrorHandler(func(c *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				fmt.Fprintf(os.Stderr, "gyre: the NATS server refused %s: %v (see 'gyre auth config --help' for what each identity may do)\n", who, err)
				c.Close()
			}
		}),
	}
	if seed != "" {
		idOpts, err := natsauth.ConnectOptions(seed)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, idOpts...)
	}
	return nats.Connect(url, opts...)
}
