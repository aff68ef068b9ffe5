package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/evaluator"
)

// Registering models trained outside the loop (gyre models register,
// POST /v1/pipelines/{pipeline}/models): the registry bundles the file
// under the pipeline's names, stores the bundle in gyre-models, has the
// evaluator's gates judge it exactly as they judge a trained candidate,
// and records it as the pipeline's next version, signed like any other.

// Where the names of an outside model's inputs come from (Upload.From).
const (
	// SignatureModel: the file's own names (XGBoost's feature_names, or
	// f0, f1, …; a Gyre artifact's inputs).
	SignatureModel = "model"
	// SignatureSchema: the pipeline's feature columns (spec.features, or
	// every schema column but the label), in order.
	SignatureSchema = "schema"
	// SignatureGiven: the names the request gives (Upload.Inputs).
	SignatureGiven = "given"
)

// RegisteredPrefix starts the request id of a registered version:
// registered-<32 hex digits of the SHA-256 of its bundle>.
const RegisteredPrefix = "registered-"

// Upload is a model trained outside Gyre to register: the typed command of
// POST /v1/pipelines/{pipeline}/models.
type Upload struct {
	Pipeline string
	// Format is bundle.ModelXGBoost or bundle.ModelGyre.
	Format string
	// Data is the model's file.
	Data []byte
	// From is SignatureModel (the default) or SignatureSchema; Inputs, when
	// given, name the inputs instead. Classes, when given, name a
	// classifier's outputs in the model's order; else they come from the
	// pipeline's label (its declared categories, in order; "0", "1", … for
	// an int or bool label).
	From    string
	Inputs  []string
	Classes []string
	// By is the credential that asks; For who the client says it acts for.
	By, For string
	// SkipGates registers without running the gates (admin only: the
	// route's scope): the version is recorded rejected, gates skipped.
	SkipGates bool
	// Promote makes the version champion when the gates bless it (judged
	// against the champion in force, as a trained candidate is); with
	// SkipGates, by hand.
	Promote bool
}

// ErrCannotEvaluate: the gates cannot run (no validated batch to judge on).
var ErrCannotEvaluate = errors.New("the gates cannot run")

