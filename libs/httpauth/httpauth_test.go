package httpauth_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/gyrehq/gyre/libs/httpauth"
)

const (
	issuer   = "https://idp.test"
	audience = "gyre"
)

// signer is a key of the test's identity provider.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func (s signer) sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, claims)
	tok.Header["kid"] = s.kid
	raw, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// provider is an identity provider: three keys (RS256, ES256, EdDSA) served
// as a JWKS by a local server, which counts its fetches.
type provider struct {
	rsa, ec, ed signer
	url         string
	fetches     atomic.Int64
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{
		rsa: signer{"rsa-1", jwt.SigningMethodRS256, rsaKey},
		ec:  signer{"ec-1", jwt.SigningMethodES256, ecKey},
		ed:  signer{"ed-1", jwt.SigningMethodEdDSA, edKey},
	}
	store := jwkset.NewMemoryStorage()
	for _, s := range []struct {
		signer
		alg jwkset.ALG
	}{{p.rsa, jwkset.AlgRS256}, {p.ec, jwkset.AlgES256}, {p.ed, jwkset.AlgEdDSA}} {
		jwk, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: s.alg, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.KeyWrite(context.Background(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	set, err := store.JSONPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL + "/jwks"
	return p
}

// claims returns valid claims with the given extra ones.
func claims(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"iss": issuer, "aud": audience, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// routes is a handler with one route per scope, and a public one, that
// answer 200 with the principal's kind and id.
func routes(a *httpauth.Authenticator) http.Handler {
	mux := http.NewServeMux()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := httpauth.PrincipalFrom(r.Context())
		_, _ = w.Write([]byte(p.String() + " " + r.URL.RawQuery))
	})
	for _, s := range httpauth.Scopes() {
		mux.Handle("/"+string(s), a.Require(s, ok))
	}
	mux.Handle("/public", a.Require(httpauth.Public, ok))
	mux.Handle("/feed", a.Require(httpauth.ScopeRead, ok, httpauth.WithQueryToken()))
	return mux
}

type response struct {
	code      int
	challenge string
	body      string
	err       struct {
		Error         string           `json:"error"`
		RequiredScope httpauth.Scope   `json:"requiredScope"`
		GrantedScopes []httpauth.Scope `json:"grantedScopes"`
	}
}

func call(t *testing.T, h http.Handler, path, authorization string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	r := response{code: rec.Code, challenge: rec.Header().Get("WWW-Authenticate"), body: rec.Body.String()}
	if rec.Code != http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &r.err); err != nil {
			t.Fatalf("%s: refusal body %q is not JSON: %v", path, rec.Body.String(), err)
		}
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: Content-Type %q", path, rec.Header().Get("Content-Type"))
		}
	}
	return r
}

