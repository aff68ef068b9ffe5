// Package drift summarises feature columns and decides whether a batch of data
// has drifted away from a reference (the champion model's training window).
//
// It has three layers:
//
//   - Column statistics. [Numeric] and [Categorical] accumulate values
//     streamingly and merge, so a reference can be built from the several
//     batches of a training window; [NumericStats] and [CategoricalStats] are
//     their summaries, convertible to the gyre.v1.ColumnStats payload of
//     data.batch.validated.
//   - Drift measures. A [Reference] is the compact, JSON-serialisable picture
//     of one feature that the monitor keeps in a KV bucket; [Measure] scores a
//     current batch against it with one [Method], or with the test that
//     [Auto] picks for the feature ([Select]).
//   - Dataset policy. [Evaluate] applies a [Policy] (the pipeline spec's
//     `drift` section) to every feature of a batch and returns a [Report],
//     convertible to the drift.measured and drift.detected payloads.
//
// # Missing values
//
// NaN and ±Inf are missing values for numeric columns, and the empty string
// for categorical ones: they are counted in Missing and take part in no
// statistic. Infinities are treated as missing rather than as data because a
// single one would make the mean, the standard deviation and every distance
// infinite, and infinite numbers cannot be stored as JSON.
//
// # Methods, scores and thresholds
//
// Every method reports a score where higher means more drift. A feature
// drifts when its score is above the policy threshold, except for chisquare
// and z, whose verdict is their p-value being below the threshold. A
// threshold of 0 means the method's default:
//
//	method         score                                   drifted when        default
//	psi            population stability index, ref bins    score > threshold   0.2
//	ks             two-sample Kolmogorov–Smirnov D, [0,1]   score > threshold   0.1
//	wasserstein    Wasserstein-1 distance / reference std  score > threshold   0.1
//	jensenshannon  Jensen–Shannon distance, base 2, [0,1]  score > threshold   0.1
//	chisquare      chi-square statistic of homogeneity     p-value < threshold 0.05
//	z              |z| of the two-proportion Z-test        p-value < threshold 0.05
//	auto           the test Select picks per feature       per test            0.05 / 0.1
//
// # Method auto
//
// auto picks the test of each feature as Evidently's default data-drift
// algorithm does (see [Select] for the table and its source): by the
// feature's kind, the size of the reference (up to [AutoSmallRows], 1,000
// rows: a test with a p-value; beyond: a distance) and the number of distinct
// values in the reference and the batch together (up to [AutoMaxDiscrete],
// 5: a discrete feature). The tests with a p-value (ks, chisquare, z) are
// judged on it, drifted when it is below Policy.PValueThreshold (default
// 0.05); the distances (wasserstein, jensenshannon) drifted when above
// Policy.DistanceThreshold (default 0.1). Where Gyre's tests differ from
// Evidently's: chisquare is the test of homogeneity of the 2×k table
// (SciPy's chi2_contingency) rather than a goodness of fit to the
// reference's shares, since the reference is a sample too; jensenshannon
// compares the shares as they are (no 1e-4 floor on empty bins) on the
// reference's bins; wasserstein is divided by the reference's sample
// standard deviation; and distances drift above the threshold, not at it.
//
// A method named for the whole policy that does not fit a feature (ks or
// wasserstein on a categorical feature, z on one with more than two values)
// gives way to auto's choice for that feature; one named for the feature
// alone (Policy.Features) does not, and the feature is skipped. Every
// feature of the reference is reported: measured, or skipped with the
// reason (not in the batch, no values, too few rows, constant under auto,
// a method that does not apply).
//
// Why ks named in a policy is judged on D and not on its p-value (auto, which
// picks ks for references of at most 1,000 rows only, judges it on its
// p-value as Evidently does): the p-value answers "are the
// two samples from exactly the same distribution", and with a 5,000-row
// reference and 1,000-row batches it falls under 0.05 for shifts far too small
// to matter (D ≈ 0.05), and under the null hypothesis it still falls under
// 0.05 for one feature in twenty, so a pipeline with a dozen features would
// retrain on noise. D is an effect size (the largest gap between the two
// cumulative distributions) that does not grow with the batch size, so one
// threshold means the same thing for every batch. The p-value is still
// reported: exact (the share of lattice paths, as SciPy's ks_2samp computes
// it) when the reference sample is exact and both samples have at most
// 10,000 values, as in SciPy, otherwise from the Kolmogorov distribution
// with Stephens' small-sample correction (gonum has no Kolmogorov
// distribution; the chi-square and normal distributions are gonum's). For
// psi the usual reading is: below 0.1 no change, 0.1 to 0.2 a moderate
// change, above 0.2 a significant one.
//
// chisquare is judged on its p-value because its statistic has no fixed scale:
// it grows with the number of rows and of categories, so no single statistic
// threshold would fit every feature.
//
// # Bins
//
// psi, jensenshannon and chisquare compare histograms on the reference's bins.
// For a numeric feature with at most [DefaultBins] distinct values the bins
// are one per value (so one-hot and small integer features are compared value
// by value); otherwise they are the reference's deciles. Cut points lie
// half-way between neighbouring distinct reference values, never on a value,
// so a point mass (for example the zeros of a zero-inflated feature) keeps a
// bin of its own. Two more bins hold current values below the reference
// minimum and above its maximum, where the reference has no mass: new ranges
// show up as drift instead of being folded into the outermost deciles. A
// categorical feature's bins are its reference categories plus one bin for
// every other value (categories beyond the reference's cap, and categories
// never seen).
//
// psi needs every bin to be non-empty on both sides (it divides and takes a
// logarithm); an empty bin's share is raised to [PSIEpsilon] (1e-4), the usual
// convention. jensenshannon needs no such correction (0·log 0 = 0), and
// chisquare is a test of homogeneity on the 2×k table of counts, so a
// category never seen in the reference simply gets expected counts from the
// pooled margins; bins empty on both sides are dropped, and Yates' continuity
// correction is applied when one degree of freedom is left (as in SciPy's
// chi2_contingency).
//
// # Reference size
//
// A numeric reference stores its bins (at most 2·[DefaultBins] numbers), its
// distinct values when there are no more than bins, and a sample for ks and
// wasserstein: the sorted values themselves when there are at most
// [AutoSmallRows] (1,000) of them (exact, as auto's ks needs), otherwise
// [DefaultSampleSize] quantiles at the mid-points of equal-probability
// strata, (i+0.5)/K. Each quantile stands
// for 1/K of the reference, which bounds the error of D by about 1/K and keeps
// a reference under about 12 KB of JSON whatever the training window's size
// (about 20 KB for an exact 1,000-row one).
// ks p-values use the true number of reference rows.
//
// The Wasserstein distance is divided by the reference's standard deviation
// (1 when the reference is constant), so a threshold reads as "the batch moved
// by this many reference standard deviations" for every feature. The standard
// deviation is preferred to the interquartile range because the latter is 0
// for binary and sparse features.
//
// Accumulators are not safe for concurrent use; a [Reference] is read-only
// and may be shared by concurrent calls to [Measure] and [Evaluate].
package drift
