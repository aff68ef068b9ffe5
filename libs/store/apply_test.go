package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
)

const applySpec = `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: p1}
spec:
  dataset: {label: y}
  model: {algorithm: logreg}
`

func mustParse(t *testing.T, spec string) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplyPipeline: created, unchanged, configured; an unchanged apply
// publishes nothing unless the announcement of its revision was lost, and
// then the same event again.
func TestApplyPipeline(t *testing.T) {
	t.Parallel()
	_, js, _ := servicetest.Provisioned(t)
	ctx := context.Background()
	pub := bus.NewPublisher(js, "test")
	apply := func(spec, want string, rev uint64, published bool) store.Applied {
		t.Helper()
		res, err := store.ApplyPipeline(ctx, js, pub, mustParse(t, spec), "test")
		if err != nil || res.Action != want || res.Revision != rev || res.Published != published {
			t.Fatalf("apply: %+v, %v; want %s revision %d published %v", res, err, want, rev, published)
		}
		return res
	}
	first := apply(applySpec, store.PipelineCreated, 1, true)
	apply(applySpec, store.PipelineUnchanged, 1, false)
	// The announcement is lost (say, a crash before the publish): an
	// unchanged apply makes it again, with the same id.
	s, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	again := apply(applySpec, store.PipelineUnchanged, 1, true)
	if again.EventID != first.EventID {
		t.Errorf("re-announcement id %s, first %s", again.EventID, first.EventID)
	}
	changed := apply(strings.Replace(applySpec, "logreg", "gbdt", 1), store.PipelineConfigured, 2, true)
	if changed.EventID == first.EventID || changed.Sha256 == first.Sha256 {
		t.Errorf("a changed spec has the id or digest of the first")
	}
	msg, err := s.GetLastMsgForSubject(ctx, "gyre.ev.p1.pipeline.applied")
	if err != nil || msg.Header.Get(bus.HeaderID) != changed.EventID {
		t.Errorf("last pipeline.applied = %v, %v", msg, err)
	}
}

// TestApplyPipelineNeedsTheTopology: without the bucket it says so.
func TestApplyPipelineNeedsTheTopology(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	_, err := store.ApplyPipeline(context.Background(), js, bus.NewPublisher(js, "test"), mustParse(t, applySpec), "test")
	if err == nil || !strings.Contains(err.Error(), events.BucketPipelines) {
		t.Fatalf("err = %v", err)
	}
}

// TestKeys: batch ids become one safe, distinct key token.
func TestKeys(t *testing.T) {
	t.Parallel()
	tests := []struct{ id, want string }{
		{"b-1_x", "b-1_x"},
		{"2024-05-01T10:00", "=MjAyNC0wNS0wMVQxMDowMA"},
		{"a.b", "=YS5i"},
		{"", "="},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		got := store.BatchKey(tt.id)
		if got != tt.want {
			t.Errorf("BatchKey(%q) = %q, want %q", tt.id, got, tt.want)
		}
		if seen[got] {
			t.Errorf("BatchKey(%q) = %q collides", tt.id, got)
		}
		seen[got] = true
	}
	if k := store.OnlineKey("p1", "2024:1", 7); k != "p1.=MjAyNDox.7" {
		t.Errorf("OnlineKey = %q", k)
	}
}
