package events

import (
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamEvents      = "GYRE_EVENTS"
	StreamPredictions = "GYRE_PREDICTIONS"
	StreamJobs        = "GYRE_JOBS"
	StreamDLQ         = "GYRE_DLQ"
)

// DedupWindow is how long JetStream remembers a Nats-Msg-Id (= CloudEvents
// id): a publish retried within it is stored once.
const DedupWindow = 10 * time.Minute

// Streams declares every stream. The settings here are the ones a server must
// have; provisioning creates a missing stream and updates one that differs.
// Only settings a NATS 2.9 server understands are used.
func Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamEvents,
			Description: "Gyre lifecycle events (CloudEvents, binary mode)",
			Subjects:    []string{AllEvents},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      30 * 24 * time.Hour,
			Duplicates:  DedupWindow,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        StreamPredictions,
			Description: "Gyre sampled predictions (short retention)",
			Subjects:    []string{PredictionsPrefix + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      72 * time.Hour,
			Duplicates:  2 * time.Minute,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        StreamJobs,
			Description: "Gyre training jobs, one work queue subject per pool",
			Subjects:    []string{JobsPrefix + ".>"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      7 * 24 * time.Hour,
			Duplicates:  DedupWindow,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        StreamDLQ,
			Description: "Gyre dead letters: original message plus reason headers",
			Subjects:    []string{DLQPrefix + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      30 * 24 * time.Hour,
			Duplicates:  2 * time.Minute,
			Discard:     jetstream.DiscardOld,
		},
	}
}

// Consumer declares one pull consumer of a service's handler: durable, one
// per (service, handler) and never renamed, because the durable name is
// where the server keeps the consumer's position and every replica of the
// service shares it; or, when PerReplica, an ephemeral one per replica that
// sees every message from the moment it starts.
type Consumer struct {
	// Service and Handler name the consumer; its durable name is "<service>_<handler>".
	Service string
	Handler string
	// Stream is the stream consumed.
	Stream string
	// FilterSubject selects the stream's messages this handler gets.
	FilterSubject string
	// AckWait is how long a delivery may stay unacknowledged before the server
	// redelivers it: what a crashed consumer's message waits before another
	// replica gets it. The bus keeps long handlers alive with progress acks
	// every AckWait/3, so it bounds the stall of a crash, not the handler.
	AckWait time.Duration
	// MaxDeliver bounds deliveries; a transient failure still failing at the
	// last one goes to the dead-letter stream.
	MaxDeliver int
	// MaxAckPending bounds the unacknowledged messages of the consumer. 1
	// (OrderedMaxAckPending, every EventConsumer's) makes the consumer
	// strictly ordered: the server delivers the next message only once the
	// one in hand is acknowledged, so a redelivery (a crash, a transient
	// failure) comes back before anything newer, whichever replica takes it.
	MaxAckPending int
	// PerReplica makes every replica of the service get every message: each
	// replica reads with an ordered consumer of its own from the newest
	// message on (nothing durable, nothing shared), for state each replica
	// holds itself, such as the labels of the predictions it served. Its
	// messages are not redelivered: a handler that still fails after its
	// in-process retries dead-letters the message.
	PerReplica bool
}

// Durable returns the consumer's durable name.
func (c Consumer) Durable() string { return c.Service + "_" + c.Handler }

// Config returns the JetStream configuration of the consumer.
func (c Consumer) Config() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.Durable(),
		Description:   fmt.Sprintf("gyre %s: %s", c.Service, c.Handler),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		FilterSubject: c.FilterSubject,
	}
}

// Unordered returns the declaration with up to n messages in hand at once:
// for high-volume events whose handlers do not depend on order (predictions,
// labels), where one-at-a-time delivery would cap throughput at one round
// trip per message.
func (c Consumer) Unordered(n int) Consumer {
	c.MaxAckPending = n
	return c
}

