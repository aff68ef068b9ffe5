package looptest_test

import (
	"context"
	"testing"
	"time"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
)

// TestNewFullAndAttach: NewFull provisions every stream, bucket and durable
// consumer; an Env attached to the same server sees the same buckets and
// events.
func TestNewFullAndAttach(t *testing.T) {
	t.Parallel()
	env := looptest.NewFull(t)
	ctx := env.Ctx()
	for _, c := range events.DurableConsumers() {
		if _, err := env.JS.Consumer(ctx, c.Stream, c.Durable()); err != nil {
			t.Errorf("consumer %s: %v", c.Durable(), err)
		}
	}
	if env.Server.URL == "" || env.Deps.JS != nil {
		t.Errorf("NewFull: url %q, deps %+v; want a URL and no service deps", env.Server.URL, env.Deps)
	}

	p := env.ApplyPipeline(looptest.Spec("p1", "{algorithm: logreg}", ""))
	sent := env.Emit("/gyre/test", "p1", &gyrev1.ModelPromoted{Pipeline: "p1", ModelVersion: 1, Alias: "champion"})

	_, js := env.Server.Connect(t)
	other := looptest.Attach(t, env.Server, js)
	if _, err := other.Buckets.Pipelines.Get(ctx, p.Name()); err != nil {
		t.Errorf("attached env: pipeline %s: %v", p.Name(), err)
	}
	got := other.WaitEventsWithin("p1", events.ModelPromoted, 1, 10*time.Second)
	if len(got) != 1 || got[0].ID() != sent.ID() {
		t.Fatalf("attached env read %d model.promoted, want the one sent (%s)", len(got), sent.ID())
	}
	if m := looptest.Decode(t, got[0], &gyrev1.ModelPromoted{}); m.GetModelVersion() != 1 {
		t.Errorf("model.promoted = %v, want version 1", m)
	}
}

// TestWaitFor returns as soon as the condition holds.
func TestWaitFor(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	looptest.WaitFor(t, "the context to end", 10*time.Second, func() bool { return ctx.Err() != nil })
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("WaitFor returned after %s, want soon after 100ms", d)
	}
}
