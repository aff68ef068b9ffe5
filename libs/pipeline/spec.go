// Package pipeline reads, validates and defaults Gyre pipeline specs
// (apiVersion gyre.dev/v1, kind Pipeline): the public contract a team writes
// to say what data it takes, which features and model it trains, how a
// candidate is evaluated and deployed, and when drift or a fall in live
// accuracy retrains it.
//
// Parse checks a spec in three layers, each error naming the field by its
// path (spec.drift.threshold, spec.features[2].transform): the JSON Schema of
// schemas/pipeline/v1.schema.json (embedded here by `make generate`), then
// the rules a schema cannot say (CEL rules compile, features name known
// columns, canary steps ascend to 100), then defaults are filled in.
package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// APIVersion and Kind of every pipeline spec.
const (
	APIVersion = "gyre.dev/v1"
	Kind       = "Pipeline"
)

// Pipeline is a parsed, validated and defaulted spec.
type Pipeline struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names the pipeline.
type Metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Spec is the pipeline's behaviour.
type Spec struct {
	Dataset    Dataset    `json:"dataset"`
	Features   []Feature  `json:"features,omitempty"`
	Model      Model      `json:"model"`
	Evaluation Evaluation `json:"evaluation"`
	Deployment Deployment `json:"deployment"`
	Drift      Drift      `json:"drift"`
}

// Dataset says what a batch holds and what makes it valid.
type Dataset struct {
	Label           string   `json:"label"`
	Schema          []Column `json:"schema,omitempty"`
	Rules           []string `json:"rules,omitempty"`
	MaxMissingShare float64  `json:"maxMissingShare"`
	MaxRowErrors    int      `json:"maxRowErrors"`
	// InferSchema says how the schema of a pipeline that declares none,
	// and the reference shares of category columns, are learned; nil
	// takes the defaults (see InferBatches, MaxCategories).
	InferSchema *InferSchema `json:"inferSchema,omitempty"`
	// MaxShareShift is the largest L-infinity distance between a category
	// column's value shares in a batch and in the reference before a
	// category_shift anomaly; nil takes DefaultMaxShareShift (see
	// ShareShiftLimit).
	MaxShareShift *float64 `json:"maxShareShift,omitempty"`
}

// InferSchema is spec.dataset.inferSchema. Pointers and zeros are left
// out of the canonical form, so a spec that does not set it keeps its
// digest.
type InferSchema struct {
	// Batches is how many validated batches the schema and the reference
	// are learned from; 0 means DefaultInferBatches.
	Batches int `json:"batches,omitempty"`
	// MaxCategories is the most distinct values a column may have for its
	// categories (and its reference shares) to be learned; 0 means
	// DefaultMaxCategories.
	MaxCategories int `json:"maxCategories,omitempty"`
}

// InferBatches returns how many validated batches the schema and the
// reference are learned from.
func (d Dataset) InferBatches() int {
	if d.InferSchema == nil || d.InferSchema.Batches == 0 {
		return DefaultInferBatches
	}
	return d.InferSchema.Batches
}

// MaxCategories returns the most distinct values a column may have for
// its categories to be learned.
func (d Dataset) MaxCategories() int {
	if d.InferSchema == nil || d.InferSchema.MaxCategories == 0 {
		return DefaultMaxCategories
	}
	return d.InferSchema.MaxCategories
}

// ShareShiftLimit returns the category_shift threshold of a column: its
// own maxShareShift, else the dataset's, else DefaultMaxShareShift.
func (d Dataset) ShareShiftLimit(c Column) float64 {
	switch {
	case c.MaxShareShift != nil:
		return *c.MaxShareShift
	case d.MaxShareShift != nil:
		return *d.MaxShareShift
	}
	return DefaultMaxShareShift
}

// Column types.
const (
	TypeFloat    = "float"
	TypeInt      = "int"
	TypeBool     = "bool"
	TypeString   = "string"
	TypeCategory = "category"
)

