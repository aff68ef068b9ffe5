package validation

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/pipeline"
)

// What each anomaly does to the batch follows TFDV where TFDV decides,
// and the quarantine where a row is at fault:
//
//   - new_column: dropped from the batch passed on; the batch goes on.
//   - dropped_column: a required column rejects the batch; another counts
//     as missing, and maxMissingShare decides (TFDV flags a dropped column
//     only when its presence is required, too).
//   - type_change: rejects the batch. Its bad cells are bad rows already;
//     when they are most of the column, the column changed, and the rows
//     whose values still parse are not a sample of anything.
//   - out_of_domain: a value outside a declared or frozen domain makes
//     its row a bad row (quarantined within maxRowErrors, else the batch
//     is rejected): the value is at fault, not the batch. Outside learned
//     categories it is a warning: what a few batches happened to show is
//     not a closed set until someone says so (gyre schema freeze), and
//     quarantining a new category for ever would keep it from every model.
//     Learned min/max are not checked until frozen: a new sample lands
//     outside an old sample's range more often than not (two batches of
//     200 values from one distribution: 75% of the time); TFDV's
//     infer_schema infers no numeric ranges at all.
//   - low_presence, category_shift: warnings. They describe the batch as a
//     whole, no row is wrong, and maxMissingShare and drift monitoring are
//     what act on missing values and shifted distributions.

// anomalies returns the anomalies of one column of the schema; changed is
// its type change, if any, and passed whether the batch is validated.
func (c *Checker) anomalies(cc *cellCheck, changed string, passed bool) []*gyrev1.Anomaly {
	var out []*gyrev1.Anomaly
	name := cc.col.Name
	add := func(kind, reason string) {
		out = append(out, &gyrev1.Anomaly{Column: name, Kind: kind, Reason: reason})
	}
	if cc.idx < 0 {
		add(AnomalyDroppedColumn, c.droppedReason(cc))
		return out
	}
	if changed != "" {
		add(AnomalyTypeChange, changed+"; the batch is rejected")
	}
	if c.state == StateLearning {
		return out
	}
	source := c.source()
	consequence := func(n int) string {
		switch {
		case c.state == StateLearned:
			return "a warning: learned categories hold rows back only once the schema is frozen (gyre schema freeze)"
		case passed && n == 1:
			return "the row holding it is quarantined"
		case passed:
			return "the rows holding them are quarantined"
		case n == 1:
			return "the row holding it is a bad row, and the batch is rejected"
		}
		return "the rows holding them are bad rows, and the batch is rejected"
	}
	if n := cc.below + cc.above; n > 0 {
		col := cc.col
		var domain string
		switch {
		case col.Min != nil && col.Max != nil:
			domain = fmt.Sprintf("outside the %s range [%g, %g]", source, *col.Min, *col.Max)
		case col.Min != nil:
			domain = fmt.Sprintf("below the %s min %g", source, *col.Min)
		default:
			domain = fmt.Sprintf("above the %s max %g", source, *col.Max)
		}
		var seen []string
		if cc.below > 0 {
			seen = append(seen, "lowest "+cc.lowest)
		}
		if cc.above > 0 {
			seen = append(seen, "highest "+cc.highest)
		}
		add(AnomalyOutOfDomain, fmt.Sprintf("%s of %q %s %s (%s); %s", values(n), name, isAre(n), domain, strings.Join(seen, ", "), consequence(n)))
	}
	if n := cc.unseenTotal; n > 0 {
		cats := cc.col.Categories
		domain := fmt.Sprintf("the %d %s categories", len(cats), source)
		if len(cats) <= 10 {
			domain = fmt.Sprintf("the %s categories %s", source, strings.Join(cats, ", "))
		}
		add(AnomalyOutOfDomain, fmt.Sprintf("%s of %q %s not among %s: %s; %s", values(n), name, isAre(n), domain, listUnseen(cc.unseen, n), consequence(n)))
	}
	if mp := cc.col.MinPresence; mp != nil && cc.obs.rows > 0 {
		if share := float64(cc.obs.present) / float64(cc.obs.rows); share < *mp {
			add(AnomalyLowPresence, fmt.Sprintf("column %q has a value in %s of the rows (%d of %d), below its %s minPresence %s; a warning, the batch goes on",
				name, percent(share), cc.obs.present, cc.obs.rows, source, percent(*mp)))
		}
	}
	if d := c.reference[name]; d != nil && !d.Overflow && d.Total > 0 && cc.obs.countTotal > 0 &&
		(cc.col.Type == pipeline.TypeCategory || cc.col.Type == pipeline.TypeBool) {
		dist, value, here, there := lInfinity(&cc.obs, d)
		if limit := c.dataset.ShareShiftLimit(cc.col); dist > limit {
			add(AnomalyCategoryShift, fmt.Sprintf("the shares of the values of %q moved by %s from the reference learned from %s "+
				"(L-infinity distance, above maxShareShift %g): %q is %s of this batch, %s of the reference; a warning, the batch goes on",
				name, strconv.FormatFloat(dist, 'g', 4, 64), plural(c.refBatches, "batch", "batches"), limit, value, percent(here), percent(there)))
		}
	}
	return out
}

