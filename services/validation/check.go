package validation

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// MaxReasons is how many reasons a rejection carries; reasons_total counts
// them all.
const MaxReasons = 100

// Check kinds, as in gyre.v1.Check.kind.
const (
	KindSchema   = "schema"
	KindRequired = "required"
	KindType     = "type"
	KindRange    = "range"
	KindCategory = "category"
	KindMissing  = "missing"
	KindRule     = "rule"
)

// Report is the outcome of checking one batch against its schema and rules.
type Report struct {
	// Rows is the number of data rows.
	Rows int
	// Checks has one entry per check run, passed or not.
	Checks []*gyrev1.Check
	// Reasons are the first MaxReasons problems: problems of the whole batch
	// (row 0) first, then by row.
	Reasons []*gyrev1.RejectReason
	// ReasonsTotal counts every problem found.
	ReasonsTotal int
	// BatchProblems counts problems of the whole batch: a missing column, too
	// many missing values. Any one rejects the batch.
	BatchProblems int
	// RowsWithErrors counts rows with at least one bad cell or broken rule.
	RowsWithErrors int
	// Columns are the statistics of every column of the batch, in file order.
	Columns []*gyrev1.ColumnStats
	// Labelled is true when the label column has at least one value (in
	// the rows passed on).
	Labelled bool
	// Quarantine lists every row with a bad cell or a broken rule, in row
	// order, with all its problems, while there are at most
	// dataset.maxRowErrors of them: the batch is then validated without
	// those rows. Nil when there are more (the batch is rejected whole,
	// and keeping them would only cost memory).
	Quarantine []QuarantinedRow
	// Undeclared are the batch's columns that neither the schema, the
	// label nor the spec's features declare, in file order: they are
	// dropped from the batch passed on (an Anomaly each).
	Undeclared []string
	// Anomalies are the batch's differences from its schema that are not
	// bad rows, per column.
	Anomalies []*gyrev1.Anomaly
}

// QuarantinedRow is one row kept out of a validated batch, with every
// problem found in it.
type QuarantinedRow struct {
	// Row is the 1-based data row of the batch as received.
	Row     int
	Reasons []*gyrev1.RejectReason
}

// AnomalyNewColumn is the anomaly kind of a column nothing declares.
const AnomalyNewColumn = "new_column"

// Passed reports whether the batch is valid: no problem of the whole batch,
// and at most maxRowErrors rows with errors (those are quarantined).
func (r *Report) Passed(maxRowErrors int) bool {
	return r.BatchProblems == 0 && r.RowsWithErrors <= maxRowErrors
}

// AllChecksPassed reports whether no check failed at all.
func (r *Report) AllChecksPassed() bool {
	for _, c := range r.Checks {
		if !c.Passed {
			return false
		}
	}
	return true
}

// check accumulates one gyre.v1.Check.
type check struct {
	pb     *gyrev1.Check
	detail string
}

func (c *check) fail(detail string) {
	c.pb.FailedRows++
	if c.detail == "" {
		c.detail = detail
	}
}

// Checker checks batches against one schema and rule set.
type Checker struct {
	schema  []pipeline.Column
	dataset pipeline.Dataset
	rules   *pipeline.RuleSet
	// features are the spec's feature columns: declared even where the
	// schema (inferred) does not list them.
	features []string
}

// NewChecker returns a checker of the dataset's label, missing shares and
// rules against schema (declared or inferred).
func NewChecker(schema []pipeline.Column, dataset pipeline.Dataset, rules *pipeline.RuleSet) *Checker {
	return &Checker{schema: schema, dataset: dataset, rules: rules}
}

// WithFeatures counts the columns of the spec's features as declared: with
// an inferred schema, naming a new column among spec.features is how a
// spec starts using it.
func (c *Checker) WithFeatures(features []pipeline.Feature) *Checker {
	c.features = c.features[:0]
	for _, f := range features {
		c.features = append(c.features, f.Name)
	}
	return c
}

// declared reports whether a column of a batch is declared: in the schema,
// the label, or a feature.
func (c *Checker) declared(name string) bool {
	return name == c.dataset.Label || slices.Contains(c.features, name) ||
		slices.ContainsFunc(c.schema, func(col pipeline.Column) bool { return col.Name == name })
}

// cellCheck is the per-column state of Check.
type cellCheck struct {
	col      pipeline.Column
	idx      int // in the batch; -1 when absent
	required *check
	typ      *check
	rng      *check
	category *check
	missing  *check
	nMissing int
}

