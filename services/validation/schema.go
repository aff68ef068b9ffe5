package validation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// What validation learns about a pipeline's data is kept at gyre-state
// schema.<pipeline> (a Schema). For a pipeline that declares no schema it
// is the schema itself, learned from the first spec.dataset.inferSchema.
// batches validated batches (default 1): types, numeric min/max,
// categories (at most inferSchema.maxCategories distinct values, else
// none), presence (the lowest share of rows with a value). For every
// pipeline it also holds the reference shares of the category and bool
// columns, learned from the same batches, that category_shift compares a
// batch with.
//
// The spec is the desired state; this record is observed state, so it
// lives beside the other state validation keeps, not in the spec.
// `gyre schema freeze` pins it there (Frozen: who, with which NATS
// identity, when, at which revision of the spec): a frozen schema is
// never widened by later batches, not even when inferSchema.batches is
// raised, and its domains are enforced row by row like declared ones. To
// make it desired state, paste `gyre schema show -o yaml`'s schema into
// spec.dataset.schema: a spec that declares a schema drops the record.

// Sources of a Schema record.
const (
	// SourceInferred: the record holds the schema, learned from batches.
	SourceInferred = "inferred"
	// SourceDeclared: the spec declares the schema; the record holds only
	// the reference shares learned from batches.
	SourceDeclared = "declared"
)

// States of a pipeline's schema (SchemaView.State), which decide what
// validation does with values outside a column's domain.
const (
	// StateDeclared: spec.dataset.schema. Its domains are enforced: a
	// value outside them is a bad row (quarantined).
	StateDeclared = "declared"
	// StateNone: nothing learned yet; the next valid batch starts it.
	StateNone = "none"
	// StateLearning: learned from fewer batches than inferSchema.batches.
	// Batches are held to the types learned so far (an int column may
	// widen to float), and widen the schema; nothing else is checked.
	StateLearning = "learning"
	// StateLearned: learned from inferSchema.batches batches and not
	// frozen. Types are enforced; values outside the learned categories
	// are an anomaly (a warning), the learned min/max only shown.
	StateLearned = "learned"
	// StateFrozen: pinned by `gyre schema freeze`. Enforced as a
	// declared schema is.
	StateFrozen = "frozen"
)

// Schema is what validation keeps at gyre-state schema.<pipeline>.
type Schema struct {
	// Source is SourceInferred or SourceDeclared.
	Source string `json:"source"`
	// Columns is the learned schema (SourceInferred), in the order of the
	// first batch's columns.
	Columns []pipeline.Column `json:"columns,omitempty"`
	// Learned is how many batches the record was learned from;
	// LearnedFrom names them, in the order learned.
	Learned     int      `json:"learned"`
	LearnedFrom []string `json:"learnedFrom,omitempty"`
	// Reference holds the value counts of category and bool columns over
	// the rows passed on of the batches learned from.
	Reference map[string]*Distribution `json:"reference,omitempty"`
	// Frozen says who pinned the schema; nil while it is not.
	Frozen *Freeze `json:"frozen,omitempty"`
	// PipelineRevision is the revision of the spec of the last batch
	// learned from.
	PipelineRevision uint64    `json:"pipelineRevision,omitempty"`
	UpdatedAt        time.Time `json:"updatedAt"`
}

// UnmarshalJSON reads a record, or the []pipeline.Column that validators
// before learning stored: a schema inferred from one batch.
func (s *Schema) UnmarshalJSON(data []byte) error {
	if b := bytes.TrimSpace(data); len(b) > 0 && b[0] == '[' {
		var cols []pipeline.Column
		if err := json.Unmarshal(b, &cols); err != nil {
			return err
		}
		*s = Schema{Source: SourceInferred, Columns: cols, Learned: 1}
		return nil
	}
	type plain Schema
	return json.Unmarshal(data, (*plain)(s))
}

// Distribution is the value counts of a column.
type Distribution struct {
	// Counts per value; nil once Overflow.
	Counts map[string]int64 `json:"counts,omitempty"`
	// Total counts every value, those left out of Counts included.
	Total int64 `json:"total"`
	// Overflow: more distinct values than inferSchema.maxCategories were
	// seen; the column has no categories and no reference.
	Overflow bool `json:"overflow,omitempty"`
}

// Share returns the share of v among the values.
func (d *Distribution) Share(v string) float64 {
	if d == nil || d.Total == 0 {
		return 0
	}
	return float64(d.Counts[v]) / float64(d.Total)
}