// RegisterOutside registers an outside model as the pipeline's next
// version: it builds its bundle (bundle.NewOutside) under the signature
// the upload asks for, stores it in gyre-models under a key derived from
// its content, runs the evaluator's gates on it (the newest validated
// batch, against the champion) unless SkipGates, and records the version
// with the registry's signature and who registered it. The same file under
// the same names is one version: registering it again changes nothing.
// What does not fit the pipeline is a bad request (HTTP 400) naming the
// mismatch; a pipeline with no validated batch to judge on is
// ErrCannotEvaluate (409) unless SkipGates.
func (r *Registrar) RegisterOutside(ctx context.Context, b *store.Buckets, u Upload) (Registration, error) {
	if err := events.ValidatePipeline(u.Pipeline); err != nil {
		return Registration{}, badRequest(err)
	}
	if len(u.Data) == 0 {
		return Registration{}, badRequest(errors.New("no model: send the model's file as the body"))
	}
	if !slices.Contains(bundle.ModelFormats(), u.Format) {
		return Registration{}, badRequest(fmt.Errorf("format %q: want one of %s", u.Format, strings.Join(bundle.ModelFormats(), ", ")))
	}
	spec, _, err := store.Pipeline(ctx, b.Pipelines, u.Pipeline)
	if err != nil {
		return Registration{}, err
	}
	own, info, err := bundle.Inspect(u.Format, u.Data)
	if err != nil {
		return Registration{}, badRequest(err)
	}
	sig, source, err := OutsideSignature(spec, u, own)
	if err != nil {
		return Registration{}, badRequest(err)
	}
	out := bundle.Outside{Pipeline: u.Pipeline, Format: u.Format, Data: u.Data, Signature: sig}
	if u.Format == bundle.ModelGyre {
		out.Signature = ml.Signature{} // a Gyre model's own
	}
	bd, err := bundle.NewOutside(out)
	if err != nil {
		return Registration{}, badRequest(err)
	}
	// The request id derives from the bundle without it: the same file
	// under the same names is the same request, and the same object.
	draft, err := bundle.Marshal(bd)
	if err != nil {
		return Registration{}, badRequest(err)
	}
	sum := sha256.Sum256(draft)
	rid := RegisteredPrefix + hex.EncodeToString(sum[:16])
	if rec, err := r.Get(ctx, u.Pipeline); err == nil {
		if n, ok := rec.Requests[rid]; ok {
			if v, ok := rec.Version(n); ok {
				return Registration{Version: *v}, nil
			}
		}
	} else if !store.IsNotFound(err) {
		return Registration{}, err
	}
	bd.RequestID = rid
	data, err := bundle.Marshal(bd)
	if err != nil {
		return Registration{}, badRequest(err)
	}
	ref, _, err := store.PutObject(ctx, b.Models, bundle.Key(u.Pipeline, rid), bundle.MediaType, data)
	if err != nil {
		return Registration{}, err
	}

	fileSum := sha256.Sum256(u.Data)
	reg := &models.Registered{By: u.By, For: u.For, Format: u.Format, FileSha256: hex.EncodeToString(fileSum[:]),
		FileBytes: int64(len(u.Data)), Signature: source, SkippedGates: u.SkipGates}
	if reg.By == "" {
		reg.By = "anonymous"
	}
	msig := bd.Model.Signature()
	schema := &gyrev1.ModelSchema{Label: msig.Label, Classes: msig.Classes, Task: string(msig.Task)}
	for _, in := range msig.Inputs {
		schema.Features = append(schema.Features, in.Name)
	}
	params, err := structpb.NewStruct(info.Params)
	if err != nil {
		params = nil // informational: a parameter structpb cannot hold is left out
	}
	lineage := &gyrev1.Lineage{FeatureSetVersion: bd.Features.Version, TrainingRequestId: rid, Reason: reg.Who()}
	var evaluated *gyrev1.ModelEvaluated
	if u.SkipGates {
		evaluated = &gyrev1.ModelEvaluated{
			Pipeline: u.Pipeline, RequestId: rid, CandidateArtifact: ref, Verdict: models.VerdictRejected,
			Reason:    "gates skipped at registration (" + reg.Who() + "): not evaluated; it serves only when promoted by hand",
			Algorithm: info.Algorithm, Params: params, Schema: schema, Lineage: lineage,
		}
	} else {
		tc := &gyrev1.TrainingCompleted{
			Pipeline: u.Pipeline, RequestId: rid, Artifact: ref, Algorithm: info.Algorithm, Params: params,
			Schema: schema, Lineage: lineage,
		}
		// The evaluator's own judgement, in this process: the same batch,
		// scores and gates as for a trained candidate. Its model.evaluated
		// is not published (the registry does not emit it): the verdict is
		// recorded with the version, and model.registered carries it.
		evaluated, err = evaluator.NewEvaluator(fixedBuckets{b}, discard{}).Evaluate(ctx, evaluator.Candidate{Completed: tc})
		if err != nil {
			if bus.IsPermanent(err) {
				return Registration{}, fmt.Errorf("%w: %v (ingest data for the pipeline first, or register with skipGates as an admin)", ErrCannotEvaluate, err)
			}
			return Registration{}, err
		}
		unpublished := bus.StableID(events.ModelEvaluated, u.Pipeline, rid)
		evaluated.Lineage.EventIds = slices.DeleteFunc(evaluated.Lineage.EventIds, func(id string) bool { return id == unpublished })
	}
	res, err := r.Register(ctx, Evaluation{Evaluated: evaluated, Registered: reg, Hold: !u.Promote || u.SkipGates})
	if err != nil {
		return Registration{}, err
	}
	if u.Promote && u.SkipGates && res.Created {
		p, err := r.Promote(ctx, u.Pipeline, res.Version.Version)
		if err != nil {
			return res, err
		}
		res.Promoted = &p.Move
	}
	return res, nil
}