// logBuffer is a JSON logger writing to a buffer, safe for the concurrent
// writes of parallel subtests.
type logBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newLogBuffer() *logBuffer { return &logBuffer{mu: make(chan struct{}, 1)} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// TestRequire: a request without credentials gets 401, with a credential
// of the wrong scope 403 naming the scope needed and those held, and with
// the right one (or admin) 200 — for Gyre tokens and for JWTs of each
// algorithm; a bad JWT gets 401 saying why. No token reaches the logs.
func TestRequire(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	secrets := map[string]string{}
	for _, tc := range []struct {
		name    string
		scopes  []httpauth.Scope
		expires time.Time
	}{
		{"read", []httpauth.Scope{httpauth.ScopeRead}, time.Time{}},
		{"ingest", []httpauth.Scope{httpauth.ScopeIngest}, time.Time{}},
		{"infer+read", []httpauth.Scope{httpauth.ScopeInfer, httpauth.ScopeRead}, time.Time{}},
		{"admin", []httpauth.Scope{httpauth.ScopeAdmin}, time.Time{}},
		{"expired", []httpauth.Scope{httpauth.ScopeAdmin}, time.Now().Add(-time.Minute)},
	} {
		secret, _, err := httpauth.CreateToken(file, tc.name, tc.scopes, tc.expires)
		if err != nil {
			t.Fatal(err)
		}
		secrets[tc.name] = secret
	}
	idp := newProvider(t)
	logs := newLogBuffer()
	a, err := httpauth.New(httpauth.Config{
		TokenFile: file,
		JWT:       &httpauth.JWTConfig{JWKSURL: idp.url, Issuer: issuer, Audience: audience},
		Logger:    slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	h := routes(a)

	// A key the provider does not publish, under a published kid.
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged := signer{idp.rsa.kid, jwt.SigningMethodRS256, otherKey}
	hmac := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(jwt.MapClaims{"scope": "admin"}))
	hmacRaw, err := hmac.SignedString([]byte("a shared secret"))
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(jwt.MapClaims{"scope": "admin"})).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(s string) string { return "Bearer " + s }
	jwtRead := idp.rsa.sign(t, claims(jwt.MapClaims{"scope": "openid read ingest"}))
	jwtInfer := idp.ec.sign(t, claims(jwt.MapClaims{"scp": []string{"infer"}}))
	jwtAdmin := idp.ed.sign(t, claims(jwt.MapClaims{"scp": "admin"}))
	jwtNoScope := idp.rsa.sign(t, claims(jwt.MapClaims{"scope": "openid profile"}))

	tests := []struct {
		name     string
		path     string
		auth     string
		code     int
		want     string // in the error (or the 200 body)
		required httpauth.Scope
		granted  []httpauth.Scope
	}{
		{"no credentials", "/read", "", 401, "no credentials", "", nil},
		{"public route, no credentials", "/public", "", 200, "", "", nil},
		{"basic auth", "/read", "Basic dXNlcjpwYXNz", 401, "not Bearer", "", nil},
		{"empty bearer", "/read", "Bearer ", 401, "empty bearer token", "", nil},
		{"neither kind", "/read", bearer("abc"), 401, "neither a Gyre token", "", nil},

		{"token: unknown", "/read", bearer(httpauth.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 401, "unknown token", "", nil},
		{"token: expired", "/read", bearer(secrets["expired"]), 401, "expired at", "", nil},
		{"token: right scope", "/read", bearer(secrets["read"]), 200, "token:tok_", "", nil},
		{"token: wrong scope", "/ingest", bearer(secrets["read"]), 403, "needs scope ingest (or admin); token:tok_", httpauth.ScopeIngest, []httpauth.Scope{httpauth.ScopeRead}},
		{"token: read cannot promote", "/admin", bearer(secrets["read"]), 403, "holds read", httpauth.ScopeAdmin, []httpauth.Scope{httpauth.ScopeRead}},
		{"token: ingest", "/ingest", bearer(secrets["ingest"]), 200, "token:tok_", "", nil},
		{"token: ingest cannot infer", "/infer", bearer(secrets["ingest"]), 403, "needs scope infer", httpauth.ScopeInfer, []httpauth.Scope{httpauth.ScopeIngest}},
		{"token: two scopes", "/infer", bearer(secrets["infer+read"]), 200, "token:tok_", "", nil},
		{"token: admin implies ingest", "/ingest", bearer(secrets["admin"]), 200, "token:tok_", "", nil},
		{"token: admin", "/admin", bearer(secrets["admin"]), 200, "token:tok_", "", nil},
		{"token: lower-case scheme", "/read", "bearer " + secrets["read"], 200, "token:tok_", "", nil},

		{"jwt RS256: right scope", "/ingest", bearer(jwtRead), 200, "jwt:alice", "", nil},
		{"jwt RS256: wrong scope", "/infer", bearer(jwtRead), 403, "needs scope infer (or admin); jwt:alice holds read, ingest", httpauth.ScopeInfer, []httpauth.Scope{httpauth.ScopeRead, httpauth.ScopeIngest}},
		{"jwt ES256 scp list: right scope", "/infer", bearer(jwtInfer), 200, "jwt:alice", "", nil},
		{"jwt ES256 scp list: wrong scope", "/read", bearer(jwtInfer), 403, "holds infer", httpauth.ScopeRead, []httpauth.Scope{httpauth.ScopeInfer}},
		{"jwt EdDSA: admin", "/admin", bearer(jwtAdmin), 200, "jwt:alice", "", nil},
		{"jwt: no Gyre scope", "/read", bearer(jwtNoScope), 403, "holds none", httpauth.ScopeRead, nil},
		{"jwt: other issuer", "/read", bearer(idp.rsa.sign(t, claims(jwt.MapClaims{"iss": "https://evil.test", "scope": "read"}))), 401, "another issuer", "", nil},
		{"jwt: other audience", "/read", bearer(idp.rsa.sign(t, claims(jwt.MapClaims{"aud": "someone-else", "scope": "read"}))), 401, "audience", "", nil},
		{"jwt: expired", "/read", bearer(idp.ec.sign(t, claims(jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix(), "scope": "read"}))), 401, "expired", "", nil},
		{"jwt: no expiry", "/read", bearer(idp.ec.sign(t, claims(jwt.MapClaims{"exp": nil, "scope": "read"}))), 401, "exp", "", nil},
		{"jwt: not yet valid", "/read", bearer(idp.ec.sign(t, claims(jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix(), "scope": "read"}))), 401, "not valid yet", "", nil},
		{"jwt: forged signature", "/read", bearer(forged.sign(t, claims(jwt.MapClaims{"scope": "read"}))), 401, "signature is invalid", "", nil},
		{"jwt: unknown key id", "/read", bearer(signer{"nope", jwt.SigningMethodRS256, otherKey}.sign(t, claims(jwt.MapClaims{"scope": "read"}))), 401, "no key of the configured key set", "", nil},
		{"jwt: HS256 refused", "/read", bearer(hmacRaw), 401, "signing method HS256 is invalid", "", nil},
		{"jwt: alg none refused", "/read", bearer(none), 401, "invalid JWT", "", nil},
		{"jwt: malformed", "/read", bearer("a.b.c"), 401, "malformed", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := call(t, h, tt.path, tt.auth)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d: %s", r.code, tt.code, r.body)
			}
			switch tt.code {
			case 200:
				if !strings.Contains(r.body, tt.want) {
					t.Errorf("body %q lacks %q", r.body, tt.want)
				}
				return
			case 401:
				if !strings.HasPrefix(r.challenge, `Bearer realm="gyre"`) {
					t.Errorf("WWW-Authenticate %q, want a Bearer challenge", r.challenge)
				}
			case 403:
				if !strings.Contains(r.challenge, `error="insufficient_scope"`) || !strings.Contains(r.challenge, `scope="`+string(tt.required)+`"`) {
					t.Errorf("WWW-Authenticate %q", r.challenge)
				}
			}
			if !strings.Contains(r.err.Error, tt.want) {
				t.Errorf("error %q lacks %q", r.err.Error, tt.want)
			}
			if r.err.RequiredScope != tt.required || !slices.Equal(r.err.GrantedScopes, tt.granted) {
				t.Errorf("requiredScope %q grantedScopes %v, want %q %v", r.err.RequiredScope, r.err.GrantedScopes, tt.required, tt.granted)
			}
		})
	}
	t.Cleanup(func() {
		logged := logs.String()
		if !strings.Contains(logged, "http request refused") {
			t.Errorf("no refusal logged: %s", logged)
		}
		for name, s := range secrets {
			if strings.Contains(logged, s) {
				t.Errorf("the %s token's secret is in the logs", name)
			}
		}
		for _, raw := range []string{jwtRead, jwtInfer, jwtNoScope} {
			if strings.Contains(logged, raw) {
				t.Errorf("a JWT is in the logs")
			}
		}
	})
}