// Freeze says who pinned a learned schema.
type Freeze struct {
	// By is who ran `gyre schema freeze`, user@host as their machine says.
	By string `json:"by"`
	// Identity is the NATS identity the command wrote with.
	Identity string    `json:"identity,omitempty"`
	At       time.Time `json:"at"`
	// PipelineRevision is the spec's revision when it was frozen.
	PipelineRevision uint64 `json:"pipelineRevision"`
	// Learned is how many batches the schema had been learned from.
	Learned int `json:"learned"`
}

// state returns the record's state under a spec learning from n batches.
func (s *Schema) state(n int) string {
	switch {
	case s.Frozen != nil:
		return StateFrozen
	case s.Learned >= n:
		return StateLearned
	}
	return StateLearning
}

// holdsSchema reports whether the record is of the given source and, for
// an inferred one, holds columns.
func (s *Schema) holdsSchema(source string) bool {
	return s.Source == source && (source == SourceDeclared || len(s.Columns) > 0)
}

// loadSchema reads gyre-state schema.<pipeline>.
func loadSchema(ctx context.Context, kv jetstream.KeyValue, name string) (Schema, bool, error) {
	s, _, found, err := store.GetJSON[Schema](ctx, kv, store.SchemaKey(name))
	if err != nil {
		return Schema{}, false, fmt.Errorf("schema of %s: %w", name, err)
	}
	return s, found, nil
}

// plan is how one batch is checked, and whether it is learned from.
type plan struct {
	// state is the Checker's: declared, learning, learned or frozen.
	state   string
	columns []pipeline.Column
	// reference and refBatches: the reference shares, once complete.
	reference  map[string]*Distribution
	refBatches int
	// learn: the batch, if valid, is learned from.
	learn  bool
	source string
	// basis is the record the plan was made from: whether one of source
	// was there, and how many batches it was learned from.
	basisFound   bool
	basisLearned int
}

// makePlan decides how to check a batch of p given the stored record.
func makePlan(p *pipeline.Pipeline, rec Schema, found bool, batchID string, t *table.Table) plan {
	ds := p.Spec.Dataset
	n := ds.InferBatches()
	if len(ds.Schema) > 0 {
		pl := plan{state: StateDeclared, columns: ds.Schema, source: SourceDeclared, learn: true}
		if found && rec.holdsSchema(SourceDeclared) {
			pl.basisFound, pl.basisLearned = true, rec.Learned
			switch {
			case rec.Learned >= n:
				pl.learn, pl.reference, pl.refBatches = false, rec.Reference, rec.Learned
			case slices.Contains(rec.LearnedFrom, batchID):
				pl.learn = false // a redelivery of a batch learned from
			}
		}
		return pl
	}
	pl := plan{source: SourceInferred}
	if !found || !rec.holdsSchema(SourceInferred) {
		pl.state, pl.columns, pl.learn = StateLearning, InferSchema(t, ds.Label), true
		return pl
	}
	pl.basisFound, pl.basisLearned = true, rec.Learned
	pl.state = rec.state(n)
	switch pl.state {
	case StateFrozen, StateLearned:
		pl.columns, pl.reference, pl.refBatches = rec.Columns, rec.Reference, rec.Learned
	default:
		pl.columns = widen(rec.Columns, t, ds.Label)
		pl.learn = !slices.Contains(rec.LearnedFrom, batchID)
	}
	return pl
}

// errReplan: the record changed between planning and learning.
var errReplan = errors.New("the schema changed meanwhile")

// learn adds what a valid batch showed to the stored record, as planned.
// It answers errReplan when the record is no longer the plan's basis:
// another batch was learned from, or the schema frozen, meanwhile.
func (v *Validator) learn(ctx context.Context, kv jetstream.KeyValue, p *pipeline.Pipeline, pl plan, r *Report, batchID string, rev uint64) error {
	_, err := store.UpdateJSON(ctx, kv, store.SchemaKey(p.Name()), func(s *Schema, exists bool) error {
		relevant := exists && s.holdsSchema(pl.source)
		if relevant != pl.basisFound || relevant && (s.Learned != pl.basisLearned || s.Frozen != nil) {
			if relevant && slices.Contains(s.LearnedFrom, batchID) {
				return store.ErrNoChange // learned from by another delivery
			}
			return errReplan
		}
		if !relevant {
			*s = Schema{Source: pl.source}
		}
		learnBatch(s, pl, r.observed, p.Spec.Dataset)
		s.Learned++
		s.LearnedFrom = append(s.LearnedFrom, batchID)
		s.PipelineRevision, s.UpdatedAt = rev, time.Now().UTC()
		return nil
	})
	return err
}

