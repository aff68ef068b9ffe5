package httpauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// TokenPrefix starts every token secret, so that a leaked one is easy to
// recognise (secret scanners, logs) and told apart from a JWT.
const TokenPrefix = "gyre_"

// tokenSecretBytes is the entropy of a secret: 256 bits, so that its SHA-256
// cannot be reversed by guessing and needs no salt or slow hash.
const tokenSecretBytes = 32

// TokenFileVersion is the version of the token file's format.
const TokenFileVersion = 1

// TokenEntry is one token in a token file. The secret itself is never
// stored: only its SHA-256.
type TokenEntry struct {
	// ID names the token in listings, logs and revocation (tok_ and 12 hex
	// digits); it reveals nothing of the secret.
	ID string `json:"id"`
	// Name says what the token is for (a person, a CI job, `gyre up`).
	Name   string  `json:"name"`
	Scopes []Scope `json:"scopes"`
	// SHA256 is the hex SHA-256 of the secret.
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
	// Expires is when the token stops working; nil for never.
	Expires *time.Time `json:"expires,omitempty"`
}

// Expired reports whether the token has expired at now.
func (e TokenEntry) Expired(now time.Time) bool {
	return e.Expires != nil && !now.Before(*e.Expires)
}

func (e TokenEntry) validate() error {
	if !strings.HasPrefix(e.ID, "tok_") || len(e.ID) < 8 {
		return fmt.Errorf("token id %q is not tok_<hex>", e.ID)
	}
	if len(e.Scopes) == 0 {
		return fmt.Errorf("token %s has no scopes", e.ID)
	}
	for _, s := range e.Scopes {
		if !s.Valid() {
			return fmt.Errorf("token %s has unknown scope %q (want %s)", e.ID, s, scopeList(Scopes()))
		}
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("token %s: sha256 is not 64 hex digits", e.ID)
	}
	return nil
}

// tokenFile is the token file's JSON.
type tokenFile struct {
	Version int          `json:"version"`
	Tokens  []TokenEntry `json:"tokens"`
}

// ErrTokenNotFound is returned by RevokeToken for an id not in the file.
var ErrTokenNotFound = errors.New("no such token")

