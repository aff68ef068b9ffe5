package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// Batch is the command to ingest one batch, whichever way it came: a
// data.batch.arrived event or an HTTP upload.
type Batch struct {
	// Pipeline the batch belongs to.
	Pipeline string
	// BatchID is the producer's id; empty means the first 16 hex digits of
	// the content's sha256.
	BatchID string
	// Format is csv, jsonl or parquet.
	Format string
	// Content is the batch inline; exactly one of Content, URI and Body is
	// set.
	Content []byte
	// URI is file:///abs/path or nats-object://BUCKET/KEY.
	URI string
	// Body is the batch as a stream (an HTTP upload's body): it is read to
	// its end, or just past the size limit, into a temporary file, never
	// whole into memory. A read error is an *UploadError.
	Body io.Reader
	// Labels are the producer's labels, passed on in data.batch.received.
	Labels map[string]string
	// ArrivalID identifies this arrival (the data.batch.arrived event id, or
	// one per HTTP request), so that a redelivery of it is told apart from
	// another arrival of the same content.
	ArrivalID string
}

// Result is what ingesting a batch did.
type Result struct {
	Pipeline string
	// BatchID is the id the batch is known by: the first arrival's, for a
	// duplicate.
	BatchID string
	Sha256  string
	Rows    int64
	Bytes   int64
	Columns []string
	Object  *gyrev1.ObjectRef
	// Duplicate is true when the same content had been received already:
	// nothing new was stored or announced.
	Duplicate bool
	// EventID is the id of the batch's data.batch.received event.
	EventID string
}

// TooLargeError is a batch over the size limit. It is permanent.
type TooLargeError struct {
	// Size is the batch's size in bytes; 0 when only "more than Limit" is known.
	Size  int64
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Size > 0 {
		return fmt.Sprintf("batch too large: %d bytes, the limit is %d (--max-batch-bytes)", e.Size, e.Limit)
	}
	return fmt.Sprintf("batch too large: more than the limit of %d bytes (--max-batch-bytes)", e.Limit)
}

// Permanent reports that retrying cannot help.
func (e *TooLargeError) Permanent() bool { return true }

// FormatError is a batch format Gyre does not read. It is permanent.
type FormatError struct {
	Format string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("format %q is not a batch format; want %s", e.Format, strings.Join(table.Formats(), ", "))
}

// Permanent reports that retrying cannot help.
func (e *FormatError) Permanent() bool { return true }

// SourceError is a batch URI that cannot be read: no such file, bucket or
// object. It is permanent: the next delivery finds the same nothing.
type SourceError struct {
	URI    string
	Reason string
	Err    error
}