// EveryReplica returns the declaration as a per-replica consumer (see
// Consumer.PerReplica).
func (c Consumer) EveryReplica() Consumer {
	// Nothing is acknowledged: the bound only sizes the replica's buffer.
	c.PerReplica, c.MaxDeliver, c.MaxAckPending = true, 1, DefaultMaxAckPending
	return c
}

// Validate checks a declaration before it reaches a server.
func (c Consumer) Validate() error {
	if err := ValidateService(c.Service); err != nil {
		return fmt.Errorf("consumer %q: %w", c.Durable(), err)
	}
	if err := validateToken("handler", c.Handler); err != nil {
		return fmt.Errorf("consumer %q: %w", c.Durable(), err)
	}
	if c.Stream == "" || c.FilterSubject == "" {
		return fmt.Errorf("consumer %q: stream and filter subject are required", c.Durable())
	}
	if c.AckWait <= 0 || c.MaxDeliver <= 0 || c.MaxAckPending <= 0 {
		return fmt.Errorf("consumer %q: ack wait, max deliver and max ack pending must be positive", c.Durable())
	}
	return nil
}

// Consumer defaults.
const (
	// DefaultAckWait bounds how long a crashed consumer's message waits
	// before it is delivered again (to another replica, or to the restarted
	// one): seconds, not the stall of 30 s a long ack wait costs every
	// crash. Handlers that run longer are kept alive by progress acks.
	DefaultAckWait    = 4 * time.Second
	DefaultMaxDeliver = 10
	// DefaultMaxAckPending is what an Unordered consumer holds in hand.
	DefaultMaxAckPending = 1000
	// OrderedMaxAckPending is every lifecycle consumer's: one message in
	// hand, so the stream's order is the order of effects.
	OrderedMaxAckPending = 1
)

// EventConsumer declares the consumer of a service's handler for one event
// name across every pipeline. It is ordered (OrderedMaxAckPending): the
// lifecycle's effects follow the stream's order, also through crashes and
// retries. Unordered and EveryReplica derive the other kinds.
func EventConsumer(service, handler, name string) Consumer {
	filter, err := FilterSubject("", name)
	if err != nil {
		// The catalog is static: an unknown name here is a programming error
		// caught by TestServiceConsumersAreValid.
		filter = ""
	}
	stream := StreamEvents
	if s, ok := Lookup(name); ok {
		stream = s.Stream
	}
	return Consumer{
		Service: service, Handler: handler, Stream: stream, FilterSubject: filter,
		AckWait: DefaultAckWait, MaxDeliver: DefaultMaxDeliver, MaxAckPending: OrderedMaxAckPending,
	}
}

// JobConsumer declares the consumer of a training pool's work queue. Training
// runs for minutes, so deliveries are few and each is kept alive by progress
// acknowledgements rather than a long ack wait: a killed worker's job goes
// to another worker within DefaultAckWait. Jobs run in parallel (up to
// MaxAckPending across the pool's workers); their order does not matter.
func JobConsumer(pool string) Consumer {
	subject, err := JobSubject(pool)
	if err != nil {
		subject = ""
	}
	return Consumer{
		Service: "trainer", Handler: "jobs-" + pool, Stream: StreamJobs, FilterSubject: subject,
		AckWait: DefaultAckWait, MaxDeliver: 5, MaxAckPending: 64,
	}
}

// Service names.
const (
	ServiceIngest     = "ingest"
	ServiceValidation = "validation"
	ServiceFeature    = "feature"
	ServiceTrainer    = "trainer"
	ServiceEvaluator  = "evaluator"
	ServiceRegistry   = "registry"
	ServiceDeployer   = "deployer"
	ServiceMonitor    = "monitor"
	ServiceDashboard  = "dashboard"
)

// ServiceNames lists every service in the order of the loop.
func ServiceNames() []string {
	return []string{
		ServiceIngest, ServiceValidation, ServiceFeature, ServiceMonitor, ServiceTrainer,
		ServiceEvaluator, ServiceRegistry, ServiceDeployer, ServiceDashboard,
	}
}

