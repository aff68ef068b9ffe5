package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/looptest"
	"github.com/gyrehq/gyre/libs/pipeline"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/service/servicetest"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/services/validation"
)

// receiveBatch stores a CSV batch as ingest does and announces it.
func receiveBatch(t *testing.T, r *servicetest.Running, p, batchID, csv string) {
	t.Helper()
	sum := sha256.Sum256([]byte(csv))
	digest := hex.EncodeToString(sum[:])
	ref, _, err := store.PutObject(context.Background(), r.Buckets.Batches, p+"/"+digest+".csv", "text/csv", []byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	r.Publish(t, p, &gyrev1.DataBatchReceived{Pipeline: p, BatchId: batchID, Object: ref, Sha256: digest, Format: "csv", Bytes: int64(len(csv))})
}

// TestSchemaShowFreeze: gyre schema show follows a schema learned from two
// batches (nothing yet, learning, learned) in a table, YAML whose schema
// pastes into a spec, and JSON; gyre schema freeze pins it, recording who
// froze it, after which a value outside its categories is quarantined; a
// declared schema cannot be frozen.
func TestSchemaShowFreeze(t *testing.T) {
	t.Parallel()
	r := servicetest.Start(t, func(url string, deps service.Deps) (service.Runner, error) {
		cfg := validation.DefaultConfig()
		cfg.NATSURL = url
		return validation.New(cfg, deps)
	})
	r.Apply(t, `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: shown}
spec:
  dataset: {label: class, maxRowErrors: 5, inferSchema: {batches: 2}}
`)
	r.Apply(t, `apiVersion: gyre.dev/v1
kind: Pipeline
metadata: {name: declared}
spec:
  dataset: {label: class, schema: [{name: class, type: category, categories: ["0", "1"]}]}
`)
	nats := "--nats=" + r.URL
	show := func(args ...string) string {
		t.Helper()
		out, _, err := execute(t, append([]string{"schema", "show", "shown", nats}, args...)...)
		if err != nil {
			t.Fatalf("gyre schema show %v: %v", args, err)
		}
		return out
	}
	if out := show(); out != "schema of shown: nothing learned yet; it is learned from the first 2 validated batches (spec.dataset.inferSchema.batches)\n" {
		t.Errorf("before any batch:\n%s", out)
	}
	receiveBatch(t, r, "shown", "b1", "n,color,class\n1,red,0\n2,green,1\n3,red,0\n4,green,1\n")
	r.WaitEvents(t, "shown", events.DataBatchValidated, 1)
	if out := show(); !strings.HasPrefix(out, "schema of shown: learning, from 1 of 2 batches so far (b1); only types are checked until then\n") {
		t.Errorf("after b1:\n%s", out)
	}
	receiveBatch(t, r, "shown", "b2", "n,color,class\n6,blue,1\n5,red,0\n")
	r.WaitEvents(t, "shown", events.DataBatchValidated, 2)
	out := show()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || lines[0] != "schema of shown: learned from 2 batches (b1, b2), not frozen; values outside the learned categories are reported, "+
		"min/max only shown (gyre schema freeze shown enforces them)" ||
		strings.Join(strings.Fields(lines[1]), " ") != "COLUMN TYPE REQUIRED MIN MAX CATEGORIES MIN PRESENCE REFERENCE" ||
		strings.Join(strings.Fields(lines[2]), " ") != "n int - 1 6 - 100% -" ||
		strings.Join(strings.Fields(lines[3]), " ") != "color category - - - blue, green, red 100% red 50%, green 33.3%, blue 16.7%" ||
		strings.Join(strings.Fields(lines[4]), " ") != "class category - - - 0, 1 100% 0 50%, 1 50%" {
		t.Errorf("learned, table:\n%s", out)
	}
	t.Logf("gyre schema show shown:\n%s", out)
	y := show("-o", "yaml")
	t.Logf("gyre schema show shown -o yaml:\n%s", y)
	const wantSchema = `schema:
  - {name: n, type: int, min: 1, max: 6, minPresence: 1}
  - {name: color, type: category, categories: [blue, green, red], minPresence: 1}
  - {name: class, type: category, categories: ["0", "1"], minPresence: 1}
`
	at := strings.Index(y, "schema:")
	if !strings.HasPrefix(y, "pipeline: shown\nstate: learned\nlearnBatches: 2\nlearned: 2\nlearnedFrom:\n  - b1\n  - b2\n") || at < 0 || !strings.HasPrefix(y[at:], wantSchema) {
		t.Errorf("-o yaml:\n%s", y)
	}
	// The schema: list pastes into a spec.
	if _, err := pipeline.Parse([]byte("apiVersion: gyre.dev/v1\nkind: Pipeline\nmetadata: {name: pasted}\nspec:\n  dataset:\n    label: class\n    " +
		strings.ReplaceAll(strings.TrimSuffix(wantSchema, "\n"), "\n", "\n    ") + "\n")); err != nil {
		t.Errorf("the YAML schema does not paste into a spec: %v", err)
	}
	var v validation.SchemaView
	if err := json.Unmarshal([]byte(show("-o", "json")), &v); err != nil || v.State != validation.StateLearned || len(v.Schema) != 3 ||
		v.Reference["color"].Counts["red"] != 3 {
		t.Errorf("-o json: %+v, %v", v, err)
	}

	out, _, err := execute(t, "schema", "freeze", "shown", nats)
	if err != nil || !strings.HasPrefix(out, "schema of shown frozen by "+localUser()+" at ") ||
		!strings.HasSuffix(out, ", learned from 2 batches (b1, b2): later batches never widen it, and values outside its min/max and categories "+
			"are quarantined like those of a declared schema\n") {
		t.Errorf("gyre schema freeze: %v\n%s", err, out)
	}
	if out, _, err := execute(t, "schema", "freeze", "shown", nats); err != nil || !strings.HasPrefix(out, "schema of shown already frozen by "+localUser()) ||
		!strings.HasSuffix(out, "; nothing changed\n") {
		t.Errorf("gyre schema freeze again: %v\n%s", err, out)
	}
	if out := show(); !strings.HasPrefix(out, "schema of shown: frozen by "+localUser()+" at ") {
		t.Errorf("frozen:\n%s", out)
	}
	receiveBatch(t, r, "shown", "b3", "n,color,class\n1,purple,0\n2,red,1\n3,green,0\n")
	var b3 gyrev1.DataBatchValidated
	looptest.Decode(t, r.WaitEvents(t, "shown", events.DataBatchValidated, 3)[2], &b3)
	if b3.GetRowsQuarantined() != 1 || len(b3.GetAnomalies()) != 1 || b3.GetAnomalies()[0].GetReason() !=
		`1 value of "color" is not among the frozen categories blue, green, red: "purple" (1); the row holding it is quarantined` {
		t.Errorf("b3 after the freeze: %d quarantined, anomalies %v", b3.GetRowsQuarantined(), b3.GetAnomalies())
	}

	if out, _, err := execute(t, "schema", "show", "declared", nats); err != nil ||
		!strings.HasPrefix(out, "schema of declared: declared in the spec (spec.dataset.schema); values outside its domains are quarantined\n"+
			"reference shares being learned: 0 of 1 batches so far\n") {
		t.Errorf("gyre schema show declared: %v\n%s", err, out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"schema", "freeze", "declared"}, "gyre schema freeze declared: the spec of declared declares its schema (spec.dataset.schema): it is pinned already, and changed in the spec"},
		{[]string{"schema", "freeze", "nope"}, `pipeline "nope"`},
		{[]string{"schema", "show", "shown", "-o", "xml"}, `-o "xml": want table, yaml or json`},
		{[]string{"schema", "show", "Bad.Name"}, "invalid name"},
	} {
		if _, _, err := execute(t, append(tt.args, nats)...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("gyre %v = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	if out, _, err := execute(t, "schema", "--help"); err != nil || !strings.Contains(out, "gyre schema freeze") || !strings.Contains(out, "inferSchema.batches") {
		t.Errorf("gyre schema --help: %v\n%s", err, out)
	}
}