func (e *SourceError) Error() string {
	msg := fmt.Sprintf("read batch from %s: %s", e.URI, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *SourceError) Unwrap() error { return e.Err }

// Permanent reports that retrying cannot help.
func (e *SourceError) Permanent() bool { return true }

// UploadError is an upload whose body could not be read: the client went
// away, or sent too slowly (service.ErrBodyTooSlow). It is permanent for
// that request.
type UploadError struct {
	Err error
}

func (e *UploadError) Error() string { return "read the upload's body: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *UploadError) Unwrap() error { return e.Err }

// Permanent reports that retrying the same read cannot help.
func (e *UploadError) Permanent() bool { return true }

// ConflictError is a batch id already used for other content in the
// pipeline: batch ids name one batch, and downstream services key their
// state by them. It is permanent.
type ConflictError struct {
	BatchID        string
	Sha256         string
	ExistingSha256 string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("batch id %q was already used for other content (sha256 %s, this one %s); give this batch another id",
		e.BatchID, e.ExistingSha256, e.Sha256)
}

// Permanent reports that retrying cannot help.
func (e *ConflictError) Permanent() bool { return true }

// record is ingest's state for one batch content, gyre-state
// ingest.<pipeline>.<sha256>: the same content twice is one batch.
type record struct {
	BatchID   string    `json:"batchId"`
	ObjectKey string    `json:"objectKey"`
	Rows      int64     `json:"rows"`
	Bytes     int64     `json:"bytes"`
	Format    string    `json:"format"`
	Sha256    string    `json:"sha256"`
	ArrivalID string    `json:"arrivalId"`
	EventID   string    `json:"eventId"`
	Emitted   bool      `json:"emitted"`
	At        time.Time `json:"at"`
}

// idClaim binds a batch id to its content, gyre-state ingest.<pipeline>.id.<batch>.
type idClaim struct {
	Sha256 string `json:"sha256"`
}

// publisher publishes an event; *bus.Publisher is one.
type publisher interface {
	Publish(ctx context.Context, ev event.Event) error
}

// buckets gives the JetStream buckets; *store.Lazy is one.
type buckets interface {
	Get(ctx context.Context) (*store.Buckets, error)
}

// objectStores opens an object store by name, for nats-object:// URIs;
// jetstream.JetStream is one.
type objectStores interface {
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// Ingester stores batches and announces them. It is the application code
// behind both ports, the event handler and the HTTP upload.
type Ingester struct {
	buckets  buckets
	objects  objectStores
	pub      publisher
	maxBytes int64
	// fileRoot bounds file:// URIs; "" refuses them.
	fileRoot string
	// puts holds a token per object store put in progress.
	puts chan struct{}
}

// NewIngester returns an Ingester that refuses batches over maxBytes.
func NewIngester(b buckets, objects objectStores, pub publisher, maxBytes int64) *Ingester {
	return &Ingester{buckets: b, objects: objects, pub: pub, maxBytes: maxBytes, puts: make(chan struct{}, maxConcurrentPuts)}
}

// WithFileRoot lets file:// URIs name files under dir (and nowhere else)
// and returns the Ingester; "" refuses file:// URIs.
func (in *Ingester) WithFileRoot(dir string) *Ingester {
	in.fileRoot = ""
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			if real, err := filepath.EvalSymlinks(abs); err == nil {
				in.fileRoot = real
			}
		}
	}
	return in
}

// MediaType returns the media type of a batch format.
func MediaType(format string) string {
	switch format {
	case table.FormatCSV:
		return "text/csv"
	case table.FormatJSONL:
		return "application/x-ndjson"
	case table.FormatParquet:
		return "application/vnd.apache.parquet"
	}
	return "application/octet-stream"
}

// Ingest checks a batch (format, batch id, pipeline known, size, parses),
// stores it content-addressed in gyre-batches, records it, and emits
// data.batch.received — once per content: the same content again is a
// duplicate that emits nothing. Bad input is a permanent error naming the
// problem (a row and column for a batch that does not parse). Memory does
// not grow with the batch: it is streamed to a temporary file, parsed a
// record at a time and put in the object store a chunk at a time.
func (in *Ingester) Ingest(ctx context.Context, b Batch) (Result, error) {
	if !isFormat(b.Format) {
		return Result{}, &FormatError{Format: b.Format}
	}
	// Checked before the batch is read: a bad id costs no upload.
	if b.BatchID != "" {
		if err := ValidateBatchID(b.BatchID); err != nil {
			return Result{}, err
		}
	}
	bk, err := in.buckets.Get(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	if _, _, err := store.Pipeline(ctx, bk.Pipelines, b.Pipeline); err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	src, err := in.open(ctx, b)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		if err := src.Close(); err != nil {
			bus.Logger(ctx).Warn("remove a batch's temporary file", "error", err)
		}
	}()
	digest := src.sha256
	if b.BatchID == "" {
		b.BatchID = digest[:16]
	}
	res := Result{Pipeline: b.Pipeline, BatchID: b.BatchID, Sha256: digest, Bytes: src.size}
	log := bus.Logger(ctx).With("pipeline", b.Pipeline, "batchId", b.BatchID, "sha256", digest)

	// A content already announced is a duplicate: say so before parsing it again.
	key := store.IngestKey(b.Pipeline, digest)
	if rec, _, found, err := store.GetJSON[record](ctx, bk.State, key); err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	} else if found && rec.Emitted {
		return in.duplicate(ctx, res, rec), nil
	}

	t, err := scan(b.Format, src.r, src.size)
	if err != nil {
		return Result{}, fmt.Errorf("ingest batch %q of pipeline %s: %w", b.BatchID, b.Pipeline, err)
	}
	res.Rows, res.Columns = t.Rows, t.Columns

	if err := in.claimID(ctx, bk.State, b.Pipeline, b.BatchID, digest); err != nil {
		return Result{}, err
	}
	objectKey := b.Pipeline + "/" + digest + "." + b.Format
	ref, err := in.putObject(ctx, bk.Batches, objectKey, MediaType(b.Format), src)
	if err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	res.Object = ref

	// The first arrival of a content claims it; its batch id is the batch's.
	eventID := bus.StableID(events.DataBatchReceived, b.Pipeline, digest)
	rec, err := store.UpdateJSON(ctx, bk.State, key, func(r *record, exists bool) error {
		if exists {
			return store.ErrNoChange
		}
		*r = record{
			BatchID: b.BatchID, ObjectKey: objectKey, Rows: res.Rows, Bytes: res.Bytes, Format: b.Format,
			Sha256: digest, ArrivalID: b.ArrivalID, EventID: eventID, At: time.Now().UTC(),
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	if rec.Emitted {
		return in.duplicate(ctx, res, rec), nil
	}
	// Not announced yet: this is the first arrival (or its redelivery), or
	// another arrival of the same content overtook one that has not
	// announced it. Either way announce it, as the first arrival: the id is
	// the same, so JetStream stores the announcement once.
	res.Duplicate = rec.ArrivalID != b.ArrivalID
	res.BatchID, res.EventID = rec.BatchID, rec.EventID
	ev, err := events.New("/gyre/"+Name, b.Pipeline, &gyrev1.DataBatchReceived{
		Pipeline: b.Pipeline, BatchId: rec.BatchID, Object: ref, Sha256: digest, Rows: res.Rows,
		Bytes: res.Bytes, Format: b.Format, Labels: b.Labels, Columns: t.Columns, SourceUri: b.URI,
	})
	if err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	ev.SetID(rec.EventID)
	if err := in.pub.Publish(ctx, ev); err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	if _, err := store.UpdateJSON(ctx, bk.State, key, func(r *record, _ bool) error {
		if r.Emitted {
			return store.ErrNoChange
		}
		r.Emitted = true
		return nil
	}); err != nil {
		return Result{}, fmt.Errorf("ingest: %w", err)
	}
	log.Info("batch received", "rows", res.Rows, "bytes", res.Bytes, "object", objectKey, "duplicate", res.Duplicate)
	return res, nil
}

// duplicate is the result for a content received before: nothing is stored
// or emitted again.
func (in *Ingester) duplicate(ctx context.Context, res Result, rec record) Result {
	bus.Logger(ctx).Info("duplicate batch: this content was received already; nothing emitted",
		"pipeline", res.Pipeline, "batchId", res.BatchID, "firstBatchId", rec.BatchID, "sha256", res.Sha256)
	res.Duplicate = true
	res.BatchID, res.Rows, res.EventID = rec.BatchID, rec.Rows, rec.EventID
	return res
}

// claimID binds a batch id to its content, so that one id never names two
// different batches.
func (in *Ingester) claimID(ctx context.Context, kv jetstream.KeyValue, pipeline, batchID, digest string) error {
	claim, err := store.UpdateJSON(ctx, kv, store.IngestIDKey(pipeline, batchID), func(c *idClaim, exists bool) error {
		if exists {
			return store.ErrNoChange
		}
		c.Sha256 = digest
		return nil
	})
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if claim.Sha256 != digest {
		return &ConflictError{BatchID: batchID, Sha256: digest, ExistingSha256: claim.Sha256}
	}
	return nil
}

// open reads the batch once — inline content as it is, anything else into
// a temporary file (spool) — refusing more than the size limit, before
// reading it where the size is known.
func (in *Ingester) open(ctx context.Context, b Batch) (*spooled, error) {
	given := 0
	for _, set := range []bool{len(b.Content) > 0, b.URI != "", b.Body != nil} {
		if set {
			given++
		}
	}
	switch {
	case given > 1:
		return nil, &events.ValidationError{Field: "content", Reason: "set together with uri; give exactly one of uri and content"}
	case b.Body != nil:
		return in.spool(b.Body, func(err error) error { return &UploadError{Err: err} })
	case b.URI == "":
		if int64(len(b.Content)) > in.maxBytes {
			return nil, &TooLargeError{Size: int64(len(b.Content)), Limit: in.maxBytes}
		}
		return inMemory(b.Content), nil
	case strings.HasPrefix(b.URI, events.ObjectURIScheme+"://"):
		return in.readObject(ctx, b.URI)
	default:
		return in.readFile(b.URI)
	}
}

// readFailed wraps a read error of a batch's URI: transient (the store or
// the disk may answer next time).
func readFailed(uri string) func(error) error {
	return func(err error) error { return fmt.Errorf("read batch from %s: %w", uri, err) }
}

func (in *Ingester) readFile(uri string) (*spooled, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" || !strings.HasPrefix(u.Path, "/") {
		return nil, &SourceError{URI: uri, Reason: "not a file:///abs/path or nats-object://BUCKET/KEY URI"}
	}
	path, err := in.underFileRoot(uri, u.Path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &SourceError{URI: uri, Reason: "cannot open the file", Err: err}
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		if !fi.Mode().IsRegular() {
			return nil, &SourceError{URI: uri, Reason: "not a regular file"}
		}
		if fi.Size() > in.maxBytes {
			return nil, &TooLargeError{Size: fi.Size(), Limit: in.maxBytes}
		}
	}
	// Spooled, not read in place: the file may change while it is parsed
	// and stored, and the stored bytes must be the ones hashed.
	return in.spool(f, readFailed(uri))
}

// underFileRoot resolves a file:// path (symbolic links included) and
// refuses it unless it lies under the configured root.
func (in *Ingester) underFileRoot(uri, path string) (string, error) {
	if in.fileRoot == "" {
		return "", &SourceError{URI: uri, Reason: "file:// URIs are refused: this ingest has no --file-root; set it to the directory producers may name, or send the batch inline or as nats-object://"}
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(path))
	if err != nil {
		return "", &SourceError{URI: uri, Reason: "cannot open the file", Err: err}
	}
	rel, err := filepath.Rel(in.fileRoot, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", &SourceError{URI: uri, Reason: fmt.Sprintf("the file is outside --file-root %s", in.fileRoot)}
	}
	return real, nil
}

func (in *Ingester) readObject(ctx context.Context, uri string) (*spooled, error) {
	bucket, key, err := events.ParseObjectURI(uri)
	if err != nil {
		return nil, &SourceError{URI: uri, Reason: "not a nats-object://BUCKET/KEY URI", Err: err}
	}
	obs, err := in.objects.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, &SourceError{URI: uri, Reason: fmt.Sprintf("object store bucket %q does not exist", bucket)}
	}
	if err != nil {
		return nil, fmt.Errorf("read batch from %s: %w", uri, err)
	}
	info, err := obs.GetInfo(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, &SourceError{URI: uri, Reason: fmt.Sprintf("no object %q in bucket %q", key, bucket)}
	}
	if err != nil {
		return nil, fmt.Errorf("read batch from %s: %w", uri, err)
	}
	if int64(info.Size) > in.maxBytes {
		return nil, &TooLargeError{Size: int64(info.Size), Limit: in.maxBytes}
	}
	r, err := obs.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read batch from %s: %w", uri, err)
	}
	defer r.Close()
	return in.spool(r, readFailed(uri))
}

