package models_test

import (
	"slices"
	"testing"

	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/store"
)

func TestRegistryLookups(t *testing.T) {
	t.Parallel()
	rec := &models.Registry{
		Pipeline: "p",
		Versions: []models.Version{{Version: 1}, {Version: 2}, {Version: 3}},
		Aliases:  map[string]int64{models.AliasChampion: 3, models.AliasPrevious: 1},
	}
	tests := []struct {
		name string
		get  func() (*models.Version, bool)
		want int64 // 0: not found
	}{
		{"version 2", func() (*models.Version, bool) { return rec.Version(2) }, 2},
		{"version 4", func() (*models.Version, bool) { return rec.Version(4) }, 0},
		{"champion", rec.Champion, 3},
		{"previous", func() (*models.Version, bool) { return rec.Alias(models.AliasPrevious) }, 1},
		{"unknown alias", func() (*models.Version, bool) { return rec.Alias("staging") }, 0},
		{"latest", rec.Latest, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, ok := tt.get()
			if ok != (tt.want != 0) || ok && v.Version != tt.want {
				t.Fatalf("got %+v, %v; want version %d", v, ok, tt.want)
			}
		})
	}
	if got := rec.AliasesOf(3); !slices.Equal(got, []string{models.AliasChampion}) {
		t.Fatalf("AliasesOf(3) = %v", got)
	}
	if _, ok := (&models.Registry{}).Champion(); ok {
		t.Fatal("an empty record has a champion")
	}
}

func TestProtoRoundTrips(t *testing.T) {
	t.Parallel()
	ref := &gyrev1.ObjectRef{Bucket: "b", Key: "k", Uri: "u", Sha256: "s", SizeBytes: 3, MediaType: "m"}
	if got := models.ObjectFromProto(ref).Proto(); got.String() != ref.String() {
		t.Fatalf("object %v, want %v", got, ref)
	}
	schema := &gyrev1.ModelSchema{Features: []string{"a"}, Label: "y", Classes: []string{"0", "1"}, Task: "classification"}
	if got := models.SchemaFromProto(schema).Proto(); got.String() != schema.String() {
		t.Fatalf("schema %v, want %v", got, schema)
	}
	lin := &gyrev1.Lineage{BatchIds: []string{"b1"}, FeatureSetVersion: "f", DatasetVersion: "d", TrainingRequestId: "r",
		TrainingJobId: "j", PipelineRevision: 2, Reason: "drift", EventIds: []string{"e1", "e2"}}
	if got := models.LineageFromProto(lin).Proto(); got.String() != lin.String() {
		t.Fatalf("lineage %v, want %v", got, lin)
	}
}

func TestGetAndPipelines(t *testing.T) {
	t.Parallel()
	env := looptest.New(t)
	rec, _, found, err := models.Get(env.Ctx(), env.Buckets.Registry, "none")
	if err != nil || found || rec.Pipeline != "none" || len(rec.Versions) != 0 {
		t.Fatalf("Get of a pipeline without models = %+v, %v, %v", rec, found, err)
	}
	if _, _, _, err := models.Get(env.Ctx(), env.Buckets.Registry, "Bad.Name"); !store.IsNotFound(err) {
		t.Fatalf("Get of a bad name = %v, want NotFound", err)
	}
	for _, p := range []string{"b", "a"} {
		if _, err := store.PutJSON(env.Ctx(), env.Buckets.Registry, p, models.Registry{Pipeline: p}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := models.Pipelines(env.Ctx(), env.Buckets.Registry); err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Pipelines = %v, %v", got, err)
	}
}