// Check runs every check on t. It never fails: every problem is in the report.
func (c *Checker) Check(t *table.Table) *Report {
	r := &Report{Rows: t.Len()}
	var batchReasons []*gyrev1.RejectReason
	rowReasons := map[int][]*gyrev1.RejectReason{}
	addBatch := func(column, rule, msg string) {
		r.BatchProblems++
		batchReasons = append(batchReasons, &gyrev1.RejectReason{Column: column, Rule: rule, Message: msg})
	}
	var checks []*check
	newCheck := func(name, kind, column string) *check {
		ch := &check{pb: &gyrev1.Check{Name: name, Kind: kind, Column: column}}
		checks = append(checks, ch)
		return ch
	}

	if label := c.dataset.Label; label != "" {
		ch := newCheck("label:"+label, KindSchema, label)
		if t.Index(label) < 0 {
			ch.fail(fmt.Sprintf("the label column %q is not in the batch", label))
			addBatch(label, "label", fmt.Sprintf("the label column %q is not in the batch (columns: %s)", label, strings.Join(t.Columns, ", ")))
		}
	}

	cols := make([]*cellCheck, 0, len(c.schema))
	for _, col := range c.schema {
		cc := &cellCheck{col: col, idx: t.Index(col.Name)}
		if col.Required {
			cc.required = newCheck("required:"+col.Name, KindRequired, col.Name)
			if cc.idx < 0 {
				cc.required.fail("column absent")
				addBatch(col.Name, "required", fmt.Sprintf("required column %q is not in the batch (columns: %s)", col.Name, strings.Join(t.Columns, ", ")))
			}
		}
		if col.Type != pipeline.TypeString && !(col.Type == pipeline.TypeCategory && len(col.Categories) == 0) {
			if col.Type == pipeline.TypeCategory {
				cc.category = newCheck("category:"+col.Name, KindCategory, col.Name)
			} else {
				cc.typ = newCheck("type:"+col.Name, KindType, col.Name)
			}
		}
		if (col.Min != nil || col.Max != nil) && (col.Type == pipeline.TypeFloat || col.Type == pipeline.TypeInt) {
			cc.rng = newCheck("range:"+col.Name, KindRange, col.Name)
		}
		cc.missing = newCheck("missing:"+col.Name, KindMissing, col.Name)
		cols = append(cols, cc)
	}
	// The rule set was compiled from the dataset's rules, in order.
	ruleChecks := make([]*check, len(c.dataset.Rules))
	for i, src := range c.dataset.Rules {
		ruleChecks[i] = newCheck("rule:"+src, KindRule, "")
	}

	types := c.columnTypes(t)
	kept := 0
	row := make(map[string]any, len(t.Columns))
	for i := range t.Rows {
		var reasons []*gyrev1.RejectReason
		bad := func(cc *cellCheck, ch *check, rule, value, msg string) {
			ch.fail(msg)
			reasons = append(reasons, &gyrev1.RejectReason{Column: cc.col.Name, Row: int64(i + 1), Rule: rule, Message: msg, Value: truncate(value, 100)})
		}
		for _, cc := range cols {
			if cc.idx < 0 {
				cc.nMissing++
				continue
			}
			if t.IsMissing(i, cc.idx) {
				cc.nMissing++
				if cc.required != nil {
					bad(cc, cc.required, "required", "", fmt.Sprintf("required column %q has no value", cc.col.Name))
				}
				continue
			}
			raw := strings.TrimSpace(t.Rows[i][cc.idx])
			switch cc.col.Type {
			case pipeline.TypeFloat, pipeline.TypeInt:
				x, msg := parseNumeric(raw, cc.col.Type)
				if msg != "" {
					bad(cc, cc.typ, "type", raw, msg)
					continue
				}
				if cc.col.Min != nil && x < *cc.col.Min {
					bad(cc, cc.rng, "range", raw, fmt.Sprintf("value %s is below min %g", raw, *cc.col.Min))
				} else if cc.col.Max != nil && x > *cc.col.Max {
					bad(cc, cc.rng, "range", raw, fmt.Sprintf("value %s is above max %g", raw, *cc.col.Max))
				}
			case pipeline.TypeBool:
				if _, ok := parseBool(raw); !ok {
					bad(cc, cc.typ, "type", raw, fmt.Sprintf("value %q is not a bool (want true or false)", raw))
				}
			case pipeline.TypeCategory:
				if cc.category != nil && !inCategories(raw, cc.col.Categories) {
					bad(cc, cc.category, "category", raw, fmt.Sprintf("value %q is not one of the categories %s", raw, strings.Join(cc.col.Categories, ", ")))
				}
			}
		}
		// Rules see only rows whose cells are valid: on a row with a bad cell
		// they would only repeat its problem.
		if len(reasons) == 0 && c.rules != nil && c.rules.Len() > 0 {
			clear(row)
			for j, name := range t.Columns {
				if v, ok := rowValue(t, i, j, types[j]); ok {
					row[name] = v
				}
			}
			for _, v := range c.rules.Check(row) {
				msg := fmt.Sprintf("rule %q does not hold", v.Source)
				if v.Message != "false" {
					msg = fmt.Sprintf("rule %q cannot be evaluated: %s", v.Source, v.Message)
				}
				ruleChecks[v.Rule].fail(msg)
				reasons = append(reasons, &gyrev1.RejectReason{Row: int64(i + 1), Rule: "rule:" + v.Source, Message: msg})
			}
		}
		if len(reasons) > 0 {
			r.RowsWithErrors++
			r.ReasonsTotal += len(reasons)
			// Within the tolerance, the row is quarantined and the batch
			// goes on without it; past it, the batch is rejected whole.
			if r.RowsWithErrors <= c.dataset.MaxRowErrors {
				r.Quarantine = append(r.Quarantine, QuarantinedRow{Row: i + 1, Reasons: reasons})
			} else {
				r.Quarantine = nil
			}
			// Keep no more than a report can carry.
			if kept < MaxReasons {
				rowReasons[i] = reasons
				kept += len(reasons)
			}
		}
	}

	for _, cc := range cols {
		limit := c.dataset.MaxMissingShare
		if cc.col.MaxMissingShare != nil {
			limit = *cc.col.MaxMissingShare
		}
		if r.Rows == 0 || (cc.idx < 0 && cc.required != nil) {
			// An absent required column is reported as such already.
			continue
		}
		share := float64(cc.nMissing) / float64(r.Rows)
		if share > limit {
			msg := fmt.Sprintf("%.1f%% of the values of %q are missing (%d of %d rows), more than maxMissingShare %g",
				100*share, cc.col.Name, cc.nMissing, r.Rows, limit)
			cc.missing.fail(msg)
			cc.missing.pb.FailedRows = int64(cc.nMissing)
			addBatch(cc.col.Name, "missing", msg)
		}
	}

	if r.Rows > 0 && len(r.Quarantine) == r.Rows {
		// Quarantining every row would pass on an empty batch, which no
		// reader takes: it is rejected like one with too many bad rows.
		addBatch("", "rows", fmt.Sprintf("every one of the %d rows has a problem (maxRowErrors %d): no row is left to pass on",
			r.Rows, c.dataset.MaxRowErrors))
	}
	for _, name := range t.Columns {
		if c.declared(name) {
			continue
		}
		r.Undeclared = append(r.Undeclared, name)
		r.Anomalies = append(r.Anomalies, &gyrev1.Anomaly{Column: name, Kind: AnomalyNewColumn, Reason: fmt.Sprintf(
			"column %q is not declared (not in the schema, not the label, not a feature): it is dropped from the batch passed on "+
				"and not used until the spec declares it in spec.dataset.schema or spec.features", name)})
	}

	r.ReasonsTotal += len(batchReasons)
	r.Reasons = append(r.Reasons, batchReasons...)
	for i := 0; i < r.Rows && len(r.Reasons) < MaxReasons; i++ {
		for _, reason := range rowReasons[i] {
			if len(r.Reasons) == MaxReasons {
				break
			}
			r.Reasons = append(r.Reasons, reason)
		}
	}
	for _, ch := range checks {
		ch.pb.Passed = ch.pb.FailedRows == 0
		if ch.pb.Passed {
			ch.pb.Message = "ok"
		} else {
			ch.pb.Message = fmt.Sprintf("%d rows failed; first: %s", ch.pb.FailedRows, ch.detail)
			if ch.pb.Kind == KindSchema || (ch.pb.Kind == KindRequired && ch.detail == "column absent") {
				ch.pb.Message = ch.detail
			}
		}
		r.Checks = append(r.Checks, ch.pb)
	}
	// Statistics and the label's presence describe the rows passed on: a
	// quarantined row must not move them.
	var dropped []bool
	if len(r.Quarantine) > 0 {
		dropped = make([]bool, r.Rows)
		for _, q := range r.Quarantine {
			dropped[q.Row-1] = true
		}
	}
	r.Columns = stats(t, types, dropped)
	if li := t.Index(c.dataset.Label); li >= 0 {
		for i := range t.Rows {
			if dropped != nil && dropped[i] {
				continue
			}
			if !t.IsMissing(i, li) && strings.TrimSpace(t.Rows[i][li]) != "" {
				r.Labelled = true
				break
			}
		}
	}
	return r
}

