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
	// Anomalies are the batch's differences from its schema, per column:
	// for each column of the schema in order dropped_column, type_change,
	// out_of_domain, low_presence, category_shift; then new_column in
	// file order.
	Anomalies []*gyrev1.Anomaly
	// observed is what the batch showed of each column of the schema,
	// for learning.
	observed map[string]*observation
}

// observation is what a batch showed of one column of the schema.
type observation struct {
	// rows is the number of rows of the batch, present how many have a
	// value in the column.
	rows, present int
	// numN, min and max: the numeric values of the rows passed on.
	numN     int
	min, max float64
	// counts of the values of a category or bool column in the rows
	// passed on (bool as true/false), countTotal every one of them;
	// overflow once more than maxCounted distinct values were seen (the
	// others are in countTotal only).
	counts     map[string]int64
	countTotal int64
	overflow   bool
}

// maxCounted is the most distinct values counted per column.
const maxCounted = 10000

func (o *observation) count(v string) {
	o.countTotal++
	if _, ok := o.counts[v]; !ok && len(o.counts) >= maxCounted {
		o.overflow = true
		return
	}
	o.counts[v]++
}

// QuarantinedRow is one row kept out of a validated batch, with every
// problem found in it.
type QuarantinedRow struct {
	// Row is the 1-based data row of the batch as received.
	Row     int
	Reasons []*gyrev1.RejectReason
}

// Anomaly kinds (gyre.v1.Anomaly.kind), TFDV's anomalies per column. What
// each does to the batch (docs/validation.md):
const (
	// AnomalyNewColumn: a column nothing declares (TFDV's
	// SCHEMA_NEW_COLUMN). It is dropped from the batch passed on.
	AnomalyNewColumn = "new_column"
	// AnomalyDroppedColumn: a column of the schema is not in the batch
	// (SCHEMA_MISSING_COLUMN). A required one rejects the batch; another
	// counts as missing, which maxMissingShare judges.
	AnomalyDroppedColumn = "dropped_column"
	// AnomalyTypeChange: most of a column's values are not of its type
	// (INT_TYPE_NOT_INT_STRING, FLOAT_TYPE_STRING_NOT_FLOAT). It rejects
	// the batch.
	AnomalyTypeChange = "type_change"
	// AnomalyOutOfDomain: values below min, above max or not among the
	// categories (INT/FLOAT_TYPE_SMALL/BIG_*, ENUM_TYPE_UNEXPECTED_STRING_VALUES).
	// With a declared or frozen domain their rows are bad rows
	// (quarantined); outside learned categories a warning.
	AnomalyOutOfDomain = "out_of_domain"
	// AnomalyLowPresence: fewer rows have a value than the schema's
	// minPresence (FEATURE_TYPE_LOW_FRACTION_PRESENT). A warning.
	AnomalyLowPresence = "low_presence"
	// AnomalyCategoryShift: the L-infinity distance between a category
	// column's value shares in the batch and in the reference is above
	// maxShareShift (COMPARATOR_L_INFTY_HIGH of a drift or skew
	// comparator's infinity_norm). A warning.
	AnomalyCategoryShift = "category_shift"
)

// RuleTypeChange is the rule of the RejectReason of a type change.
const RuleTypeChange = "type_change"

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
	// state is where the schema comes from (StateDeclared, StateFrozen,
	// StateLearned, StateLearning): what is done with its domains.
	state string
	// reference and refBatches: the reference shares of category and bool
	// columns, learned from refBatches batches.
	reference  map[string]*Distribution
	refBatches int
}

// NewChecker returns a checker of the dataset's label, missing shares and
// rules against schema, a declared one (see WithState).
func NewChecker(schema []pipeline.Column, dataset pipeline.Dataset, rules *pipeline.RuleSet) *Checker {
	return &Checker{schema: schema, dataset: dataset, rules: rules, state: StateDeclared}
}

// WithState says where the schema comes from. StateDeclared (the
// default) and StateFrozen enforce its domains: values outside them are
// bad rows. StateLearned enforces types, reports values outside the
// learned categories as an anomaly, and leaves the learned min/max
// unchecked. StateLearning checks types only.
func (c *Checker) WithState(state string) *Checker {
	c.state = state
	return c
}

// WithReference sets the reference shares that category_shift compares a
// batch's category and bool columns with, learned from batches batches.
func (c *Checker) WithReference(ref map[string]*Distribution, batches int) *Checker {
	c.reference, c.refBatches = ref, batches
	return c
}

// enforced reports whether the schema's domains hold rows back.
func (c *Checker) enforced() bool {
	return c.state == StateDeclared || c.state == StateFrozen || c.state == ""
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

	// numDomain and catDomain: values outside min/max, or the
	// categories, are counted (enforced or reported).
	numDomain, catDomain bool
	// typeBad counts the values not of the column's type (NaN and Inf,
	// which are floats, not counted).
	typeBad int
	// below and above count the values outside min/max; lowest and
	// highest are the extreme ones, as written.
	below, above    int
	lowest, highest string
	lowX, highX     float64
	// unseen counts the values not among the categories.
	unseen      map[string]int
	unseenTotal int
	obs         observation
	// The current row's value, for obs once the row is known to pass.
	rowNum, rowKey bool
	rowX           float64
	rowV           string
}

func (cc *cellCheck) outside(raw string, x float64, below bool) {
	if below {
		if cc.below == 0 || x < cc.lowX {
			cc.lowX, cc.lowest = x, raw
		}
		cc.below++
		return
	}
	if cc.above == 0 || x > cc.highX {
		cc.highX, cc.highest = x, raw
	}
	cc.above++
}

