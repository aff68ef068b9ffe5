package signing_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gyrehq/gyre/libs/signing"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestSignatures: a signature holds for its subject only; edits of any
// field, another key, an unsigned record and a swapped artifact are refused.
func TestSignatures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pub, err := signing.Generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signing.LoadPrivateKey(filepath.Join(dir, signing.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := signing.LoadPublicKeys(filepath.Join(dir, signing.PublicKeyFile))
	if err != nil || len(keys) != 1 || !keys[0].Equal(pub) {
		t.Fatalf("public keys %v, %v", keys, err)
	}
	artifact := []byte("the model's bytes")
	sub := signing.Subject{Pipeline: "elec2", Version: 3, Bucket: "gyre-models", Key: "elec2/r3.bundle", Sha256: digest(artifact)}
	sig, err := signing.NewSigner(key).Sign(sub)
	if err != nil {
		t.Fatal(err)
	}
	v := signing.NewVerifier(keys...)
	if err := v.Verify(sub, sig); err != nil {
		t.Fatalf("the signed record: %v", err)
	}
	if err := signing.CheckDigest(sub, artifact); err != nil {
		t.Fatalf("the signed artifact: %v", err)
	}
	otherDir := t.TempDir()
	if _, err := signing.Generate(otherDir); err != nil {
		t.Fatal(err)
	}
	otherKey, _ := signing.LoadPrivateKey(filepath.Join(otherDir, signing.PrivateKeyFile))
	foreign, _ := signing.NewSigner(otherKey).Sign(sub)
	for _, tc := range []struct {
		name string
		sub  signing.Subject
		sig  signing.Signature
		want string
	}{
		{"another version", with(sub, func(s *signing.Subject) { s.Version = 4 }), sig, "changed after the registry signed it"},
		{"another pipeline", with(sub, func(s *signing.Subject) { s.Pipeline = "other" }), sig, "changed after"},
		{"another artifact", with(sub, func(s *signing.Subject) { s.Key = "elec2/evil.bundle" }), sig, "changed after"},
		{"another digest", with(sub, func(s *signing.Subject) { s.Sha256 = digest([]byte("evil")) }), sig, "changed after"},
		{"an untrusted key", sub, foreign, "not trusted"},
		{"unsigned", sub, signing.Signature{}, "unsigned"},
		{"a forged value", sub, signing.Signature{KeyID: sig.KeyID, Value: "AAAA"}, "does not match"},
	} {
		err := v.Verify(tc.sub, tc.sig)
		var ve *signing.VerifyError
		if err == nil || !errors.As(err, &ve) || !ve.Permanent() || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a permanent VerifyError saying %q", tc.name, err, tc.want)
		}
	}
	if err := signing.CheckDigest(sub, []byte("swapped bytes")); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("a swapped artifact: %v", err)
	}
	if _, err := signing.NewSigner(key).Sign(with(sub, func(s *signing.Subject) { s.Sha256 = "" })); err == nil {
		t.Error("signed a record without an artifact digest")
	}
}

// TestKeyFiles: a private key others can read is refused; Generate does not
// overwrite a key.
func TestKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := signing.Generate(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := signing.Generate(dir); err == nil {
		t.Fatal("Generate overwrote a signing key")
	}
	priv := filepath.Join(dir, signing.PrivateKeyFile)
	if err := os.Chmod(priv, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := signing.LoadPrivateKey(priv); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: %v", err)
	}
	if _, err := signing.LoadPublicKeys(priv); err == nil {
		t.Fatal("a private key file read as public keys")
	}
}

func with(s signing.Subject, f func(*signing.Subject)) signing.Subject {
	f(&s)
	return s
}
