package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/store"
)

// spooled is a batch's bytes, read once from where they came and kept where
// they can be read again — to parse them, then to put them in the object
// store — without holding them in memory: inline content stays the slice it
// came as, anything else goes to a temporary file under os.TempDir ($TMPDIR,
// else /tmp: an emptyDir on Kubernetes, where the root file system is
// read-only).
type spooled struct {
	r      io.ReaderAt
	size   int64
	sha256 string
	// file is the temporary file; nil for inline content.
	file *os.File
	// unlinked is true when the file was removed as soon as it was made
	// (where the OS allows it), so that a crash leaves nothing behind.
	unlinked bool
}

func inMemory(b []byte) *spooled {
	sum := sha256.Sum256(b)
	return &spooled{r: bytes.NewReader(b), size: int64(len(b)), sha256: hex.EncodeToString(sum[:])}
}

// reader reads the batch from its start.
func (s *spooled) reader() io.Reader { return io.NewSectionReader(s.r, 0, s.size) }

// Close removes the temporary file.
func (s *spooled) Close() error {
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	if !s.unlinked {
		err = errors.Join(err, os.Remove(s.file.Name()))
	}
	return err
}

// copyBuffers are the buffers of spool copies, reused across batches.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// sourceReader remembers the error of the source it reads, to tell a source
// that failed (a client that went away) from a spool file that could not be
// written (a full disk).
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		s.err = err
	}
	return n, err
}

// spool copies src, up to the size limit, to a temporary file while
// hashing it. A source read error goes through wrapRead (it says whose
// fault it is); more than the limit is a *TooLargeError.
func (in *Ingester) spool(src io.Reader, wrapRead func(error) error) (_ *spooled, err error) {
	f, err := os.CreateTemp("", "gyre-ingest-*.batch")
	if err != nil {
		return nil, fmt.Errorf("ingest: spool the batch: %w", err)
	}
	s := &spooled{r: f, file: f, unlinked: os.Remove(f.Name()) == nil}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	h := sha256.New()
	sr := &sourceReader{r: src}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(sr, in.maxBytes+1), *buf)
	if sr.err != nil {
		return nil, wrapRead(sr.err)
	}
	if err != nil {
		return nil, fmt.Errorf("ingest: spool the batch to %s: %w", os.TempDir(), err)
	}
	if n > in.maxBytes {
		return nil, &TooLargeError{Limit: in.maxBytes}
	}
	s.size, s.sha256 = n, hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// maxConcurrentPuts bounds the object store puts in progress of an
// Ingester. A put streams up to 4000 chunks of 128 KiB ahead of the server's
// acknowledgements, and a server queues at most 128 MiB for a stream before
// it refuses publishes with 429 (nats-server's stream ingest queue): eight
// 200 MiB uploads putting at once overran it.
const maxConcurrentPuts = 2

// putRetries is how many times a put the server refused as too many
// requests is tried again, after 250 ms, 500 ms, 1 s, 2 s.
const putRetries = 4

// putObject stores a spooled batch in the object store under key, as
// store.PutObject does with a slice: content-addressed, so the same bytes
// already stored under key are not sent again. The put streams the file in
// chunks; a put the server refuses for now (429) is tried again from the
// start of the file.
func (in *Ingester) putObject(ctx context.Context, obs store.Objects, key, mediaType string, s *spooled) (*gyrev1.ObjectRef, error) {
	ref := &gyrev1.ObjectRef{
		Bucket: obs.Name, Key: key, Sha256: s.sha256, SizeBytes: s.size, MediaType: mediaType,
		Uri: events.ObjectURI(obs.Name, key),
	}
	if info, err := obs.GetInfo(ctx, key); err == nil && info.Headers.Get("Gyre-Sha256") == s.sha256 {
		return ref, nil
	}
	select {
	case in.puts <- struct{}{}:
		defer func() { <-in.puts }()
	case <-ctx.Done():
		return nil, fmt.Errorf("object store %s put %s: %w", ref.Bucket, key, ctx.Err())
	}
	meta := jetstream.ObjectMeta{Name: key, Headers: map[string][]string{"Gyre-Sha256": {s.sha256}, "Content-Type": {mediaType}}}
	delay := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		_, err := obs.Put(ctx, meta, s.reader())
		if err == nil {
			return ref, nil
		}
		if attempt == putRetries || !tooManyRequests(err) {
			return nil, fmt.Errorf("object store %s put %s: %w", ref.Bucket, key, err)
		}
		bus.Logger(ctx).Info("the object store refused the put for now; trying again", "key", key, "retryIn", delay.String(), "error", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, fmt.Errorf("object store %s put %s: %w (after %w)", ref.Bucket, key, ctx.Err(), err)
		}
		delay *= 2
	}
}

// tooManyRequests reports whether the server refused a publish because its
// queue for the stream is full: a refusal for now.
func tooManyRequests(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.Code == 429
}
