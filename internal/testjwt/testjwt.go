// Package testjwt makes signing keys, key sets and tokens for tests, with
// the standard library alone, so the verifier is tested against a JOSE
// implementation other than its own.
package testjwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"
	"time"
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
	Alg  string
}

// RSA makes a 2048-bit RS256 key.
func RSA(t testing.TB, kid string) Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return Key{k, kid, "RS256"}
}

// EC makes a P-256 ES256 key.
func EC(t testing.TB, kid string) Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Key{k, kid, "ES256"}
}

var b64 = base64.RawURLEncoding

func (k Key) public() map[string]string {
	jwk := map[string]string{"kid": k.Kid, "alg": k.Alg, "use": "sig"}
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		jwk["kty"], jwk["n"], jwk["e"] = "RSA", b64.EncodeToString(p.N.Bytes()), b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PrivateKey:
		x, y := make([]byte, 32), make([]byte, 32)
		p.X.FillBytes(x)
		p.Y.FillBytes(y)
		jwk["kty"], jwk["crv"], jwk["x"], jwk["y"] = "EC", "P-256", b64.EncodeToString(x), b64.EncodeToString(y)
	}
	if k.Kid == "" {
		delete(jwk, "kid")
	}
	return jwk
}

// JWKS returns the public key set of keys.
func JWKS(keys ...Key) []byte {
	set := struct {
		Keys []map[string]string `json:"keys"`
	}{}
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
	hdr := map[string]string{"alg": k.Alg, "typ": "JWT"}
	if k.Kid != "" {
		hdr["kid"] = k.Kid
	}
	h, _ := json.Marshal(hdr)
	p, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	input := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	sum := sha256.Sum256([]byte(input))
	var sig []byte
	switch priv := k.priv.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, s *big.Int
		if r, s, err = ecdsa.Sign(rand.Reader, priv, sum[:]); err == nil {
			sig = make([]byte, 64) // JWS: R and S, 32 bytes each (RFC 7518 §3.4)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
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
