package validation

import (
	"errors"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// The quarantine routes read what validation kept out of batches: the same
// answers as `gyre data rejected`, which reads the buckets directly.
const (
	RejectedRoute      = "GET /v1/pipelines/{pipeline}/rejected"
	RejectedBatchRoute = "GET /v1/pipelines/{pipeline}/rejected/{batch}"
)

// serveRejected answers the list of a pipeline's batches with something
// kept out (QuarantineList).
func (s *Service) serveRejected(w http.ResponseWriter, r *http.Request) {
	pipeline := r.PathValue("pipeline")
	if err := events.ValidatePipeline(pipeline); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	bk, err := s.validator.buckets.Get(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	list, err := Quarantines(r.Context(), bk.State, pipeline)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, list)
}

// serveRejectedBatch answers one batch's quarantine with every reason
// (Quarantine); 404 when nothing was kept out of it.
func (s *Service) serveRejectedBatch(w http.ResponseWriter, r *http.Request) {
	pipeline, batch := r.PathValue("pipeline"), r.PathValue("batch")
	if err := events.ValidatePipeline(pipeline); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if batch == "" {
		writeError(w, http.StatusBadRequest, errors.New("batch: empty; name a batch id"))
		return
	}
	bk, err := s.validator.buckets.Get(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	q, err := QuarantineOf(r.Context(), bk.State, bk.Batches, pipeline, batch)
	switch {
	case store.IsNotFound(err):
		writeError(w, http.StatusNotFound, err)
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err)
	default:
		service.WriteJSON(w, http.StatusOK, q)
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	service.WriteJSON(w, code, map[string]string{"error": err.Error()})
}
