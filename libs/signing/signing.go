// Package signing signs and verifies model versions: the registry signs
// each version's identity — pipeline, version number, artifact and the
// artifact's SHA-256 — with an ed25519 key, and deployers verify the
// signature, and the artifact's bytes against the signed digest, before
// they load a model. A record edited in the registry's bucket, a
// deployment record naming another artifact, or an artifact swapped in the
// object store is never served: whoever made it does not hold the key.
//
// Keys are PEM files: the private key as PKCS #8 ("PRIVATE KEY"), public
// keys as PKIX ("PUBLIC KEY"), several in one file to rotate (a deployer
// trusts every key of its file; the registry signs with one).
package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Subject is what a signature covers: a model version's identity.
type Subject struct {
	Pipeline string
	Version  int64
	// Bucket and Key locate the artifact; Sha256 is its digest (hex).
	Bucket string
	Key    string
	Sha256 string
}

// message is the canonical bytes of a subject: one field a line, in a fixed
// order, after a format line that keeps a signature of one kind of record
// from passing for another.
func (s Subject) message() []byte {
	var b strings.Builder
	b.WriteString("gyre.model-version/v1\n")
	b.WriteString("pipeline=" + s.Pipeline + "\n")
	b.WriteString("version=" + strconv.FormatInt(s.Version, 10) + "\n")
	b.WriteString("artifact=" + s.Bucket + "/" + s.Key + "\n")
	b.WriteString("sha256=" + strings.ToLower(s.Sha256) + "\n")
	return []byte(b.String())
}

// Signature is a signature of a subject: the key that made it (its id) and
// the ed25519 signature, base64.
type Signature struct {
	KeyID string `json:"keyId"`
	Value string `json:"value"`
}

// Signer signs with one private key.
type Signer struct {
	key ed25519.PrivateKey
	id  string
}

// NewSigner returns a signer of key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, id: KeyID(key.Public().(ed25519.PublicKey))}
}

// KeyID names a public key: the first 16 hex digits of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Sign signs a subject. A subject without an artifact digest is refused:
// nothing would bind the signature to the artifact's bytes.
func (s *Signer) Sign(sub Subject) (Signature, error) {
	if err := sub.check(); err != nil {
		return Signature{}, err
	}
	return Signature{KeyID: s.id, Value: base64.StdEncoding.EncodeToString(ed25519.Sign(s.key, sub.message()))}, nil
}

// KeyID returns the id of the signer's key.
func (s *Signer) KeyID() string { return s.id }

func (s Subject) check() error {
	switch {
	case s.Pipeline == "" || s.Version < 1 || s.Key == "":
		return fmt.Errorf("model %s v%d: pipeline, version and artifact are required to sign", s.Pipeline, s.Version)
	case len(s.Sha256) != 64:
		return fmt.Errorf("model %s v%d: artifact %s has no SHA-256 digest: nothing binds a signature to its bytes", s.Pipeline, s.Version, s.Key)
	}
	if _, err := hex.DecodeString(s.Sha256); err != nil {
		return fmt.Errorf("model %s v%d: artifact digest %q is not hex", s.Pipeline, s.Version, s.Sha256)
	}
	return nil
}

// Verifier checks signatures against a set of trusted public keys.
type Verifier struct {
	keys map[string]ed25519.PublicKey
}

// NewVerifier trusts keys.
func NewVerifier(keys ...ed25519.PublicKey) *Verifier {
	v := &Verifier{keys: map[string]ed25519.PublicKey{}}
	for _, k := range keys {
		v.keys[KeyID(k)] = k
	}
	return v
}

// KeyIDs lists the trusted keys' ids.
func (v *Verifier) KeyIDs() []string {
	out := make([]string, 0, len(v.keys))
	for id := range v.keys {
		out = append(out, id)
	}
	return out
}

// VerifyError says why a signature does not hold. It is permanent: the
// same record fails the same way every time.
type VerifyError struct {
	Subject Subject
	Reason  string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("model %s v%d (artifact %s): %s", e.Subject.Pipeline, e.Subject.Version, e.Subject.Key, e.Reason)
}

// Permanent reports that retrying cannot help.
func (e *VerifyError) Permanent() bool { return true }

// Verify checks that sig is a trusted key's signature of sub.
func (v *Verifier) Verify(sub Subject, sig Signature) error {
	if sig.Value == "" {
		return &VerifyError{Subject: sub, Reason: "unsigned: the registry signs every version it records; this one was not recorded by it"}
	}
	key, ok := v.keys[sig.KeyID]
	if !ok {
		return &VerifyError{Subject: sub, Reason: fmt.Sprintf("signed by key %q, which is not trusted (trusted: %s)", sig.KeyID, strings.Join(v.KeyIDs(), ", "))}
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Value)
	if err != nil || !ed25519.Verify(key, sub.message(), raw) {
		return &VerifyError{Subject: sub, Reason: "the signature does not match the record: its version, artifact or digest was changed after the registry signed it"}
	}
	return nil
}

// CheckDigest verifies that data is the signed artifact's bytes.
func CheckDigest(sub Subject, data []byte) error {
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, sub.Sha256) {
		return &VerifyError{Subject: sub, Reason: fmt.Sprintf("the artifact's bytes have SHA-256 %s, the signed digest is %s: the artifact was replaced", got, sub.Sha256)}
	}
	return nil
}

// Key files.
const (
	PrivateKeyFile = "signing.key"
	PublicKeyFile  = "signing.pub"
)

// Generate makes a key pair and writes it into dir: the private key 0600,
// the public key 0644. It refuses to overwrite an existing private key.
func Generate(dir string) (ed25519.PublicKey, error) {
	priv := filepath.Join(dir, PrivateKeyFile)
	if _, err := os.Stat(priv); err == nil {
		return nil, fmt.Errorf("%s exists: a signing key is not replaced by accident (move it away to rotate)", priv)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := WritePrivateKey(priv, key); err != nil {
		return nil, err
	}
	if err := WritePublicKeys(filepath.Join(dir, PublicKeyFile), pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// WritePrivateKey writes key as PKCS #8 PEM, readable by its owner only.
func WritePrivateKey(path string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// WritePublicKeys writes keys as PKIX PEM blocks.
func WritePublicKeys(path string, keys ...ed25519.PublicKey) error {
	var buf bytes.Buffer
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return err
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// LoadPrivateKey reads an ed25519 private key (PKCS #8 PEM). A key file
// that others can read, or its group write, is refused: a signing key is a
// secret. (Group read is allowed: Kubernetes mounts a Secret group-readable
// by the pod's fsGroup.)
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o027 != 0 {
		return nil, fmt.Errorf("%s is open to others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM \"PRIVATE KEY\" (write one with gyre auth signing-key)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return key, nil
}

// LoadPublicKeys reads every ed25519 public key (PKIX PEM) of a file.
func LoadPublicKeys(path string) ([]ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []ed25519.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s: a public key that is not ed25519", path)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, errors.New(path + ": no PEM \"PUBLIC KEY\" in it")
	}
	return keys, nil
}
