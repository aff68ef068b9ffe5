package ingest

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
	"github.com/gyrehq/gyre/libs/table"
)

// batchArrived is the port of data.batch.arrived: it decodes the event into
// a Batch and ingests it. Every error of a bad event is permanent, so the bus
// dead-letters it with the reason.
func (s *Service) batchArrived(ctx context.Context, ev event.Event) error {
	var msg gyrev1.DataBatchArrived
	if err := events.Decode(ev, &msg); err != nil {
		return err
	}
	if err := events.Validate(&msg); err != nil {
		return fmt.Errorf("data.batch.arrived %s: %w", ev.ID(), err)
	}
	_, err := s.ingester.Ingest(ctx, Batch{
		Pipeline: msg.GetPipeline(), BatchID: msg.GetBatchId(), Format: msg.GetFormat(),
		Content: msg.GetContent(), URI: msg.GetUri(), Labels: msg.GetLabels(), ArrivalID: ev.ID(),
	})
	return err
}

// uploadResponse is the reply to POST /v1/pipelines/{pipeline}/batches.
type uploadResponse struct {
	Pipeline  string `json:"pipeline"`
	BatchID   string `json:"batchId"`
	Sha256    string `json:"sha256"`
	Rows      int64  `json:"rows"`
	Bytes     int64  `json:"bytes"`
	Duplicate bool   `json:"duplicate"`
}

// serveUpload is the HTTP port: POST /v1/pipelines/{pipeline}/batches with
// the batch as the body. It runs the same code as the event handler and
// answers 202 once the batch is stored and announced. The body is streamed
// to a temporary file, never held in memory; the uploads in progress are
// capped in number and in bytes (429 with Retry-After beyond).
func (s *Service) serveUpload(w http.ResponseWriter, r *http.Request) {
	format, err := requestFormat(r)
	if err != nil {
		writeError(w, http.StatusUnsupportedMediaType, err)
		return
	}
	batchID := r.URL.Query().Get("batchId")
	if batchID != "" {
		if err := ValidateBatchID(batchID); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	limit := int64(s.cfg.MaxBatchBytes)
	if r.ContentLength > limit {
		s.uploads.refused.WithLabelValues("too_large").Inc()
		// Not read: close rather than drain it.
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestEntityTooLarge, &TooLargeError{Size: r.ContentLength, Limit: limit})
		return
	}
	reserve := r.ContentLength
	if reserve < 0 { // chunked: as much as it may grow to
		reserve = limit
	}
	release, err := s.uploads.acquire(reserve)
	if err != nil {
		s.uploads.refused.WithLabelValues("busy").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		writeError(w, http.StatusTooManyRequests, err)
		return
	}
	defer release()
	// The request is the start of a cascade: what it emits has no cause.
	ctx := bus.WithLogger(r.Context(), s.rt.Logger().With("route", UploadRoute))
	res, err := s.ingester.Ingest(ctx, Batch{
		Pipeline: r.PathValue("pipeline"), BatchID: batchID, Format: format,
		Body: r.Body, ArrivalID: uuid.NewString(),
	})
	if err != nil {
		code := statusOf(err)
		switch code {
		case http.StatusRequestEntityTooLarge:
			s.uploads.refused.WithLabelValues("too_large").Inc()
			w.Header().Set("Connection", "close")
		case http.StatusRequestTimeout:
			s.uploads.refused.WithLabelValues("slow_body").Inc()
		}
		if code >= 500 {
			s.rt.Logger().Error("batch upload failed", "pipeline", r.PathValue("pipeline"), "error", err)
		}
		writeError(w, code, err)
		return
	}
	service.WriteJSON(w, http.StatusAccepted, uploadResponse{
		Pipeline: res.Pipeline, BatchID: res.BatchID, Sha256: res.Sha256, Rows: res.Rows, Bytes: res.Bytes, Duplicate: res.Duplicate,
	})
}

// retryAfterSeconds is the Retry-After of a 429: about the time a large
// upload in progress takes to finish on loopback.
const retryAfterSeconds = 2

// mediaFormats maps the media types an upload may declare to batch formats.
var mediaFormats = map[string]string{
	"text/csv":                       table.FormatCSV,
	"application/csv":                table.FormatCSV,
	"application/x-ndjson":           table.FormatJSONL,
	"application/jsonl":              table.FormatJSONL,
	"application/x-jsonlines":        table.FormatJSONL,
	"application/vnd.apache.parquet": table.FormatParquet,
	"application/x-parquet":          table.FormatParquet,
}

// requestFormat is ?format=, else the format of the Content-Type.
func requestFormat(r *http.Request) (string, error) {
	if f := r.URL.Query().Get("format"); f != "" {
		if !isFormat(f) {
			return "", &FormatError{Format: f}
		}
		return f, nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", errors.New("no format: pass ?format=csv|jsonl|parquet or a Content-Type of text/csv, application/x-ndjson (or application/jsonl) or application/vnd.apache.parquet")
	}
	media, _, err := mime.ParseMediaType(ct)
	if err == nil {
		if f, ok := mediaFormats[strings.ToLower(media)]; ok {
			return f, nil
		}
	}
	return "", fmt.Errorf("Content-Type %q is not a batch format: send text/csv, application/x-ndjson (or application/jsonl) or application/vnd.apache.parquet, or pass ?format=", ct)
}

// statusOf maps an ingest error to the HTTP status that names its kind.
func statusOf(err error) int {
	var (
		tooLarge *TooLargeError
		format   *FormatError
		conflict *ConflictError
		tableErr *table.Error
		upload   *UploadError
	)
	switch {
	case errors.As(err, &upload):
		if errors.Is(err, service.ErrBodyTooSlow) {
			return http.StatusRequestTimeout
		}
		return http.StatusBadRequest
	case store.IsNotFound(err):
		return http.StatusNotFound
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.As(err, &format):
		return http.StatusUnsupportedMediaType
	case errors.As(err, &conflict):
		return http.StatusConflict
	case errors.As(err, &tableErr):
		return http.StatusBadRequest
	case bus.IsPermanent(err):
		return http.StatusBadRequest
	default:
		// Storage or NATS trouble: the same upload may succeed later.
		return http.StatusServiceUnavailable
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	service.WriteJSON(w, code, map[string]string{"error": err.Error()})
}
