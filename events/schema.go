package events

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Resolvable dataschema. An event's dataschema names the schema its data
// follows. With a schema base URL configured it is a URL that
// SchemaHandler, mounted at that base, answers:
//
//	<base>/gyre.v1.ModelPromoted.json    JSON Schema of the JSON (protojson) payload
//	<base>/gyre.v1.ModelPromoted.proto   the .proto file that declares the message
//	<base>/gyre/v1/model.proto           the same file by its import path (imports resolve)
//	<base>/                              an index of every event's schemas (JSON)
//
// JSON payloads point at the .json, binary protobuf ones at the .proto.
// Without a base (the default), dataschema stays the URN
// "urn:gyre:proto:<message>", which names the schema but resolves nowhere:
// a producer cannot know where, or whether, a Gyre HTTP server is
// reachable by its consumers unless it is told.

// EnvSchemaBaseURL is the environment variable that configures the schema
// base URL, e.g. "http://127.0.0.1:8080/schemas" (an absolute http or https
// URL, where SchemaHandler is mounted).
const EnvSchemaBaseURL = "GYRE_SCHEMA_BASE_URL"

// schemaBase is the configured base URL, without a trailing slash; nil or
// "" for the URN form.
var schemaBase atomic.Pointer[string]

// schemaBaseFromEnv reads EnvSchemaBaseURL once, before the base is first
// read or set, so that every producer of a process gets it without code of
// its own; a value that is not a valid base is ignored here (the URN form
// stays) and reported by LoadSchemaBaseURL, which services call at startup.
var schemaBaseFromEnv = sync.OnceFunc(func() { _ = LoadSchemaBaseURL() })

// LoadSchemaBaseURL sets the schema base URL from EnvSchemaBaseURL (unset
// or empty: the URN form). A value that is not an absolute http(s) URL is an
// error naming the variable, and leaves the setting as it was.
func LoadSchemaBaseURL() error {
	v := os.Getenv(EnvSchemaBaseURL)
	base, err := normalizeSchemaBase(v)
	if err != nil {
		return fmt.Errorf("%s: %w", EnvSchemaBaseURL, err)
	}
	schemaBase.Store(&base)
	return nil
}

// SetSchemaBaseURL sets the URL under which SchemaHandler is served, e.g.
// "http://127.0.0.1:8080/schemas"; events built afterwards carry
// dataschema <base>/<message>.json (.proto for binary payloads). "" restores
// the URN form. It overrides EnvSchemaBaseURL.
func SetSchemaBaseURL(base string) error {
	schemaBaseFromEnv()
	b, err := normalizeSchemaBase(base)
	if err != nil {
		return err
	}
	schemaBase.Store(&b)
	return nil
}

// SchemaBaseURL returns the configured schema base URL, "" when none is.
func SchemaBaseURL() string {
	schemaBaseFromEnv()
	if p := schemaBase.Load(); p != nil {
		return *p
	}
	return ""
}

