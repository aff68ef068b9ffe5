package events

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func get(t *testing.T, srv *httptest.Server, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// compileSchema compiles a served JSON Schema with an independent
// validator.
func compileSchema(t *testing.T, name string, body []byte) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: not JSON: %v", name, err)
	}
	c := jsonschema.NewCompiler()
	url := "urn:test:" + name
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(url)
	if err != nil {
		t.Fatalf("%s: not a valid JSON Schema: %v", name, err)
	}
	return s
}

func instance(t *testing.T, msg proto.Message) any {
	t.Helper()
	data, err := protojson.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSchemaHandlerServesEveryEvent: for every event of the catalog, the
// handler serves a JSON Schema that an independent validator compiles,
// that describes every field and accepts the valid example but not one
// that breaks a rule the schema can state, and the .proto that declares
// the message.
func TestSchemaHandlerServesEveryEvent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(SchemaHandler())
	t.Cleanup(srv.Close) // the subtests run after this function returns
	for _, s := range Catalog() {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			resp, body := get(t, srv, "/"+s.Message+".json")
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/schema+json" {
				t.Fatalf("GET %s.json: %s %s", s.Message, resp.Status, resp.Header.Get("Content-Type"))
			}
			schema := compileSchema(t, s.Message, body)
			var doc struct {
				Schema     string                     `json:"$schema"`
				Title      string                     `json:"title"`
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
				Rules      []map[string]string        `json:"x-gyre-rules"`
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			desc := compiled()[s.Name].desc
			for i := range desc.Fields().Len() {
				if _, ok := doc.Properties[desc.Fields().Get(i).JSONName()]; !ok {
					t.Errorf("no property %s", desc.Fields().Get(i).JSONName())
				}
			}
			if doc.Title != s.Message || !strings.Contains(doc.Schema, "2020-12") || len(doc.Rules) != len(Rules(s.Name)) {
				t.Errorf("title %q, $schema %q, %d rules listed (want %d)", doc.Title, doc.Schema, len(doc.Rules), len(Rules(s.Name)))
			}
			if !slices.Contains(doc.Required, "pipeline") {
				t.Errorf("required %v lacks pipeline", doc.Required)
			}
			ex := validExample(t, s.Name)
			if err := schema.Validate(instance(t, ex)); err != nil {
				t.Errorf("the valid example does not validate: %v", err)
			}
			for _, r := range compiled()[s.Name].rules {
				if r.path == nil {
					continue
				}
				leaf := r.path[len(r.path)-1].fd
				if k := leaf.Kind(); k == protoreflect.Int64Kind || k == protoreflect.Uint64Kind || k == protoreflect.Sint64Kind {
					continue // protojson writes them as strings: "minimum" cannot see them
				}
				broken := validExample(t, s.Name)
				at := breakAt(t, broken.ProtoReflect(), r.path, "", &r.rule)
				if err := schema.Validate(instance(t, broken)); err == nil {
					t.Errorf("the schema accepts %s broken for rule %s", at, r.Name)
				}
			}

			resp, body = get(t, srv, "/"+s.Message+".proto")
			short := s.Message[strings.LastIndexByte(s.Message, '.')+1:]
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
				!strings.Contains(string(body), "\nmessage "+short+" {") || !strings.Contains(string(body), "package gyre.v1;") {
				t.Errorf("GET %s.proto: %s %s, body without message %s", s.Message, resp.Status, resp.Header.Get("Content-Type"), short)
			}
			file, src, err := ProtoSource(s.Message)
			if err != nil || !bytes.Equal(src, body) {
				t.Errorf("ProtoSource(%s) = %s, %v; not what the handler serves", s.Message, file, err)
			}
			if resp, again := get(t, srv, "/"+file); resp.StatusCode != http.StatusOK || !bytes.Equal(again, body) {
				t.Errorf("GET /%s: %s", file, resp.Status)
			}
		})
	}
}

func TestSchemaHandlerIndexAndErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(SchemaHandler())
	defer srv.Close()

	resp, body := get(t, srv, "/")
	var index struct {
		Events []struct{ Name, Type, Message, JSONSchema, Proto, File string }
		Files  []string
	}
	if err := json.Unmarshal(body, &index); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %s %v", resp.Status, err)
	}
	if len(index.Events) != len(Catalog()) || len(index.Files) == 0 {
		t.Fatalf("index lists %d events and %d files; want %d events", len(index.Events), len(index.Files), len(Catalog()))
	}
	for i, s := range Catalog() {
		e := index.Events[i]
		if e.Name != s.Name || e.JSONSchema != s.Message+".json" || e.Proto != s.Message+".proto" || !strings.HasPrefix(e.File, "gyre/v1/") {
			t.Errorf("index entry %+v for %s", e, s.Name)
		}
	}
	for _, f := range index.Files {
		if resp, _ := get(t, srv, "/"+f); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /%s (from the index): %s", f, resp.Status)
		}
	}

	for _, p := range []string{"/gyre.v1.ObjectRef.json", "/gyre.v1.Nope.proto", "/gyre/v1/nope.proto", "/x.txt", "/../../go.mod"} {
		if resp, _ := get(t, srv, p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", p, resp.Status)
		}
	}
	resp, err := srv.Client().Post(srv.URL+"/gyre.v1.ModelPromoted.json", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}

	resp, _ = get(t, srv, "/gyre.v1.ModelPromoted.json")
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if resp, body := get(t, srv, "/gyre.v1.ModelPromoted.json", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("conditional GET: %s with %d bytes, want 304", resp.Status, len(body))
	}
}

// TestDataSchema changes the process-wide base, so it does not run in
// parallel; it restores the URN form before the parallel tests resume.
func TestDataSchema(t *testing.T) {
	defer func() {
		if err := SetSchemaBaseURL(""); err != nil {
			t.Fatal(err)
		}
	}()
	msg := validExample(t, ModelPromoted)
	if err := SetSchemaBaseURL(""); err != nil {
		t.Fatal(err)
	}
	ev, err := New(testSource, "elec2", msg)
	if err != nil || ev.DataSchema() != "urn:gyre:proto:gyre.v1.ModelPromoted" {
		t.Fatalf("dataschema without a base = %q (%v)", ev.DataSchema(), err)
	}

	if err := SetSchemaBaseURL("https://gyre.example.com/schemas/"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		new  func(string, string, proto.Message) (event.Event, error)
		want string
	}{
		{"json", New, "https://gyre.example.com/schemas/gyre.v1.ModelPromoted.json"},
		{"protobuf", NewProtobuf, "https://gyre.example.com/schemas/gyre.v1.ModelPromoted.proto"},
	} {
		ev, err := c.new(testSource, "elec2", msg)
		if err != nil || ev.DataSchema() != c.want {
			t.Errorf("%s: dataschema = %q (%v), want %q", c.name, ev.DataSchema(), err, c.want)
		}
	}
	// The URL is the handler's path under the base.
	srv := httptest.NewServer(http.StripPrefix("/schemas", SchemaHandler()))
	defer srv.Close()
	for _, suffix := range []string{".json", ".proto"} {
		if resp, _ := get(t, srv, "/schemas/gyre.v1.ModelPromoted"+suffix); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /schemas/gyre.v1.ModelPromoted%s under the mount: %s", suffix, resp.Status)
		}
	}
	schema, err := JSONSchema("gyre.v1.ModelPromoted")
	if err != nil || !strings.Contains(string(schema), `"$id": "https://gyre.example.com/schemas/gyre.v1.ModelPromoted.json"`) {
		t.Errorf("JSON Schema $id missing (%v)", err)
	}

	for _, bad := range []string{"ftp://h/schemas", "/schemas", "http://", "http://h/s?x=1", "http://h/s#f", "::"} {
		if err := SetSchemaBaseURL(bad); err == nil {
			t.Errorf("SetSchemaBaseURL(%q): no error", bad)
		}
	}
	if got := SchemaBaseURL(); got != "https://gyre.example.com/schemas" {
		t.Errorf("a refused base changed the setting to %q", got)
	}

	t.Setenv(EnvSchemaBaseURL, "not a url")
	if err := LoadSchemaBaseURL(); err == nil || !strings.Contains(err.Error(), EnvSchemaBaseURL) {
		t.Errorf("LoadSchemaBaseURL of a bad value = %v, want an error naming %s", err, EnvSchemaBaseURL)
	}
	t.Setenv(EnvSchemaBaseURL, "http://127.0.0.1:8080/schemas")
	if err := LoadSchemaBaseURL(); err != nil || DataSchema("gyre.v1.LabelReceived", "") != "http://127.0.0.1:8080/schemas/gyre.v1.LabelReceived.json" {
		t.Errorf("LoadSchemaBaseURL = %v; dataschema %q", err, DataSchema("gyre.v1.LabelReceived", ""))
	}
	if err := SetSchemaBaseURL(""); err != nil || DataSchema("gyre.v1.LabelReceived", ContentTypeJSON) != "urn:gyre:proto:gyre.v1.LabelReceived" {
		t.Errorf("SetSchemaBaseURL(\"\") = %v; dataschema %q", err, DataSchema("gyre.v1.LabelReceived", ContentTypeJSON))
	}
}
