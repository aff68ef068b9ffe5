// Package ingest is Gyre's ingest service.
//
// Ingest is where data enters the loop. It takes data.batch.arrived events —
// a batch of rows inline or a URI to fetch — stores each batch in the
// gyre-batches object store, keyed by its sha256 so that a batch sent twice
// is stored once, and announces it with data.batch.received (rows, bytes,
// sha256).
//
// Two ports run the same application code (Ingester): the handler of
// data.batch.arrived (content inline, or a file:// or nats-object:// URI) and
// POST /v1/pipelines/{pipeline}/batches (the batch as the body, with a token
// of scope ingest). A batch is streamed to a temporary file while hashed,
// parsed a record at a time and put in the object store a chunk at a time,
// so memory does not grow with batches; uploads in progress are capped in
// number and in the bytes they hold (429 beyond). Before
// anything is stored the pipeline must exist, the batch must fit the size
// limit (--max-batch-bytes) and it must parse (libs/table); a batch that
// fails is refused with the reason — a permanent error, so the event goes to
// the dead-letter stream, or a 4xx answer naming the problem. The same
// content twice is one batch: the second arrival stores and emits nothing.
//
// Arrivals are handled one at a time in stream order (the consumer is
// ordered, and a redelivery comes back before anything newer), and an
// upload is ingested when it arrives, so the stream order of the
// data.batch.received announcements is the order the batches arrived:
// validation keeps the validated-batch log in that order.
//
// New and Run are public so that `gyre up` runs the service in-process;
// cmd/ingest runs it alone.
package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// Name is the service's name: its durable consumers (ingest_<handler>), its
// event source (/gyre/ingest) and its dead-letter subject (gyre.dlq.ingest)
// derive from it.
const Name = events.ServiceIngest

// DefaultHTTPAddr is where the standalone service serves HTTP by default.
const DefaultHTTPAddr = "127.0.0.1:8081"

// DefaultMaxBatchBytes is the default size limit of a batch (64 MiB). Inline
// content in an event is bounded by the NATS max payload as well.
const DefaultMaxBatchBytes = 64 << 20

// EnvMaxBatchBytes is the environment variable of --max-batch-bytes.
const EnvMaxBatchBytes = "GYRE_INGEST_MAX_BATCH_BYTES"

// EnvFileRoot is the environment variable of --file-root.
const EnvFileRoot = "GYRE_INGEST_FILE_ROOT"

// DefaultMaxConcurrentUploads is how many uploads ingest takes at once by
// default.
const DefaultMaxConcurrentUploads = 8

// DefaultMaxUploadBufferBytes is how many bytes the uploads in progress may
// hold in temporary files by default (1 GiB).
const DefaultMaxUploadBufferBytes = 1 << 30

// Environment variables of --max-concurrent-uploads and
// --max-upload-buffer-bytes.
const (
	EnvMaxConcurrentUploads = "GYRE_INGEST_MAX_CONCURRENT_UPLOADS"
	EnvMaxUploadBufferBytes = "GYRE_INGEST_MAX_UPLOAD_BUFFER_BYTES"
)

// UploadRoute is the HTTP route of batch uploads.
const UploadRoute = "POST /v1/pipelines/{pipeline}/batches"

// About says what the service does in the loop; it opens the command's help.
const About = `Ingest is where data enters the loop. It takes data.batch.arrived events — a batch of rows
inline or a URI to fetch — stores each batch in the gyre-batches object store, keyed by
its sha256 so that a batch sent twice is stored once, and announces it with
data.batch.received (rows, bytes, sha256).

Batches come as data.batch.arrived events (inline content, or a file:// or
nats-object://BUCKET/KEY URI) or as HTTP uploads:

  POST /v1/pipelines/{pipeline}/batches[?format=csv|jsonl|parquet][&batchId=ID]
  (Content-Type text/csv, application/x-ndjson or application/vnd.apache.parquet;
  Authorization: Bearer <token of scope ingest>)

An unknown pipeline, a batch over --max-batch-bytes, an unknown format, a bad batch
id (letters, digits and . _ - : + only) or a batch that does not parse is refused
with a reason naming the problem (row and column for a parse error): the event goes
to the dead-letter stream gyre.dlq.ingest; the upload gets 404, 413, 415 or 400 with
{"error": "..."}. Beyond --max-concurrent-uploads uploads, or
--max-upload-buffer-bytes held by them, an upload gets 429 with Retry-After; a body
that arrives too slowly, 408.`

// Config is the ingest service's configuration.
type Config struct {
	service.Config
	// MaxBatchBytes is the largest batch accepted, in bytes.
	MaxBatchBytes int
	// FileRoot is the directory file:// batch URIs may name files under.
	// Empty refuses file:// URIs: any producer can publish
	// data.batch.arrived, and an unbounded file:// would let it make ingest
	// read, store and quote any file the service can open.
	FileRoot string
	// MaxConcurrentUploads is how many HTTP uploads are taken at once; more
	// get 429.
	MaxConcurrentUploads int
	// MaxUploadBufferBytes is how many bytes the uploads in progress may
	// hold in temporary files at once, each counting its Content-Length (or
	// MaxBatchBytes without one); more get 429.
	MaxUploadBufferBytes int
}