// fixedBuckets hands the evaluator the buckets already open.
type fixedBuckets struct{ b *store.Buckets }

func (f fixedBuckets) Get(context.Context) (*store.Buckets, error) { return f.b, nil }

// discard takes the evaluator's model.evaluated and publishes nothing.
type discard struct{}

func (discard) Publish(context.Context, event.Event) error { return nil }

// OutsideSignature is what an outside model takes and gives under the
// pipeline's names: the inputs (given, the pipeline's feature columns, or
// the model's own names), the pipeline's label, and a classifier's
// classes (given, the label's declared categories, or "0", "1", … for an
// int or bool label). It returns where the inputs' names came from. Every
// input must be a column of the pipeline's schema (when it declares one),
// other than the label, and numeric for an XGBoost model; the model's task
// must be the label's. A Gyre model's signature is its own: the upload
// may not rename it.
func OutsideSignature(p *pipeline.Pipeline, u Upload, own ml.Signature) (ml.Signature, string, error) {
	label := p.Spec.Dataset.Label
	cols := map[string]pipeline.Column{}
	var colNames []string
	for _, c := range p.Spec.Dataset.Schema {
		cols[c.Name] = c
		colNames = append(colNames, c.Name)
	}
	from := u.From
	switch from {
	case "", SignatureModel:
		from = SignatureModel
	case SignatureSchema:
	default:
		return ml.Signature{}, "", fmt.Errorf("signature %q: want %s or %s", u.From, SignatureModel, SignatureSchema)
	}
	if u.Format == bundle.ModelGyre {
		if len(u.Inputs) > 0 || len(u.Classes) > 0 {
			return ml.Signature{}, "", errors.New("a Gyre model names its inputs and classes itself: give neither")
		}
		if own.Label != label {
			return ml.Signature{}, "", fmt.Errorf("the model was trained on label %q, pipeline %s's label is %q", own.Label, p.Name(), label)
		}
		if from == SignatureSchema {
			want := p.FeatureNames()
			got := make([]string, len(own.Inputs))
			for i, in := range own.Inputs {
				got[i] = in.Name
			}
			if !slices.Equal(sorted(got), sorted(want)) {
				return ml.Signature{}, "", fmt.Errorf("the model takes %d inputs (%s), pipeline %s's feature columns are %d (%s)",
					len(got), list(got), p.Name(), len(want), list(want))
			}
		}
		if err := checkColumns(p, cols, colNames, own, false); err != nil {
			return ml.Signature{}, "", err
		}
		if err := checkTask(p, cols, own.Task); err != nil {
			return ml.Signature{}, "", err
		}
		return own, SignatureModel, nil
	}

	var names []string
	what := ""
	switch {
	case len(u.Inputs) > 0:
		from, names, what = SignatureGiven, u.Inputs, "the request names"
	case from == SignatureSchema:
		names, what = p.FeatureNames(), fmt.Sprintf("pipeline %s's feature columns are", p.Name())
		if len(names) == 0 {
			return ml.Signature{}, "", fmt.Errorf("pipeline %s declares no features or schema: name the model's inputs", p.Name())
		}
	default:
		for _, in := range own.Inputs {
			names = append(names, in.Name)
		}
	}
	if len(names) != len(own.Inputs) {
		ownNames := make([]string, len(own.Inputs))
		for i, in := range own.Inputs {
			ownNames[i] = in.Name
		}
		return ml.Signature{}, "", fmt.Errorf("feature count mismatch: the model takes %d features (%s), %s %d (%s)",
			len(own.Inputs), list(ownNames), what, len(names), list(names))
	}
	sig := ml.Signature{Task: own.Task, Label: label}
	seen := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if seen[n] {
			return ml.Signature{}, "", fmt.Errorf("input %q is named twice", n)
		}
		seen[n] = true
		sig.Inputs = append(sig.Inputs, ml.Input{Name: n, Type: ml.Numeric})
	}
	if err := checkColumns(p, cols, colNames, sig, true); err != nil {
		return ml.Signature{}, "", err
	}
	if err := checkTask(p, cols, own.Task); err != nil {
		return ml.Signature{}, "", err
	}
	if own.Task == ml.Classification {
		classes, err := outsideClasses(p, cols[label], u.Classes, own)
		if err != nil {
			return ml.Signature{}, "", err
		}
		sig.Classes = classes
	}
	return sig, from, nil
}

