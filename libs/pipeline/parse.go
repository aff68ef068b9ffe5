package pipeline

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/gyrehq/gyre/events"
)

// schemaJSON is schemas/pipeline/v1.schema.json, copied here by `make generate`.
//
//go:embed schema.json
var schemaJSON []byte

// SchemaJSON returns the JSON Schema of the spec.
func SchemaJSON() []byte { return slices.Clone(schemaJSON) }

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("urn:gyre:schema:pipeline:v1", doc); err != nil {
		return nil, err
	}
	return c.Compile("urn:gyre:schema:pipeline:v1")
})

// FieldError is one problem with a spec, at a field path such as
// spec.features[2].transform.
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// Error lists every problem found in a spec. It is permanent: the same spec
// fails the same way every time.
type Error struct {
	// Source names where the spec came from (a file name), when known.
	Source string
	Errors []FieldError
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source + ": ")
	}
	if len(e.Errors) == 1 {
		b.WriteString("invalid pipeline spec: " + e.Errors[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "invalid pipeline spec (%d problems):", len(e.Errors))
	for _, fe := range e.Errors {
		b.WriteString("\n  - " + fe.String())
	}
	return b.String()
}

// Permanent marks spec errors as not worth retrying.
func (e *Error) Permanent() bool { return true }

// Parse reads a spec in YAML or JSON, validates it and fills its defaults.
// Errors are an *Error naming each field that is wrong.
func Parse(data []byte) (*Pipeline, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{Errors: []FieldError{{Message: "the spec is empty"}}}
	}
	// YAML 1.2 (yaml.v3): only true/false are booleans, so a column named
	// y, n, on or off stays a string, as its author meant.
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return nil, &Error{Errors: []FieldError{{Message: "not YAML or JSON: " + err.Error()}}}
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, &Error{Errors: []FieldError{{Message: "not representable as JSON: " + err.Error()}}}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, &Error{Errors: []FieldError{{Message: "not a JSON document: " + err.Error()}}}
	}
	schema, err := compiled()
	if err != nil {
		return nil, fmt.Errorf("pipeline schema does not compile (a build problem, not the spec's): %w", err)
	}
	if err := schema.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, &Error{Errors: schemaErrors(ve)}
		}
		return nil, &Error{Errors: []FieldError{{Message: err.Error()}}}
	}
	var p Pipeline
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return nil, &Error{Errors: []FieldError{{Message: err.Error()}}}
	}
	p.Spec.Model.Params = normalizeNumbers(p.Spec.Model.Params)
	if errs := check(&p); len(errs) > 0 {
		return nil, &Error{Errors: errs}
	}
	applyDefaults(&p)
	return &p, nil
}

// normalizeNumbers turns json.Number params into int64 when integral and
// float64 otherwise, so that algorithms see plain Go numbers.
func normalizeNumbers(m map[string]any) map[string]any {
	for k, v := range m {
		m[k] = normalizeValue(v)
	}
	return m
}

func normalizeValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		return normalizeNumbers(x)
	case []any:
		for i := range x {
			x[i] = normalizeValue(x[i])
		}
	}
	return v
}

// schemaErrors flattens a JSON Schema error into one line per leaf cause,
// with the instance location as a dotted field path.
func schemaErrors(ve *jsonschema.ValidationError) []FieldError {
	printer := message.NewPrinter(language.English)
	seen := map[string]bool{}
	var errs []FieldError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		fe := FieldError{Field: fieldPath(e.InstanceLocation), Message: e.ErrorKind.LocalizedString(printer)}
		if !seen[fe.String()] {
			seen[fe.String()] = true
			errs = append(errs, fe)
		}
	}
	walk(ve)
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
	return errs
}

