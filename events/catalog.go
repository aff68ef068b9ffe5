// Package events is Gyre's event catalog: the CloudEvents types every service
// emits and consumes, the NATS subjects they travel on, the JetStream streams,
// consumers and buckets that carry them, and typed constructors and decoders
// for their protobuf payloads (generated into package gyrev1 from schemas/).
//
// It is the one place where these names are declared; services refer to the
// constants here and never spell a subject or a stream name themselves.
package events

import (
	"fmt"
	"sort"
)

// SpecVersion is the CloudEvents version every Gyre event carries.
const SpecVersion = "1.0"

// TypePrefix and TypeSuffix frame every event type: dev.gyre.<noun>.<verb>.v1.
const (
	TypePrefix = "dev.gyre."
	TypeSuffix = ".v1"
)

// Event names (<noun>.<verb>) of the catalog. The CloudEvents type of a name is
// TypePrefix + name + TypeSuffix; see Type.
const (
	PipelineApplied      = "pipeline.applied"
	DataBatchArrived     = "data.batch.arrived"
	DataBatchReceived    = "data.batch.received"
	DataBatchValidated   = "data.batch.validated"
	DataBatchRejected    = "data.batch.rejected"
	FeaturesMaterialized = "features.materialized"
	DriftMeasured        = "drift.measured"
	DriftDetected        = "drift.detected"
	PerformanceDegraded  = "performance.degraded"
	TrainingRequested    = "training.requested"
	TrainingStarted      = "training.started"
	TrainingCompleted    = "training.completed"
	TrainingFailed       = "training.failed"
	ModelEvaluated       = "model.evaluated"
	ModelRegistered      = "model.registered"
	ModelPromoted        = "model.promoted"
	DeploymentStarted    = "deployment.started"
	DeploymentProgressed = "deployment.progressed"
	DeploymentCompleted  = "deployment.completed"
	DeploymentRolledBack = "deployment.rolledback"
	PredictionLogged     = "prediction.logged"
	LabelReceived        = "label.received"
)

// Spec describes one event type of the catalog.
type Spec struct {
	// Name is <noun>.<verb>, e.g. "data.batch.arrived".
	Name string
	// Type is the CloudEvents type, e.g. "dev.gyre.data.batch.arrived.v1".
	Type string
	// Message is the fully qualified protobuf message of the payload; it
	// names the event's dataschema (see DataSchema) and its contract (see
	// Rules).
	Message string
	// Stream is the JetStream stream the event is stored in.
	Stream string
	// EmittedBy names who publishes it (a service, "cmd/gyre" or "any producer"),
	// for people; Emitters says the same for the bus's permissions.
	EmittedBy string
	// Emitters are the identities allowed to publish it: services (by
	// name), IdentityAdmin (the CLI) and IdentityProducer (clients outside
	// Gyre). The NATS permissions of every identity are derived from them
	// (Access).
	Emitters []string
	// Public marks a payload that producers outside Gyre publish; its JSON
	// field names are a contract and never change within v1.
	Public bool
}

