package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/natstest"
	"github.com/gyrehq/gyre/libs/service/servicetest"
)

// publish stores one event of the catalog for a pipeline.
func publish(t *testing.T, pub *bus.Publisher, pipeline, name string) {
	t.Helper()
	ev := event.New()
	ev.SetType(events.Type(name))
	ev.SetSubject(pipeline)
	ev.SetExtension(bus.ExtPipeline, pipeline)
	if err := ev.SetData(event.ApplicationJSON, map[string]string{"note": "test"}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(context.Background(), ev); err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
}

// setupEvents provisions a server and stores a few events on it.
func setupEvents(t *testing.T) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	srv, js, _ := servicetest.Provisioned(t)
	pub := bus.NewPublisher(js, "test")
	for _, e := range []struct{ pipeline, name string }{
		{"elec2", events.DataBatchArrived},
		{"elec2", events.ModelPromoted},
		{"other", events.DataBatchArrived},
		{"elec2", events.PredictionLogged}, // GYRE_PREDICTIONS, not GYRE_EVENTS
	} {
		publish(t, pub, e.pipeline, e.name)
	}
	return srv, js
}

// dataLines returns the table's lines after the header.
func dataLines(t *testing.T, out string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("table has no header:\n%s", out)
	}
	return lines[1:]
}

func TestEventsTable(t *testing.T) {
	srv, _ := setupEvents(t)
	tests := []struct {
		name      string
		args      []string
		wantTypes []string // the TYPE column, in order
		wantPipe  string   // every line's pipeline, when set
	}{
		{"everything", nil, []string{"data.batch.arrived", "model.promoted", "data.batch.arrived"}, ""},
		{"type by name", []string{"--type", "model.promoted"}, []string{"model.promoted"}, "elec2"},
		{"type by ce type", []string{"--type", "dev.gyre.model.promoted.v1"}, []string{"model.promoted"}, "elec2"},
		{"pipeline", []string{"--pipeline", "other"}, []string{"data.batch.arrived"}, "other"},
		{"type and pipeline", []string{"--type", "data.batch.arrived", "--pipeline", "elec2"}, []string{"data.batch.arrived"}, "elec2"},
		{"predictions stream", []string{"--type", "prediction.logged"}, []string{"prediction.logged"}, "elec2"},
		{"since", []string{"--since", "1h"}, []string{"data.batch.arrived", "model.promoted", "data.batch.arrived"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, err := execute(t, append([]string{"events", "--nats", srv.URL}, tt.args...)...)
			if err != nil {
				t.Fatalf("events %v: %v\n%s", tt.args, err, stderr)
			}
			lines := dataLines(t, out)
			var types []string
			for _, l := range lines {
				f := strings.Fields(l)
				if len(f) != 6 {
					t.Fatalf("line %q has %d columns, want 6 (TIME PIPELINE TYPE ID CORRELATION SOURCE)", l, len(f))
				}
				types = append(types, f[2])
				if tt.wantPipe != "" && f[1] != tt.wantPipe {
					t.Errorf("line %q: pipeline %q, want %q", l, f[1], tt.wantPipe)
				}
				if f[5] != "/gyre/test" {
					t.Errorf("line %q: source %q, want /gyre/test", l, f[5])
				}
				if f[3] != f[4] {
					t.Errorf("line %q: an event that starts a cascade is its own correlation", l)
				}
			}
			if !slices.Equal(types, tt.wantTypes) {
				t.Fatalf("types %v, want %v\n%s", types, tt.wantTypes, out)
			}
			// Columns align: every line has its TYPE column at the header's offset.
			header := strings.Split(out, "\n")[0]
			col := strings.Index(header, "TYPE")
			for _, l := range lines {
				if !strings.HasPrefix(l[col:], strings.Fields(l)[2]) {
					t.Errorf("misaligned line %q (TYPE at %d)", l, col)
				}
			}
		})
	}
}