// checkColumns checks that a signature's inputs are columns of the
// pipeline (when it declares its schema) other than the label, numeric
// when numeric is required.
func checkColumns(p *pipeline.Pipeline, cols map[string]pipeline.Column, colNames []string, sig ml.Signature, numeric bool) error {
	label := p.Spec.Dataset.Label
	for _, in := range sig.Inputs {
		if in.Name == label {
			return fmt.Errorf("input %q is pipeline %s's label", in.Name, p.Name())
		}
		if len(cols) == 0 {
			continue // an inferred schema: the batches say
		}
		c, ok := cols[in.Name]
		if !ok {
			return fmt.Errorf("input %q is not a column of pipeline %s (its columns: %s)", in.Name, p.Name(), list(colNames))
		}
		if numeric && !c.Numeric() {
			return fmt.Errorf("input %q is a %s column of pipeline %s: an XGBoost model takes numbers", in.Name, c.Type, p.Name())
		}
	}
	return nil
}

// checkTask checks a model's task against the pipeline's label: a float
// label is a regression target, an int, bool, string or category label a
// class.
func checkTask(p *pipeline.Pipeline, cols map[string]pipeline.Column, task ml.Task) error {
	label := p.Spec.Dataset.Label
	c, ok := cols[label]
	if !ok || c.Type == "" {
		return nil
	}
	want := ml.Classification
	if c.Type == pipeline.TypeFloat {
		want = ml.Regression
	}
	if task != want {
		return fmt.Errorf("the model is a %s model; pipeline %s's label %q (%s) calls for %s", task, p.Name(), label, c.Type, want)
	}
	return nil
}

// outsideClasses names a classifier's outputs, in the model's order.
func outsideClasses(p *pipeline.Pipeline, label pipeline.Column, given []string, own ml.Signature) ([]string, error) {
	k := len(own.Classes)
	if len(given) > 0 {
		out := make([]string, len(given))
		for i, c := range given {
			out[i] = bundle.CanonicalClass(c)
		}
		if len(out) != k {
			return nil, fmt.Errorf("class count mismatch: the model gives %d classes, the request names %d (%s)", k, len(out), list(out))
		}
		return out, nil
	}
	switch label.Type {
	case pipeline.TypeCategory, pipeline.TypeString:
		if len(label.Categories) == 0 {
			return nil, fmt.Errorf("pipeline %s's label %q declares no categories: name the model's %d classes in its output order", p.Name(), label.Name, k)
		}
		if len(label.Categories) != k {
			return nil, fmt.Errorf("class count mismatch: the model gives %d classes, pipeline %s's label %q has %d categories (%s): name the classes in the model's output order",
				k, p.Name(), label.Name, len(label.Categories), list(label.Categories))
		}
		out := make([]string, k)
		for i, c := range label.Categories {
			out[i] = bundle.CanonicalClass(c)
		}
		return out, nil
	}
	// An int or bool label (or an undeclared one): XGBoost's classes are
	// the label's values 0, 1, …
	return slices.Clone(own.Classes), nil
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// list names values, the first and last few of a long list.
func list(names []string) string {
	if len(names) <= 8 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:4], ", ") + ", …, " + strings.Join(names[len(names)-3:], ", ")
}
