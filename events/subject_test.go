package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
)

func TestValidatePipeline(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ok   bool
		want string
	}{
		{"elec2", true, ""},
		{"a", true, ""},
		{"credit-risk-eu-2", true, ""},
		{strings.Repeat("a", 63), true, ""},
		{"", false, "empty"},
		{strings.Repeat("a", 64), false, "at most 63"},
		{"Elec2", false, `'E' at position 1`},
		{"elec.2", false, `'.' at position 5`},
		{"elec*", false, `'*'`},
		{"elec>", false, `'>'`},
		{"el ec", false, `' '`},
		{"élec", false, "position 1"},
		{"under_score", false, `'_'`},
	}
	for _, c := range cases {
		err := events.ValidatePipeline(c.name)
		if c.ok != (err == nil) {
			t.Errorf("ValidatePipeline(%q) = %v, want ok=%v", c.name, err, c.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, events.ErrInvalidName) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ValidatePipeline(%q) = %q, want it to mention %q", c.name, err, c.want)
			}
		}
	}
}

func TestSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	for _, spec := range events.Catalog() {
		subject, err := events.Subject("elec2", spec.Name)
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		pipeline, got, err := events.ParseSubject(subject)
		if err != nil {
			t.Fatalf("ParseSubject(%q): %v", subject, err)
		}
		if pipeline != "elec2" || got.Name != spec.Name || got.Type != spec.Type {
			t.Errorf("ParseSubject(%q) = %q, %+v", subject, pipeline, got)
		}
		if spec.Type != "dev.gyre."+spec.Name+".v1" {
			t.Errorf("type %q", spec.Type)
		}
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pipeline, name string
		want           string
	}{
		{"elec2", events.DataBatchArrived, "gyre.ev.elec2.data.batch.arrived"},
		{"elec2", events.ModelPromoted, "gyre.ev.elec2.model.promoted"},
		{"elec2", events.PredictionLogged, "gyre.pred.elec2.prediction.logged"},
	}
	for _, c := range cases {
		got, err := events.Subject(c.pipeline, c.name)
		if err != nil || got != c.want {
			t.Errorf("Subject(%q, %q) = %q, %v; want %q", c.pipeline, c.name, got, err, c.want)
		}
	}
	filters := []struct {
		pipeline, name string
		want           string
	}{
		{"", "", "gyre.ev.*.>"},
		{"elec2", "", "gyre.ev.elec2.>"},
		{"", events.DriftDetected, "gyre.ev.*.drift.detected"},
		{"", events.PredictionLogged, "gyre.pred.*.prediction.logged"},
	}
	for _, c := range filters {
		got, err := events.FilterSubject(c.pipeline, c.name)
		if err != nil || got != c.want {
			t.Errorf("FilterSubject(%q, %q) = %q, %v; want %q", c.pipeline, c.name, got, err, c.want)
		}
	}
	if _, err := events.Subject("elec2", "model.exploded"); err == nil {
		t.Error("unknown event name accepted")
	}
	if s, err := events.JobSubject("gpu-a100"); err != nil || s != "gyre.jobs.train.gpu-a100" {
		t.Errorf("JobSubject = %q, %v", s, err)
	}
	if s, err := events.DLQSubject("ingest"); err != nil || s != "gyre.dlq.ingest" {
		t.Errorf("DLQSubject = %q, %v", s, err)
	}
}

func TestParseSubjectRejects(t *testing.T) {
	t.Parallel()
	for _, subject := range []string{
		"",
		"gyre",
		"gyre.ev",
		"gyre.ev.",
		"gyre.ev.elec2",
		"gyre.ev.elec2.",
		"gyre.ev.*.data.batch.arrived",
		"gyre.ev.elec2.data.batch.>",
		"gyre.ev.Elec2.data.batch.arrived",
		"gyre.ev.elec2.data.batch.exploded",
		"gyre.ev.elec2.prediction.logged", // predictions live under gyre.pred
		"gyre.pred.elec2.model.promoted",
		"gyre.jobs.train.cpu",
		"other.ev.elec2.model.promoted",
	} {
		if p, s, err := events.ParseSubject(subject); err == nil {
			t.Errorf("ParseSubject(%q) = %q, %q; want an error", subject, p, s.Name)
		}
	}
}

func TestResolveType(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"model.promoted", "dev.gyre.model.promoted.v1"} {
		s, err := events.ResolveType(in)
		if err != nil || s.Name != events.ModelPromoted {
			t.Errorf("ResolveType(%q) = %+v, %v", in, s, err)
		}
	}
	if _, err := events.ResolveType("model.exploded"); err == nil || !strings.Contains(err.Error(), "unknown event type") {
		t.Errorf("ResolveType(unknown) = %v", err)
	}
}

func TestServiceConsumersAreValid(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	streams := map[string]bool{}
	for _, s := range events.Streams() {
		streams[s.Name] = true
	}
	for _, c := range events.AllConsumers() {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", c.Durable(), err)
		}
		if seen[c.Durable()] {
			t.Errorf("durable %s declared twice", c.Durable())
		}
		seen[c.Durable()] = true
		if !streams[c.Stream] {
			t.Errorf("%s: unknown stream %s", c.Durable(), c.Stream)
		}
	}
}

// FuzzParseSubject: parsing never panics, and every subject it accepts is the
// one Subject builds from the parts it returned.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{
		"gyre.ev.elec2.data.batch.arrived",
		"gyre.pred.p.prediction.logged",
		"gyre.ev.x.model.promoted",
		"gyre.ev..model.promoted",
		"gyre.ev.elec2.data.batch",
		"gyre.ev.a-b.label.received",
		"gyre.ev.\x00.model.promoted",
		"gyre.dlq.ingest",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		pipeline, spec, err := events.ParseSubject(subject)
		if err != nil {
			return
		}
		if err := events.ValidatePipeline(pipeline); err != nil {
			t.Fatalf("accepted pipeline %q: %v", pipeline, err)
		}
		rebuilt, err := events.Subject(pipeline, spec.Name)
		if err != nil || rebuilt != subject {
			t.Fatalf("ParseSubject(%q) = %q, %q; Subject rebuilds %q, %v", subject, pipeline, spec.Name, rebuilt, err)
		}
	})
}
