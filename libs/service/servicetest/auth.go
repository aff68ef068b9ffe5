package servicetest

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/service"
)

// Tokens is a token file for a test, with one token per scope.
type Tokens struct {
	// File is the token file's path (in t.TempDir()).
	File    string
	secrets map[httpauth.Scope]string
}

// NewTokens writes a token file holding one token for each scope.
func NewTokens(t testing.TB) *Tokens {
	t.Helper()
	k := &Tokens{File: filepath.Join(t.TempDir(), "tokens.json"), secrets: map[httpauth.Scope]string{}}
	for _, s := range httpauth.Scopes() {
		secret, _, err := httpauth.CreateToken(k.File, "test-"+string(s), []httpauth.Scope{s}, time.Time{})
		if err != nil {
			t.Fatalf("servicetest: create %s token: %v", s, err)
		}
		k.secrets[s] = secret
	}
	return k
}

// Secret returns the secret of the token holding scope.
func (k *Tokens) Secret(scope httpauth.Scope) string { return k.secrets[scope] }

// Authorize sets req's Authorization header to the token holding scope.
func (k *Tokens) Authorize(req *http.Request, scope httpauth.Scope) *http.Request {
	req.Header.Set("Authorization", "Bearer "+k.secrets[scope])
	return req
}

// Config sets cfg's HTTP authentication to required with this token file,
// for a test that builds its own process (service.Connect). The file is
// looked at for changes at most once a second (httpauth.DefaultCheckInterval).
func (k *Tokens) Config(cfg *service.Config) {
	cfg.HTTPAuth = service.HTTPAuthRequired
	cfg.AuthTokens = k.File
}

// configure sets cfg's authentication from k; nil turns it off.
func (k *Tokens) configure(cfg *service.Config) {
	if k == nil {
		cfg.HTTPAuth = service.HTTPAuthNone
		return
	}
	k.Config(cfg)
}
