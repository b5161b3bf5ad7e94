// Package testjwt makes signing keys, key sets and tokens for tests.
package testjwt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer and Audience are what Sign puts in tokens by default.
const (
	Issuer   = "https://issuer.test"
	Audience = "usher"
)

// Key is a private signing key with its kid and algorithm.
type Key struct {
	priv any
	Kid  string
	Alg  jose.SignatureAlgorithm
}

// RSA makes a 2048-bit RS256 key.
func RSA(t testing.TB, kid string) Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return Key{k, kid, jose.RS256}
}

// EC makes a P-256 ES256 key.
func EC(t testing.TB, kid string) Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Key{k, kid, jose.ES256}
}

func (k Key) public() jose.JSONWebKey {
	var pub any
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	}
	return jose.JSONWebKey{Key: pub, KeyID: k.Kid, Algorithm: string(k.Alg), Use: "sig"}
}

// JWKS returns the public key set of keys.
func JWKS(keys ...Key) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.public())
	}
	b, _ := json.Marshal(set)
	return b
}

// Sign makes a token. claims are merged over a valid default set (sub u1,
// tenant_id acme, Issuer, Audience, an hour of validity); a nil value
// removes a claim.
func Sign(t testing.TB, k Key, claims map[string]any) string {
	t.Helper()
	now := time.Now()
	all := map[string]any{"sub": "u1", "tenant_id": "acme", "iss": Issuer, "aud": Audience,
		"exp": now.Add(time.Hour).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix()}
	for n, v := range claims {
		if v == nil {
			delete(all, n)
		} else {
			all[n] = v
		}
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.Kid != "" {
		opts = opts.WithHeader("kid", k.Kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(all).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// AlgNone is an unsigned token ("alg": "none") with otherwise valid claims.
func AlgNone() string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	p := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u1","tenant_id":"acme","iss":"` + Issuer + `","aud":"` + Audience + `","exp":4102444800}`))
	return h + "." + p + "."
}

// HMACWithPublicKey is a token claiming HS256, the key-confusion attack.
func HMACWithPublicKey() string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"k1"}`))
	p := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u1","tenant_id":"acme","exp":4102444800}`))
	return h + "." + p + ".c2ln"
}