// learnBatch merges a batch's observations into s: the columns of the
// plan (an inferred schema), or only the reference (a declared one).
func learnBatch(s *Schema, pl plan, obs map[string]*observation, ds pipeline.Dataset) {
	if s.Reference == nil {
		s.Reference = map[string]*Distribution{}
	}
	maxCats := ds.MaxCategories()
	if pl.source == SourceDeclared {
		for _, c := range pl.columns {
			if o := obs[c.Name]; o != nil && (c.Type == pipeline.TypeCategory || c.Type == pipeline.TypeBool) {
				learnShares(s.Reference, c.Name, o, maxCats)
			}
		}
		return
	}
	cols := make([]pipeline.Column, len(pl.columns))
	for i, c := range pl.columns {
		o := obs[c.Name]
		if o == nil {
			o = &observation{}
		}
		if o.rows > 0 {
			// Floored, so that the batch learned from is never below its
			// own presence.
			share := math.Floor(float64(o.present)/float64(o.rows)*1e4) / 1e4
			if c.MinPresence == nil || share < *c.MinPresence {
				c.MinPresence = &share
			}
		}
		switch c.Type {
		case pipeline.TypeInt, pipeline.TypeFloat:
			if o.numN > 0 {
				if c.Min == nil || o.min < *c.Min {
					c.Min = ptrTo(o.min)
				}
				if c.Max == nil || o.max > *c.Max {
					c.Max = ptrTo(o.max)
				}
			}
		case pipeline.TypeCategory, pipeline.TypeBool:
			d := learnShares(s.Reference, c.Name, o, maxCats)
			c.Categories = nil
			if c.Type == pipeline.TypeCategory && !d.Overflow && len(d.Counts) > 0 {
				c.Categories = sortCategories(d.Counts)
			}
		}
		cols[i] = c
	}
	s.Columns = cols
}

// learnShares adds a column's value counts to its reference.
func learnShares(ref map[string]*Distribution, name string, o *observation, maxCats int) *Distribution {
	d := ref[name]
	if d == nil {
		d = &Distribution{}
		ref[name] = d
	}
	d.Total += o.countTotal
	if d.Overflow {
		return d
	}
	if d.Counts == nil {
		d.Counts = map[string]int64{}
	}
	for v, n := range o.counts {
		d.Counts[v] += n
	}
	if o.overflow || len(d.Counts) > maxCats {
		d.Overflow, d.Counts = true, nil
	}
	return d
}

// sortCategories returns the values counted, in numeric order when they
// are all numbers, else in string order.
func sortCategories(counts map[string]int64) []string {
	out := make([]string, 0, len(counts))
	numeric := true
	for v := range counts {
		out = append(out, v)
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			numeric = false
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if numeric {
			x, _ := strconv.ParseFloat(a, 64)
			y, _ := strconv.ParseFloat(b, 64)
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
		}
		if a < b {
			return -1
		}
		if a > b {
			return 1
		}
		return 0
	})
	return out
}

// widen returns the learned columns with the types a batch in the
// learning window widens them to: an int column whose values now include
// fractions becomes float, a column with no value yet (string) takes the
// batch's type. Any other difference is not widened: its cells are bad
// cells, and when they are most of the column, a type change.
func widen(cols []pipeline.Column, t *table.Table, label string) []pipeline.Column {
	out := slices.Clone(cols)
	for i, c := range out {
		j := t.Index(c.Name)
		if j < 0 {
			continue
		}
		out[i].Type = widenType(c.Type, inferType(t, j, c.Name == label))
	}
	return out
}

func widenType(have, got string) string {
	switch {
	case have == got, got == pipeline.TypeString:
		return have
	case have == pipeline.TypeString:
		return got
	case have == pipeline.TypeInt && got == pipeline.TypeFloat:
		return pipeline.TypeFloat
	}
	return have
}

func ptrTo[T any](v T) *T { return &v }

