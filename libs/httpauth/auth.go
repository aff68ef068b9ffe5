package httpauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Mode says whether protected routes need credentials.
type Mode string

// Modes.
const (
	// ModeRequired: every route but the Public ones needs a credential with
	// its scope. The default.
	ModeRequired Mode = "required"
	// ModeNone turns authentication off: anyone who can reach the port may
	// do anything. For local tests only.
	ModeNone Mode = "none"
)

// ParseMode parses required or none.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeRequired, ModeNone:
		return m, nil
	}
	return "", fmt.Errorf("is not an authentication mode (want %s or %s)", ModeRequired, ModeNone)
}

// Config configures an Authenticator.
type Config struct {
	// Mode is required (default when empty) or none.
	Mode Mode
	// TokenFile is the token file; empty accepts no Gyre token.
	TokenFile string
	// JWT configures JWT verification; nil accepts no JWT.
	JWT *JWTConfig
	// CheckInterval is how often the token file is looked at for changes;
	// 0: DefaultCheckInterval; negative: on every request (tests).
	CheckInterval time.Duration
	// Unconfigured is the message of the 401 answered when the mode is
	// required and there is no token file and no JWT: it should say how to
	// configure one.
	Unconfigured string
	// Logger receives refusals (never a token) and token file reloads; nil:
	// slog.Default().
	Logger *slog.Logger
}

// DefaultUnconfigured is the message of the 401 answered when no
// credential source is configured and Config.Unconfigured is empty.
const DefaultUnconfigured = "this service accepts no credentials yet: it has no token file and no JWKS. " +
	"Create a token with `gyre auth token create --scopes SCOPES`, and give the service its token file"

// Authenticator checks the credentials of requests. It is safe for
// concurrent use; a nil *Authenticator refuses every protected route, as a
// required mode with no credential source does.
type Authenticator struct {
	mode         Mode
	tokens       *TokenStore
	jwt          *JWTVerifier
	unconfigured string
	logger       *slog.Logger
}

// New returns the Authenticator of c: it reads the token file (which must
// exist and parse) and starts the JWT key set's refresh. Close it when done.
func New(c Config) (*Authenticator, error) {
	mode := c.Mode
	if mode == "" {
		mode = ModeRequired
	}
	if _, err := ParseMode(string(mode)); err != nil {
		return nil, fmt.Errorf("auth mode %q %w", mode, err)
	}
	a := &Authenticator{mode: mode, unconfigured: c.Unconfigured, logger: c.Logger}
	if a.unconfigured == "" {
		a.unconfigured = DefaultUnconfigured
	}
	if a.logger == nil {
		a.logger = slog.Default()
	}
	if mode == ModeNone {
		return a, nil
	}
	if c.TokenFile != "" {
		every := c.CheckInterval
		switch {
		case every == 0:
			every = DefaultCheckInterval
		case every < 0:
			every = 0
		}
		path := c.TokenFile
		ts, err := OpenTokenStore(path, every, func(n int, err error) {
			if err != nil {
				a.logger.Error("token file refused: every token is refused until it is fixed", "file", path, "error", err)
				return
			}
			a.logger.Info("token file reloaded", "file", path, "tokens", n)
		})
		if err != nil {
			return nil, err
		}
		a.tokens = ts
	}
	if c.JWT != nil {
		jc := *c.JWT
		if jc.Logger == nil {
			jc.Logger = a.logger
		}
		v, err := NewJWTVerifier(jc)
		if err != nil {
			return nil, err
		}
		a.jwt = v
	}
	return a, nil
}

// Close stops the JWT key set's refresh.
func (a *Authenticator) Close() {
	if a != nil && a.jwt != nil {
		a.jwt.Close()
	}
}

// Mode returns the authentication mode.
func (a *Authenticator) Mode() Mode {
	if a == nil {
		return ModeRequired
	}
	return a.mode
}

// Configured reports whether a credential can ever pass: authentication is
// off, or a token file or a JWT key set is configured.
func (a *Authenticator) Configured() bool {
	return a != nil && (a.mode == ModeNone || a.tokens != nil || a.jwt != nil)
}

// Error is a refused request: 401 (no usable credentials), 403 (the wrong
// scope) or 503 (credentials cannot be checked now).
type Error struct {
	Status int
	// Code is the RFC 6750 error code: invalid_request, invalid_token,
	// insufficient_scope; empty when no credentials were sent.
	Code    string
	Message string
	// Required and Granted are the scope the route needs and those the
	// credential holds, for a 403.
	Required Scope
	Granted  []Scope
}

func (e *Error) Error() string { return e.Message }

// Authenticate returns the principal of a request's credentials: the
// Authorization: Bearer header, or, when allowQuery, the access_token query
// parameter (for browsers' EventSource, which cannot send headers). The
// error is an *Error. With authentication off, every request is an
// anonymous principal holding every scope.
func (a *Authenticator) Authenticate(r *http.Request, allowQuery bool) (Principal, error) {
	if a != nil && a.mode == ModeNone {
		return Principal{Kind: KindAnonymous, Scopes: []Scope{ScopeAdmin}}, nil
	}
	token, err := bearer(r, allowQuery)
	if err != nil {
		return Principal{}, err
	}
	if !a.Configured() {
		return Principal{}, &Error{Status: 401, Code: "invalid_token", Message: a.unconfiguredMessage()}
	}
	if token == "" {
		return Principal{}, &Error{Status: 401, Message: "no credentials: send the header Authorization: Bearer <token>"}
	}
	switch {
	case strings.HasPrefix(token, TokenPrefix):
		if a.tokens == nil {
			return Principal{}, &Error{Status: 401, Code: "invalid_token", Message: "this service takes no Gyre tokens (it has no token file); send a JWT"}
		}
		return a.tokens.Authenticate(token)
	case strings.Count(token, ".") == 2:
		if a.jwt == nil {
			return Principal{}, &Error{Status: 401, Code: "invalid_token", Message: "this service takes no JWTs (it has no JWKS URL); send a Gyre token (gyre_…)"}
		}
		return a.jwt.Authenticate(r.Context(), token)
	}
	return Principal{}, &Error{Status: 401, Code: "invalid_token", Message: "the bearer token is neither a Gyre token (gyre_…) nor a JWT"}
}

