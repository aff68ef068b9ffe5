package httpauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWT algorithms accepted: an asymmetric signature, so that the services
// hold no secret that could sign. "none" and HMAC are refused.
var jwtAlgorithms = []string{"RS256", "ES256", "EdDSA"}

// JWTConfig configures JWT verification.
type JWTConfig struct {
	// JWKSURL is the provider's JSON Web Key Set (its jwks_uri).
	JWKSURL string
	// Issuer must equal the token's iss claim.
	Issuer string
	// Audience must be among the token's aud claim.
	Audience string
	// Client fetches the key set; nil: one with a 10 s timeout.
	Client *http.Client
	// RefreshInterval is how often the key set is fetched again, so that a
	// key the provider withdrew stops verifying; 0: 10 minutes.
	RefreshInterval time.Duration
	// Logger receives key set fetch failures; nil: slog.Default().
	Logger *slog.Logger
}

// JWTVerifier verifies JWTs against a provider's key set. Unknown key ids
// fetch the set again (at most once a minute), so that a rotated key works
// without a restart.
type JWTVerifier struct {
	kf     keyfunc.Keyfunc
	parser *jwt.Parser
	cancel context.CancelFunc
}

// NewJWTVerifier fetches the key set once (a provider down at start is
// logged, not fatal: the set is fetched again on the first token) and
// refreshes it in the background until Close.
func NewJWTVerifier(c JWTConfig) (*JWTVerifier, error) {
	if c.JWKSURL == "" || c.Issuer == "" || c.Audience == "" {
		return nil, errors.New("jwt: the JWKS URL, the issuer and the audience are all required")
	}
	client := c.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	refresh := c.RefreshInterval
	if refresh <= 0 {
		refresh = 10 * time.Minute
	}
	logger := c.Logger
	if logger == nil {
		logger = slog.Default()
	}
	// The key set's refresh goroutine lives until Close.
	ctx, cancel := context.WithCancel(context.Background())
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.JWKSURL}, keyfunc.Override{
		Client:          client,
		HTTPTimeout:     10 * time.Second,
		RefreshInterval: refresh,
		// A token naming a key the set lacks fetches the set again, at most
		// once a minute: a flood of made-up key ids cannot hammer the
		// provider, and a request never waits long for the limiter.
		RefreshUnknownKID: rate.NewLimiter(rate.Every(time.Minute), 1),
		RateLimitWaitMax:  time.Second,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				logger.Warn("fetching the JWT key set failed", "url", u, "error", err)
			}
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("jwt: key set %s: %w", c.JWKSURL, err)
	}
	return &JWTVerifier{
		kf: kf,
		parser: jwt.NewParser(
			jwt.WithValidMethods(jwtAlgorithms),
			jwt.WithIssuer(c.Issuer),
			jwt.WithAudience(c.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(30*time.Second),
		),
		cancel: cancel,
	}, nil
}

// Close stops the key set's background refresh.
func (v *JWTVerifier) Close() { v.cancel() }

// jwtClaims are the claims read from a token: the registered ones, and its
// scopes as scope (space-separated, RFC 8693) or scp (a string or a list,
// as Azure AD and Okta write it).
type jwtClaims struct {
	jwt.RegisteredClaims
	Scope string `json:"scope"`
	Scp   any    `json:"scp"`
}

// scopes returns the Gyre scopes among the token's; others are ignored.
func (c *jwtClaims) scopes() []Scope {
	var names []string
	names = append(names, strings.Fields(c.Scope)...)
	switch v := c.Scp.(type) {
	case string:
		names = append(names, strings.Fields(v)...)
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				names = append(names, s)
			}
		}
	}
	var out []Scope
	for _, n := range names {
		if s := Scope(n); s.Valid() && !containsScope(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func containsScope(s []Scope, x Scope) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// Authenticate verifies a JWT (signature, algorithm, issuer, audience,
// expiry) and returns its principal, or a 401 *Error saying why not.
func (v *JWTVerifier) Authenticate(ctx context.Context, raw string) (Principal, error) {
	var claims jwtClaims
	_, err := v.parser.ParseWithClaims(raw, &claims, v.kf.KeyfuncCtx(ctx))
	if err != nil {
		return Principal{}, &Error{Status: 401, Code: "invalid_token", Message: "invalid JWT: " + jwtReason(err)}
	}
	return Principal{Kind: KindJWT, ID: claims.Subject, Scopes: claims.scopes()}, nil
}

// jwtReason says why a JWT was refused in a line: golang-jwt's messages
// name the claim at fault; key lookup failures are summarised.
func jwtReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if errors.Is(err, keyfunc.ErrKeyfunc) {
			return "no key of the configured key set (JWKS) verifies it: unknown key id or algorithm"
		}
		return "cannot be verified: " + err.Error()
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return err.Error() // names a refused algorithm too
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "issued by another issuer than the configured one"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "not meant for this audience (aud)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "a required claim is missing: " + err.Error()
	}
	return err.Error()
}