// Column is one column of the dataset schema.
type Column struct {
	Name            string   `json:"name"`
	Type            string   `json:"type"`
	Required        bool     `json:"required,omitempty"`
	Min             *float64 `json:"min,omitempty"`
	Max             *float64 `json:"max,omitempty"`
	Categories      []string `json:"categories,omitempty"`
	MaxMissingShare *float64 `json:"maxMissingShare,omitempty"`
	// MinPresence is the smallest share of rows with a value before a
	// low_presence anomaly (a warning; MaxMissingShare is what rejects):
	// TFDV's presence.min_fraction. Learned as the lowest share seen.
	MinPresence *float64 `json:"minPresence,omitempty"`
	// MaxShareShift overrides Dataset.MaxShareShift for this column.
	MaxShareShift *float64 `json:"maxShareShift,omitempty"`
}

// Numeric reports whether the column holds numbers.
func (c Column) Numeric() bool {
	return c.Type == TypeFloat || c.Type == TypeInt || c.Type == TypeBool
}

// Transforms of a feature.
const (
	TransformIdentity    = "identity"
	TransformStandardize = "standardize"
	TransformMinMax      = "minmax"
	TransformLog1p       = "log1p"
	TransformOneHot      = "onehot"
	TransformBucketize   = "bucketize"
)

// Feature is one model input and its transform.
type Feature struct {
	Name      string    `json:"name"`
	Transform string    `json:"transform"`
	Buckets   []float64 `json:"buckets,omitempty"`
}

// Algorithms.
const (
	AlgorithmLogReg  = "logreg"
	AlgorithmGBDT    = "gbdt"
	AlgorithmMLP     = "mlp"
	AlgorithmCommand = "command"
)

// Model says what to train, where and on which data.
type Model struct {
	Algorithm        string         `json:"algorithm"`
	Params           map[string]any `json:"params,omitempty"`
	Command          []string       `json:"command,omitempty"`
	Pool             string         `json:"pool"`
	Seed             int64          `json:"seed"`
	Window           Window         `json:"window"`
	BootstrapBatches int            `json:"bootstrapBatches"`
	CooldownBatches  *int           `json:"cooldownBatches,omitempty"`
}

// Window is the training window.
type Window struct {
	Batches int `json:"batches"`
}

// Evaluation holds the gates a candidate must pass.
type Evaluation struct {
	Gates []Gate `json:"gates,omitempty"`
}

// Gate is one evaluation check. Exactly one of Min, Max, MinDeltaVsChampion is set.
type Gate struct {
	Metric             string   `json:"metric"`
	Min                *float64 `json:"min,omitempty"`
	Max                *float64 `json:"max,omitempty"`
	MinDeltaVsChampion *float64 `json:"minDeltaVsChampion,omitempty"`
}

// LowerIsBetter reports whether smaller values of the gate's metric are better.
func (g Gate) LowerIsBetter() bool { return LowerIsBetter(g.Metric) }

// LowerIsBetter reports whether smaller values of a metric are better.
func LowerIsBetter(metric string) bool {
	return metric == "logloss" || metric == "rmse" || metric == "mae"
}

// Deployment strategies.
const (
	StrategyImmediate = "immediate"
	StrategyCanary    = "canary"
	StrategyShadow    = "shadow"
	StrategyBlueGreen = "blue-green"
)

// Deployment says how a promoted model reaches traffic.
type Deployment struct {
	// Strategy is immediate, canary, shadow or blue-green.
	Strategy string `json:"strategy"`
	// Steps are the canary's traffic percentages, ascending to 100.
	Steps []float64 `json:"steps,omitempty"`
	// StepRequests is how many requests the candidate serves (canary), scores
	// (shadow) or serves after the switch (blue-green) before it is judged.
	StepRequests int `json:"stepRequests"`
	// RouteHeader names the request header whose value pins a caller to one
	// variant during a canary (sticky routing); requests without it are
	// split at random.
	RouteHeader string   `json:"routeHeader"`
	Rollback    Rollback `json:"rollback"`
	// SampleRate is the share of answered requests whose predictions are
	// logged (prediction.logged), in [0, 1]; default 1. A pointer because
	// 0 (log nothing) is a choice: see LogRate.
	SampleRate *float64 `json:"sampleRate,omitempty"`
	Batching   Batching `json:"batching"`
}

