// Package jwtauth verifies bearer JWTs against a JWKS (a file or a URL, kept
// fresh) and turns their claims into the identity a check runs as: the
// subject, the tenant and the app scope.
package jwtauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// ErrUnauthenticated marks a missing, malformed or invalid token.
var ErrUnauthenticated = errors.New("unauthenticated")

// Identity is who a verified token speaks for.
type Identity struct {
	Subject string
	Tenant  string
	App     string // "" when the token carries no app scope
	// Admin: the token's admin claim (Config.AdminClaim) is true.
	Admin bool
}

// Config configures a Verifier.
type Config struct {
	// JWKS is a file path or an http(s) URL of a JSON Web Key Set. Required.
	JWKS string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// SubjectClaim, TenantClaim and AppClaim name the claims; defaults
	// sub, tenant_id and app_id.
	SubjectClaim, TenantClaim, AppClaim string
	// AdminClaim names the boolean claim that lets a token read other
	// principals' records (explain); default usher_admin.
	AdminClaim string
	// Leeway is the clock skew allowed on exp, nbf and iat; default 30s.
	Leeway time.Duration
	// Refresh is how often the JWKS is reread; default 5m. An unknown key
	// id also triggers a reread, at most once a second.
	Refresh time.Duration
	// HTTPClient fetches a JWKS URL; default a client with a 5s timeout.
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger reports key set refreshes; nil discards.
	Logger *slog.Logger
}

// Config's defaults.
const (
	DefaultSubjectClaim = "sub"
	DefaultTenantClaim  = "tenant_id"
	DefaultAppClaim     = "app_id"
	DefaultAdminClaim   = "usher_admin"
	DefaultLeeway       = 30 * time.Second
	DefaultRefresh      = 5 * time.Minute
)

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.JWKS == "" {
		errs = append(errs, errors.New("jwks: a file or URL is required"))
	}
	if c.Leeway < 0 {
		errs = append(errs, errors.New("jwt-leeway: must not be negative"))
	}
	if c.Refresh < 0 {
		errs = append(errs, errors.New("jwks-refresh: must not be negative"))
	}
	return errors.Join(errs...)
}

// Algorithms are the signature algorithms accepted; "none" and the HMAC
// family (which a public key set cannot verify) are not among them.
var Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// verifyKey is a public key of the set with what selects it.
type verifyKey struct {
	kid, alg string // alg "" when the key does not name one
	key      jwk.Key
}

// Verifier checks bearer tokens. It is safe for concurrent use.
type Verifier struct {
	cfg       Config
	keys      atomic.Pointer[[]verifyKey]
	mu        sync.Mutex // serializes rereads
	lastFetch time.Time
	fileStamp string

	// verified remembers tokens that passed, so a token reused across
	// requests costs a map lookup, not a signature check.
	cacheMu  sync.RWMutex
	verified map[string]cachedIdentity
}

type cachedIdentity struct {
	id    Identity
	until time.Time // the earlier of the token's exp and a minute after the check
}

// maxCached bounds the verified-token cache; past it the cache restarts.
const maxCached = 10_000

// NewVerifier validates cfg and loads the key set once; a key set that
// cannot be loaded at start is an error.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.SubjectClaim, DefaultSubjectClaim)
	def(&cfg.TenantClaim, DefaultTenantClaim)
	def(&cfg.AppClaim, DefaultAppClaim)
	def(&cfg.AdminClaim, DefaultAdminClaim)
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	v := &Verifier{cfg: cfg, verified: map[string]cachedIdentity{}}
	if err := v.reload(ctx, true); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Verifier) isURL() bool {
	return strings.HasPrefix(v.cfg.JWKS, "http://") || strings.HasPrefix(v.cfg.JWKS, "https://")
}

