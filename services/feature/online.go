package feature

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker"

	"github.com/gyrehq/gyre/events"
)

// Online store kinds, as features.materialized names them.
const (
	OnlineJetStreamKV = "jetstream-kv"
	OnlineRedis       = "redis"
)

// OnlineRow is one materialised row for the online store.
type OnlineRow struct {
	// Key is <pipeline>.<batch key>.<row> (store.OnlineKey).
	Key string
	// Value is the row's JSON.
	Value []byte
}

// OnlineStore is where the newest features of each row go, for serving.
// Writes are upserts, so writing a batch again (a redelivery) changes
// nothing.
type OnlineStore interface {
	// Kind is OnlineJetStreamKV or OnlineRedis.
	Kind() string
	// Put writes every row, or fails (transiently: a retry may succeed).
	Put(ctx context.Context, rows []OnlineRow) error
}

// onlineChunk is how many rows are in flight at once: enough to hide the
// round trip, few enough to stay under the client's pending-publish limit
// and the server's.
const onlineChunk = 512

// writeTimeout bounds the write of one chunk.
const writeTimeout = 10 * time.Second

// KVOnline is the online store on the JetStream KV bucket gyre-online. Rows
// are written as asynchronous publishes to $KV.gyre-online.<key> (what a KV
// Put does, without waiting for each acknowledgement before the next), a
// chunk in flight at a time.
type KVOnline struct {
	js     jetstream.JetStream
	bucket string
}

// NewKVOnline returns the online store on gyre-online.
func NewKVOnline(js jetstream.JetStream) *KVOnline {
	return &KVOnline{js: js, bucket: events.BucketOnline}
}

// Kind implements OnlineStore.
func (s *KVOnline) Kind() string { return OnlineJetStreamKV }

// Put implements OnlineStore.
func (s *KVOnline) Put(ctx context.Context, rows []OnlineRow) error {
	prefix := "$KV." + s.bucket + "."
	for start := 0; start < len(rows); start += onlineChunk {
		chunk := rows[start:min(start+onlineChunk, len(rows))]
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		for _, r := range chunk {
			f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: prefix + r.Key, Data: r.Value})
			if err != nil {
				return fmt.Errorf("online store %s: put %s: %w", s.bucket, r.Key, err)
			}
			futures = append(futures, f)
		}
		timeout := time.NewTimer(writeTimeout)
		for i, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				timeout.Stop()
				return fmt.Errorf("online store %s: put %s: %w", s.bucket, chunk[i].Key, err)
			case <-ctx.Done():
				timeout.Stop()
				return fmt.Errorf("online store %s: %w", s.bucket, ctx.Err())
			case <-timeout.C:
				return fmt.Errorf("online store %s: %d writes not acknowledged within %s", s.bucket, len(futures)-i, writeTimeout)
			}
		}
		timeout.Stop()
	}
	return nil
}

// RedisKeyPrefix prefixes the online rows' keys in Redis, which other
// applications may share: gyre-online.<pipeline>.<batch key>.<row>.
const RedisKeyPrefix = events.BucketOnline + "."

// RedisOnline is the online store on Redis: pipelined SETs, a chunk per
// round trip, each round trip through a circuit breaker. While Redis fails,
// the breaker opens and writes fail at once — a transient error, so the
// event is retried and redelivered later rather than piling up timeouts.
type RedisOnline struct {
	client  *redis.Client
	breaker *gobreaker.CircuitBreaker
}

// NewRedisOnline returns the online store on the Redis server at url
// (redis://[user:pass@]host:port[/db]). It does not connect yet.
func NewRedisOnline(url string, logger *slog.Logger) (*RedisOnline, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	// Fail fast: the breaker and the bus's retries deal with an outage.
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = 3 * time.Second
	opts.WriteTimeout = 3 * time.Second
	opts.MaxRetries = 1
	opts.DialerRetries = 2
	return &RedisOnline{
		client: redis.NewClient(opts),
		breaker: gobreaker.NewCircuitBreaker(gobreaker.Settings{
			Name: "redis-online",
			// One trial request when half-open, after 10 s open.
			MaxRequests: 1,
			Timeout:     10 * time.Second,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= 3 },
			// A cancelled write says nothing about Redis.
			IsSuccessful: func(err error) bool {
				return err == nil || errors.Is(err, context.Canceled)
			},
			OnStateChange: func(name string, from, to gobreaker.State) {
				logger.Warn("circuit breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			},
		}),
	}, nil
}

// Kind implements OnlineStore.
func (s *RedisOnline) Kind() string { return OnlineRedis }

// Put implements OnlineStore.
func (s *RedisOnline) Put(ctx context.Context, rows []OnlineRow) error {
	for start := 0; start < len(rows); start += onlineChunk {
		chunk := rows[start:min(start+onlineChunk, len(rows))]
		_, err := s.breaker.Execute(func() (any, error) {
			cctx, cancel := context.WithTimeout(ctx, writeTimeout)
			defer cancel()
			pipe := s.client.Pipeline()
			for _, r := range chunk {
				pipe.Set(cctx, RedisKeyPrefix+r.Key, r.Value, 0)
			}
			_, err := pipe.Exec(cctx)
			return nil, err
		})
		if err != nil {
			// Transient whatever it is: an open breaker, a timeout, a
			// refused connection all may pass.
			return fmt.Errorf("online store redis: %w", err)
		}
	}
	return nil
}

// State returns the circuit breaker's state (closed, half-open, open).
func (s *RedisOnline) State() string { return s.breaker.State().String() }

// Close closes the Redis client.
func (s *RedisOnline) Close() error { return s.client.Close() }