// LogRate returns the share of requests logged: SampleRate, or 1 when the
// spec leaves it out.
func (d Deployment) LogRate() float64 {
	if d.SampleRate == nil {
		return 1
	}
	return *d.SampleRate
}

// Rollback holds the limits a candidate must stay within while it is judged.
// MaxLatencyP99Ms and MaxPredictionDrift are off at 0; MaxErrorRate and
// MaxAccuracyDrop have defaults, and 0 is a choice there (no tolerance).
type Rollback struct {
	// MaxErrorRate is the largest share of failed candidate requests
	// (default 0.02; 0: none may fail). A pointer because 0 is a choice:
	// see ErrorRateLimit.
	MaxErrorRate *float64 `json:"maxErrorRate,omitempty"`
	// MaxAccuracyDrop is the largest fall of the candidate's live accuracy
	// (from labels) below the champion's (default 0.05; 0: no fall at
	// all). A pointer because 0 is a choice: see AccuracyDropLimit.
	MaxAccuracyDrop *float64 `json:"maxAccuracyDrop,omitempty"`
	// MaxLatencyP99Ms is the candidate's latency SLO (p99, milliseconds);
	// 0 means no SLO.
	MaxLatencyP99Ms float64 `json:"maxLatencyP99Ms,omitempty"`
	// MaxPredictionDrift is the largest PSI between the candidate's and the
	// champion's prediction distributions; 0 means not checked.
	MaxPredictionDrift float64 `json:"maxPredictionDrift,omitempty"`
	// MinLabels is how many labelled candidate predictions the accuracy
	// check needs before it counts (default 50).
	MinLabels int `json:"minLabels"`
	// LabelTimeoutSeconds is how long a step that is due waits for
	// MinLabels labelled candidate predictions before it is judged; when
	// the wait runs out, the rollout rolls back, its candidate's accuracy
	// unchecked. 0 (the default) judges at once on the labels arrived: a
	// step without enough of them is judged on errors, latency and drift.
	LabelTimeoutSeconds float64 `json:"labelTimeoutSeconds,omitempty"`
}

// ErrorRateLimit returns MaxErrorRate, or its default when the spec leaves
// it out.
func (r Rollback) ErrorRateLimit() float64 {
	if r.MaxErrorRate == nil {
		return DefaultMaxErrorRate
	}
	return *r.MaxErrorRate
}

// AccuracyDropLimit returns MaxAccuracyDrop, or its default when the spec
// leaves it out.
func (r Rollback) AccuracyDropLimit() float64 {
	if r.MaxAccuracyDrop == nil {
		return DefaultMaxAccuracyDrop
	}
	return *r.MaxAccuracyDrop
}

// Batching groups concurrent inference requests into one model call.
type Batching struct {
	// MaxBatchSize is the most rows one model call scores; 1 turns batching
	// off.
	MaxBatchSize int `json:"maxBatchSize"`
	// MaxQueueDelayMs is the longest a request waits for others to join its
	// batch (the latency budget), in milliseconds; default 1. A pointer
	// because 0 (never wait: batch only what queued while the model was
	// busy) is a choice: see QueueDelay.
	MaxQueueDelayMs *float64 `json:"maxQueueDelayMs,omitempty"`
}

// QueueDelay returns MaxQueueDelayMs as a duration, the default when the
// spec leaves it out.
func (b Batching) QueueDelay() time.Duration {
	ms := DefaultMaxQueueDelayMs
	if b.MaxQueueDelayMs != nil {
		ms = *b.MaxQueueDelayMs
	}
	return time.Duration(ms * float64(time.Millisecond))
}

