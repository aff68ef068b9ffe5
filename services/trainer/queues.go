package trainer

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
)

// poolQueues provisions the job consumer of each pool the scheduler queues
// to, once per pool and process: a trainer serves one pool, but pipelines
// name any pool, and a pool whose workers are scaled to zero has nobody
// else to create it.
type poolQueues struct {
	js   jetstream.JetStream
	done sync.Map // pool → struct{}
}

var _ Queues = (*poolQueues)(nil)

// EnsureQueue creates the pool's consumer when it is missing (provisioning
// is idempotent: an existing one is left as it is).
func (q *poolQueues) EnsureQueue(ctx context.Context, pool string) error {
	if _, ok := q.done.Load(pool); ok {
		return nil
	}
	if _, err := bus.Provision(ctx, q.js, bus.Topology{Consumers: []events.Consumer{events.JobConsumer(pool)}}); err != nil {
		return err
	}
	q.done.Store(pool, struct{}{})
	return nil
}
