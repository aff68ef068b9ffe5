package drift

import (
	"errors"
	"fmt"
	"strconv"
)

// Method auto picks the test of each feature the way Evidently's default
// data-drift algorithm does (evidently.calculations.stattests.registry,
// _get_default_stattest; docs: "Data drift algorithm", docs.evidentlyai.com
// /reference/data-drift-algorithm), from the feature's kind, the size of the
// reference and the number of distinct values of the reference and the batch
// together (n_unique):
//
//	reference rows   kind                          test            drifted when
//	<= 1000          numeric, n_unique > 5         ks              p-value < 0.05
//	<= 1000          numeric or categorical, 3..5  chisquare       p-value < 0.05
//	                 (categorical: any n_unique > 2)
//	<= 1000          n_unique <= 2 (binary)        z               p-value < 0.05
//	> 1000           numeric, n_unique > 5         wasserstein     distance > 0.1
//	> 1000           categorical, or n_unique <= 5 jensenshannon   distance > 0.1
//
// The p-value threshold is Policy.PValueThreshold and the distance threshold
// Policy.DistanceThreshold. A feature with a single value in the reference and
// the batch (n_unique = 1) has nothing to compare and is skipped as constant.
const (
	// AutoSmallRows is the largest reference that auto judges with a
	// statistical test (p-value); larger ones get a distance, since with
	// enough rows every test rejects shifts far too small to matter.
	AutoSmallRows = 1000
	// AutoMaxDiscrete is the largest number of distinct values for which
	// auto treats a numeric feature as discrete (chisquare, z or
	// jensenshannon on its values rather than ks or wasserstein).
	AutoMaxDiscrete = 5
	// DefaultPValueThreshold and DefaultDistanceThreshold are auto's
	// thresholds: Evidently's 0.95 confidence level and distance 0.1.
	DefaultPValueThreshold   = 0.05
	DefaultDistanceThreshold = 0.1
)

// ErrConstant: a feature with one and the same value in the reference and
// the batch, which auto skips: there is no distribution to compare.
var ErrConstant = errors.New("drift: constant")

// Select returns the test auto picks for one feature of a batch (see the
// table above) and whether its verdict reads the p-value. It errs with
// ErrConstant for a constant feature, ErrNoValues for a batch column without
// values, and ErrNotApplicable for a sample of the wrong kind.
func Select(ref Reference, cur Sample) (m Method, byPValue bool, err error) {
	if err := ref.Validate(); err != nil {
		return "", false, err
	}
	n, err := distinctUnion(ref, cur)
	if err != nil {
		return "", false, err
	}
	if n.count == 1 {
		return "", false, fmt.Errorf("%w: every value is %s in the reference and the batch", ErrConstant, n.only)
	}
	large := ref.Rows > AutoSmallRows
	discrete := ref.Kind == KindCategorical || n.count <= AutoMaxDiscrete
	switch {
	case large && discrete:
		return JensenShannon, false, nil
	case large:
		return Wasserstein, false, nil
	case !discrete:
		return KS, true, nil
	case n.count <= 2:
		return ZTest, true, nil
	default:
		return ChiSquare, true, nil
	}
}

// union is the number of distinct values of a reference and a batch
// together, counted up to AutoMaxDiscrete+1 (auto needs no more), and the
// value when there is one.
type union struct {
	count int
	only  string
}

// distinctUnion counts the distinct non-missing values of the reference and
// the batch together. It is exact for a categorical reference that kept
// every category and for a numeric reference that records its values (few
// distinct ones) or holds them all in its sample; a reference stored before
// values were recorded is counted from its bins.
func distinctUnion(ref Reference, cur Sample) (union, error) {
	const enough = AutoMaxDiscrete + 1
	if ref.Kind == KindCategorical {
		if len(cur.Values) > 0 {
			return union{}, fmt.Errorf("%w: numbers for a categorical feature", ErrNotApplicable)
		}
		seen := make(map[string]struct{}, enough)
		for _, c := range ref.Categories {
			seen[c] = struct{}{}
		}
		rows := 0
		for _, c := range cur.Categories {
			if c == "" {
				continue
			}
			rows++
			if len(seen) < enough {
				seen[c] = struct{}{}
			}
		}
		if rows == 0 {
			return union{}, fmt.Errorf("%w: the batch has %d missing values and no other", ErrNoValues, len(cur.Categories))
		}
		if ref.Other > 0 || ref.Distinct > int64(len(ref.Categories)) {
			return union{count: enough}, nil // more than the reference's cap of categories
		}
		u := union{count: min(len(seen), enough)}
		if u.count == 1 {
			u.only = strconv.Quote(ref.Categories[0])
		}
		return u, nil
	}
	if len(cur.Categories) > 0 {
		return union{}, fmt.Errorf("%w: categories for a numeric feature", ErrNotApplicable)
	}
	rows := 0
	for _, x := range cur.Values {
		if finite(x) {
			rows++
		}
	}
	if rows == 0 {
		return union{}, fmt.Errorf("%w: the batch has %d missing values and no other", ErrNoValues, len(cur.Values))
	}
	seen := make(map[float64]struct{}, enough)
	levels, ok := refLevels(ref)
	if ok {
		for _, x := range levels {
			seen[x] = struct{}{}
		}
		for _, x := range cur.Values {
			if len(seen) >= enough {
				break
			}
			if finite(x) {
				seen[x] = struct{}{}
			}
		}
		u := union{count: min(len(seen), enough)}
		if u.count == 1 {
			u.only = strconv.FormatFloat(levels[0], 'g', -1, 64)
		}
		return u, nil
	}
	// The reference does not know its values: many of them, or a
	// reference stored before they were recorded, whose bins (one per
	// value when there are few) give the count; the batch's values outside
	// its range count as new ones.
	n := int(ref.Distinct)
	if n == 0 {
		n = len(ref.Counts)
		if n >= DefaultBins {
			n = enough // decile bins: many values
		}
	}
	for _, x := range cur.Values {
		if n+len(seen) >= enough {
			break
		}
		if finite(x) && (x < ref.Min || x > ref.Max) {
			seen[x] = struct{}{}
		}
	}
	return union{count: min(n+len(seen), enough)}, nil
}

// refLevels returns the distinct values of a numeric reference, at most
// AutoMaxDiscrete+1 of them (more is "many"), when it knows them: recorded
// in Values, a constant, or an exact sample.
func refLevels(ref Reference) ([]float64, bool) {
	const enough = AutoMaxDiscrete + 1
	switch {
	case len(ref.Values) > 0:
		return ref.Values[:min(len(ref.Values), enough)], true
	case ref.Min == ref.Max:
		return []float64{ref.Min}, true
	case ref.Exact():
		var vs []float64
		for i, x := range ref.Sample {
			if i == 0 || x != ref.Sample[i-1] {
				if vs = append(vs, x); len(vs) == enough {
					break
				}
			}
		}
		return vs, true
	}
	return nil, false
}
