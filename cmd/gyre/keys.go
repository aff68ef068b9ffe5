package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/signing"
)

// keysDir is where `gyre up` keeps its keys in its data dir: readable by
// its owner only.
const keysDir = "keys"

// upKeys returns the registry's signing key and its public key in the data
// dir, making the pair on the first start.
func upKeys(dataDir string) (priv, pub string, created bool, err error) {
	dir := filepath.Join(dataDir, keysDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, fmt.Errorf("--data-dir: %w", err)
	}
	priv, pub = filepath.Join(dir, signing.PrivateKeyFile), filepath.Join(dir, signing.PublicKeyFile)
	if _, err := os.Stat(priv); errors.Is(err, os.ErrNotExist) {
		if _, err := signing.Generate(dir); err != nil {
			return "", "", false, fmt.Errorf("signing key: %w", err)
		}
		created = true
	}
	if _, err := signing.LoadPrivateKey(priv); err != nil {
		return "", "", false, fmt.Errorf("signing key: %w", err)
	}
	if _, err := signing.LoadPublicKeys(pub); err != nil {
		return "", "", false, fmt.Errorf("signing key: %w", err)
	}
	return priv, pub, created, nil
}

// Files of `gyre up`'s HTTP tokens in its data dir, each 0600: the token
// file its services check (hashes only), the admin token the CLI sends, and
// the read token the dashboard's address carries.
const (
	tokensFile     = "tokens.json"
	adminTokenFile = "admin.token"
	readTokenFile  = "dashboard.token"
)

// upTokens makes sure the data dir holds an admin token for the CLI and a
// read token for the dashboard, and returns the token file's path and the
// two secrets.
func upTokens(dataDir string) (tokens, admin, read string, err error) {
	tokens = filepath.Join(dataDir, tokensFile)
	admin, _, err = httpauth.EnsureToken(tokens, filepath.Join(dataDir, adminTokenFile), "gyre up: the CLI", []httpauth.Scope{httpauth.ScopeAdmin})
	if err != nil {
		return "", "", "", fmt.Errorf("admin token: %w", err)
	}
	read, _, err = httpauth.EnsureToken(tokens, filepath.Join(dataDir, readTokenFile), "gyre up: the dashboard", []httpauth.Scope{httpauth.ScopeRead})
	if err != nil {
		return "", "", "", fmt.Errorf("dashboard token: %w", err)
	}
	return tokens, admin, read, nil
}

// adminToken is the admin token `gyre up` keeps in dataDir, for the CLI's
// HTTP calls; GYRE_TOKEN overrides it.
func adminToken(dataDir string) string {
	if t := os.Getenv("GYRE_TOKEN"); t != "" {
		return t
	}
	t, err := httpauth.ReadSecret(filepath.Join(dataDir, adminTokenFile))
	if err != nil {
		return ""
	}
	return t
}

// bearer is a transport that sends token as the bearer credential of every
// request (none when token is empty).
func bearer(token string) http.RoundTripper {
	return bearerTransport{token: token, next: http.DefaultTransport}
}

type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token == "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
