package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// token signs a bearer token for trying the ext_authz fronts locally:
// with a key file that does not exist yet, it makes one (EC P-256) and,
// with --jwks-out, the key set that `usher serve --jwks` reads.
func token(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", "", stderr)
	keyFile := fs.String("key", "", "PEM file of the signing key (EC P-256); created when it does not exist (required)")
	jwksOut := fs.String("jwks-out", "", "also write the key's public JSON Web Key Set to this file, for usher serve --jwks")
	sub := fs.String("sub", "", "the token's subject (sub claim)")
	tenant := fs.String("tenant", "", "the token's tenant (tenant_id claim)")
	app := fs.String("app", "", "the token's app scope (app_id claim; empty: none)")
	iss := fs.String("iss", "", "the token's issuer (iss claim; empty: none)")
	aud := fs.String("aud", "", "the token's audience (aud claim; empty: none)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("token takes no arguments, got %q", fs.Args())
	}
	if *keyFile == "" {
		return usagef("key: required (a PEM file, created when missing)")
	}
	key, err := signingKey(*keyFile, stderr)
	if err != nil {
		return err
	}
	pub, err := jwk.Import(&key.PublicKey)
	if err != nil {
		return err
	}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return err
	}
	kid := base64.RawURLEncoding.EncodeToString(thumb)
	for name, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: jwa.ES256(), jwk.KeyUsageKey: "sig"} {
		if err := pub.Set(name, v); err != nil {
			return err
		}
	}
	if *jwksOut != "" {
		set := jwk.NewSet()
		if err := set.AddKey(pub); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(set, "", "  ")
		if err := os.WriteFile(*jwksOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("jwks-out: %w", err)
		}
	}
	if *sub == "" && *tenant == "" {
		if *jwksOut == "" {
			return usagef("sub and tenant: give both to sign a token (or --jwks-out to write the key set only)")
		}
		return nil
	}
	if *sub == "" || *tenant == "" {
		return usagef("sub and tenant: a token needs both")
	}
	now := time.Now()
	claims := map[string]any{"sub": *sub, "tenant_id": *tenant, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(*ttl).Unix()}
	for k, v := range map[string]string{"app_id": *app, "iss": *iss, "aud": *aud} {
		if v != "" {
			claims[k] = v
		}
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return err
	}
	hdr := jws.NewHeaders()
	for name, v := range map[string]string{jws.TypeKey: "JWT", jws.KeyIDKey: kid} {
		if err := hdr.Set(name, v); err != nil {
			return err
		}
	}
	signed, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return err
	}
	tok := string(signed)
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// signingKey reads the EC key in path, or makes one there.
func signingKey(path string, stderr io.Writer) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		fmt.Fprintf(stderr, "usher token: made a new EC P-256 key in %s\n", path)
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("key %s: not a PEM file", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key %s: must be an EC P-256 key", path)
	}
	return ec, nil
}