func TestEventsJSONIsStructuredCloudEvents(t *testing.T) {
	srv, js := setupEvents(t)
	out, stderr, err := execute(t, "events", "--nats", srv.URL, "-o", "json")
	if err != nil {
		t.Fatalf("events -o json: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out)
	}
	// The ids stored in the stream, in order.
	var stored []string
	s, err := js.Stream(context.Background(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m.Header.Get(bus.HeaderID))
	}
	for i, l := range lines {
		ev := event.New()
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %d does not parse as a CloudEvent: %v\n%s", i, err, l)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("line %d: invalid CloudEvent: %v", i, err)
		}
		if ev.ID() != stored[i] {
			t.Errorf("line %d: id %s, want %s", i, ev.ID(), stored[i])
		}
		if _, ok := events.LookupType(ev.Type()); !ok {
			t.Errorf("line %d: type %q not in the catalog", i, ev.Type())
		}
		var data map[string]string
		if err := ev.DataAs(&data); err != nil || data["note"] != "test" {
			t.Errorf("line %d: data %v (%v), want note=test", i, data, err)
		}
	}
}

func TestEventsFollow(t *testing.T) {
	srv, js := setupEvents(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inv := start(ctx, "events", "-f", "--nats", srv.URL, "--pipeline", "live", "-o", "json")
	time.Sleep(200 * time.Millisecond) // let it subscribe; the event is stored either way
	publish(t, bus.NewPublisher(js, "test"), "live", events.DriftDetected)
	looptest.WaitFor(t, "the followed event", 10*time.Second, func() bool {
		return strings.Contains(inv.stdout.String(), events.Type(events.DriftDetected))
	})
	select {
	case <-inv.done:
		t.Fatalf("events -f returned before Ctrl-C: %v", inv.err)
	default:
	}
	cancel()
	select {
	case <-inv.done:
		if inv.err != nil {
			t.Fatalf("events -f after cancel: %v", inv.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("events -f did not stop within 5s of cancel")
	}
	if n := strings.Count(inv.stdout.String(), "\n"); n != 1 {
		t.Fatalf("%d events printed, want 1:\n%s", n, inv.stdout.String())
	}
}

func TestEventsErrors(t *testing.T) {
	srv := natstest.Start(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	noState := t.TempDir()
	deadState := t.TempDir()
	if err := writeState(deadState, upState{PID: dead.Process.Pid, NATSURL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown type", []string{"--nats", srv.URL, "--type", "model.exploded"}, `unknown event type "model.exploded"`},
		{"bad pipeline", []string{"--nats", srv.URL, "--pipeline", "Elec2"}, "--pipeline"},
		{"bad output", []string{"--nats", srv.URL, "-o", "yaml"}, `-o "yaml"`},
		{"negative since", []string{"--nats", srv.URL, "--since", "-1h"}, "--since"},
		{"no server", []string{"--data-dir", noState}, "start Gyre with 'gyre up'"},
		{"stale state", []string{"--data-dir", deadState}, "no longer running"},
		{"not provisioned", []string{"--nats", srv.URL}, "stream GYRE_EVENTS not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := execute(t, append([]string{"events"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("events %v: error %v, want it to contain %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestEventsFindsServerFromStateFile(t *testing.T) {
	srv, _ := setupEvents(t)
	dir := t.TempDir()
	if err := writeState(dir, upState{PID: os.Getpid(), NATSURL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := execute(t, "events", "--data-dir", dir, "--type", "model.promoted")
	if err != nil {
		t.Fatalf("events: %v\n%s", err, stderr)
	}
	if got := len(dataLines(t, out)); got != 1 {
		t.Fatalf("%d events, want 1:\n%s", got, out)
	}
	out, stderr, err = execute(t, "events", "--data-dir", dir, "--pipeline", "nobody")
	if err != nil || out != "" || !strings.Contains(stderr, "No events") {
		t.Fatalf("no matching events: err %v, stdout %q, stderr %q", err, out, stderr)
	}
}