// TestUnconfigured: with authentication required and no token file nor
// JWKS, a protected route answers 401 saying how to configure credentials,
// with or without a token; public routes stay open. A nil Authenticator
// does the same.
func TestUnconfigured(t *testing.T) {
	t.Parallel()
	const hint = "create a token with gyre auth token create"
	a, err := httpauth.New(httpauth.Config{Unconfigured: hint, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var nilAuth *httpauth.Authenticator
	for name, h := range map[string]http.Handler{"unconfigured": routes(a), "nil": routes(nilAuth)} {
		for _, auth := range []string{"", "Bearer gyre_whatever"} {
			r := call(t, h, "/read", auth)
			want := hint
			if name == "nil" {
				want = httpauth.DefaultUnconfigured
			}
			if r.code != 401 || r.err.Error != want || !strings.HasPrefix(r.challenge, "Bearer") {
				t.Errorf("%s, auth %q: %d %q %q", name, auth, r.code, r.err.Error, r.challenge)
			}
		}
		if r := call(t, h, "/public", ""); r.code != 200 {
			t.Errorf("%s: public route %d", name, r.code)
		}
	}
	if a.Configured() || nilAuth.Configured() {
		t.Error("Configured() with no source")
	}
}

// TestModeNone: with authentication off every route answers to anyone.
func TestModeNone(t *testing.T) {
	t.Parallel()
	a, err := httpauth.New(httpauth.Config{Mode: httpauth.ModeNone, TokenFile: "/does/not/matter"})
	if err != nil {
		t.Fatal(err)
	}
	h := routes(a)
	for _, s := range httpauth.Scopes() {
		if r := call(t, h, "/"+string(s), ""); r.code != 200 || !strings.Contains(r.body, httpauth.KindAnonymous) {
			t.Errorf("/%s: %d %q", s, r.code, r.body)
		}
	}
	if _, err := httpauth.New(httpauth.Config{Mode: "maybe"}); err == nil {
		t.Error("mode maybe accepted")
	}
}

// TestTokenFileReload: the token file is read again when it changes, so a
// token created after the service started works and a revoked one is
// refused, without a restart; a file that stops parsing refuses every token
// (503) until it is fixed.
func TestTokenFileReload(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens.json")
	first, firstEntry, err := httpauth.CreateToken(file, "first", []httpauth.Scope{httpauth.ScopeRead}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := httpauth.New(httpauth.Config{TokenFile: file, CheckInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h := routes(a)
	expect := func(step, secret string, code int) {
		t.Helper()
		if r := call(t, h, "/read", "Bearer "+secret); r.code != code {
			t.Fatalf("%s: status %d, want %d (%s)", step, r.code, code, r.body)
		}
	}
	expect("first token", first, 200)
	second, _, err := httpauth.CreateToken(file, "second", []httpauth.Scope{httpauth.ScopeRead}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	expect("token created after start", second, 200)
	if _, err := httpauth.RevokeToken(file, firstEntry.ID); err != nil {
		t.Fatal(err)
	}
	expect("revoked token", first, 401)
	expect("the other token", second, 200)

	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`{"version": 1, "tokens": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("broken file", second, 503)
	if err := os.WriteFile(file, good, 0o600); err != nil {
		t.Fatal(err)
	}
	expect("fixed file", second, 200)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	expect("deleted file", second, 503)
}

// TestTokenFile: the file is 0600 and holds hashes, never secrets; entries
// list in creation order and revoke by id; EnsureToken keeps a token while
// it is valid and replaces it once revoked.
func TestTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "tokens.json")
	s1, e1, err := httpauth.CreateToken(file, "ci", []httpauth.Scope{httpauth.ScopeIngest}, time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s2, e2, err := httpauth.CreateToken(file, "ops", []httpauth.Scope{httpauth.ScopeAdmin}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s1, httpauth.TokenPrefix) || len(s1) != len(httpauth.TokenPrefix)+43 || s1 == s2 || e1.ID == e2.ID {
		t.Errorf("secrets %q %q, ids %s %s", s1, s2, e1.ID, e2.ID)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(s1)) || bytes.Contains(raw, []byte(s2)) {
		t.Error("the token file holds a secret")
	}
	list, err := httpauth.ListTokens(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != e1.ID || list[0].Name != "ci" || list[0].Expires == nil || list[1].Expires != nil || list[1].Scopes[0] != httpauth.ScopeAdmin {
		t.Errorf("ListTokens = %+v", list)
	}
	if _, err := httpauth.RevokeToken(file, "tok_000000000000"); !errors.Is(err, httpauth.ErrTokenNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}
	if _, _, err := httpauth.CreateToken(file, "x", []httpauth.Scope{"superuser"}, time.Time{}); err == nil {
		t.Error("unknown scope accepted")
	}
	if list, err := httpauth.ListTokens(filepath.Join(dir, "none.json")); err != nil || len(list) != 0 {
		t.Errorf("missing file: %v %v", list, err)
	}

	secretFile := filepath.Join(dir, "admin.token")
	admin := []httpauth.Scope{httpauth.ScopeAdmin}
	a1, created, err := httpauth.EnsureToken(file, secretFile, "gyre up", admin)
	if err != nil || !created {
		t.Fatalf("EnsureToken: %v %v", created, err)
	}
	a2, created, err := httpauth.EnsureToken(file, secretFile, "gyre up", admin)
	if err != nil || created || a2 != a1 {
		t.Fatalf("EnsureToken again: created %v, same %v, %v", created, a2 == a1, err)
	}
	if fi, err := os.Stat(secretFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file: %v %v", fi, err)
	}
	list, _ = httpauth.ListTokens(file)
	if _, err := httpauth.RevokeToken(file, list[len(list)-1].ID); err != nil {
		t.Fatal(err)
	}
	a3, created, err := httpauth.EnsureToken(file, secretFile, "gyre up", admin)
	if err != nil || !created || a3 == a1 {
		t.Fatalf("EnsureToken after revoke: created %v, same %v, %v", created, a3 == a1, err)
	}
	if got, err := httpauth.ReadSecret(secretFile); err != nil || got != a3 {
		t.Errorf("ReadSecret = %v", err)
	}
}

// TestBadTokenFile: a token file that does not parse is refused at start
// with a reason naming it.
func TestBadTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"not json", "nope", "not a token file"},
		{"version", `{"version": 2, "tokens": []}`, "version 2"},
		{"scope", `{"version": 1, "tokens": [{"id": "tok_abcdef", "scopes": ["root"], "sha256": "` + strings.Repeat("0", 64) + `"}]}`, `unknown scope "root"`},
		{"hash", `{"version": 1, "tokens": [{"id": "tok_abcdef", "scopes": ["read"], "sha256": "xyz"}]}`, "64 hex digits"},
		{"twice", `{"version": 1, "tokens": [{"id": "tok_abcdef", "scopes": ["read"], "sha256": "` + strings.Repeat("0", 64) + `"}, {"id": "tok_abcdef", "scopes": ["read"], "sha256": "` + strings.Repeat("1", 64) + `"}]}`, "appears twice"},
	}
	for _, tt := range tests {
		file := filepath.Join(dir, tt.name+".json")
		if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := httpauth.New(httpauth.Config{TokenFile: file})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: %v, want %q naming the file", tt.name, err, tt.want)
		}
	}
	if _, err := httpauth.New(httpauth.Config{TokenFile: filepath.Join(dir, "missing.json")}); err == nil {
		t.Error("missing token file accepted")
	}
}

// TestQueryToken: a route that allows it takes the token as ?access_token=
// (for EventSource) and hides it from the handler; other routes do not.
func TestQueryToken(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tokens.json")
	secret, _, err := httpauth.CreateToken(file, "browser", []httpauth.Scope{httpauth.ScopeRead}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := httpauth.New(httpauth.Config{TokenFile: file, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h := routes(a)
	r := call(t, h, "/feed?after=3&access_token="+secret, "")
	if r.code != 200 || strings.Contains(r.body, secret) || !strings.Contains(r.body, "after=3") {
		t.Errorf("/feed with access_token: %d %q", r.code, r.body)
	}
	if r := call(t, h, "/read?access_token="+secret, ""); r.code != 401 {
		t.Errorf("/read with access_token: %d, want 401", r.code)
	}
}

// TestJWKSFetchedOnce: the key set is fetched at start and kept; tokens do
// not fetch it again, and a made-up key id fetches it at most once a minute.
func TestJWKSFetchedOnce(t *testing.T) {
	t.Parallel()
	idp := newProvider(t)
	a, err := httpauth.New(httpauth.Config{
		JWT:    &httpauth.JWTConfig{JWKSURL: idp.url, Issuer: issuer, Audience: audience},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	h := routes(a)
	good := "Bearer " + idp.ed.sign(t, claims(jwt.MapClaims{"scope": "read"}))
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if r := call(t, h, "/read", good); r.code != 200 {
			t.Fatalf("good token: %d %s", r.code, r.body)
		}
		bad := "Bearer " + signer{"made-up-" + string(rune('a'+i)), jwt.SigningMethodRS256, otherKey}.sign(t, claims(jwt.MapClaims{"scope": "read"}))
		if r := call(t, h, "/read", bad); r.code != 401 {
			t.Fatalf("made-up key id: %d", r.code)
		}
	}
	if n := idp.fetches.Load(); n > 2 {
		t.Errorf("the key set was fetched %d times, want at most 2 (start, one unknown kid)", n)
	}
}

// TestParseScopes: scope lists by comma or space, unknown names refused.
func TestParseScopes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []httpauth.Scope
		err  string
	}{
		{"read", []httpauth.Scope{httpauth.ScopeRead}, ""},
		{"ingest,infer", []httpauth.Scope{httpauth.ScopeIngest, httpauth.ScopeInfer}, ""},
		{"Admin read read", []httpauth.Scope{httpauth.ScopeAdmin, httpauth.ScopeRead}, ""},
		{"", nil, "no scope"},
		{"read,write", nil, `unknown scope "write"`},
		{"public", nil, `unknown scope "public"`},
	}
	for _, tt := range tests {
		got, err := httpauth.ParseScopes(tt.in)
		if !slices.Equal(got, tt.want) || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseScopes(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// TestJWKSDownAtStart: a provider that does not answer when the service
// starts is logged, not fatal, and its keys are fetched on the first token.
func TestJWKSDownAtStart(t *testing.T) {
	t.Parallel()
	idp := newProvider(t)
	var up atomic.Bool
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		resp, err := http.Get(idp.url)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(flaky.Close)
	logs := newLogBuffer()
	a, err := httpauth.New(httpauth.Config{
		JWT:    &httpauth.JWTConfig{JWKSURL: flaky.URL, Issuer: issuer, Audience: audience},
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("New with the provider down: %v", err)
	}
	t.Cleanup(a.Close)
	if !strings.Contains(logs.String(), "fetching the JWT key set failed") {
		t.Errorf("the failed fetch is not logged: %s", logs.String())
	}
	up.Store(true)
	if r := call(t, routes(a), "/read", "Bearer "+idp.rsa.sign(t, claims(jwt.MapClaims{"scope": "read"}))); r.code != 200 {
		t.Errorf("first token once the provider is up: %d %s", r.code, r.body)
	}
}
