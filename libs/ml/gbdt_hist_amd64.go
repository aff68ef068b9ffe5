package ml

import "unsafe"

// Checked by the assembly: a histBin is 32 bytes, g then h then n.
const _ = uint(unsafe.Sizeof(histBin{}) - 32)
const _ = uint(32 - unsafe.Sizeof(histBin{}))

//go:noescape
func histAllSSE2(hf *featHist, col *uint8, gh *ghPair, n int)

//go:noescape
func histRowsSSE2(hf *featHist, col *uint8, rows *int32, og *ghPair, n int)

// histAll is histAllGo (see there).
func histAll(hf *featHist, col []uint8, gh []ghPair) {
	if len(col) == 0 {
		return
	}
	gh = gh[:len(col)] // the assembly reads len(col) pairs
	histAllSSE2(hf, &col[0], &gh[0], len(col))
}

// histRows is histRowsGo (see there). Every row index must be < len(col):
// the assembly does not check.
func histRows(hf *featHist, col []uint8, rows []int32, og []ghPair) {
	if len(rows) == 0 || len(col) == 0 {
		return
	}
	og = og[:len(rows)]
	histRowsSSE2(hf, &col[0], &rows[0], &og[0], len(rows))
}
