package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/natsauth"
	"github.com/gyrehq/gyre/libs/service"
)

// natsAuthDir is where `gyre up` keeps the NATS identities of its embedded
// server in its data dir: <identity>.nk, each 0600, in a 0700 directory.
const natsAuthDir = "nats-auth"

func seedFile(dir, identity string) string {
	return filepath.Join(dir, identity+natsauth.SeedExt)
}

// upIdentities makes sure dir holds every identity Gyre runs with and
// returns the users of every seed there (producers made with `gyre auth
// producer` included) as the embedded server takes them.
func upIdentities(dir string) (users []*server.NkeyUser, created bool, err error) {
	_, errBefore := natsauth.Users(dir)
	all, err := natsauth.EnsureAll(dir)
	if err != nil {
		return nil, false, fmt.Errorf("nats identities: %w", err)
	}
	for _, u := range all {
		nu, err := u.NkeyUser()
		if err != nil {
			return nil, false, err
		}
		users = append(users, nu)
	}
	return users, errBefore != nil, nil
}

// serviceConns are the NATS connections of `gyre up`'s services, one per
// service, each with the service's own identity.
type serviceConns struct {
	shared service.Deps
	byName map[string]service.Deps
	closed []<-chan struct{}
}

// dialServices connects every service of `gyre up` with its own identity
// (<seedDir>/<service>.nk); the metrics registry, logger and HTTP
// authenticator stay the process's.
func dialServices(cfg service.Config, seedDir string, shared service.Deps) (*serviceConns, error) {
	c := &serviceConns{shared: shared, byName: map[string]service.Deps{}}
	for _, name := range events.ServiceNames() {
		scfg := cfg
		scfg.NATSNkey = seedFile(seedDir, name)
		nc, closed, err := service.Dial(scfg, name, shared.Logger)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", name, err), c.close(context.Background()))
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, errors.Join(fmt.Errorf("%s: jetstream: %w", name, err), c.close(context.Background()))
		}
		d := shared
		d.Conn, d.JS = nc, js
		c.byName[name], c.closed = d, append(c.closed, closed)
	}
	return c, nil
}

func (c *serviceConns) deps(name string) service.Deps {
	if d, ok := c.byName[name]; ok {
		return d
	}
	return c.shared
}

// close drains every connection (pending publishes are flushed) within ctx.
func (c *serviceConns) close(ctx context.Context) error {
	var errs []error
	for name, d := range c.byName {
		if err := d.Conn.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionReconnecting) {
			errs = append(errs, fmt.Errorf("drain %s's nats connection: %w", name, err))
			d.Conn.Close()
		}
	}
	for _, closed := range c.closed {
		select {
		case <-closed:
		case <-ctx.Done():
			for _, d := range c.byName {
				d.Conn.Close()
			}
			return errors.Join(append(errs, fmt.Errorf("drain nats connections: %w", ctx.Err()))...)
		}
	}
	return errors.Join(errs...)
}
