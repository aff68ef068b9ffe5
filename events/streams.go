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

// Consumer declares one durable pull consumer: one per (service, handler),
// never renamed, because the durable name is where the server keeps the
// consumer's position.
type Consumer struct {
	// Service and Handler name the consumer; its durable name is "<service>_<handler>".
	Service string
	Handler string
	// Stream is the stream consumed.
	Stream string
	// FilterSubject selects the stream's messages this handler gets.
	FilterSubject string
	// AckWait is how long a delivery may stay unacknowledged before the server
	// redelivers it; the bus keeps long handlers alive with progress acks.
	AckWait time.Duration
	// MaxDeliver bounds deliveries; a transient failure still failing at the
	// last one goes to the dead-letter stream.
	MaxDeliver int
	// MaxAckPending bounds the unacknowledged messages of the consumer.
	MaxAckPending int
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
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 10
	DefaultMaxAckPending = 1000
)

// EventConsumer declares the consumer of a service's handler for one event
// name across every pipeline.
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
		AckWait: DefaultAckWait, MaxDeliver: DefaultMaxDeliver, MaxAckPending: DefaultMaxAckPending,
	}
}

// JobConsumer declares the consumer of a training pool's work queue. Training
// runs for minutes, so deliveries are few and each is kept alive by progress
// acknowledgements rather than a long ack wait.
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
			EventConsumer(ServiceMonitor, "prediction-logged", PredictionLogged),
			EventConsumer(ServiceMonitor, "label-received", LabelReceived),
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
		},
		ServiceDeployer: {
			EventConsumer(ServiceDeployer, "model-promoted", ModelPromoted),
			// Labels of a canary's predictions judge its steps.
			EventConsumer(ServiceDeployer, "label-received", LabelReceived),
			// A changed spec.deployment reaches the models serving.
			EventConsumer(ServiceDeployer, "pipeline-applied", PipelineApplied),
		},
	}
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

	ObjectBatches  = "gyre-batches"
	ObjectFeatures = "gyre-features"
	ObjectModels   = "gyre-models"
)

// WorkerHeartbeatTTL is how long a worker's heartbeat key lives without renewal.
const WorkerHeartbeatTTL = 30 * time.Second

// KeyValues declares every key-value bucket.
func KeyValues() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: BucketPipelines, Description: "pipeline specs by name", History: 10, Storage: jetstream.FileStorage},
		{Bucket: BucketRegistry, Description: "model versions, metrics, lineage and aliases", History: 5, Storage: jetstream.FileStorage},
		{Bucket: BucketDeployments, Description: "deployment state per pipeline", History: 5, Storage: jetstream.FileStorage},
		{Bucket: BucketWorkers, Description: "trainer worker heartbeats", History: 1, TTL: WorkerHeartbeatTTL, Storage: jetstream.FileStorage},
		{Bucket: BucketState, Description: "per-service processing state (windows, cooldowns, references)", History: 1, Storage: jetstream.FileStorage},
		{Bucket: BucketOnline, Description: "online feature store: one row per key <pipeline>.<batch>.<row>", History: 1, Storage: jetstream.FileStorage},
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