// droppedReason says what a column of the schema missing from the batch
// does to it.
func (c *Checker) droppedReason(cc *cellCheck) string {
	limit := c.dataset.MaxMissingShare
	if cc.col.MaxMissingShare != nil {
		limit = *cc.col.MaxMissingShare
	}
	what := fmt.Sprintf("column %q of the schema is not in the batch", cc.col.Name)
	switch {
	case cc.col.Required:
		return what + "; it is required, so the batch is rejected"
	case cc.obs.rows > 0 && limit < 1:
		return fmt.Sprintf("%s; all its values count as missing, more than maxMissingShare %g allows, so the batch is rejected", what, limit)
	}
	return fmt.Sprintf("%s; all its values count as missing, which maxMissingShare %g allows: the batch goes on", what, limit)
}

// source names where the domains of the schema come from, in reasons.
func (c *Checker) source() string {
	switch c.state {
	case StateFrozen:
		return "frozen"
	case StateLearned, StateLearning:
		return "learned"
	}
	return "declared"
}

// lInfinity returns the L-infinity distance between the value shares of a
// batch and of the reference — the largest difference of one value's
// share, TFDV's infinity_norm — the value that differs most (the first in
// string order of those that do) and its shares in each.
func lInfinity(o *observation, ref *Distribution) (dist float64, value string, here, there float64) {
	keys := slices.Sorted(maps.Keys(o.counts))
	for v := range ref.Counts {
		if _, ok := o.counts[v]; !ok {
			keys = append(keys, v)
		}
	}
	slices.Sort(keys)
	for _, v := range keys {
		b := float64(o.counts[v]) / float64(o.countTotal)
		r := ref.Share(v)
		if d := max(b-r, r-b); d > dist {
			dist, value, here, there = d, v, b, r
		}
	}
	return dist, value, here, there
}

// listUnseen lists the values not among the categories, the most frequent
// first (then in string order), five at most, each cut at 50 bytes:
// `"7" (2), "9" (1)`.
func listUnseen(unseen map[string]int, total int) string {
	vals := slices.Collect(maps.Keys(unseen))
	slices.SortFunc(vals, func(a, b string) int {
		return cmp.Or(cmp.Compare(unseen[b], unseen[a]), strings.Compare(a, b))
	})
	var parts []string
	listed := 0
	for _, v := range vals[:min(len(vals), 5)] {
		parts = append(parts, fmt.Sprintf("%q (%d)", truncate(v, 50), unseen[v]))
		listed += unseen[v]
	}
	s := strings.Join(parts, ", ")
	if rest := total - listed; rest > 0 {
		s += fmt.Sprintf(" and %s more", values(rest))
	}
	return s
}

func values(n int) string { return plural(n, "value", "values") }

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// percent writes a share as a percentage with 4 significant digits:
// 0.625 is 62.5%, 1 is 100%.
func percent(x float64) string {
	return strconv.FormatFloat(100*x, 'g', 4, 64) + "%"
}
