package looptest

import (
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gyrehq/gyre/libs/signing"
)

// testKey is the signing key of a test process: the registries of tests
// sign with it, their deployers trust its public key, and Promote signs
// the versions it records with it, as the registry does.
var testKey = sync.OnceValue(func() ed25519.PrivateKey {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return key
})

// Signer signs as the test registries do.
func Signer() *signing.Signer { return signing.NewSigner(testKey()) }

// SigningKeyFile writes the test signing key where a registry reads it
// (--signing-key) and returns the path.
func SigningKeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), signing.PrivateKeyFile)
	if err := signing.WritePrivateKey(path, testKey()); err != nil {
		t.Fatalf("looptest: %v", err)
	}
	return path
}

// VerifyKeyFile writes the test signing key's public key where a deployer
// reads it (--verify-keys) and returns the path.
func VerifyKeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), signing.PublicKeyFile)
	if err := signing.WritePublicKeys(path, testKey().Public().(ed25519.PublicKey)); err != nil {
		t.Fatalf("looptest: %v", err)
	}
	return path
}