// ServiceConsumers declares each service's durable consumers: which events
// each of its handlers takes. The dashboard reads with ephemeral ordered
// consumers and has none.
func ServiceConsumers() map[string][]Consumer {
	return map[string][]Consumer{
		ServiceIngest: {
			EventConsumer(ServiceIngest, "batch-arrived", DataBatchArrived),
		},
		ServiceValidation: {
			EventConsumer(ServiceValidation, "batch-received", DataBatchReceived),
			EventConsumer(ServiceValidation, "pipeline-applied", PipelineApplied),
		},
		ServiceFeature: {
			EventConsumer(ServiceFeature, "batch-validated", DataBatchValidated),
		},
		ServiceMonitor: {
			EventConsumer(ServiceMonitor, "features-materialized", FeaturesMaterialized),
			// The join of predictions and labels is in JetStream KV, keyed
			// by prediction id: any replica may take any of them, in any
			// order.
			EventConsumer(ServiceMonitor, "prediction-logged", PredictionLogged).Unordered(DefaultMaxAckPending),
			EventConsumer(ServiceMonitor, "label-received", LabelReceived).Unordered(DefaultMaxAckPending),
			// A prompt: the monitor reads the champion from the registry.
			EventConsumer(ServiceMonitor, "model-promoted", ModelPromoted),
		},
		ServiceTrainer: {
			EventConsumer(ServiceTrainer, "batch-validated", DataBatchValidated),
			EventConsumer(ServiceTrainer, "drift-detected", DriftDetected),
			EventConsumer(ServiceTrainer, "performance-degraded", PerformanceDegraded),
			EventConsumer(ServiceTrainer, "training-requested", TrainingRequested),
			EventConsumer(ServiceTrainer, "training-completed", TrainingCompleted),
			EventConsumer(ServiceTrainer, "training-failed", TrainingFailed),
			JobConsumer("cpu"),
		},
		ServiceEvaluator: {
			EventConsumer(ServiceEvaluator, "training-completed", TrainingCompleted),
		},
		ServiceRegistry: {
			EventConsumer(ServiceRegistry, "model-evaluated", ModelEvaluated),
			// A completed deployment makes its version one that served (what
			// a rollback returns to); a rolled-back one moves champion back.
			EventConsumer(ServiceRegistry, "deployment-completed", DeploymentCompleted),
			EventConsumer(ServiceRegistry, "deployment-rolledback", DeploymentRolledBack),
		},
		ServiceDeployer: {
			// Every replica counts the labels of the predictions it served
			// during a rollout. The desired state (the registry's champion,
			// the rollout's record, the spec) comes from watching its KV
			// entries, not from events.
			EventConsumer(ServiceDeployer, "label-received", LabelReceived).EveryReplica(),
		},
	}
}

// RetiredConsumer is a durable consumer a former version of a service
// declared and this one does not: provisioning deletes it.
type RetiredConsumer struct {
	Service, Stream, Durable string
	// Why it went.
	Why string
}

// RetiredConsumers lists the durable consumers no service reads any more.
func RetiredConsumers() []RetiredConsumer {
	return []RetiredConsumer{
		{Service: ServiceDeployer, Stream: StreamEvents, Durable: "deployer_model-promoted",
			Why: "the deployer watches the registry's record instead"},
		{Service: ServiceDeployer, Stream: StreamEvents, Durable: "deployer_pipeline-applied",
			Why: "every deployer replica watches gyre-pipelines instead"},
		{Service: ServiceDeployer, Stream: StreamEvents, Durable: "deployer_label-received",
			Why: "every deployer replica reads the labels with a consumer of its own"},
	}
}

// DurableConsumers returns every service's durable consumers (what a
// server holds once provisioned; per-replica ones are made by each
// replica as it subscribes), sorted by durable name.
func DurableConsumers() []Consumer {
	var out []Consumer
	for _, c := range AllConsumers() {
		if !c.PerReplica {
			out = append(out, c)
		}
	}
	return out
}

// AllConsumers returns every service's consumers, sorted by durable name.
func AllConsumers() []Consumer {
	var out []Consumer
	for _, cs := range ServiceConsumers() {
		out = append(out, cs...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Durable() < out[j].Durable() })
	return out
}

