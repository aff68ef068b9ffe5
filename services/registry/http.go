package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/models"
	"github.com/gyrehq/gyre/libs/service"
	"github.com/gyrehq/gyre/libs/store"
)

// The HTTP handlers are the registry's client port: they decode the request
// into a typed call of the Registrar and write its answer as JSON, errors
// as {"error": "..."}.

// maxBody bounds a request body.
const maxBody = 1 << 16

func (s *Service) serveModels(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	service.WriteJSON(w, http.StatusOK, List(rec))
}

func (s *Service) serveModel(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	v, err := Resolve(rec, r.PathValue("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, v)
}

func (s *Service) serveLineage(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.record(w, r)
	if !ok {
		return
	}
	v, err := Resolve(rec, r.URL.Query().Get("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, Lineage(rec, v))
}

// promoteRequest is the body of POST .../promote.
type promoteRequest struct {
	Version int64 `json:"version"`
}

func (s *Service) servePromote(w http.ResponseWriter, r *http.Request) {
	pipeline := r.PathValue("pipeline")
	if err := events.ValidatePipeline(pipeline); err != nil {
		writeError(w, badRequest(err))
		return
	}
	var req promoteRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeError(w, badRequest(err))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, badRequest(fmt.Errorf(`body: want {"version": N}: %w`, err)))
		return
	}
	if req.Version < 1 {
		writeError(w, badRequest(errors.New(`body: "version" must be a version number (1, 2, …)`)))
		return
	}
	reg, err := s.registrar(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	p, err := reg.Promote(r.Context(), pipeline, req.Version)
	if err != nil {
		writeError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, p)
}

func (s *Service) serveRollback(w http.ResponseWriter, r *http.Request) {
	pipeline := r.PathValue("pipeline")
	if err := events.ValidatePipeline(pipeline); err != nil {
		writeError(w, badRequest(err))
		return
	}
	reg, err := s.registrar(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	p, err := reg.Rollback(r.Context(), pipeline, "POST /v1/pipelines/"+pipeline+"/rollback")
	if err != nil {
		writeError(w, err)
		return
	}
	service.WriteJSON(w, http.StatusOK, p)
}

// record reads the record of the request's pipeline, answering the error
// itself when it cannot.
func (s *Service) record(w http.ResponseWriter, r *http.Request) (*models.Registry, bool) {
	pipeline := r.PathValue("pipeline")
	if err := events.ValidatePipeline(pipeline); err != nil {
		writeError(w, badRequest(err))
		return nil, false
	}
	reg, err := s.registrar(r.Context())
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	rec, err := reg.Get(r.Context(), pipeline)
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	return rec, true
}

// badRequestError is a client mistake.
type badRequestError struct{ err error }

func (e *badRequestError) Error() string { return e.err.Error() }
func (e *badRequestError) Unwrap() error { return e.err }

func badRequest(err error) error { return &badRequestError{err: err} }

// writeError answers an error with its status: 400 for a bad request, 404
// for what does not exist, 409 for a rollback with nothing to roll back
// to, 503 for the rest (the bucket or the bus is not reachable now).
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	var bad *badRequestError
	switch {
	case errors.As(err, &bad):
		code = http.StatusBadRequest
	case store.IsNotFound(err):
		code = http.StatusNotFound
	case errors.Is(err, ErrNoPrevious):
		code = http.StatusConflict
	case bus.IsPermanent(err):
		code = http.StatusUnprocessableEntity
	}
	service.WriteJSON(w, code, map[string]string{"error": err.Error()})
}
