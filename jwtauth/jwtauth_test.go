package jwtauth_test

import (
	"context"
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

	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/jwtauth"
)

func verifier(t *testing.T, jwksPath string) *jwtauth.Verifier {
	t.Helper()
	v, err := jwtauth.NewVerifier(context.Background(), jwtauth.Config{JWKS: jwksPath, Issuer: "https://issuer.test", Audience: "usher", Leeway: 5 * time.Second})
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
	good, ec, other := testjwt.RSA(t, "k1"), testjwt.EC(t, "k2"), testjwt.RSA(t, "k1")
	v := verifier(t, writeFile(t, testjwt.JWKS(good, ec)))
	ctx := context.Background()
	id, err := v.Verify(ctx, testjwt.Sign(t, good, map[string]any{"app_id": "app1"}))
	if err != nil || id != (jwtauth.Identity{Subject: "u1", Tenant: "acme", App: "app1"}) {
		t.Fatalf("Verify(good) = %+v, %v", id, err)
	}
	if id, err := v.Verify(ctx, testjwt.Sign(t, ec, map[string]any{"aud": []string{"other", "usher"}})); err != nil || id.Tenant != "acme" {
		t.Errorf("Verify(EC, audience list) = %+v, %v", id, err)
	}
	// Within the leeway, exp and nbf still pass.
	if _, err := v.Verify(ctx, testjwt.Sign(t, good, map[string]any{"exp": time.Now().Add(-2 * time.Second).Unix()})); err != nil {
		t.Errorf("Verify(expired 2s ago, leeway 5s) = %v, want ok", err)
	}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"expired", testjwt.Sign(t, good, map[string]any{"exp": time.Now().Add(-time.Minute).Unix()}), "token expired"},
		{"not yet valid", testjwt.Sign(t, good, map[string]any{"nbf": time.Now().Add(time.Minute).Unix()}), "not valid yet"},
		{"wrong issuer", testjwt.Sign(t, good, map[string]any{"iss": "https://evil.test"}), `wrong issuer "https://evil.test"`},
		{"wrong audience", testjwt.Sign(t, good, map[string]any{"aud": "someone-else"}), "wrong audience"},
		{"no exp", testjwt.Sign(t, good, map[string]any{"exp": nil}), "no exp"},
		{"bad signature", testjwt.Sign(t, other, nil), "bad signature"},
		{"unknown kid", testjwt.Sign(t, testjwt.RSA(t, "k9"), nil), `no key in the key set matches kid "k9"`},
		{"alg none", testjwt.AlgNone(), "malformed token or unsupported algorithm"},
		{"hmac with the public key", testjwt.HMACWithPublicKey(), "malformed token or unsupported algorithm"},
		{"garbage", "not.a.token", "malformed token"},
		{"JSON serialization", `{"payload":"e30","signatures":[{"protected":"eyJhbGciOiJSUzI1NiJ9","signature":"c2ln"}]}`, "not a compact JWS"},
		{"empty", "", "malformed token"},
		{"no tenant", testjwt.Sign(t, good, map[string]any{"tenant_id": nil}), `lacks the tenant claim "tenant_id"`},
		{"no subject", testjwt.Sign(t, good, map[string]any{"sub": nil}), `lacks the subject claim "sub"`},
		{"tenant not a string", testjwt.Sign(t, good, map[string]any{"tenant_id": 7}), `claim "tenant_id" must be a string`},
		{"exp a string", testjwt.Sign(t, good, map[string]any{"exp": "tomorrow"}), `claim "exp" must be a number (seconds since the epoch), got a string`},
		{"nbf an object", testjwt.Sign(t, good, map[string]any{"nbf": map[string]any{}}), `claim "nbf" must be a number`},
		{"aud a number", testjwt.Sign(t, good, map[string]any{"aud": 5}), `claim "aud" must be a string or an array of strings, got a number`},
		{"aud holding a number", testjwt.Sign(t, good, map[string]any{"aud": []any{"usher", 5}}), `claim "aud" must be a string or an array of strings, got an array holding a number`},
		{"sub a number", testjwt.Sign(t, good, map[string]any{"sub": 5}), `claim "sub" must be a string, got a number`},
		{"iss a boolean", testjwt.Sign(t, good, map[string]any{"iss": true}), `claim "iss" must be a string, got a boolean`},
		{"admin claim a string", testjwt.Sign(t, good, map[string]any{"usher_admin": "yes"}), `claim "usher_admin" must be a boolean, got a string`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(ctx, tc.token)
			if err == nil || !errors.Is(err, jwtauth.ErrUnauthenticated) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify = %+v, %v; want ErrUnauthenticated containing %q", id, err, tc.want)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	for in, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "": "", "Basic abc": "", "Bearer": ""} {
		got, err := jwtauth.BearerToken(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestJWKSFromURLRotates(t *testing.T) {
	k1, k2 := testjwt.RSA(t, "k1"), testjwt.RSA(t, "k2")
	var set atomic.Pointer[[]byte]
	b := testjwt.JWKS(k1)
	set.Store(&b)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Write(*set.Load())
	}))
	defer srv.Close()
	v := verifier(t, srv.URL)
	ctx := context.Background()
	if _, err := v.Verify(ctx, testjwt.Sign(t, k1, nil)); err != nil {
		t.Fatal(err)
	}
	// The issuer rotates to k2: an unknown kid triggers one reread.
	b2 := testjwt.JWKS(k1, k2)
	set.Store(&b2)
	time.Sleep(1100 * time.Millisecond) // unknown kids reread at most once a second
	before := fetches.Load()
	if _, err := v.Verify(ctx, testjwt.Sign(t, k2, nil)); err != nil {
		t.Errorf("Verify with the rotated-in key: %v", err)
	}
	if fetches.Load() != before+1 {
		t.Errorf("the key set was fetched %d more times, want 1", fetches.Load()-before)
	}
	// An unknown kid again within the second does not hammer the URL.
	v.Verify(ctx, testjwt.Sign(t, testjwt.RSA(t, "k7"), nil))
	v.Verify(ctx, testjwt.Sign(t, testjwt.RSA(t, "k8"), nil))
	if fetches.Load() > before+2 {
		t.Errorf("unknown kids fetched the key set %d times within a second", fetches.Load()-before)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer bad.Close()
	if _, err := jwtauth.NewVerifier(ctx, jwtauth.Config{JWKS: bad.URL}); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("NewVerifier on a failing URL: %v, want the status", err)
	}
}