// catalog lists every event type, in the order of the loop.
var catalog = []Spec{
	{Name: PipelineApplied, Message: "gyre.v1.PipelineApplied", Stream: StreamEvents, EmittedBy: "cmd/gyre, any client", Emitters: []string{IdentityAdmin}},
	{Name: DataBatchArrived, Message: "gyre.v1.DataBatchArrived", Stream: StreamEvents, EmittedBy: "any producer", Public: true, Emitters: []string{IdentityProducer, IdentityAdmin}},
	{Name: DataBatchReceived, Message: "gyre.v1.DataBatchReceived", Stream: StreamEvents, EmittedBy: "ingest", Emitters: []string{ServiceIngest}},
	{Name: DataBatchValidated, Message: "gyre.v1.DataBatchValidated", Stream: StreamEvents, EmittedBy: "validation", Emitters: []string{ServiceValidation}},
	{Name: DataBatchRejected, Message: "gyre.v1.DataBatchRejected", Stream: StreamEvents, EmittedBy: "validation", Emitters: []string{ServiceValidation}},
	{Name: FeaturesMaterialized, Message: "gyre.v1.FeaturesMaterialized", Stream: StreamEvents, EmittedBy: "feature", Emitters: []string{ServiceFeature}},
	{Name: DriftMeasured, Message: "gyre.v1.DriftMeasured", Stream: StreamEvents, EmittedBy: "monitor", Emitters: []string{ServiceMonitor}},
	{Name: DriftDetected, Message: "gyre.v1.DriftDetected", Stream: StreamEvents, EmittedBy: "monitor", Emitters: []string{ServiceMonitor}},
	{Name: PerformanceDegraded, Message: "gyre.v1.PerformanceDegraded", Stream: StreamEvents, EmittedBy: "monitor", Emitters: []string{ServiceMonitor}},
	{Name: TrainingRequested, Message: "gyre.v1.TrainingRequested", Stream: StreamEvents, EmittedBy: "trainer, cmd/gyre", Emitters: []string{ServiceTrainer, IdentityAdmin}},
	{Name: TrainingStarted, Message: "gyre.v1.TrainingStarted", Stream: StreamEvents, EmittedBy: "trainer", Emitters: []string{ServiceTrainer}},
	{Name: TrainingCompleted, Message: "gyre.v1.TrainingCompleted", Stream: StreamEvents, EmittedBy: "trainer", Emitters: []string{ServiceTrainer}},
	{Name: TrainingFailed, Message: "gyre.v1.TrainingFailed", Stream: StreamEvents, EmittedBy: "trainer", Emitters: []string{ServiceTrainer}},
	{Name: ModelEvaluated, Message: "gyre.v1.ModelEvaluated", Stream: StreamEvents, EmittedBy: "evaluator", Emitters: []string{ServiceEvaluator}},
	{Name: ModelRegistered, Message: "gyre.v1.ModelRegistered", Stream: StreamEvents, EmittedBy: "registry", Emitters: []string{ServiceRegistry}},
	{Name: ModelPromoted, Message: "gyre.v1.ModelPromoted", Stream: StreamEvents, EmittedBy: "registry", Emitters: []string{ServiceRegistry}},
	{Name: DeploymentStarted, Message: "gyre.v1.DeploymentStarted", Stream: StreamEvents, EmittedBy: "deployer", Emitters: []string{ServiceDeployer}},
	{Name: DeploymentProgressed, Message: "gyre.v1.DeploymentProgressed", Stream: StreamEvents, EmittedBy: "deployer", Emitters: []string{ServiceDeployer}},
	{Name: DeploymentCompleted, Message: "gyre.v1.DeploymentCompleted", Stream: StreamEvents, EmittedBy: "deployer", Emitters: []string{ServiceDeployer}},
	{Name: DeploymentRolledBack, Message: "gyre.v1.DeploymentRolledBack", Stream: StreamEvents, EmittedBy: "deployer", Emitters: []string{ServiceDeployer}},
	{Name: PredictionLogged, Message: "gyre.v1.PredictionLogged", Stream: StreamPredictions, EmittedBy: "deployer", Emitters: []string{ServiceDeployer}},
	{Name: LabelReceived, Message: "gyre.v1.LabelReceived", Stream: StreamEvents, EmittedBy: "any producer", Public: true, Emitters: []string{IdentityProducer, IdentityAdmin}},
}

var (
	byName = map[string]*Spec{}
	byType = map[string]*Spec{}
)

func init() {
	for i := range catalog {
		s := &catalog[i]
		s.Type = TypePrefix + s.Name + TypeSuffix
		byName[s.Name] = s
		byType[s.Type] = s
	}
}

// Type returns the CloudEvents type of an event name: Type("model.promoted")
// is "dev.gyre.model.promoted.v1". It does not check the name is in the catalog.
func Type(name string) string { return TypePrefix + name + TypeSuffix }

// Catalog returns every event type, in the order of the loop.
func Catalog() []Spec {
	out := make([]Spec, len(catalog))
	copy(out, catalog)
	return out
}

// Lookup returns the spec of an event name ("data.batch.arrived").
func Lookup(name string) (Spec, bool) {
	s, ok := byName[name]
	if !ok {
		return Spec{}, false
	}
	return *s, true
}

// LookupType returns the spec of a CloudEvents type ("dev.gyre.data.batch.arrived.v1").
func LookupType(ceType string) (Spec, bool) {
	s, ok := byType[ceType]
	if !ok {
		return Spec{}, false
	}
	return *s, true
}

// Names returns every event name, sorted.
func Names() []string {
	out := make([]string, 0, len(catalog))
	for _, s := range catalog {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out
}

// ResolveType accepts an event name ("model.promoted") or a full CloudEvents
// type ("dev.gyre.model.promoted.v1") and returns the spec; it is what CLI
// flags such as `gyre events --type` take.
func ResolveType(nameOrType string) (Spec, error) {
	if s, ok := LookupType(nameOrType); ok {
		return s, nil
	}
	if s, ok := Lookup(nameOrType); ok {
		return s, nil
	}
	return Spec{}, fmt.Errorf("unknown event type %q (want one of the catalog's names, e.g. %q, or types, e.g. %q)",
		nameOrType, DataBatchArrived, Type(DataBatchArrived))
}