func (a *Authenticator) unconfiguredMessage() string {
	if a == nil || a.unconfigured == "" {
		return DefaultUnconfigured
	}
	return a.unconfigured
}

// bearer returns the request's bearer token, "" when there is none.
func bearer(r *http.Request, allowQuery bool) (string, error) {
	values := r.Header.Values("Authorization")
	switch {
	case len(values) > 1:
		return "", &Error{Status: 401, Code: "invalid_request", Message: "more than one Authorization header"}
	case len(values) == 1:
		scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", &Error{Status: 401, Code: "invalid_request", Message: "the Authorization header is not Bearer <token>"}
		}
		token = strings.TrimSpace(token)
		if token == "" {
			return "", &Error{Status: 401, Code: "invalid_request", Message: "the Authorization header has an empty bearer token"}
		}
		return token, nil
	}
	if allowQuery {
		return r.URL.Query().Get("access_token"), nil
	}
	return "", nil
}

// RequireOption configures Require.
type RequireOption func(*requireOptions)

type requireOptions struct {
	queryToken bool
}

// WithQueryToken also accepts the token as the access_token query
// parameter (RFC 6750 §2.3), for a route a browser's EventSource reads. The
// parameter is removed from the request before the handler sees it, so
// that it does not reach logs.
func WithQueryToken() RequireOption {
	return func(o *requireOptions) { o.queryToken = true }
}

// Require returns next guarded by scope: a request without a credential
// holding it (or admin) is refused with 401 or 403 and a JSON body saying
// why. The principal is in the handler's request context (PrincipalFrom).
// A Public route is served to anyone.
func (a *Authenticator) Require(scope Scope, next http.Handler, opts ...RequireOption) http.Handler {
	if scope == Public {
		return next
	}
	var o requireOptions
	for _, opt := range opts {
		opt(&o)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r, o.queryToken)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Status: 503, Message: err.Error()}
			}
			a.refused(r, p, e)
			WriteError(w, e)
			return
		}
		if !p.Has(scope) {
			need := string(scope)
			if scope != ScopeAdmin {
				need += " (or admin)"
			}
			e := &Error{Status: 403, Code: "insufficient_scope", Required: scope, Granted: p.Scopes,
				Message: fmt.Sprintf("%s %s needs scope %s; %s holds %s", r.Method, r.URL.Path, need, p, scopeList(p.Scopes))}
			a.refused(r, p, e)
			WriteError(w, e)
			return
		}
		if o.queryToken && r.URL.Query().Has("access_token") {
			r = r.Clone(r.Context())
			q := r.URL.Query()
			q.Del("access_token")
			r.URL.RawQuery = q.Encode()
			r.RequestURI = r.URL.RequestURI()
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// refused logs a refusal: who (never the token), what and why. A 401 is
// debug — scanners make many — a 403 is a known principal overstepping.
func (a *Authenticator) refused(r *http.Request, p Principal, e *Error) {
	logger := slog.Default()
	if a != nil {
		logger = a.logger
	}
	level := slog.LevelDebug
	switch {
	case e.Status == 403:
		level = slog.LevelInfo
	case e.Status >= 500:
		level = slog.LevelError
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", e.Status, "reason", e.Message, "remote", r.RemoteAddr}
	if p.Kind != "" {
		attrs = append(attrs, "principal", p.String())
	}
	logger.Log(r.Context(), level, "http request refused", attrs...)
}

// errorBody is the JSON of a refusal.
type errorBody struct {
	Error         string  `json:"error"`
	RequiredScope Scope   `json:"requiredScope,omitempty"`
	GrantedScopes []Scope `json:"grantedScopes,omitempty"`
}

// WriteError answers a refusal: the status, a WWW-Authenticate: Bearer
// challenge (RFC 6750) and {"error": "..."}.
func WriteError(w http.ResponseWriter, e *Error) {
	challenge := `Bearer realm="gyre"`
	if e.Code != "" {
		challenge += fmt.Sprintf(`, error="%s", error_description="%s"`, e.Code, quoteSafe(e.Message))
	}
	if e.Required != "" {
		challenge += fmt.Sprintf(`, scope="%s"`, e.Required)
	}
	if e.Status == 401 || e.Status == 403 {
		w.Header().Set("WWW-Authenticate", challenge)
	}
	body, _ := json.Marshal(errorBody{Error: e.Message, RequiredScope: e.Required, GrantedScopes: e.Granted})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if e.Status >= 500 {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(append(body, '\n'))
}

// quoteSafe keeps what may stand in an RFC 6750 quoted error_description:
// printable ASCII but '"' and '\'.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