// fieldPath turns an instance location ([spec features 2 transform]) into
// spec.features[2].transform.
func fieldPath(location []string) string {
	var b strings.Builder
	for _, tok := range location {
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

// check applies the rules the JSON Schema cannot express.
func check(p *Pipeline) []FieldError {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if err := events.ValidatePipeline(p.Metadata.Name); err != nil {
		add("metadata.name", "%v", err)
	}
	ds := p.Spec.Dataset
	columns := map[string]Column{}
	for i, c := range ds.Schema {
		f := fmt.Sprintf("spec.dataset.schema[%d]", i)
		if _, dup := columns[c.Name]; dup {
			add(f+".name", "column %q is declared twice", c.Name)
		}
		columns[c.Name] = c
		if c.Min != nil && c.Max != nil && *c.Min > *c.Max {
			add(f, "min %g is greater than max %g", *c.Min, *c.Max)
		}
		if (c.Min != nil || c.Max != nil) && !c.Numeric() {
			add(f, "min/max apply to numeric columns, and %q is %s", c.Name, c.Type)
		}
		if len(c.Categories) > 0 && c.Type != TypeCategory && c.Type != TypeString {
			add(f+".categories", "categories apply to category or string columns, and %q is %s", c.Name, c.Type)
		}
		if c.MaxShareShift != nil && c.Type != TypeCategory && c.Type != TypeBool {
			add(f+".maxShareShift", "maxShareShift applies to category or bool columns, and %q is %s", c.Name, c.Type)
		}
	}
	if len(ds.Schema) > 0 {
		if _, ok := columns[ds.Label]; !ok {
			add("spec.dataset.label", "label %q is not a column of spec.dataset.schema", ds.Label)
		}
	}
	for i, rule := range ds.Rules {
		if err := CompileRule(rule, ds.Schema); err != nil {
			add(fmt.Sprintf("spec.dataset.rules[%d]", i), "%v", err)
		}
	}
	names := map[string]bool{}
	for i, f := range p.Spec.Features {
		field := fmt.Sprintf("spec.features[%d]", i)
		if names[f.Name] {
			add(field+".name", "feature %q is listed twice", f.Name)
		}
		names[f.Name] = true
		if f.Name == ds.Label {
			add(field+".name", "%q is the label; it cannot also be a feature", f.Name)
		}
		col, known := columns[f.Name]
		if len(ds.Schema) > 0 && !known {
			add(field+".name", "%q is not a column of spec.dataset.schema", f.Name)
		}
		switch f.Transform {
		case TransformBucketize:
			if len(f.Buckets) == 0 {
				add(field+".buckets", "bucketize needs bucket edges")
			} else if !sort.Float64sAreSorted(f.Buckets) {
				add(field+".buckets", "edges must ascend")
			}
		default:
			if len(f.Buckets) > 0 {
				add(field+".buckets", "buckets apply to the bucketize transform only")
			}
		}
		if known && f.Transform == TransformOneHot && col.Numeric() {
			add(field+".transform", "onehot applies to category or string columns, and %q is %s", f.Name, col.Type)
		}
		if known && !col.Numeric() && f.Transform != TransformOneHot && f.Transform != "" && f.Transform != TransformIdentity {
			add(field+".transform", "%s needs a numeric column, and %q is %s", f.Transform, f.Name, col.Type)
		}
	}
	m := p.Spec.Model
	if m.Algorithm == AlgorithmCommand && len(m.Command) == 0 {
		add("spec.model.command", "algorithm command needs the trainer's argv in spec.model.command")
	}
	if m.Algorithm != AlgorithmCommand && len(m.Command) > 0 {
		add("spec.model.command", "command applies to algorithm command only")
	}
	for i, g := range p.Spec.Evaluation.Gates {
		n := 0
		for _, set := range []bool{g.Min != nil, g.Max != nil, g.MinDeltaVsChampion != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			add(fmt.Sprintf("spec.evaluation.gates[%d]", i), "set exactly one of min, max, minDeltaVsChampion (found %d)", n)
		}
	}
	d := p.Spec.Deployment
	if len(d.Steps) > 0 {
		if d.Strategy != StrategyCanary {
			add("spec.deployment.steps", "steps apply to strategy canary only")
		}
		for i := 1; i < len(d.Steps); i++ {
			if d.Steps[i] <= d.Steps[i-1] {
				add(fmt.Sprintf("spec.deployment.steps[%d]", i), "steps must ascend (%g after %g)", d.Steps[i], d.Steps[i-1])
			}
		}
		if d.Steps[len(d.Steps)-1] != 100 {
			add("spec.deployment.steps", "the last step must be 100 (all traffic), not %g", d.Steps[len(d.Steps)-1])
		}
	}
	if d.RouteHeader != "" && !headerName(d.RouteHeader) {
		add("spec.deployment.routeHeader", "%q is not an HTTP header name (letters, digits and !#$%%&'*+-.^_`|~ only)", d.RouteHeader)
	}
	errs = append(errs, checkDrift(p)...)
	return errs
}

// checkDrift checks the drift section: thresholds that fit their methods,
// and per-feature overrides of monitored features.
func checkDrift(p *Pipeline) []FieldError {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	dr := p.Spec.Drift
	method := cmp.Or(dr.Method, DefaultDriftMethod)
	threshold := func(field, m string, t float64) {
		switch {
		case t == 0:
		case m == DriftAuto:
			add(field, "auto picks a test per feature, each with its own kind of threshold: set drift.pValueThreshold (default 0.05) and drift.distanceThreshold (default 0.1) instead")
		case driftUsesPValue(m) && t > 1:
			add(field, "%g is a p-value for %s, so at most 1", t, m)
		}
	}
	threshold("spec.drift.threshold", method, dr.Threshold)
	known := map[string]bool{}
	for _, name := range p.FeatureNames() {
		known[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(dr.Features)) {
		f := dr.Features[name]
		field := "spec.drift.features." + name
		if len(known) > 0 && !known[name] {
			add(field, "%q is not a monitored feature (the spec's features, or its schema's columns but the label)", name)
		}
		threshold(field+".threshold", cmp.Or(f.Method, method), f.Threshold)
	}
	return errs
}

// headerName reports whether s is an HTTP header field name (RFC 9110
// token).
func headerName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// Defaults.
const (
	DefaultAlgorithm        = AlgorithmGBDT
	DefaultPool             = "cpu"
	DefaultSeed             = 1
	DefaultWindowBatches    = 5
	DefaultBootstrapBatches = 2
	DefaultMaxMissingShare  = 0.5
	DefaultStepRequests     = 200
	DefaultMaxErrorRate     = 0.02
	DefaultMaxAccuracyDrop  = 0.05
	DefaultMinLabels        = 50
	DefaultRouteHeader      = "X-Gyre-Route-Key"
	DefaultMaxBatchSize     = 64
	DefaultMaxQueueDelayMs  = 1.0
	DefaultDriftMethod      = DriftPSI
	DefaultShareOfFeatures  = 0.3
	DefaultMinRows          = 500
	DefaultAccuracyDrop     = 0.05
	DefaultCooldownBatches  = 2
)

// Defaults of schema learning and the anomalies (spec.dataset.inferSchema,
// maxShareShift).
const (
	// DefaultInferBatches: the schema is learned from the first validated
	// batch, as before inferSchema existed.
	DefaultInferBatches = 1
	// DefaultMaxCategories is TFDV's max_string_domain_size.
	DefaultMaxCategories = 100
	// DefaultMaxShareShift: two batches of 50 rows of a balanced
	// two-valued column differ this much by chance about once in 20 (the
	// reference is learned from a sample too); a warning, not a rejection.
	DefaultMaxShareShift = 0.2
)

// DefaultCanarySteps are the traffic steps of a canary with none given.
var DefaultCanarySteps = []float64{10, 50, 100}

// DefaultDriftThreshold returns the threshold of a drift method when the spec
// gives none: 0.2 for PSI (the usual "significant shift"), 0.1 for the
// distances (KS D statistic, normalised Wasserstein, Jensen–Shannon), a
// p-value of 0.05 for chi-square and z, and 0 for auto, whose tests are
// judged on drift.pValueThreshold (0.05) and drift.distanceThreshold (0.1).
func DefaultDriftThreshold(method string) float64 {
	switch method {
	case DriftPSI:
		return 0.2
	case DriftChiSquare, DriftZ:
		return 0.05
	case DriftAuto:
		return 0
	default:
		return 0.1
	}
}

// driftUsesPValue reports whether a named drift method is judged on a
// p-value (a threshold in (0, 1]).
func driftUsesPValue(method string) bool { return method == DriftChiSquare || method == DriftZ }

// applyDefaults fills what the spec left out. A zero that can be a choice
// (cooldownBatches: 0) is a pointer in the spec types, so absent and zero differ.
func applyDefaults(p *Pipeline) {
	s := &p.Spec
	if s.Dataset.MaxMissingShare == 0 {
		s.Dataset.MaxMissingShare = DefaultMaxMissingShare
	}
	for i := range s.Features {
		if s.Features[i].Transform == "" {
			s.Features[i].Transform = TransformIdentity
		}
	}
	if s.Model.Algorithm == "" {
		s.Model.Algorithm = DefaultAlgorithm
	}
	if s.Model.Pool == "" {
		s.Model.Pool = DefaultPool
	}
	if s.Model.Seed == 0 {
		s.Model.Seed = DefaultSeed
	}
	if s.Model.Window.Batches == 0 {
		s.Model.Window.Batches = DefaultWindowBatches
	}
	if s.Model.BootstrapBatches == 0 {
		s.Model.BootstrapBatches = DefaultBootstrapBatches
	}
	if s.Deployment.Strategy == "" {
		s.Deployment.Strategy = StrategyImmediate
	}
	if s.Deployment.Strategy == StrategyCanary && len(s.Deployment.Steps) == 0 {
		s.Deployment.Steps = slices.Clone(DefaultCanarySteps)
	}
	if s.Deployment.StepRequests == 0 {
		s.Deployment.StepRequests = DefaultStepRequests
	}
	if s.Deployment.Rollback.MaxErrorRate == nil {
		s.Deployment.Rollback.MaxErrorRate = ptrTo(DefaultMaxErrorRate)
	}
	if s.Deployment.Rollback.MaxAccuracyDrop == nil {
		s.Deployment.Rollback.MaxAccuracyDrop = ptrTo(DefaultMaxAccuracyDrop)
	}
	if s.Deployment.Rollback.MinLabels == 0 {
		s.Deployment.Rollback.MinLabels = DefaultMinLabels
	}
	if s.Deployment.RouteHeader == "" {
		s.Deployment.RouteHeader = DefaultRouteHeader
	}
	if s.Deployment.SampleRate == nil {
		s.Deployment.SampleRate = ptrTo(1.0)
	}
	if s.Deployment.Batching.MaxBatchSize == 0 {
		s.Deployment.Batching.MaxBatchSize = DefaultMaxBatchSize
	}
	if s.Deployment.Batching.MaxQueueDelayMs == nil {
		s.Deployment.Batching.MaxQueueDelayMs = ptrTo(DefaultMaxQueueDelayMs)
	}
	if s.Drift.Method == "" {
		s.Drift.Method = DefaultDriftMethod
	}
	if s.Drift.Threshold == 0 {
		s.Drift.Threshold = DefaultDriftThreshold(s.Drift.Method)
	}
	if s.Drift.ShareOfFeatures == 0 {
		s.Drift.ShareOfFeatures = DefaultShareOfFeatures
	}
	if s.Drift.MinRows == 0 {
		s.Drift.MinRows = DefaultMinRows
	}
	if s.Drift.AccuracyDrop == 0 {
		s.Drift.AccuracyDrop = DefaultAccuracyDrop
	}
	if s.Drift.CooldownBatches == nil {
		n := DefaultCooldownBatches
		s.Drift.CooldownBatches = &n
	}
}

func ptrTo[T any](v T) *T { return &v }
