package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gyrehq/gyre/libs/httpauth"
)

// HTTP list limits: a read token must not be able to make the server
// marshal the whole stream in one response.
const (
	DefaultHTTPLimit = 100
	MaxHTTPLimit     = 1000
)

// httpTimeout bounds one request's work on NATS.
const httpTimeout = 30 * time.Second

// Mount adds the dead-letter API to mux, each route guarded by auth:
//
//	GET  /v1/dlq                dead letters, oldest first (read): query service,
//	                            reason, kind, pipeline, since, until (30m or RFC 3339),
//	                            limit (the newest; default 100, at most 1000)
//	GET  /v1/dlq/{seq}          one, with its headers and body (read)
//	POST /v1/dlq/{seq}/redrive  republish it to its original subject (admin):
//	                            query again=true for one more attempt, dryRun=true
//
// js must be the admin's: a redrive publishes to any subject. A bad
// parameter is a 400 naming it.
func Mount(mux *http.ServeMux, js jetstream.JetStream, auth *httpauth.Authenticator) {
	a := api{js: js}
	mux.Handle("GET /v1/dlq", auth.Require(httpauth.ScopeRead, http.HandlerFunc(a.list)))
	mux.Handle("GET /v1/dlq/{seq}", auth.Require(httpauth.ScopeRead, http.HandlerFunc(a.get)))
	mux.Handle("POST /v1/dlq/{seq}/redrive", auth.Require(httpauth.ScopeAdmin, http.HandlerFunc(a.redrive)))
}

type api struct{ js jetstream.JetStream }

func (a api) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := ParseFilter(q, time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if f.Limit == 0 {
		f.Limit = DefaultHTTPLimit
	}
	if f.Limit > MaxHTTPLimit {
		writeError(w, http.StatusBadRequest, &FilterError{Field: "limit", Value: q.Get("limit"), Err: fmt.Errorf("at most %d", MaxHTTPLimit)})
		return
	}
	ctx, cancel, ok := a.context(w, r)
	if !ok {
		return
	}
	defer cancel()
	page, err := List(ctx, a.js, f)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func (a api) get(w http.ResponseWriter, r *http.Request) {
	seq, ok := seqParam(w, r)
	if !ok {
		return
	}
	ctx, cancel, ok := a.context(w, r)
	if !ok {
		return
	}
	defer cancel()
	d, err := Get(ctx, a.js, seq)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, d.View())
}

func (a api) redrive(w http.ResponseWriter, r *http.Request) {
	seq, ok := seqParam(w, r)
	if !ok {
		return
	}
	var opts RedriveOptions
	for _, p := range []struct {
		name string
		dst  *bool
	}{{"again", &opts.Again}, {"dryRun", &opts.DryRun}} {
		if s := r.URL.Query().Get(p.name); s != "" {
			v, err := strconv.ParseBool(s)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("query parameter %s %q: want true or false", p.name, s))
				return
			}
			*p.dst = v
		}
	}
	ctx, cancel, ok := a.context(w, r)
	if !ok {
		return
	}
	defer cancel()
	rec, err := Redrive(ctx, a.js, seq, opts)
	if errors.Is(err, ErrAlreadyRedriven) {
		writeJSON(w, http.StatusConflict, map[string]any{
			"error":    err.Error() + "; POST with ?again=true to redrive it once more",
			"redriven": rec,
		})
		return
	}
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// context is the request's, bounded; ok is false (and 503 answered) when
// there is no NATS connection.
func (a api) context(w http.ResponseWriter, r *http.Request) (context.Context, context.CancelFunc, bool) {
	if a.js == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("no NATS connection"))
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), httpTimeout)
	return ctx, cancel, true
}

func seqParam(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	s := r.PathValue("seq")
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq == 0 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("seq %q: want a dead letter's sequence in GYRE_DLQ, a positive integer (GET /v1/dlq lists them)", s))
		return 0, false
	}
	return seq, true
}

// statusOf is the status of an error of this package: 400 a bad filter, 404
// no such dead letter, 422 one that cannot be redriven, 503 the rest (NATS
// is not reachable now).
func statusOf(err error) int {
	var fe *FilterError
	switch {
	case errors.As(err, &fe):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNotRedrivable):
		return http.StatusUnprocessableEntity
	}
	return http.StatusServiceUnavailable
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