// columnTypes returns the type of every column of t: the schema's, or, for a
// column the schema does not declare, the one its values suggest.
func (c *Checker) columnTypes(t *table.Table) []string {
	out := make([]string, len(t.Columns))
	for j, name := range t.Columns {
		if k := slices.IndexFunc(c.schema, func(col pipeline.Column) bool { return col.Name == name }); k >= 0 {
			out[j] = c.schema[k].Type
			continue
		}
		out[j] = inferType(t, j, false)
	}
	return out
}

// rowValue is a cell as a CEL rule sees it: numbers as float64, bools as
// bool, the rest as strings; missing or unreadable cells are absent.
func rowValue(t *table.Table, i, j int, typ string) (any, bool) {
	if t.IsMissing(i, j) {
		return nil, false
	}
	raw := strings.TrimSpace(t.Rows[i][j])
	switch typ {
	case pipeline.TypeFloat, pipeline.TypeInt:
		x, msg := parseNumeric(raw, pipeline.TypeFloat)
		return x, msg == ""
	case pipeline.TypeBool:
		return parseBool(raw)
	}
	return t.Rows[i][j], true
}

// parseNumeric parses a numeric cell; msg says what is wrong with it.
func parseNumeric(raw, typ string) (x float64, msg string) {
	x, err := strconv.ParseFloat(raw, 64)
	switch {
	case err != nil && typ == pipeline.TypeInt:
		return 0, fmt.Sprintf("value %q is not an int", raw)
	case err != nil:
		return 0, fmt.Sprintf("value %q is not a float", raw)
	case math.IsNaN(x) || math.IsInf(x, 0):
		return 0, fmt.Sprintf("value %q is not a finite number (NaN and Inf are invalid in numeric columns)", raw)
	case typ == pipeline.TypeInt && x != math.Trunc(x):
		return 0, fmt.Sprintf("value %q is not an int", raw)
	}
	return x, ""
}