// Drift methods. DriftAuto picks a test per feature (libs/drift.Select):
// by the feature's kind, the reference's size and its distinct values, as
// Evidently does. The default stays DriftPSI (DefaultDriftMethod): auto on
// the Elec2 demo kept its accuracy (0.735 against 0.736) but retrained 22
// times instead of 18 (docs/drift.md).
const (
	DriftPSI           = "psi"
	DriftKS            = "ks"
	DriftWasserstein   = "wasserstein"
	DriftJensenShannon = "jensenshannon"
	DriftChiSquare     = "chisquare"
	DriftZ             = "z"
	DriftAuto          = "auto"
)

// Drift is the retraining policy: when the data or the live accuracy moved.
type Drift struct {
	Method string `json:"method"`
	// Threshold is the per-feature threshold of a named method; 0 (and
	// nothing else) with auto, whose tests are judged on PValueThreshold
	// and DistanceThreshold.
	Threshold float64 `json:"threshold,omitempty"`
	// PValueThreshold is the p-value under which a test picked by auto
	// (ks, chisquare, z) finds drift; 0 means 0.05.
	PValueThreshold float64 `json:"pValueThreshold,omitempty"`
	// DistanceThreshold is the distance above which a distance picked by
	// auto (wasserstein, jensenshannon) finds drift; 0 means 0.1.
	DistanceThreshold float64 `json:"distanceThreshold,omitempty"`
	// Features overrides the method or threshold of single features, by
	// name (e.g. {nswprice: {method: psi}}).
	Features        map[string]DriftFeature `json:"features,omitempty"`
	ShareOfFeatures float64                 `json:"shareOfFeatures"`
	MinRows         int                     `json:"minRows"`
	AccuracyDrop    float64                 `json:"accuracyDrop"`
	// CooldownBatches is a pointer because 0 (no cooldown) is a choice.
	CooldownBatches *int `json:"cooldownBatches,omitempty"`
}

// DriftFeature overrides the drift policy for one feature.
type DriftFeature struct {
	// Method replaces drift.method for the feature; empty keeps it.
	Method string `json:"method,omitempty"`
	// Threshold replaces the threshold; 0 keeps drift.threshold when the
	// method is drift.method, and is the method's default otherwise. Not
	// with auto.
	Threshold float64 `json:"threshold,omitempty"`
}

// Name returns the pipeline's name.
func (p *Pipeline) Name() string { return p.Metadata.Name }

// Canonical returns the spec as canonical JSON (defaults filled, keys in a
// fixed order): what is stored, hashed and sent in pipeline.applied.
func (p *Pipeline) Canonical() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(p) // a Pipeline always encodes: plain fields, params from JSON
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// Digest returns the sha256 of the canonical spec, hex encoded: two applies of
// the same spec have the same digest, so re-applying is a no-op.
func (p *Pipeline) Digest() string {
	sum := sha256.Sum256(p.Canonical())
	return hex.EncodeToString(sum[:])
}

// FeatureNames returns the model's input columns in order: the spec's
// features, or — when it names none — every schema column but the label.
// With neither (schema inferred from data), it returns nil.
func (p *Pipeline) FeatureNames() []string {
	if len(p.Spec.Features) > 0 {
		out := make([]string, len(p.Spec.Features))
		for i, f := range p.Spec.Features {
			out[i] = f.Name
		}
		return out
	}
	var out []string
	for _, c := range p.Spec.Dataset.Schema {
		if c.Name != p.Spec.Dataset.Label {
			out = append(out, c.Name)
		}
	}
	return out
}

// RetrainCooldown is the number of batches between two retrains.
func (p *Pipeline) RetrainCooldown() int {
	if p.Spec.Model.CooldownBatches != nil {
		return *p.Spec.Model.CooldownBatches
	}
	if p.Spec.Drift.CooldownBatches != nil {
		return *p.Spec.Drift.CooldownBatches
	}
	return DefaultCooldownBatches
}
