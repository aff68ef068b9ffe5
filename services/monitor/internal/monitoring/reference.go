package monitoring

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// Column is a raw feature column the monitor watches.
type Column struct {
	Name    string
	Numeric bool
}

// FeatureColumns returns the raw columns behind the pipeline's features:
// the spec's features, or every schema column but the label, or — with
// neither (a schema inferred from data) — every column of the window but
// the label. A column is numeric when the schema says so (float, int,
// bool), categorical when it says string or category, and otherwise
// numeric exactly when every present value of the window is a number.
func FeatureColumns(p *pipeline.Pipeline, window []*table.Table) []Column {
	names := p.FeatureNames()
	if len(names) == 0 && len(window) > 0 {
		for _, c := range window[0].Columns {
			if c != p.Spec.Dataset.Label {
				names = append(names, c)
			}
		}
	}
	declared := map[string]pipeline.Column{}
	for _, c := range p.Spec.Dataset.Schema {
		declared[c.Name] = c
	}
	cols := make([]Column, 0, len(names))
	for _, name := range names {
		c := Column{Name: name}
		if d, ok := declared[name]; ok && d.Type != "" {
			c.Numeric = d.Numeric()
		} else {
			c.Numeric = allNumbers(window, name)
		}
		cols = append(cols, c)
	}
	return cols
}

func allNumbers(window []*table.Table, name string) bool {
	for _, t := range window {
		j := t.Index(name)
		if j < 0 {
			continue
		}
		for i, row := range t.Rows {
			if t.IsMissing(i, j) || strings.TrimSpace(row[j]) == "" {
				continue
			}
			if _, ok := parseNumber(row[j]); !ok {
				return false
			}
		}
	}
	return true
}

// parseNumber reads a numeric cell the way the feature transforms do:
// true and false are 1 and 0.
func parseNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "true":
		return 1, true
	case "false":
		return 0, true
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, false
	}
	return x, true
}

// BuildReferences summarises each column over the window's tables: the
// reference the monitor compares later batches with. A column absent from
// every table, or with no value in any, has no reference (it is listed in
// skipped with the reason); the window's row count is returned too.
func BuildReferences(cols []Column, window []*table.Table) (refs map[string]drift.Reference, rows int64, skipped map[string]string) {
	refs = map[string]drift.Reference{}
	skipped = map[string]string{}
	for _, t := range window {
		rows += int64(t.Len())
	}
	for _, c := range cols {
		ref, err := buildReference(c, window)
		if err != nil {
			skipped[c.Name] = err.Error()
			continue
		}
		refs[c.Name] = ref
	}
	return refs, rows, skipped
}

var errNoColumn = errors.New("not a column of any batch of the window")

func buildReference(c Column, window []*table.Table) (drift.Reference, error) {
	found := false
	if c.Numeric {
		acc := drift.NewNumeric()
		for _, t := range window {
			j := t.Index(c.Name)
			if j < 0 {
				continue
			}
			found = true
			for i, row := range t.Rows {
				if x, ok := numericCell(t, i, j, row); ok {
					acc.Add(x)
				} else {
					acc.AddMissing()
				}
			}
		}
		if !found {
			return drift.Reference{}, errNoColumn
		}
		return acc.Reference()
	}
	acc := drift.NewCategorical()
	for _, t := range window {
		j := t.Index(c.Name)
		if j < 0 {
			continue
		}
		found = true
		for i, row := range t.Rows {
			if v := textCell(t, i, j, row); v != "" {
				acc.Add(v)
			} else {
				acc.AddMissing()
			}
		}
	}
	if !found {
		return drift.Reference{}, errNoColumn
	}
	return acc.Reference()
}

func numericCell(t *table.Table, i, j int, row []string) (float64, bool) {
	if t.IsMissing(i, j) {
		return 0, false
	}
	return parseNumber(row[j])
}

func textCell(t *table.Table, i, j int, row []string) string {
	if t.IsMissing(i, j) {
		return ""
	}
	return strings.TrimSpace(row[j])
}

// Samples extracts from a batch the columns that refs describe, typed as
// their reference: numbers (missing or unparsable: NaN) for a numeric
// reference, text ("" missing) for a categorical one. A column the batch
// lacks is left out, and drift reports it skipped.
func Samples(refs map[string]drift.Reference, t *table.Table) map[string]drift.Sample {
	out := make(map[string]drift.Sample, len(refs))
	for name, ref := range refs {
		j := t.Index(name)
		if j < 0 {
			continue
		}
		if ref.Kind == drift.KindNumeric {
			vs := make([]float64, t.Len())
			for i, row := range t.Rows {
				if x, ok := numericCell(t, i, j, row); ok {
					vs[i] = x
				} else {
					vs[i] = math.NaN()
				}
			}
			out[name] = drift.Sample{Values: vs}
			continue
		}
		cs := make([]string, t.Len())
		for i, row := range t.Rows {
			cs[i] = textCell(t, i, j, row)
		}
		out[name] = drift.Sample{Categories: cs}
	}
	return out
}

// Policy returns the drift policy of a spec.
func Policy(p *pipeline.Pipeline) drift.Policy {
	d := p.Spec.Drift
	pol := drift.Policy{
		Method: drift.Method(d.Method), Threshold: d.Threshold,
		PValueThreshold: d.PValueThreshold, DistanceThreshold: d.DistanceThreshold,
		ShareOfFeatures: d.ShareOfFeatures, MinRows: d.MinRows,
	}
	if len(d.Features) > 0 {
		pol.Features = make(map[string]drift.FeaturePolicy, len(d.Features))
		for name, f := range d.Features {
			pol.Features[name] = drift.FeaturePolicy{Method: drift.Method(f.Method), Threshold: f.Threshold}
		}
	}
	return pol
}

// Unreferenced lists the pipeline's monitored columns (FeatureColumns of
// the batch) that have no reference, with the reason: the champion's
// window had no value of them, or they were not among its columns. They
// are reported as skipped, so that drift.measured names every feature.
func Unreferenced(p *pipeline.Pipeline, refs map[string]drift.Reference, known map[string]string, t *table.Table) []drift.FeatureScore {
	var out []drift.FeatureScore
	for _, c := range FeatureColumns(p, []*table.Table{t}) {
		if _, ok := refs[c.Name]; ok {
			continue
		}
		why := known[c.Name]
		if why == "" {
			why = "not in the champion's training window (no value there, or not a column of its feature set)"
		}
		out = append(out, drift.FeatureScore{Feature: c.Name, Skipped: "no reference: " + why})
	}
	return out
}

// cooldownBatches returns the spec's drift cooldown (the parser fills it in).
func cooldownBatches(p *pipeline.Pipeline) int {
	if c := p.Spec.Drift.CooldownBatches; c != nil {
		return *c
	}
	return pipeline.DefaultCooldownBatches
}

func describeSkipped(skipped map[string]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(skipped)) {
		why := skipped[name]
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", name, why)
	}
	return b.String()
}