func normalizeSchemaBase(base string) (string, error) {
	if base == "" {
		return "", nil
	}
	u, err := url.Parse(base)
	switch {
	case err != nil:
		return "", fmt.Errorf("schema base URL %q: %w", base, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("schema base URL %q: want an absolute http:// or https:// URL", base)
	case u.Host == "":
		return "", fmt.Errorf("schema base URL %q has no host", base)
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("schema base URL %q: no query or fragment allowed", base)
	}
	return strings.TrimRight(base, "/"), nil
}

// DataSchema returns the dataschema of a payload message ("gyre.v1.ModelPromoted")
// sent with a content type: "<base>/<message>.json", or ".proto" for binary
// protobuf, when a schema base URL is configured; "urn:gyre:proto:<message>"
// otherwise.
func DataSchema(message, contentType string) string {
	base := SchemaBaseURL()
	if base == "" {
		return DataSchemaPrefix + message
	}
	if m := mediaType(contentType); m == ContentTypeProtobuf || m == "application/x-protobuf" {
		return base + "/" + message + ".proto"
	}
	return base + "/" + message + ".json"
}

// protoFiles are the .proto sources of the payloads, copied from
// schemas/gyre/v1 by `make generate` (go:embed cannot reach outside the
// module); scripts/check-generated.sh fails when they are stale.
//
//go:embed proto/gyre/v1/*.proto
var protoFiles embed.FS

// ProtoSource returns the .proto file that declares a payload message
// ("gyre.v1.ModelPromoted"): its import path ("gyre/v1/model.proto") and
// its text. Messages outside the catalog are an error.
func ProtoSource(message string) (string, []byte, error) {
	spec, ok := specOfMessage(message)
	if !ok {
		return "", nil, fmt.Errorf("%q is not the payload message of an event of the catalog", message)
	}
	file := payloadDescriptor(spec).ParentFile().Path()
	src, err := fs.ReadFile(protoFiles, "proto/"+file)
	if err != nil {
		return "", nil, fmt.Errorf("source of %s (%s) is not embedded; run make generate: %w", message, file, err)
	}
	return file, src, nil
}

func specOfMessage(message string) (Spec, bool) {
	s, ok := byMessage()[protoreflect.FullName(message)]
	return s, ok
}

func payloadDescriptor(s Spec) protoreflect.MessageDescriptor {
	return compiled()[s.Name].desc
}

// SchemaHandler serves the schemas of every catalog payload, for mounting
// at the schema base URL (gyre up mounts it at /schemas/, with the prefix
// stripped): GET <message>.json (application/schema+json), <message>.proto
// and gyre/v1/<file>.proto (text/plain), and / (an index, JSON). Responses
// carry an ETag and answer conditional requests; other methods get 405.
func SchemaHandler() http.Handler {
	return http.HandlerFunc(serveSchema)
}

func serveSchema(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the schemas are read-only (GET, HEAD)", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	body, contentType, err := schemaDocument(name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	sum := sha256.Sum256(body)
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:16])+`"`)
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// schemaDocument returns the document at a path relative to the base.
func schemaDocument(name string) ([]byte, string, error) {
	const protoType, jsonSchemaType = "text/plain; charset=utf-8", "application/schema+json"
	switch {
	case name == "" || name == "index.json":
		b, err := schemaIndex()
		return b, "application/json", err
	case strings.HasPrefix(name, "gyre/") && strings.HasSuffix(name, ".proto"):
		src, err := fs.ReadFile(protoFiles, "proto/"+name)
		if err != nil {
			return nil, "", fmt.Errorf("no schema file %s", name)
		}
		return src, protoType, nil
	case strings.HasSuffix(name, ".proto"):
		_, src, err := ProtoSource(strings.TrimSuffix(name, ".proto"))
		return src, protoType, err
	case strings.HasSuffix(name, ".json"):
		b, err := JSONSchema(strings.TrimSuffix(name, ".json"))
		return b, jsonSchemaType, err
	}
	return nil, "", fmt.Errorf("no schema %q: want <message>.json, <message>.proto or gyre/v1/<file>.proto, e.g. gyre.v1.ModelPromoted.json", name)
}

// schemaIndex lists every event with the paths of its schemas, relative to
// the index, in catalog order.
func schemaIndex() ([]byte, error) {
	type entry struct {
		Name       string `json:"name"`
		Type       string `json:"type"`
		Message    string `json:"message"`
		Public     bool   `json:"public,omitempty"`
		JSONSchema string `json:"jsonSchema"`
		Proto      string `json:"proto"`
		File       string `json:"file"`
	}
	var out struct {
		Events []entry  `json:"events"`
		Files  []string `json:"files"`
	}
	for _, s := range catalog {
		out.Events = append(out.Events, entry{
			Name: s.Name, Type: s.Type, Message: s.Message, Public: s.Public,
			JSONSchema: s.Message + ".json", Proto: s.Message + ".proto",
			File: payloadDescriptor(s).ParentFile().Path(),
		})
	}
	files, err := fs.Glob(protoFiles, "proto/gyre/v1/*.proto")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		out.Files = append(out.Files, strings.TrimPrefix(f, "proto/"))
	}
	sort.Strings(out.Files)
	return json.MarshalIndent(out, "", "  ")
}
