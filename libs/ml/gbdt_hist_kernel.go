package ml

// The innermost histogram loops. On amd64 they are written in assembly
// (gbdt_hist_amd64.s) that adds a row's gradient and hessian to its bin with
// one two-lane SSE2 addition instead of two scalar ones; the lanes are
// IEEE-754 double additions like the scalar ones, so both versions give
// bit-identical histograms (TestHistKernelsMatchGo checks it).

// histAllGo adds gh[i] to bin col[i] of hf for every i, in order (the
// counts are left alone: the root's are known in advance).
func histAllGo(hf *featHist, col []uint8, gh []ghPair) {
	gh = gh[:len(col)]
	for i, b := range col {
		p := &hf[b]
		p.g += gh[i].g
		p.h += gh[i].h
	}
}

// histRowsGo adds og[i] to bin col[rows[i]] of hf, and counts the row, for
// every i, in order.
func histRowsGo(hf *featHist, col []uint8, rows []int32, og []ghPair) {
	og = og[:len(rows)]
	for i, r := range rows {
		p := &hf[col[r]]
		p.g += og[i].g
		p.h += og[i].h
		p.n++
	}
}