// NewToken makes a token: a random secret (gyre_ and 43 base64url
// characters) and its entry. The secret is shown once and never stored.
// expires zero means the token does not expire.
func NewToken(name string, scopes []Scope, expires time.Time) (secret string, entry TokenEntry, err error) {
	if len(scopes) == 0 {
		return "", TokenEntry{}, errors.New("a token needs at least one scope")
	}
	for _, s := range scopes {
		if !s.Valid() {
			return "", TokenEntry{}, fmt.Errorf("unknown scope %q (want %s)", s, scopeList(Scopes()))
		}
	}
	raw := make([]byte, tokenSecretBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", TokenEntry{}, fmt.Errorf("token secret: %w", err)
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return "", TokenEntry{}, fmt.Errorf("token id: %w", err)
	}
	secret = TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	entry = TokenEntry{
		ID: "tok_" + hex.EncodeToString(id), Name: name, Scopes: slices.Clone(scopes),
		SHA256: hashSecret(secret), Created: time.Now().UTC().Truncate(time.Second),
	}
	if !expires.IsZero() {
		e := expires.UTC()
		entry.Expires = &e
	}
	return secret, entry, nil
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateToken makes a token (NewToken) and adds its entry to the token file
// at path, creating the file (0600) and its directory (0700) if needed. It
// returns the secret, which exists nowhere else: show it once.
//
// The file is replaced atomically (a temporary file renamed over it), so a
// service reading it never sees half a file; two writers at the same instant
// may lose one's change.
func CreateToken(path, name string, scopes []Scope, expires time.Time) (secret string, entry TokenEntry, err error) {
	f, err := readTokenFile(path, true)
	if err != nil {
		return "", TokenEntry{}, err
	}
	for {
		secret, entry, err = NewToken(name, scopes, expires)
		if err != nil {
			return "", TokenEntry{}, err
		}
		if !slices.ContainsFunc(f.Tokens, func(e TokenEntry) bool { return e.ID == entry.ID }) {
			break
		}
	}
	f.Tokens = append(f.Tokens, entry)
	if err := writeTokenFile(path, f); err != nil {
		return "", TokenEntry{}, err
	}
	return secret, entry, nil
}

// ListTokens returns the entries of the token file at path, in the order
// they were created; a missing file has none.
func ListTokens(path string) ([]TokenEntry, error) {
	f, err := readTokenFile(path, true)
	if err != nil {
		return nil, err
	}
	return f.Tokens, nil
}

// RevokeToken removes the token with the given id from the file at path and
// returns its entry; ErrTokenNotFound if there is none. Services that read
// the file refuse the token from their next check of it (within a second).
func RevokeToken(path, id string) (TokenEntry, error) {
	f, err := readTokenFile(path, true)
	if err != nil {
		return TokenEntry{}, err
	}
	i := slices.IndexFunc(f.Tokens, func(e TokenEntry) bool { return e.ID == id })
	if i < 0 {
		return TokenEntry{}, fmt.Errorf("revoke %s: %w in %s", id, ErrTokenNotFound, path)
	}
	entry := f.Tokens[i]
	f.Tokens = slices.Delete(f.Tokens, i, i+1)
	if err := writeTokenFile(path, f); err != nil {
		return TokenEntry{}, err
	}
	return entry, nil
}

// readTokenFile reads and checks a token file; a missing one is empty when
// missingOK.
func readTokenFile(path string, missingOK bool) (tokenFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && missingOK {
		return tokenFile{Version: TokenFileVersion}, nil
	}
	if err != nil {
		return tokenFile{}, fmt.Errorf("token file: %w", err)
	}
	return parseTokenFile(path, b)
}

func parseTokenFile(path string, b []byte) (tokenFile, error) {
	var f tokenFile
	if err := json.Unmarshal(b, &f); err != nil {
		return tokenFile{}, fmt.Errorf("token file %s: not a token file: %w", path, err)
	}
	if f.Version != TokenFileVersion {
		return tokenFile{}, fmt.Errorf("token file %s: version %d, this Gyre reads version %d", path, f.Version, TokenFileVersion)
	}
	seen := map[string]bool{}
	for _, e := range f.Tokens {
		if err := e.validate(); err != nil {
			return tokenFile{}, fmt.Errorf("token file %s: %w", path, err)
		}
		if seen[e.ID] {
			return tokenFile{}, fmt.Errorf("token file %s: token id %s appears twice", path, e.ID)
		}
		seen[e.ID] = true
	}
	return f, nil
}

// writeTokenFile replaces the file at path with f, 0600, atomically.
func writeTokenFile(path string, f tokenFile) error {
	f.Version = TokenFileVersion
	if f.Tokens == nil {
		f.Tokens = []TokenEntry{}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	return WriteFileAtomic(path, append(b, '\n'))
}

// WriteFileAtomic writes data to path with mode 0600 through a temporary
// file in the same directory renamed over path, creating the directory
// (0700) if needed: a reader sees the old file or the new one, never a part.
// It is how secrets and token files are written.
func WriteFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600; Chmod says so for any umask.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteSecret writes a token secret to path (0600, atomically), for a
// client to read back with ReadSecret: `gyre up` keeps its admin token so.
func WriteSecret(path, secret string) error {
	return WriteFileAtomic(path, []byte(secret+"\n"))
}

// ReadSecret reads a secret written by WriteSecret (or by hand: surrounding
// white space is ignored).
func ReadSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("read token: %s is empty", path)
	}
	return s, nil
}

