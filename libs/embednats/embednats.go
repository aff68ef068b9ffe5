// Package embednats runs a NATS server with JetStream inside the process: what
// `gyre up` uses when no --nats URL is given, and what component tests use
// (through natstest).
package embednats

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure an embedded server.
type Options struct {
	// StoreDir holds JetStream's files; a restart with the same directory
	// keeps streams, consumers and buckets.
	StoreDir string
	// Host and Port are where clients connect (default 127.0.0.1, and any free
	// port when Port is -1 or 0).
	Host string
	Port int
	// MaxPayload is the largest message (default 8 MiB: inline data batches).
	MaxPayload int32
	// Users, when set, are the only clients the server accepts: each
	// connects with its nkey and gets its permissions (libs/natsauth).
	// Without them the server accepts anyone: for tests only.
	Users []*server.NkeyUser
}

// Run starts the server and waits until it accepts clients.
func Run(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded nats: a JetStream storage directory is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = 8 << 20
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "gyre-embedded",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: o.MaxPayload,
		Nkeys:      o.Users,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d did not become ready in 10s (port taken?)", o.Host, o.Port)
	}
	return s, nil
}
