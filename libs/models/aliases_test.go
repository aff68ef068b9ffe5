package models_test

import (
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/models"
)

// TestPreviousIsTheNewestThatServed walks a pipeline through promotions,
// completed and rolled-back deployments and rollbacks, and checks after
// each step the champion, previous (never a version that failed its
// rollout, nor one withdrawn) and the generation.
func TestPreviousIsTheNewestThatServed(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0).UTC()
	rec := &models.Registry{Pipeline: "p"}
	for v := int64(1); v <= 4; v++ {
		rec.Versions = append(rec.Versions, models.Version{Version: v})
	}
	steps := []struct {
		name                 string
		do                   func()
		champion, previous   int64
		generation           int64
		withdrawn            []int64
		lastServedExceptNone int64
	}{
		{"v1 promoted", func() { rec.PromoteTo(1, models.ReasonBlessed, now) }, 1, 0, 1, nil, 0},
		{"v1 served", func() { rec.RecordServed(1, 1, "d1", now) }, 1, 0, 1, nil, 1},
		{"v2 promoted: previous is v1, which served", func() { rec.PromoteTo(2, models.ReasonBlessed, now) }, 2, 1, 2, nil, 1},
		{"v3 promoted before v2 served: previous stays v1", func() { rec.PromoteTo(3, models.ReasonBlessed, now) }, 3, 1, 3, nil, 1},
		{"v3's rollout rolled back: champion back to v1, v3 withdrawn", func() {
			rec.RollBackTo(1, models.ReasonRolledBack, "errorRate 1 > 0.02", now)
		}, 1, 0, 4, []int64{3}, 1},
		{"v4 promoted and served", func() {
			rec.PromoteTo(4, models.ReasonBlessed, now)
			rec.RecordServed(4, 5, "d4", now)
		}, 4, 1, 5, []int64{3}, 4},
		{"a redelivered completion changes nothing", func() {
			if rec.RecordServed(4, 5, "d4", now) {
				t.Error("RecordServed of a recorded deployment: true")
			}
		}, 4, 1, 5, []int64{3}, 4},
		{"rollback by hand to v1: v4 withdrawn, nothing before v1", func() {
			rec.RollBackTo(rec.Aliases[models.AliasPrevious], models.ReasonRollback, "by hand", now)
		}, 1, 0, 6, []int64{3, 4}, 1},
		{"v3 promoted by hand: no longer withdrawn; previous v1", func() { rec.PromoteTo(3, models.ReasonManual, now) }, 3, 1, 7, []int64{4}, 1},
	}
	for _, s := range steps {
		s.do()
		if c, p, g := rec.Aliases[models.AliasChampion], rec.Aliases[models.AliasPrevious], rec.Generation(); c != s.champion || p != s.previous || g != s.generation {
			t.Fatalf("%s: champion %d, previous %d, generation %d; want %d, %d, %d", s.name, c, p, g, s.champion, s.previous, s.generation)
		}
		for _, v := range rec.Versions {
			want := false
			for _, w := range s.withdrawn {
				want = want || w == v.Version
			}
			if (v.Withdrawn != "") != want {
				t.Fatalf("%s: v%d withdrawn %q, want withdrawn %v", s.name, v.Version, v.Withdrawn, want)
			}
		}
		if got := rec.LastServed(0); got != s.lastServedExceptNone {
			t.Fatalf("%s: LastServed(0) = %d, want %d", s.name, got, s.lastServedExceptNone)
		}
		if mv, ok := rec.ChampionMove(); !ok || mv.Version != s.champion || mv.Seq != s.generation {
			t.Fatalf("%s: ChampionMove = %+v, %v", s.name, mv, ok)
		}
	}
}
