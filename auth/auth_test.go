package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/usher-authz/usher/auth"
)

type key struct {
	priv any
	kid  string
	alg  jose.SignatureAlgorithm
}

func newRSA(t *testing.T, kid string) key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key{k, kid, jose.RS256}
}

func newEC(t *testing.T, kid string) key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key{k, kid, jose.ES256}
}

func (k key) public() jose.JSONWebKey {
	var pub any
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	}
	return jose.JSONWebKey{Key: pub, KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

func jwks(keys ...key) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.public())
	}
	b, _ := json.Marshal(set)
	return b
}

// sign makes a token; claims are merged over a valid default set.
func sign(t *testing.T, k key, claims map[string]any) string {
	t.Helper()
	now := time.Now()
	all := map[string]any{"sub": "u1", "tenant_id": "acme", "iss": "https://issuer.test", "aud": "usher",
		"exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix()}
	for n, v := range claims {
		if v == nil {
			delete(all, n)
		} else {
			all[n] = v
		}
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.kid != "" {
		opts = opts.WithHeader("kid", k.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(all).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func verifier(t *testing.T, jwksPath string) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(context.Background(), auth.Config{JWKS: jwksPath, Issuer: "https://issuer.test", Audience: "usher", Leeway: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerify(t *testing.T) {
	good, ec, other := newRSA(t, "k1"), newEC(t, "k2"), newRSA(t, "k1")
	v := verifier(t, writeFile(t, jwks(good, ec)))
	ctx := context.Background()
	id, err := v.Verify(ctx, sign(t, good, map[string]any{"app_id": "app1"}))
	if err != nil || id != (auth.Identity{Subject: "u1", Tenant: "acme", App: "app1"}) {
		t.Fatalf("Verify(good) = %+v, %v", id, err)
	}
	if id, err := v.Verify(ctx, sign(t, ec, map[string]any{"aud": []string{"other", "usher"}})); err != nil || id.Tenant != "acme" {
		t.Errorf("Verify(EC, audience list) = %+v, %v", id, err)
	}
	// Within the leeway, exp and nbf still pass.
	if _, err := v.Verify(ctx, sign(t, good, map[string]any{"exp": time.Now().Add(-2 * time.Second).Unix()})); err != nil {
		t.Errorf("Verify(expired 2s ago, leeway 5s) = %v, want ok", err)
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u1","tenant_id":"acme","iss":"https://issuer.test","aud":"usher","exp":4102444800}`))
	hmacHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"k1"}`))
	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", sign(t, good, map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}), "token expired"},
		{"not yet valid", sign(t, good, map[string]any{"nbf": time.Now().Add(time.Minute).Unix()}), "not valid yet"},
		{"wrong issuer", sign(t, good, map[string]any{"iss": "https://evil.test"}), `wrong issuer "https://evil.test"`},
		{"wrong audience", sign(t, good, map[string]any{"aud": "someone-else"}), "wrong audience"},
		{"no exp", sign(t, good, map[string]any{"exp": nil}), "no exp"},
		{"bad signature", sign(t, other, nil), "bad signature"},
		{"unknown kid", sign(t, newRSA(t, "k9"), nil), `no key in the key set matches kid "k9"`},
		{"alg none", header + "." + payload + ".", "malformed token or unsupported algorithm"},
		{"hmac with the public key", hmacHeader + "." + payload + ".c2ln", "malformed token or unsupported algorithm"},
		{"garbage", "not.a.token", "malformed token"},
		{"empty", "", "malformed token"},
		{"no tenant", sign(t, good, map[string]any{"tenant_id": nil}), `lacks the tenant claim "tenant_id"`},
		{"no subject", sign(t, good, map[string]any{"sub": nil}), `lacks the subject claim "sub"`},
		{"tenant not a string", sign(t, good, map[string]any{"tenant_id": 7}), `claim "tenant_id" must be a string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(ctx, tc.token)
			if err == nil || !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify = %+v, %v; want ErrUnauthenticated containing %q", id, err, tc.want)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "": "", "Basic abc": "", "Bearer": ""} {
		got, err := auth.BearerToken(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestJWKSFromURLRotates(t *testing.T) {
	k1, k2 := newRSA(t, "k1"), newRSA(t, "k2")
	var set atomic.Pointer[[]byte]
	b := jwks(k1)
	set.Store(&b)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Write(*set.Load())
	}))
	defer srv.Close()
	v := verifier(t, srv.URL)
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, k1, nil)); err != nil {
		t.Fatal(err)
	}
	// The issuer rotates to k2: an unknown kid triggers one reread.
	b2 := jwks(k1, k2)
	set.Store(&b2)
	time.Sleep(1100 * time.Millisecond) // unknown kids reread at most once a second
	before := fetches.Load()
	if _, err := v.Verify(ctx, sign(t, k2, nil)); err != nil {
		t.Errorf("Verify with the rotated-in key: %v", err)
	}
	if fetches.Load() != before+1 {
		t.Errorf("the key set was fetched %d more times, want 1", fetches.Load()-before)
	}
	// An unknown kid again within the second does not hammer the URL.
	v.Verify(ctx, sign(t, newRSA(t, "k7"), nil))
	v.Verify(ctx, sign(t, newRSA(t, "k8"), nil))
	if fetches.Load() > before+2 {
		t.Errorf("unknown kids fetched the key set %d times within a second", fetches.Load()-before)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer bad.Close()
	if _, err := auth.NewVerifier(ctx, auth.Config{JWKS: bad.URL}); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("NewVerifier on a failing URL: %v, want the status", err)
	}
}