// reload rereads the key set; unless force, at most once a second.
func (v *Verifier) reload(ctx context.Context, force bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !force && time.Since(v.lastFetch) < time.Second {
		return nil
	}
	v.lastFetch = time.Now()
	var raw []byte
	var err error
	if v.isURL() {
		raw, err = v.fetch(ctx)
	} else {
		var st os.FileInfo
		if st, err = os.Stat(v.cfg.JWKS); err == nil {
			stamp := fmt.Sprint(st.Size(), st.ModTime().UnixNano())
			if stamp == v.fileStamp && v.keys.Load() != nil {
				return nil
			}
			v.fileStamp = stamp
			raw, err = os.ReadFile(v.cfg.JWKS)
		}
	}
	if err != nil {
		return fmt.Errorf("jwks %s: %w", v.cfg.JWKS, err)
	}
	set, err := jwk.Parse(raw)
	if err != nil {
		return fmt.Errorf("jwks %s: not a JSON Web Key Set: %w", v.cfg.JWKS, err)
	}
	var pub []verifyKey
	for i := range set.Len() {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		// A key for encryption, or whose key_ops leave out verify, never
		// verifies a signature (RFC 7517 §4.2, §4.3); nor does a shared
		// secret, which a published key set must not hold.
		use, _ := k.KeyUsage()
		ops, hasOps := k.KeyOps()
		if use != "" && use != "sig" || hasOps && !slices.Contains(ops, jwk.KeyOpVerify) || k.KeyType() == jwa.OctetSeq() {
			v.cfg.Logger.Debug("jwks key not for verifying signatures; left out", "kid", kid, "use", use)
			continue
		}
		pk, err := k.PublicKey() // never verify with, or keep, private material
		if err != nil || pk.Validate() != nil {
			continue
		}
		alg := ""
		if a, ok := k.Algorithm(); ok {
			alg = a.String()
		}
		pub = append(pub, verifyKey{kid, alg, pk})
	}
	if len(pub) == 0 {
		return fmt.Errorf("jwks %s: no usable public keys", v.cfg.JWKS)
	}
	v.keys.Store(&pub)
	v.cfg.Logger.Debug("jwks loaded", "source", v.cfg.JWKS, "keys", len(pub))
	return nil
}

func (v *Verifier) fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKS, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET answered %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// Run rereads the key set every Refresh until ctx ends; a failed reread
// keeps the last good set.
func (v *Verifier) Run(ctx context.Context) {
	t := time.NewTicker(v.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.reload(ctx, true); err != nil {
				v.cfg.Logger.Warn("jwks refresh failed; keeping the last key set", "error", err)
			}
		}
	}
}

// BearerToken extracts the token of an "Authorization: Bearer …" value.
func BearerToken(header string) (string, error) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if header == "" {
		return "", fail(ReasonMissing, "no bearer token (Authorization header missing)")
	}
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", fail(ReasonMalformed, "Authorization must be \"Bearer <token>\"")
	}
	return strings.TrimSpace(tok), nil
}

// Why a token was refused: the closed label set of
// usher_auth_failures_total.
const (
	ReasonMissing       = "missing"
	ReasonMalformed     = "malformed"
	ReasonUnknownKey    = "unknown_key"
	ReasonBadSignature  = "bad_signature"
	ReasonExpired       = "expired"
	ReasonNotYetValid   = "not_yet_valid"
	ReasonWrongIssuer   = "wrong_issuer"
	ReasonWrongAudience = "wrong_audience"
	ReasonBadClaims     = "bad_claims"
)

// FailureReasons lists every reason.
var FailureReasons = []string{ReasonMissing, ReasonMalformed, ReasonUnknownKey, ReasonBadSignature, ReasonExpired,
	ReasonNotYetValid, ReasonWrongIssuer, ReasonWrongAudience, ReasonBadClaims}

// Error is a refused token; it is ErrUnauthenticated.
type Error struct {
	Reason string // one of FailureReasons
	msg    string
}

func (e *Error) Error() string        { return "unauthenticated: " + e.msg }
func (e *Error) Is(target error) bool { return target == ErrUnauthenticated }

// FailureReason is why err refused a token ("" when it is no *Error).
func FailureReason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func fail(reason, format string, args ...any) error {
	return &Error{Reason: reason, msg: fmt.Sprintf(format, args...)}
}

