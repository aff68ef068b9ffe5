//go:build !amd64

package ml

// histAll is histAllGo (see there).
func histAll(hf *featHist, col []uint8, gh []ghPair) { histAllGo(hf, col, gh) }

// histRows is histRowsGo (see there).
func histRows(hf *featHist, col []uint8, rows []int32, og []ghPair) { histRowsGo(hf, col, rows, og) }
