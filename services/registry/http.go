package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gyrehq/gyre/events"
	"github.com/gyrehq/gyre/libs/bus"
	"github.com/gyrehq/gyre/libs/httpauth"
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

// MaxModelBytes bounds the file of a model registered over HTTP.
const MaxModelBytes = 256 << 20

// Registered is the answer of POST /v1/pipelines/{pipeline}/models.
type Registered struct {
	Pipeline string         `json:"pipeline"`
	Version  models.Version `json:"version"`
	// Created is false when the same file under the same names was
	// registered before: Version is that registration's.
	Created bool `json:"created"`
	// Promoted is the move that made it champion, when the registration
	// asked for it and it was made.
	Promoted *models.Move `json:"promoted,omitempty"`
	// Stale: blessed, but judged against a champion since replaced, so not
	// promoted.
	Stale bool `json:"stale,omitempty"`
}

// serveRegister registers a model trained outside the loop: the body is
// its file; the query says its format (format=xgboost|gyre), where the
// names of its inputs come from (signature=model|schema, or
// inputs=a,b,c), its classes (classes=x,y), whether to skip the gates
// (skipGates=true), to promote it when blessed (promote=true), and for
// whom (for=user@host, recorded beside the credential).
func (s *Service) serveRegister(w http.ResponseWriter, r *http.Request) {
	pipeline := r.PathValue("pipeline")
	if err := events.ValidatePipeline(pipeline); err != nil {
		writeError(w, badRequest(err))
		return
	}
	q := r.URL.Query()
	u := Upload{Pipeline: pipeline, Format: q.Get("format"), From: q.Get("signature"), For: q.Get("for"),
		Inputs: splitList(q.Get("inputs")), Classes: splitList(q.Get("classes"))}
	if u.Format == "" {
		writeError(w, badRequest(errors.New("format is required: ?format=xgboost or ?format=gyre")))
		return
	}
	for name, dst := range map[string]*bool{"skipGates": &u.SkipGates, "promote": &u.Promote} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeError(w, badRequest(fmt.Errorf("%s=%q: want true or false", name, v)))
				return
			}
			*dst = b
		}
	}
	if p, ok := httpauth.PrincipalFrom(r.Context()); ok {
		u.By = p.String()
		if p.Name != "" {
			u.By += " (" + p.Name + ")"
		}
	}
	if r.ContentLength > MaxModelBytes {
		service.WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the model is %d bytes, at most %d are taken", r.ContentLength, MaxModelBytes)})
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxModelBytes+1))
	if err != nil {
		writeError(w, badRequest(fmt.Errorf("read the model: %w", err)))
		return
	}
	if len(data) > MaxModelBytes {
		service.WriteJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the model is over %d bytes", MaxModelBytes)})
		return
	}
	u.Data = data
	b, err := s.buckets.Get(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	reg, err := s.registrar(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := reg.RegisterOutside(r.Context(), b, u)
	if err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if res.Created {
		code = http.StatusCreated
	}
	service.WriteJSON(w, code, Registered{Pipeline: pipeline, Version: res.Version, Created: res.Created, Promoted: res.Promoted, Stale: res.Stale})
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
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
// to or a registration whose gates cannot run, 503 for the rest (the
// bucket or the bus is not reachable now).
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	var bad *badRequestError
	switch {
	case errors.As(err, &bad):
		code = http.StatusBadRequest
	case store.IsNotFound(err):
		code = http.StatusNotFound
	case errors.Is(err, ErrNoPrevious), errors.Is(err, ErrCannotEvaluate):
		code = http.StatusConflict
	case bus.IsPermanent(err):
		code = http.StatusUnprocessableEntity
	}
	service.WriteJSON(w, code, map[string]string{"error": err.Error()})
}
