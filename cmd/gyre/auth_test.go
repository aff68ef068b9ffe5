package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/httpauth"
	"github.com/gyrehq/gyre/libs/signing"
)

// TestAuthCommands: tokens are created (the secret printed once, only its
// hash kept), listed without secrets, and revoked; a signing key pair is
// written with the private key 0600 and never overwritten.
func TestAuthCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	secret, _, err := execute(t, "auth", "token", "create", "--file", file, "--name", "ci", "--scopes", "ingest,read")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(secret), "gyre_") {
		t.Fatalf("token create: %q, %v", secret, err)
	}
	raw, _ := os.ReadFile(file)
	if strings.Contains(string(raw), strings.TrimSpace(secret)) {
		t.Fatal("the token file holds the secret")
	}
	st, _ := os.Stat(file)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
	store, err := httpauth.OpenTokenStore(file, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := store.Authenticate(strings.TrimSpace(secret))
	if err != nil || !p.Has(httpauth.ScopeIngest) || p.Has(httpauth.ScopeAdmin) {
		t.Fatalf("the new token: %+v, %v", p, err)
	}
	out, _, err := execute(t, "auth", "token", "list", "--file", file)
	if err != nil || !strings.Contains(out, "ci") || strings.Contains(out, strings.TrimSpace(secret)) {
		t.Fatalf("token list: %q, %v", out, err)
	}
	id := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1])[0]
	if _, _, err := execute(t, "auth", "token", "revoke", id, "--file", file); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Authenticate(strings.TrimSpace(secret)); err == nil {
		t.Fatal("a revoked token still authenticates")
	}
	if _, _, err := execute(t, "auth", "token", "create", "--file", file, "--name", "x", "--scopes", "root"); err == nil {
		t.Fatal("an unknown scope was accepted")
	}

	keys := filepath.Join(dir, "keys")
	if out, _, err := execute(t, "auth", "signing-key", "--dir", keys); err != nil || !strings.Contains(out, "key id") {
		t.Fatalf("signing-key: %q, %v", out, err)
	}
	if _, err := signing.LoadPrivateKey(filepath.Join(keys, signing.PrivateKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := execute(t, "auth", "signing-key", "--dir", keys); err == nil {
		t.Fatal("signing-key overwrote a key")
	}
}