// EnsureToken returns the secret kept in secretPath when the token file at
// tokenPath still holds it (unexpired, with the given scopes); otherwise it
// creates a token named name with those scopes, adds it to the token file
// and writes its secret to secretPath. It is what `gyre up` does for the
// admin token the CLI uses.
func EnsureToken(tokenPath, secretPath, name string, scopes []Scope) (secret string, created bool, err error) {
	if s, err := ReadSecret(secretPath); err == nil {
		f, err := readTokenFile(tokenPath, true)
		if err != nil {
			return "", false, err
		}
		h := hashSecret(s)
		for _, e := range f.Tokens {
			if e.SHA256 == h && !e.Expired(time.Now()) && slices.Equal(e.Scopes, scopes) {
				return s, false, nil
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	secret, _, err = CreateToken(tokenPath, name, scopes, time.Time{})
	if err != nil {
		return "", false, err
	}
	if err := WriteSecret(secretPath, secret); err != nil {
		return "", false, err
	}
	return secret, true, nil
}

// TokenStore checks token secrets against a token file, and reads the file
// again when it changes (modification time, size or inode, checked at most
// once per CheckInterval), so that a revoked token stops working without a
// restart. A file that cannot be read or parsed refuses every token until it
// is fixed: failing open would accept a token its administrator was
// revoking.
type TokenStore struct {
	path string
	// checkEvery is how often the file is looked at; 0: on every call.
	checkEvery time.Duration

	snap      atomic.Pointer[tokenSnapshot]
	lastCheck atomic.Int64 // unix nanos
	reloading atomic.Bool
	onReload  func(entries int, err error)
}

// DefaultCheckInterval is how often a TokenStore looks at its file: the
// longest a revoked token keeps working.
const DefaultCheckInterval = time.Second

type tokenSnapshot struct {
	info    fs.FileInfo
	entries []TokenEntry
	hashes  [][sha256.Size]byte
	err     error
}

// OpenTokenStore reads the token file at path; it must exist and parse.
// onReload, when not nil, is told of every later reload (the number of
// tokens, or why the file is refused).
func OpenTokenStore(path string, checkEvery time.Duration, onReload func(entries int, err error)) (*TokenStore, error) {
	s := &TokenStore{path: path, checkEvery: checkEvery, onReload: onReload}
	snap := s.load()
	if snap.err != nil {
		return nil, snap.err
	}
	s.snap.Store(snap)
	s.lastCheck.Store(time.Now().UnixNano())
	return s, nil
}

// Path returns the token file's path.
func (s *TokenStore) Path() string { return s.path }

func (s *TokenStore) load() *tokenSnapshot {
	fi, err := os.Stat(s.path)
	if err != nil {
		return &tokenSnapshot{err: fmt.Errorf("token file: %w", err)}
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return &tokenSnapshot{info: fi, err: fmt.Errorf("token file: %w", err)}
	}
	f, err := parseTokenFile(s.path, b)
	if err != nil {
		return &tokenSnapshot{info: fi, err: err}
	}
	snap := &tokenSnapshot{info: fi, entries: f.Tokens, hashes: make([][sha256.Size]byte, len(f.Tokens))}
	for i, e := range f.Tokens {
		_, _ = hex.Decode(snap.hashes[i][:], []byte(e.SHA256)) // validated
	}
	return snap
}

// current returns the snapshot, reading the file again first if it changed.
// One caller at a time looks; the others use the snapshot in hand, so no
// lock is held across the file system calls.
func (s *TokenStore) current() *tokenSnapshot {
	now := time.Now().UnixNano()
	last := s.lastCheck.Load()
	if time.Duration(now-last) < s.checkEvery || !s.reloading.CompareAndSwap(false, true) {
		return s.snap.Load()
	}
	defer s.reloading.Store(false)
	s.lastCheck.Store(now)
	old := s.snap.Load()
	fi, err := os.Stat(s.path)
	if err == nil && old.info != nil && os.SameFile(fi, old.info) && fi.ModTime().Equal(old.info.ModTime()) && fi.Size() == old.info.Size() {
		return old
	}
	snap := s.load()
	s.snap.Store(snap)
	if s.onReload != nil {
		s.onReload(len(snap.entries), snap.err)
	}
	return snap
}

// Authenticate returns the principal of a token secret: *Error 401 for an
// unknown or expired token, 503 when the token file cannot be read.
func (s *TokenStore) Authenticate(secret string) (Principal, error) {
	snap := s.current()
	if snap.err != nil {
		return Principal{}, &Error{Status: 503, Message: "tokens cannot be checked: this service's token file is unreadable (its log says why)"}
	}
	sum := sha256.Sum256([]byte(secret))
	// Every entry is compared, in constant time, so that timing tells
	// nothing about which hashes exist.
	found := -1
	for i := range snap.hashes {
		if subtle.ConstantTimeCompare(sum[:], snap.hashes[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, &Error{Status: 401, Code: "invalid_token",
			Message: "unknown token: it is not in this service's token file (revoked, mistyped, or created for another deployment)"}
	}
	e := snap.entries[found]
	if e.Expired(time.Now()) {
		return Principal{}, &Error{Status: 401, Code: "invalid_token",
			Message: fmt.Sprintf("token %s expired at %s; create a new one with `gyre auth token create`", e.ID, e.Expires.Format(time.RFC3339))}
	}
	return Principal{Kind: KindToken, ID: e.ID, Name: e.Name, Scopes: slices.Clone(e.Scopes)}, nil
}
