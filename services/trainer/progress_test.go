package trainer

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/ml"
)

// TestProgressLog: a training logs its progress at most once per interval,
// the first after one interval, with the loss when there is one.
func TestProgressLog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	now := func() time.Time { return clock }
	report := progressLog(slog.New(slog.NewJSONHandler(&buf, nil)), now, 10*time.Second)
	for i, step := range []time.Duration{3, 3, 5, 2, 9, 1} { // seconds after the last round: 3, 6, 11, 13, 22, 23
		clock = clock.Add(step * time.Second)
		loss := 0.5
		if i == 4 {
			loss = math.NaN()
		}
		report(ml.Progress{Unit: "tree", Done: i + 1, Total: 100, Loss: loss})
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (at 11 s and 22 s):\n%s", len(lines), buf.String())
	}
	for i, want := range []struct {
		done    float64
		elapsed float64
		loss    bool
	}{{3, 11, true}, {5, 22, false}} {
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatal(err)
		}
		_, hasLoss := rec["loss"]
		if rec["msg"] != "training in progress" || rec["unit"] != "tree" || rec["done"] != want.done || rec["total"] != 100.0 ||
			rec["elapsed_s"] != want.elapsed || hasLoss != want.loss {
			t.Errorf("line %d = %s", i, lines[i])
		}
	}
}