// Verify checks a compact JWS token's signature against the key set, its
// exp, nbf, iss and aud, and returns the identity from its claims. A token
// that passed is remembered until its exp, at most a minute (so a key
// removed from the set stops verifying within a minute).
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	now := v.cfg.Now()
	v.cacheMu.RLock()
	c, ok := v.verified[token]
	v.cacheMu.RUnlock()
	if ok && now.Before(c.until) {
		return c.id, nil
	}
	id, until, err := v.verify(ctx, token, now)
	if err != nil {
		return Identity{}, err
	}
	v.cacheMu.Lock()
	if len(v.verified) >= maxCached {
		clear(v.verified)
	}
	v.verified[token] = cachedIdentity{id, until}
	v.cacheMu.Unlock()
	return id, nil
}

func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (Identity, time.Time, error) {
	id, exp, err := v.verifyClaims(ctx, token, now)
	if err != nil {
		return Identity{}, time.Time{}, err
	}
	until := now.Add(time.Minute)
	if exp.Add(v.cfg.Leeway).Before(until) {
		until = exp.Add(v.cfg.Leeway)
	}
	return id, until, nil
}

func (v *Verifier) verifyClaims(ctx context.Context, token string, now time.Time) (Identity, time.Time, error) {
	// Compact serialization only: one protected header, one signature.
	if strings.Count(token, ".") != 2 {
		return Identity{}, time.Time{}, fail(ReasonMalformed, "malformed token: not a compact JWS (three dot-separated parts)")
	}
	msg, err := jws.Parse([]byte(token), jws.WithCompact())
	if err != nil {
		return Identity{}, time.Time{}, fail(ReasonMalformed, "malformed token: %v", err)
	}
	sigs := msg.Signatures()
	if len(sigs) != 1 {
		return Identity{}, time.Time{}, fail(ReasonMalformed, "token must have exactly one signature")
	}
	h := sigs[0].ProtectedHeaders()
	alg, _ := h.Algorithm()
	if !slices.Contains(Algorithms, alg.String()) {
		return Identity{}, time.Time{}, fail(ReasonMalformed, "malformed token or unsupported algorithm: alg %q is not one of %v", alg.String(), Algorithms)
	}
	kid, _ := h.KeyID()
	keys := v.candidates(kid, alg.String())
	if len(keys) == 0 && kid != "" {
		if err := v.reload(ctx, false); err == nil {
			keys = v.candidates(kid, alg.String())
		}
	}
	if len(keys) == 0 {
		return Identity{}, time.Time{}, fail(ReasonUnknownKey, "no key in the key set matches kid %q", kid)
	}
	var payload []byte
	var verr error
	for _, k := range keys {
		if payload, verr = jws.Verify([]byte(token), jws.WithKey(alg, k.key)); verr == nil {
			break
		}
	}
	if verr != nil {
		return Identity{}, time.Time{}, fail(ReasonBadSignature, "bad signature")
	}
	// The signature holds; now the claims, each type error named.
	var all map[string]any
	if json.Unmarshal(payload, &all) != nil || all == nil {
		return Identity{}, time.Time{}, fail(ReasonBadClaims, "the claims are not a JSON object")
	}
	if err := claimTypes(all); err != nil {
		return Identity{}, time.Time{}, err
	}
	exp, err := v.registered(all, now)
	if err != nil {
		return Identity{}, time.Time{}, err
	}
	str := func(name string) (string, error) {
		switch x := all[name].(type) {
		case nil:
			return "", nil
		case string:
			return x, nil
		}
		return "", fail(ReasonBadClaims, "claim %q must be a string", name)
	}
	var id Identity
	var errs []error
	for _, c := range []struct {
		name string
		dst  *string
	}{{v.cfg.SubjectClaim, &id.Subject}, {v.cfg.TenantClaim, &id.Tenant}, {v.cfg.AppClaim, &id.App}} {
		s, err := str(c.name)
		if err != nil {
			errs = append(errs, err)
		}
		*c.dst = s
	}
	if len(errs) > 0 {
		return Identity{}, time.Time{}, errs[0]
	}
	if id.Subject == "" {
		return Identity{}, time.Time{}, fail(ReasonBadClaims, "token lacks the subject claim %q", v.cfg.SubjectClaim)
	}
	switch a := all[v.cfg.AdminClaim].(type) {
	case nil:
	case bool:
		id.Admin = a
	default:
		return Identity{}, time.Time{}, fail(ReasonBadClaims, "claim %q must be a boolean, got %s", v.cfg.AdminClaim, jsonType(a))
	}
	if id.Tenant == "" {
		return Identity{}, time.Time{}, fail(ReasonBadClaims, "token lacks the tenant claim %q", v.cfg.TenantClaim)
	}
	return id, exp, nil
}