// DefaultConfig returns the configuration with every default.
func DefaultConfig() Config {
	return Config{
		Config: service.Defaults(DefaultHTTPAddr), MaxBatchBytes: DefaultMaxBatchBytes,
		MaxConcurrentUploads: DefaultMaxConcurrentUploads, MaxUploadBufferBytes: DefaultMaxUploadBufferBytes,
	}
}

// RegisterFlags registers the shared flags and --max-batch-bytes on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Config.RegisterFlags(fs)
	c.IntFlag(fs, &c.MaxBatchBytes, "max-batch-bytes", EnvMaxBatchBytes, c.MaxBatchBytes,
		"largest batch accepted, in bytes (inline event content is bounded by the NATS max payload too)")
	c.StringFlag(fs, &c.FileRoot, "file-root", EnvFileRoot, c.FileRoot,
		"directory that file:// batch URIs may name files under; empty refuses file:// URIs")
	c.IntFlag(fs, &c.MaxConcurrentUploads, "max-concurrent-uploads", EnvMaxConcurrentUploads, c.MaxConcurrentUploads,
		"HTTP uploads taken at once; more are answered 429 with Retry-After")
	c.IntFlag(fs, &c.MaxUploadBufferBytes, "max-upload-buffer-bytes", EnvMaxUploadBufferBytes, c.MaxUploadBufferBytes,
		"bytes the uploads in progress may hold in temporary files (under $TMPDIR) at once, each counting its Content-Length or --max-batch-bytes; more are answered 429")
}

// Validate checks every setting and names those that are wrong.
func (c Config) Validate() error {
	err := c.Config.Validate()
	if c.MaxBatchBytes <= 0 {
		err = errors.Join(err, &service.FieldError{Flag: "max-batch-bytes", Env: EnvMaxBatchBytes,
			Value: fmt.Sprint(c.MaxBatchBytes), Reason: "must be positive"})
	}
	if c.FileRoot != "" {
		if fi, statErr := os.Stat(c.FileRoot); statErr != nil || !fi.IsDir() {
			err = errors.Join(err, &service.FieldError{Flag: "file-root", Env: EnvFileRoot,
				Value: c.FileRoot, Reason: "is not an existing directory"})
		}
	}
	if c.MaxConcurrentUploads <= 0 {
		err = errors.Join(err, &service.FieldError{Flag: "max-concurrent-uploads", Env: EnvMaxConcurrentUploads,
			Value: fmt.Sprint(c.MaxConcurrentUploads), Reason: "must be positive"})
	}
	// Smaller, and an upload of the largest batch could never be taken.
	if c.MaxUploadBufferBytes < c.MaxBatchBytes {
		err = errors.Join(err, &service.FieldError{Flag: "max-upload-buffer-bytes", Env: EnvMaxUploadBufferBytes,
			Value: fmt.Sprint(c.MaxUploadBufferBytes), Reason: fmt.Sprintf("must be at least --max-batch-bytes (%d)", c.MaxBatchBytes)})
	}
	return err
}

// Service is the ingest service.
type Service struct {
	cfg      Config
	rt       *service.Runtime
	ingester *Ingester
	uploads  *uploadLimiter
}

var _ service.Runner = (*Service)(nil)

// New returns the service built on deps, ready to Run.
func New(cfg Config, deps service.Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	rt, err := service.New(Name, cfg.Config, deps)
	if err != nil {
		return nil, err
	}
	uploads, err := newUploadLimiter(cfg.MaxConcurrentUploads, int64(cfg.MaxUploadBufferBytes), deps.Registry)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg,
		rt:  rt,
		// Buckets open lazily: Run provisions them after New.
		ingester: NewIngester(store.NewLazy(rt.JetStream()), rt.JetStream(), rt.Publisher(), int64(cfg.MaxBatchBytes)).WithFileRoot(cfg.FileRoot),
		uploads:  uploads,
	}
	if err := rt.Router().HandleDeclared(map[string]bus.Handler{"batch-arrived": s.batchArrived}); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if err := rt.HandleScoped(UploadRoute, service.ScopeIngest, http.HandlerFunc(s.serveUpload)); err != nil {
		return nil, err
	}
	return s, nil
}

// Run provisions the service's topology and runs it until ctx ends, then
// drains; it returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error { return s.rt.Run(ctx) }

// Handler serves GET /healthz, /readyz, /metrics and the batch upload route.
func (s *Service) Handler() http.Handler { return s.rt.Handler() }

// Name returns the service's name.
func (s *Service) Name() string { return Name }

// Readiness reports whether the service is ready and why not.
func (s *Service) Readiness() service.Readiness { return s.rt.Readiness() }
