// Package httpauth authenticates the HTTP APIs of Gyre's services: opaque
// bearer tokens kept hashed in a token file (created, listed and revoked by
// `gyre auth token`), and optionally JWTs from an OIDC provider verified
// against its JWKS. Every route names the scope it needs — ingest, infer,
// read or admin, admin implying the others — and a request without it is
// refused with 401 (no usable credentials) or 403 (the wrong scope), with a
// JSON body that says what is missing.
package httpauth

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Scope is what a credential allows.
type Scope string

// The scopes of Gyre's HTTP APIs.
const (
	// ScopeIngest uploads batches (ingest).
	ScopeIngest Scope = "ingest"
	// ScopeInfer calls models (the deployer's Open Inference Protocol).
	ScopeInfer Scope = "infer"
	// ScopeRead reads state: models, lineage, deployments, the dashboard.
	ScopeRead Scope = "read"
	// ScopeAdmin changes what serves (promote, rollback) and implies every
	// other scope.
	ScopeAdmin Scope = "admin"
)

// Public marks a route that needs no credentials: probes and health checks.
// It is not a scope a credential can hold.
const Public Scope = "public"

// Scopes returns every scope a credential can hold, least privileged first.
func Scopes() []Scope { return []Scope{ScopeRead, ScopeIngest, ScopeInfer, ScopeAdmin} }

// Valid reports whether s is a scope a credential can hold.
func (s Scope) Valid() bool { return slices.Contains(Scopes(), s) }

// ParseScopes parses scope names, separated by commas or spaces; it refuses
// unknown names and an empty list, and drops duplicates.
func ParseScopes(s string) ([]Scope, error) {
	var out []Scope
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		sc := Scope(strings.ToLower(strings.TrimSpace(f)))
		if !sc.Valid() {
			return nil, fmt.Errorf("unknown scope %q (want %s)", f, scopeList(Scopes()))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scope given (want one or more of %s)", scopeList(Scopes()))
	}
	return out, nil
}

// scopeList joins scopes for messages: "read, ingest".
func scopeList(s []Scope) string {
	if len(s) == 0 {
		return "none"
	}
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = string(x)
	}
	return strings.Join(parts, ", ")
}

// Kinds of principal.
const (
	KindToken     = "token"
	KindJWT       = "jwt"
	KindAnonymous = "anonymous"
)

// Principal is who a request authenticated as.
type Principal struct {
	// Kind is token, jwt, or anonymous (authentication is off).
	Kind string
	// ID names the credential: a token's id, a JWT's subject. Never a secret.
	ID string
	// Name is a token's name; empty for a JWT.
	Name string
	// Scopes are what the credential holds.
	Scopes []Scope
}

// Has reports whether the principal may use a route needing scope: it holds
// the scope or admin. Every principal may use a Public route.
func (p Principal) Has(scope Scope) bool {
	return scope == Public || slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, ScopeAdmin)
}

// String names the principal for logs: kind and id, never a secret.
func (p Principal) String() string {
	if p.ID == "" {
		return p.Kind
	}
	return p.Kind + ":" + p.ID
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal a request authenticated as, for a
// handler that records who did something (a promotion, say).
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
