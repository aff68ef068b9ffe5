package main

import (
	"context"
	"fmt"

	"github.com/gyrehq/gyre/libs/bundle"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

// staticScorer is the first model the loop deployed, kept and scored on every
// later batch as if it had never been replaced: the baseline the loop is
// measured against (static_accuracy).
type staticScorer struct {
	b *bundle.Bundle
}

// scoreStatic scores rows [lo, hi) with the first deployed model, loading it
// from the registry the first time a model is serving.
func (r *demoRun) scoreStatic(ctx context.Context, b [2]int) error {
	if r.static.b == nil {
		bk, err := store.Open(ctx, r.js)
		if err != nil {
			return err
		}
		reg, _, found, err := models.Get(ctx, bk.Registry, r.data.spec.Name())
		if err != nil {
			return err
		}
		v, ok := reg.Aliases["champion"]
		if !found || !ok {
			return fmt.Errorf("a model is serving but the registry names no champion")
		}
		var key string
		for _, ver := range reg.Versions {
			if ver.Version == v {
				key = ver.Artifact.Key
			}
		}
		raw, err := store.GetObject(ctx, bk.Models, key)
		if err != nil {
			return err
		}
		bu, err := bundle.Unmarshal(raw)
		if err != nil {
			return err
		}
		r.static = staticScorer{b: bu}
	}
	preds, err := r.static.b.PredictTable(r.data.rowsOf(b[0], b[1]))
	if err != nil {
		return err
	}
	for k := 0; k < preds.Len(); k++ {
		if canonicalLabel(preds.Labels[k]) == canonicalLabel(r.data.table.Rows[b[0]+k][r.data.label]) {
			r.staticCorrect++
		}
	}
	r.staticScored += preds.Len()
	return nil
}