func (cc *cellCheck) notAmong(raw string) {
	cc.unseenTotal++
	if _, ok := cc.unseen[raw]; ok || len(cc.unseen) < maxCounted {
		cc.unseen[raw]++
	}
}

// observe records the current row's value: the row passes.
func (cc *cellCheck) observe() {
	switch {
	case cc.rowNum:
		if cc.obs.numN == 0 || cc.rowX < cc.obs.min {
			cc.obs.min = cc.rowX
		}
		if cc.obs.numN == 0 || cc.rowX > cc.obs.max {
			cc.obs.max = cc.rowX
		}
		cc.obs.numN++
	case cc.rowKey:
		cc.obs.count(cc.rowV)
	}
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

	enforced := c.enforced()
	cols := make([]*cellCheck, 0, len(c.schema))
	for _, col := range c.schema {
		cc := &cellCheck{col: col, idx: t.Index(col.Name)}
		cc.obs.counts = map[string]int64{}
		if col.Required {
			cc.required = newCheck("required:"+col.Name, KindRequired, col.Name)
			if cc.idx < 0 {
				cc.required.fail("column absent")
				addBatch(col.Name, "required", fmt.Sprintf("required column %q is not in the batch (columns: %s)", col.Name, strings.Join(t.Columns, ", ")))
			}
		}
		numeric := col.Type == pipeline.TypeFloat || col.Type == pipeline.TypeInt
		switch {
		case numeric || col.Type == pipeline.TypeBool:
			cc.typ = newCheck("type:"+col.Name, KindType, col.Name)
		case col.Type == pipeline.TypeCategory && len(col.Categories) > 0 && enforced:
			cc.category = newCheck("category:"+col.Name, KindCategory, col.Name)
		}
		if (col.Min != nil || col.Max != nil) && numeric && enforced {
			cc.rng = newCheck("range:"+col.Name, KindRange, col.Name)
			cc.numDomain = true
		}
		if col.Type == pipeline.TypeCategory && len(col.Categories) > 0 && (enforced || c.state == StateLearned) {
			cc.catDomain, cc.unseen = true, map[string]int{}
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
			cc.rowNum, cc.rowKey = false, false
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
					if !nonFinite(raw) {
						cc.typeBad++
					}
					bad(cc, cc.typ, "type", raw, msg)
					continue
				}
				cc.rowNum, cc.rowX = true, x
				if !cc.numDomain {
					continue
				}
				if cc.col.Min != nil && x < *cc.col.Min {
					cc.outside(raw, x, true)
					bad(cc, cc.rng, "range", raw, fmt.Sprintf("value %s is below min %g", raw, *cc.col.Min))
				} else if cc.col.Max != nil && x > *cc.col.Max {
					cc.outside(raw, x, false)
					bad(cc, cc.rng, "range", raw, fmt.Sprintf("value %s is above max %g", raw, *cc.col.Max))
				}
			case pipeline.TypeBool:
				b, ok := parseBool(raw)
				if !ok {
					cc.typeBad++
					bad(cc, cc.typ, "type", raw, fmt.Sprintf("value %q is not a bool (want true or false)", raw))
					continue
				}
				cc.rowKey, cc.rowV = true, strconv.FormatBool(b)
			case pipeline.TypeCategory:
				cc.rowKey, cc.rowV = true, raw
				if cc.catDomain && !inCategories(raw, cc.col.Categories) {
					cc.notAmong(raw)
					if cc.category != nil {
						bad(cc, cc.category, "category", raw, fmt.Sprintf("value %q is not one of the categories %s", raw, strings.Join(cc.col.Categories, ", ")))
					}
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
		if len(reasons) == 0 {
			for _, cc := range cols {
				cc.observe()
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

	// A type change rejects the batch: the column no longer holds what
	// its schema says, and passing on the few rows whose values still
	// parse would train on a remnant.
	changed := make([]string, len(cols))
	for k, cc := range cols {
		if present := r.Rows - cc.nMissing; cc.idx >= 0 && cc.typeBad > 0 && 2*cc.typeBad > present {
			changed[k] = fmt.Sprintf("column %q is %s in the schema but %s in this batch (%d of %d values are not %s)",
				cc.col.Name, cc.col.Type, inferType(t, cc.idx, false), cc.typeBad, present, cc.col.Type)
			addBatch(cc.col.Name, RuleTypeChange, changed[k])
		}
	}
	if r.Rows > 0 && len(r.Quarantine) == r.Rows {
		// Quarantining every row would pass on an empty batch, which no
		// reader takes: it is rejected like one with too many bad rows.
		addBatch("", "rows", fmt.Sprintf("every one of the %d rows has a problem (maxRowErrors %d): no row is left to pass on",
			r.Rows, c.dataset.MaxRowErrors))
	}
	passed := r.Passed(c.dataset.MaxRowErrors)
	r.observed = make(map[string]*observation, len(cols))
	for k, cc := range cols {
		cc.obs.rows, cc.obs.present = r.Rows, r.Rows-cc.nMissing
		r.observed[cc.col.Name] = &cc.obs
		r.Anomalies = append(r.Anomalies, c.anomalies(cc, changed[k], passed)...)
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

// nonFinite reports whether a numeric cell is NaN or Inf: a float, if not
// a valid one.
func nonFinite(raw string) bool {
	x, err := strconv.ParseFloat(raw, 64)
	return err == nil && (math.IsNaN(x) || math.IsInf(x, 0))
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