func parseBool(raw string) (bool, bool) {
	switch strings.ToLower(raw) {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// inCategories reports whether v is one of cats; numbers match numerically,
// so "1.0" is the category "1".
func inCategories(v string, cats []string) bool {
	if slices.Contains(cats, v) {
		return true
	}
	x, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return false
	}
	for _, c := range cats {
		if y, err := strconv.ParseFloat(c, 64); err == nil && x == y {
			return true
		}
	}
	return false
}

// stats summarises every column of t in file order, over the rows not
// dropped (every row when dropped is nil): numeric columns with
// drift.Numeric (values that do not parse count as missing), the others
// with their top categories.
func stats(t *table.Table, types []string, dropped []bool) []*gyrev1.ColumnStats {
	out := make([]*gyrev1.ColumnStats, len(t.Columns))
	skip := func(i int) bool { return dropped != nil && dropped[i] }
	for j, name := range t.Columns {
		switch types[j] {
		case pipeline.TypeFloat, pipeline.TypeInt:
			a := drift.NewNumeric()
			for i := range t.Rows {
				if skip(i) {
					continue
				}
				if t.IsMissing(i, j) {
					a.AddMissing()
					continue
				}
				v, msg := parseNumeric(strings.TrimSpace(t.Rows[i][j]), pipeline.TypeFloat)
				if msg != "" {
					a.AddMissing()
					continue
				}
				a.Add(v)
			}
			out[j] = a.Stats().ToProto(name, types[j])
		default:
			a := drift.NewCategorical()
			for i := range t.Rows {
				if skip(i) {
					continue
				}
				if t.IsMissing(i, j) {
					a.AddMissing()
					continue
				}
				v := strings.TrimSpace(t.Rows[i][j])
				if types[j] == pipeline.TypeBool {
					if b, ok := parseBool(v); ok {
						v = strconv.FormatBool(b)
					}
				}
				a.Add(v)
			}
			out[j] = a.Stats().ToProto(name, types[j])
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
