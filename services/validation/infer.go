package validation

import (
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/table"
)

// maxLabelClasses is the most distinct values a numeric label column may
// have and still be inferred as a category (classes) rather than a number
// to regress on; libs/features draws the same line.
const maxLabelClasses = 20

// InferSchema returns the schema a batch suggests, for a pipeline that
// declares none: a column whose every value is an integer is int, one whose
// every value is a number is float, one of true/false only is bool, any
// other is category. The label column, when numeric with at most
// maxLabelClasses distinct values, is category: its values are classes.
//
// Inferred columns are not required and have no ranges or category lists:
// the first batch shows what the data looks like, not what it must be. The
// missing-share check still holds every column to the dataset's limit.
func InferSchema(t *table.Table, label string) []pipeline.Column {
	out := make([]pipeline.Column, len(t.Columns))
	for j, name := range t.Columns {
		out[j] = pipeline.Column{Name: name, Type: inferType(t, j, name == label)}
	}
	return out
}

// inferType is the type of column j of t; isLabel applies the label rule.
func inferType(t *table.Table, j int, isLabel bool) string {
	ints, nums, bools, n := true, true, true, 0
	distinct := map[string]bool{}
	for i := range t.Rows {
		if t.IsMissing(i, j) {
			continue
		}
		v := strings.TrimSpace(t.Rows[i][j])
		if v == "" {
			continue
		}
		n++
		if len(distinct) <= maxLabelClasses {
			distinct[v] = true
		}
		if ints {
			if _, err := strconv.ParseInt(v, 10, 64); err != nil {
				ints = false
			}
		}
		if nums {
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				nums = false
			}
		}
		if bools {
			if lv := strings.ToLower(v); lv != "true" && lv != "false" {
				bools = false
			}
		}
	}
	switch {
	case n == 0:
		// Nothing to go by: text accepts whatever comes.
		return pipeline.TypeString
	case nums && isLabel && len(distinct) <= maxLabelClasses:
		return pipeline.TypeCategory
	case ints:
		return pipeline.TypeInt
	case nums:
		return pipeline.TypeFloat
	case bools:
		return pipeline.TypeBool
	}
	return pipeline.TypeCategory
}