// registered checks iss, aud, nbf, exp and iat (types already checked)
// and returns exp, which a token must have.
func (v *Verifier) registered(all map[string]any, now time.Time) (time.Time, error) {
	iss, _ := all["iss"].(string)
	if v.cfg.Issuer != "" && iss != v.cfg.Issuer {
		return time.Time{}, fail(ReasonWrongIssuer, "wrong issuer %q", iss)
	}
	var aud []string
	switch a := all["aud"].(type) {
	case string:
		aud = []string{a}
	case []any:
		for _, e := range a {
			aud = append(aud, e.(string))
		}
	}
	if v.cfg.Audience != "" && !slices.Contains(aud, v.cfg.Audience) {
		return time.Time{}, fail(ReasonWrongAudience, "wrong audience %q", aud)
	}
	if nbf, ok := numericDate(all["nbf"]); ok && now.Add(v.cfg.Leeway).Before(nbf) {
		return time.Time{}, fail(ReasonNotYetValid, "token not valid yet (nbf)")
	}
	exp, ok := numericDate(all["exp"])
	if ok && now.Add(-v.cfg.Leeway).After(exp) {
		return time.Time{}, fail(ReasonExpired, "token expired")
	}
	if iat, ok := numericDate(all["iat"]); ok && now.Add(v.cfg.Leeway).Before(iat) {
		return time.Time{}, fail(ReasonNotYetValid, "token issued in the future (iat)")
	}
	if !ok {
		return time.Time{}, fail(ReasonBadClaims, "token has no exp")
	}
	return exp, nil
}

// numericDate reads seconds since the epoch (RFC 7519 §2), whole seconds,
// held within a range where times do not wrap.
func numericDate(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok {
		return time.Time{}, false
	}
	const bound = 1e15 // ~31 million years either side of 1970
	f = max(-bound, min(bound, f))
	return time.Unix(int64(f), 0), true
}

// claimTypes checks the registered claims' JSON types (RFC 7519 §4.1).
func claimTypes(all map[string]any) error {
	for _, name := range []string{"exp", "nbf", "iat"} {
		if v, ok := all[name]; ok {
			if _, num := v.(float64); !num {
				return fail(ReasonBadClaims, "claim %q must be a number (seconds since the epoch), got %s", name, jsonType(v))
			}
		}
	}
	for _, name := range []string{"iss", "sub", "jti"} {
		if v, ok := all[name]; ok {
			if _, str := v.(string); !str {
				return fail(ReasonBadClaims, "claim %q must be a string, got %s", name, jsonType(v))
			}
		}
	}
	switch a := all["aud"].(type) {
	case nil, string:
	case []any:
		for _, e := range a {
			if _, str := e.(string); !str {
				return fail(ReasonBadClaims, "claim \"aud\" must be a string or an array of strings, got an array holding %s", jsonType(e))
			}
		}
	default:
		return fail(ReasonBadClaims, "claim \"aud\" must be a string or an array of strings, got %s", jsonType(a))
	}
	return nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	}
	return "an object"
}

// candidates returns the keys a token header may be verified with.
func (v *Verifier) candidates(kid, alg string) []verifyKey {
	var out []verifyKey
	for _, k := range *v.keys.Load() {
		if (kid == "" || k.kid == kid) && (k.alg == "" || k.alg == alg) {
			out = append(out, k)
		}
	}
	return out
}