// Bucket names.
const (
	BucketPipelines   = "gyre-pipelines"
	BucketRegistry    = "gyre-registry"
	BucketDeployments = "gyre-deployments"
	BucketWorkers     = "gyre-workers"
	BucketState       = "gyre-state"
	// BucketOnline is the online feature store (JetStream KV): one key per
	// materialised row, <pipeline>.<batch key>.<row>.
	BucketOnline = "gyre-online"
	// BucketLeases holds the leases of roles one replica at a time holds
	// (the deployer's rollout controller, the trainer's scheduler): a key
	// per role, renewed by its holder, gone LeaseTTL after its last renewal.
	BucketLeases = "gyre-leases"
	// BucketRollouts holds what each deployer replica counted of the
	// rollout steps it serves (<pipeline>.<replica>): the controller judges
	// a step on every replica's traffic.
	BucketRollouts = "gyre-rollouts"
	// BucketJoins is the monitor's join of sampled predictions with their
	// labels, one key per prediction id, shared by every monitor replica.
	BucketJoins = "gyre-joins"

	ObjectBatches  = "gyre-batches"
	ObjectFeatures = "gyre-features"
	ObjectModels   = "gyre-models"
)

// WorkerHeartbeatTTL is how long a worker's heartbeat key lives without renewal.
const WorkerHeartbeatTTL = 30 * time.Second

// LeaseTTL is how long a lease outlives its holder's last renewal: the
// longest a role stays without a holder after its holder dies. Holders renew
// every third of it and stop acting before it runs out.
const LeaseTTL = 6 * time.Second

// RolloutTallyTTL is how long a deployer replica's count of a rollout step
// outlives its last report (every half second while it serves the step).
const RolloutTallyTTL = 30 * time.Second

// JoinTTL is how long a logged prediction waits in gyre-joins for its label
// (and a label for its prediction): the prediction stream's retention.
const JoinTTL = 72 * time.Hour

// KeyValues declares every key-value bucket.
func KeyValues() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketPipelines, Description: "pipeline specs by name", History: 10, Storage: jetstream.FileStorage},
		{Bucket: BucketRegistry, Description: "model versions, metrics, lineage and aliases", History: 5, Storage: jetstream.FileStorage},
		{Bucket: BucketDeployments, Description: "deployment state per pipeline", History: 5, Storage: jetstream.FileStorage},
		{Bucket: BucketWorkers, Description: "trainer worker heartbeats", History: 1, TTL: WorkerHeartbeatTTL, Storage: jetstream.FileStorage},
		{Bucket: BucketState, Description: "per-service processing state (windows, cooldowns, references)", History: 1, Storage: jetstream.FileStorage},
		{Bucket: BucketOnline, Description: "online feature store: one row per key <pipeline>.<batch>.<row>", History: 1, Storage: jetstream.FileStorage},
		{Bucket: BucketLeases, Description: "leases of roles one replica holds at a time", History: 1, TTL: LeaseTTL, Storage: jetstream.FileStorage},
		{Bucket: BucketRollouts, Description: "deployer: each replica's counts of the rollout steps it serves", History: 1, TTL: RolloutTallyTTL, Storage: jetstream.FileStorage},
		{Bucket: BucketJoins, Description: "monitor: sampled predictions joined with their labels, by prediction id", History: 1, TTL: JoinTTL, Storage: jetstream.FileStorage},
	}
}

// ObjectStores declares every object store bucket.
func ObjectStores() []jetstream.ObjectStoreConfig {
	return []jetstream.ObjectStoreConfig{
		{Bucket: ObjectBatches, Description: "raw data batches, keyed by sha256", Storage: jetstream.FileStorage},
		{Bucket: ObjectFeatures, Description: "offline feature snapshots (Parquet)", Storage: jetstream.FileStorage},
		{Bucket: ObjectModels, Description: "model artifacts", Storage: jetstream.FileStorage},
	}
}
