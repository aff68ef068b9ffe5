package ml

import (
	"fmt"
	"math"
)

// The input encoding shared by the models that work on a dense numeric
// vector (LogReg, MLP): numeric inputs are standardised with the training
// mean and population standard deviation, a missing numeric value is imputed
// with the training mean (0 after standardisation), and a categorical input
// is expanded to one one-hot column per category (not standardised: mean 0,
// scale 1), all zeros for a missing or unseen category.

// expandedWidth is the number of columns after one-hot expansion.
func expandedWidth(sig Signature) int {
	m := 0
	for _, in := range sig.Inputs {
		if in.Type == Categorical {
			m += len(in.Categories)
		} else {
			m++
		}
	}
	return m
}

// fitScaler computes the standardisation of every expanded column from the
// observed values of each numeric column (cols is column-major, aligned
// with inputs), summed sequentially so that the result is reproducible.
func fitScaler(inputs []Input, cols [][]float64) (mean, scale []float64) {
	width := 0
	for _, in := range inputs {
		if in.Type == Categorical {
			width += len(in.Categories)
		} else {
			width++
		}
	}
	mean = make([]float64, width)
	scale = make([]float64, width)
	k := 0
	for j, in := range inputs {
		if in.Type == Categorical {
			for c := range in.Categories {
				mean[k+c], scale[k+c] = 0, 1
			}
			k += len(in.Categories)
			continue
		}
		var sum float64
		cnt := 0
		for _, v := range cols[j] {
			if !math.IsNaN(v) {
				sum += v
				cnt++
			}
		}
		mu := 0.0
		if cnt > 0 {
			mu = sum / float64(cnt)
		}
		var ss float64
		for _, v := range cols[j] {
			if !math.IsNaN(v) {
				ss += (v - mu) * (v - mu)
			}
		}
		sd := 0.0
		if cnt > 0 {
			sd = math.Sqrt(ss / float64(cnt))
		}
		// A constant column gets scale 1: its standardised value is 0, so
		// its weight has zero gradient and stays 0.
		if !(sd > 1e-12*math.Max(1, math.Abs(mu))) {
			sd = 1
		}
		mean[k], scale[k] = mu, sd
		k++
	}
	return mean, scale
}

// expandRow writes the standardised expanded form of row x into dst (of
// the expanded width) and reports false if x has the wrong width.
func expandRow(inputs []Input, mean, scale, dst, x []float64) bool {
	if len(x) != len(inputs) {
		return false
	}
	k := 0
	for j, in := range inputs {
		v := x[j]
		if in.Type == Categorical {
			c := len(in.Categories)
			clear(dst[k : k+c])
			if !math.IsNaN(v) && v >= 0 && v < float64(c) {
				dst[k+int(v)] = 1
			}
			k += c
			continue
		}
		if math.IsNaN(v) {
			dst[k] = 0 // the training mean, standardised
		} else {
			dst[k] = (v - mean[k]) / scale[k]
		}
		k++
	}
	return true
}

// designMatrix returns the standardised expanded rows of column-major data,
// row-major (n × width).
func designMatrix(inputs []Input, mean, scale []float64, cols [][]float64, n int) []float64 {
	w := len(mean)
	xs := make([]float64, n*w)
	row := make([]float64, len(inputs))
	for i := 0; i < n; i++ {
		for j := range row {
			row[j] = cols[j][i]
		}
		expandRow(inputs, mean, scale, xs[i*w:(i+1)*w], row)
	}
	return xs
}

// checkScaler validates a standardisation read from an artifact.
func checkScaler(mean, scale []float64, width int) error {
	if len(mean) != width || len(scale) != width {
		return fmt.Errorf("mean/scale have %d/%d values, want %d", len(mean), len(scale), width)
	}
	for j := range mean {
		if !finite(mean[j]) || !finite(scale[j]) || scale[j] <= 0 {
			return fmt.Errorf("bad standardisation for column %d", j)
		}
	}
	return nil
}