// SchemaView is a pipeline's schema as `gyre schema show` prints it (-o
// json; -o yaml the same in YAML, whose schema pastes into
// spec.dataset.schema).
type SchemaView struct {
	Pipeline string `json:"pipeline"`
	// State is declared, none, learning, learned or frozen.
	State string `json:"state"`
	// LearnBatches is spec.dataset.inferSchema.batches; Learned how many
	// batches were learned from, LearnedFrom which.
	LearnBatches int      `json:"learnBatches"`
	Learned      int      `json:"learned"`
	LearnedFrom  []string `json:"learnedFrom,omitempty"`
	Frozen       *Freeze  `json:"frozen,omitempty"`
	// Schema is what batches are checked against: the spec's, or the
	// learned one.
	Schema []pipeline.Column `json:"schema"`
	// Reference holds the value counts of category and bool columns that
	// category_shift compares batches with.
	Reference        map[string]*Distribution `json:"reference,omitempty"`
	PipelineRevision uint64                   `json:"pipelineRevision"`
	UpdatedAt        *time.Time               `json:"updatedAt,omitempty"`
}

// ShowSchema returns the schema of a pipeline: declared in its spec, or
// learned. pipelines is the gyre-pipelines bucket, state gyre-state.
func ShowSchema(ctx context.Context, pipelines, state jetstream.KeyValue, name string) (SchemaView, error) {
	p, rev, err := store.Pipeline(ctx, pipelines, name)
	if err != nil {
		return SchemaView{}, err
	}
	rec, found, err := loadSchema(ctx, state, name)
	if err != nil {
		return SchemaView{}, err
	}
	return view(p, rev, rec, found), nil
}

func view(p *pipeline.Pipeline, rev uint64, rec Schema, found bool) SchemaView {
	ds := p.Spec.Dataset
	v := SchemaView{Pipeline: p.Name(), LearnBatches: ds.InferBatches(), PipelineRevision: rev, Schema: []pipeline.Column{}}
	declared := len(ds.Schema) > 0
	source := SourceInferred
	if declared {
		source = SourceDeclared
		v.State, v.Schema = StateDeclared, ds.Schema
	}
	if !found || !rec.holdsSchema(source) {
		if !declared {
			v.State = StateNone
		}
		return v
	}
	v.Learned, v.LearnedFrom, v.Frozen, v.Reference = rec.Learned, rec.LearnedFrom, rec.Frozen, rec.Reference
	at := rec.UpdatedAt
	if !at.IsZero() {
		v.UpdatedAt = &at
	}
	if !declared {
		v.State, v.Schema = rec.state(v.LearnBatches), rec.Columns
	}
	return v
}

// FreezeError says why a schema cannot be frozen.
type FreezeError struct{ Reason string }

func (e *FreezeError) Error() string { return e.Reason }

// FreezeSchema pins the learned schema of a pipeline: it is never widened
// again, and its domains are enforced as declared ones are. It answers
// the schema frozen, and whether it was frozen before (then nothing
// changed). A pipeline whose spec declares its schema, or with nothing
// learned yet, is a *FreezeError.
func FreezeSchema(ctx context.Context, pipelines, state jetstream.KeyValue, name string, who Freeze) (SchemaView, bool, error) {
	p, rev, err := store.Pipeline(ctx, pipelines, name)
	if err != nil {
		return SchemaView{}, false, err
	}
	if len(p.Spec.Dataset.Schema) > 0 {
		return SchemaView{}, false, &FreezeError{Reason: fmt.Sprintf(
			"the spec of %s declares its schema (spec.dataset.schema): it is pinned already, and changed in the spec", name)}
	}
	already := false
	rec, err := store.UpdateJSON(ctx, state, store.SchemaKey(name), func(s *Schema, exists bool) error {
		if !exists || !s.holdsSchema(SourceInferred) {
			return &FreezeError{Reason: fmt.Sprintf(
				"nothing to freeze: no schema of %s has been learned yet (it is learned from its first %d validated batches, spec.dataset.inferSchema.batches)",
				name, p.Spec.Dataset.InferBatches())}
		}
		if s.Frozen != nil {
			already = true
			return store.ErrNoChange
		}
		f := who
		f.At, f.PipelineRevision, f.Learned = time.Now().UTC(), rev, s.Learned
		s.Frozen, s.UpdatedAt = &f, f.At
		return nil
	})
	if err != nil {
		return SchemaView{}, false, err
	}
	return view(p, rev, rec, true), already, nil
}
