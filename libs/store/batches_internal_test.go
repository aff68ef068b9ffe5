package store

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// entry is a log entry named id, arrived at stream sequence arrival (0:
// unknown) and stored by the server at second arrival (when known).
func entry(id string, arrival uint64) ValidatedBatch {
	b := ValidatedBatch{BatchID: id, ArrivalSeq: arrival}
	if arrival > 0 {
		b.ArrivedAt = time.Unix(1_700_000_000+int64(arrival), 0).UTC()
	}
	return b
}

// build appends the entries in the order given, as validation would finish them.
func build(t *testing.T, in ...ValidatedBatch) []ValidatedBatch {
	t.Helper()
	var log []ValidatedBatch
	for _, b := range in {
		next, _, added := insertValidated(log, b)
		if !added {
			t.Fatalf("%s not added", b.BatchID)
		}
		log = next
	}
	return log
}

// ids is the log as "id:seq" in order.
func ids(log []ValidatedBatch) string {
	var s []string
	for _, e := range log {
		s = append(s, fmt.Sprintf("%s:%d", e.BatchID, e.Seq))
	}
	return strings.Join(s, " ")
}

// TestInsertValidatedFollowsArrival: whatever order validation finishes
// batches in, the log is in arrival order with Seq 1..n, and entries whose
// arrival is unknown keep their place.
func TestInsertValidatedFollowsArrival(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []ValidatedBatch // in the order validation finishes them
		want string
	}{
		{"in order", []ValidatedBatch{entry("a", 10), entry("b", 11), entry("c", 12)}, "a:1 b:2 c:3"},
		{"one late", []ValidatedBatch{entry("b", 11), entry("c", 12), entry("a", 10)}, "a:1 b:2 c:3"},
		{"reversed", []ValidatedBatch{entry("c", 12), entry("b", 11), entry("a", 10)}, "a:1 b:2 c:3"},
		{"late into the middle", []ValidatedBatch{entry("a", 10), entry("c", 30), entry("d", 40), entry("b", 20)}, "a:1 b:2 c:3 d:4"},
		{"old entries keep their place", []ValidatedBatch{entry("old1", 0), entry("old2", 0), entry("b", 20), entry("a", 10)}, "old1:1 old2:2 a:3 b:4"},
		{"nothing moves across an unknown arrival", []ValidatedBatch{entry("b", 20), entry("x", 0), entry("a", 10)}, "b:1 x:2 a:3"},
		{"unknown arrival appends", []ValidatedBatch{entry("a", 10), entry("b", 20), entry("x", 0)}, "a:1 b:2 x:3"},
		{
			// GYRE_EVENTS recreated: its sequence starts again, but the
			// server's clock does not go back.
			"a recreated stream does not reorder",
			[]ValidatedBatch{entry("a", 500), entry("b", 501), {BatchID: "c", ArrivalSeq: 3, ArrivedAt: time.Unix(1_800_000_000, 0)}},
			"a:1 b:2 c:3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := ids(build(t, tt.in...)); got != tt.want {
				t.Fatalf("log %s, want %s", got, tt.want)
			}
		})
	}
}

// TestInsertValidatedIsIdempotent: a redelivered batch changes nothing and
// gets the entry as stored, with its current Seq.
func TestInsertValidatedIsIdempotent(t *testing.T) {
	t.Parallel()
	log := build(t, entry("b", 11), entry("c", 12))
	log, stored, added := insertValidated(log, entry("a", 10))
	if !added || stored.Seq != 1 || stored.AppendSeq != 3 {
		t.Fatalf("a stored as %+v (added %v), want seq 1, appendSeq 3", stored, added)
	}
	again, stored, added := insertValidated(log, entry("b", 11))
	if added || stored.Seq != 2 || stored.AppendSeq != 1 || !slices.Equal(again, log) {
		t.Fatalf("redelivered b: %+v (added %v), log %s; want seq 2, appendSeq 1, nothing changed", stored, added, ids(again))
	}
}

// TestInsertValidatedTrims: the log keeps the newest MaxBatchLog entries,
// Seq carries on from the first kept, and a batch late past all of them is
// not kept.
func TestInsertValidatedTrims(t *testing.T) {
	t.Parallel()
	var in []ValidatedBatch
	for i := range MaxBatchLog + 2 {
		in = append(in, entry(fmt.Sprintf("b%d", i+10), uint64(i+10)))
	}
	log := build(t, in...)
	if len(log) != MaxBatchLog || log[0].BatchID != "b12" || log[0].Seq != 3 || log[len(log)-1].Seq != MaxBatchLog+2 {
		t.Fatalf("trimmed log %s … %s (%d entries)", ids(log[:1]), ids(log[len(log)-1:]), len(log))
	}
	next, stored, added := insertValidated(log, entry("late", 11))
	if !added || len(next) != MaxBatchLog || slices.ContainsFunc(next, func(e ValidatedBatch) bool { return e.BatchID == "late" }) {
		t.Fatalf("a batch older than the whole log: added %v, stored %+v, kept %d entries", added, stored, len(next))
	}
	next, stored, _ = insertValidated(log, entry("mid", 100))
	if stored.Seq != 92 || next[len(next)-1].Seq != MaxBatchLog+3 || next[0].BatchID != "b13" {
		t.Fatalf("mid stored at seq %d, log ends at %d and starts at %s", stored.Seq, next[len(next)-1].Seq, next[0].BatchID)
	}
}

// TestAsAppended: the log as a batch's validation left it, whatever was
// inserted before it later.
func TestAsAppended(t *testing.T) {
	t.Parallel()
	// Validation finished b, d, then a (late, arrived first), then c.
	log := build(t, entry("b", 20), entry("d", 40), entry("a", 10), entry("c", 30))
	if got := ids(log); got != "a:1 b:2 c:3 d:4" {
		t.Fatalf("log %s", got)
	}
	legacy := build(t, entry("o1", 0), entry("o2", 0))
	for i := range legacy {
		legacy[i].AppendSeq = 0
	}
	tests := []struct {
		name string
		log  []ValidatedBatch
		end  string
		want string
	}{
		{"first appended", log, "b", "b:2"},
		{"a late one sees what was there", log, "a", "a:1"},
		{"appended after the late one", log, "c", "a:1 b:2 c:3"},
		{"appended before the late one", log, "d", "b:2 d:4"},
		{"entries from before AppendSeq", legacy, "o2", "o1:1 o2:2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			end := slices.IndexFunc(tt.log, func(e ValidatedBatch) bool { return e.BatchID == tt.end })
			if got := ids(AsAppended(tt.log, end)); got != tt.want {
				t.Fatalf("AsAppended(%s) = %s, want %s", tt.end, got, tt.want)
			}
		})
	}
}
