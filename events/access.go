package events

import (
	"fmt"
	"slices"
	"sort"
)

// Identities on the bus besides the services (whose identities are their
// names): who may do what is declared here, next to the events, consumers
// and buckets it is about, and libs/natsauth turns it into NATS
// permissions.
const (
	// IdentityAdmin is the operator's: the CLI and `gyre up` itself. It
	// provisions the topology, applies pipelines, requests training and may
	// do anything else.
	IdentityAdmin = "admin"
	// IdentityReader reads: dashboards and `gyre events` outside Gyre. It
	// publishes nothing.
	IdentityReader = "reader"
	// IdentityProducer is a client outside Gyre that publishes data and
	// labels (the catalog's Public events), optionally for one pipeline.
	IdentityProducer = "producer"
)

// Access is what one identity may do on the bus: the events it publishes,
// the durable consumers it reads, the buckets it writes. Reading streams
// and buckets is open to every identity but producers; writing is not.
type Access struct {
	Identity string
	// Emits are the event names it publishes (the catalog's Emitters).
	Emits []string
	// Consumers are the durable consumers it reads and acknowledges; no
	// other identity may read, acknowledge, change or delete them.
	Consumers []Consumer
	// Jobs: it publishes training jobs and reads every pool's work queue.
	Jobs bool
	// KeyValues and Objects are the buckets it writes.
	KeyValues []string
	Objects   []string
	// DeadLetters: it dead-letters what it cannot handle (gyre.dlq.<identity>).
	DeadLetters bool
	// Provisions: it creates and updates streams, buckets and every
	// consumer (the admin). Services create what is missing, never change
	// it (see libs/natsauth).
	Provisions bool
	// Reads: it reads streams and buckets (every identity but producers).
	Reads bool
}

// bucketWriters says which services write each bucket; every other
// identity but the admin only reads it.
var bucketWriters = map[string][]string{
	BucketPipelines:   {}, // the admin applies pipelines
	BucketRegistry:    {ServiceRegistry},
	BucketDeployments: {ServiceDeployer},
	BucketWorkers:     {ServiceTrainer},
	// Processing state: schema inference, rejections, windows, cooldowns,
	// jobs, the monitor's references.
	BucketState:    {ServiceIngest, ServiceValidation, ServiceFeature, ServiceMonitor, ServiceTrainer, ServiceEvaluator},
	BucketOnline:   {ServiceFeature},
	BucketLeases:   {ServiceDeployer, ServiceTrainer},
	BucketRollouts: {ServiceDeployer},
	BucketJoins:    {ServiceMonitor},
	// Ingest stores batches as received; validation stores the cleaned
	// copy it passes on (quarantined rows and undeclared columns removed)
	// and the reasons of the quarantined rows.
	ObjectBatches:  {ServiceIngest, ServiceValidation},
	ObjectFeatures: {ServiceFeature},
	// The trainer stores the bundles it trains; the registry those of
	// models registered from outside the loop (gyre models register).
	ObjectModels: {ServiceTrainer, ServiceRegistry},
}

// BucketWriters returns the services that write a bucket (key-value or
// object store).
func BucketWriters(bucket string) []string { return slices.Clone(bucketWriters[bucket]) }

// Identities returns every identity Gyre itself runs with: each service,
// the admin and the reader (producers are made per client).
func Identities() []string {
	return append(ServiceNames(), IdentityAdmin, IdentityReader)
}

// AccessOf returns what an identity may do: a service's name, IdentityAdmin,
// IdentityReader or IdentityProducer.
func AccessOf(identity string) (Access, error) {
	a := Access{Identity: identity}
	switch identity {
	case IdentityAdmin:
		a.Provisions, a.Reads, a.Jobs = true, true, true
	case IdentityReader:
		a.Reads = true
		return a, nil
	case IdentityProducer:
	default:
		if !slices.Contains(ServiceNames(), identity) {
			return Access{}, fmt.Errorf("unknown identity %q (want a service, %s, %s or %s)", identity, IdentityAdmin, IdentityReader, IdentityProducer)
		}
		a.Reads, a.DeadLetters = true, true
		a.Consumers = ServiceConsumers()[identity]
		// The trainer's workers read every pool's queue, and its
		// scheduler publishes to them.
		a.Jobs = identity == ServiceTrainer
	}
	for _, s := range catalog {
		if slices.Contains(s.Emitters, identity) {
			a.Emits = append(a.Emits, s.Name)
		}
	}
	for bucket, writers := range bucketWriters {
		if !slices.Contains(writers, identity) {
			continue
		}
		if isObjectStore(bucket) {
			a.Objects = append(a.Objects, bucket)
		} else {
			a.KeyValues = append(a.KeyValues, bucket)
		}
	}
	sort.Strings(a.KeyValues)
	sort.Strings(a.Objects)
	return a, nil
}

func isObjectStore(bucket string) bool {
	for _, o := range ObjectStores() {
		if o.Bucket == bucket {
			return true
		}
	}
	return false
}
