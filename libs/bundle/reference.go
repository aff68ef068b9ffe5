package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/libs/drift"
	"github.com/gyrehq/gyre/libs/features"
	"github.com/gyrehq/gyre/libs/ml"
	"github.com/gyrehq/gyre/libs/table"
)

// ReferenceFormat is the format tag of a training window's reference
// statistics.
const ReferenceFormat = "gyre.reference/v1"

// ReferenceMediaType is the media type of a stored reference.
const ReferenceMediaType = "application/json"

// Key returns the gyre-models key of a training request's bundle:
// <pipeline>/<requestId>.bundle.
func Key(pipeline, requestID string) string { return pipeline + "/" + requestID + ".bundle" }

// ReferenceKey returns the gyre-models key of a training request's
// reference statistics: <pipeline>/<requestId>.reference.json.
func ReferenceKey(pipeline, requestID string) string {
	return pipeline + "/" + requestID + ".reference.json"
}

// Reference is what the monitor measures drift against once the model is
// champion: per source column of the feature set, the statistics of the
// training window's raw values (before any transform), as drift.Reference.
//
//	{"format":"gyre.reference/v1","pipeline":"elec2","requestId":"…",
//	 "featureSetVersion":"…","batchIds":["b1","b2"],"rows":1000,
//	 "features":{"nswprice":{"kind":"numeric","rows":1000,"mean":…,"edges":[…],"counts":[…],"sample":[…]},
//	             "day":{"kind":"categorical","rows":1000,"categories":["1","2"],"counts":[…]}},
//	 "label":"class","labelReference":{"kind":"categorical",…}}
//
// Numeric columns of the feature set get a numeric reference, text columns
// (categorical or onehot) a categorical one. A column with no value in the
// window has no entry.
type Reference struct {
	Format            string                     `json:"format"`
	Pipeline          string                     `json:"pipeline"`
	RequestID         string                     `json:"requestId"`
	FeatureSetVersion string                     `json:"featureSetVersion"`
	BatchIDs          []string                   `json:"batchIds,omitempty"`
	Rows              int64                      `json:"rows"`
	Features          map[string]drift.Reference `json:"features"`
	// Label is the label column and LabelReference its distribution
	// (categorical for a classifier, numeric for a regressor), for label
	// drift; nil when the window has no label value.
	Label          string           `json:"label,omitempty"`
	LabelReference *drift.Reference `json:"labelReference,omitempty"`
}

// NewReference builds the reference statistics of a training window: the
// raw values of each source column of set, over every batch of window.
func NewReference(pipeline, requestID string, batchIDs []string, set *features.Set, window ...*table.Table) (*Reference, error) {
	ref := &Reference{
		Format: ReferenceFormat, Pipeline: pipeline, RequestID: requestID,
		FeatureSetVersion: set.Version, BatchIDs: batchIDs, Label: set.Label,
		Features: make(map[string]drift.Reference, len(set.Columns)),
	}
	for _, t := range window {
		ref.Rows += int64(t.Len())
	}
	for _, c := range set.Columns {
		r, err := columnReference(c.Name, c.Numeric, window)
		if errors.Is(err, drift.ErrNoValues) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reference of column %q: %w", c.Name, err)
		}
		ref.Features[c.Name] = r
	}
	r, err := columnReference(set.Label, set.Task == ml.Regression, window)
	switch {
	case errors.Is(err, drift.ErrNoValues):
	case err != nil:
		return nil, fmt.Errorf("reference of label %q: %w", set.Label, err)
	default:
		ref.LabelReference = &r
	}
	return ref, nil
}

// columnReference summarises one raw column over the window.
func columnReference(name string, numeric bool, window []*table.Table) (drift.Reference, error) {
	if numeric {
		acc := drift.NewNumeric()
		for _, t := range window {
			j := t.Index(name)
			for i, row := range t.Rows {
				if j < 0 || t.IsMissing(i, j) {
					acc.AddMissing()
					continue
				}
				x, err := strconv.ParseFloat(strings.TrimSpace(row[j]), 64)
				if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
					acc.AddMissing()
					continue
				}
				acc.Add(x)
			}
		}
		return acc.Reference()
	}
	acc := drift.NewCategorical()
	for _, t := range window {
		j := t.Index(name)
		for i, row := range t.Rows {
			v := ""
			if j >= 0 && !t.IsMissing(i, j) {
				v = strings.TrimSpace(row[j])
			}
			if v == "" {
				acc.AddMissing()
				continue
			}
			acc.Add(v)
		}
	}
	return acc.Reference()
}

// MarshalReference encodes a reference as JSON.
func MarshalReference(r *Reference) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("reference: encode: %w", err)
	}
	return append(b, '\n'), nil
}

// UnmarshalReference decodes a stored reference and checks every column's
// statistics (drift.Reference.Validate); errors are a permanent *Error.
func UnmarshalReference(data []byte) (*Reference, error) {
	var r Reference
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, bundleErr(err, "not a JSON reference document")
	}
	if r.Format != ReferenceFormat {
		return nil, bundleErr(nil, "reference format %q, want %q", r.Format, ReferenceFormat)
	}
	for name, f := range r.Features {
		if err := f.Validate(); err != nil {
			return nil, bundleErr(err, "reference of column %q", name)
		}
	}
	if r.LabelReference != nil {
		if err := r.LabelReference.Validate(); err != nil {
			return nil, bundleErr(err, "reference of label %q", r.Label)
		}
	}
	return &r, nil
}