// TestCachedTokenStillExpires checks that a remembered token is refused
// once it expires.
func TestCachedTokenStillExpires(t *testing.T) {
	k := testjwt.RSA(t, "k1")
	now := time.Now()
	v, err := jwtauth.NewVerifier(context.Background(), jwtauth.Config{JWKS: writeFile(t, testjwt.JWKS(k)), Leeway: time.Second,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tok := testjwt.Sign(t, k, map[string]any{"exp": now.Add(10 * time.Second).Unix()})
	for range 2 {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("Verify before exp: %v", err)
		}
	}
	now = now.Add(12 * time.Second)
	if _, err := v.Verify(context.Background(), tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Verify of a remembered token after exp = %v, want expired", err)
	}
}

// Keys meant for encryption, or whose key_ops leave out verify, never
// verify a signature.
func TestJWKSKeysNotForVerifying(t *testing.T) {
	enc, ops, sig := testjwt.RSA(t, "enc"), testjwt.RSA(t, "ops"), testjwt.RSA(t, "sig")
	var set map[string][]map[string]any
	if err := json.Unmarshal(testjwt.JWKS(enc, ops, sig), &set); err != nil {
		t.Fatal(err)
	}
	set["keys"][0]["use"] = "enc"
	set["keys"][1]["key_ops"] = []string{"encrypt", "wrapKey"}
	delete(set["keys"][1], "use")
	b, _ := json.Marshal(set)
	v := verifier(t, writeFile(t, b))
	ctx := context.Background()
	for _, k := range []testjwt.Key{enc, ops} {
		if id, err := v.Verify(ctx, testjwt.Sign(t, k, nil)); err == nil || !strings.Contains(err.Error(), "no key in the key set matches") {
			t.Errorf("token signed by the %s key: %+v, %v; want refused", k.Kid, id, err)
		}
	}
	if _, err := v.Verify(ctx, testjwt.Sign(t, sig, nil)); err != nil {
		t.Errorf("token signed by the signing key: %v", err)
	}
	set["keys"] = set["keys"][:2]
	b, _ = json.Marshal(set)
	if _, err := jwtauth.NewVerifier(ctx, jwtauth.Config{JWKS: writeFile(t, b)}); err == nil || !strings.Contains(err.Error(), "no usable public keys") {
		t.Errorf("a key set of encryption keys only: %v, want no usable public keys", err)
	}
}