func isFormat(f string) bool {
	for _, x := range table.Formats() {
		if f == x {
			return true
		}
	}
	return false
}

// MaxBatchIDLen is the longest batch id (events.MaxBatchIDLen).
const MaxBatchIDLen = events.MaxBatchIDLen

// ValidateBatchID checks a batch id, from an upload or an event: 1 to
// MaxBatchIDLen characters among letters, digits and . _ - : + (a name, a
// sequence number, an RFC 3339 time), starting with a letter or a digit.
// Batch ids end up in object keys, state keys and file names downstream, so
// a path separator, a "..", white space or a control character is refused.
func ValidateBatchID(id string) error {
	switch {
	case id == "":
		return &events.ValidationError{Field: "batchId", Reason: "empty"}
	case len(id) > MaxBatchIDLen:
		return &events.ValidationError{Field: "batchId", Reason: fmt.Sprintf("%d characters long, at most %d allowed", len(id), MaxBatchIDLen)}
	case !isAlnum(id[0]):
		return &events.ValidationError{Field: "batchId", Reason: fmt.Sprintf("%q must start with a letter or a digit", id)}
	case strings.Contains(id, ".."):
		return &events.ValidationError{Field: "batchId", Reason: fmt.Sprintf("%q contains \"..\"", id)}
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if isAlnum(c) || strings.IndexByte("._-:+", c) >= 0 {
			continue
		}
		return &events.ValidationError{Field: "batchId", Reason: fmt.Sprintf("%q has %q at position %d; only letters, digits and . _ - : + are allowed", id, rune(c), i+1)}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
