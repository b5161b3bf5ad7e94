package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/usher-authz/usher/auth"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/semtest"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

// The transport-free core on its own: each kind of answer, and what the
// fronts need to word and count it.
func TestCheck(t *testing.T) {
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		t.Fatal(err)
	}
	key := testjwt.RSA(t, "k1")
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwks, testjwt.JWKS(key), 0o644)
	v, err := auth.NewVerifier(context.Background(), auth.Config{JWKS: jwks})
	if err != nil {
		t.Fatal(err)
	}
	routes, err := policy.ParseRoutes([]byte(`routes: [{path: "/editor/*", seat: editor}]`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := decision.NewEngine(decision.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	a, err := authz.New(authz.Config{Engine: e, Policy: func() *policy.Compiled { return p }, Routes: routes, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	good := "Bearer " + testjwt.Sign(t, key, nil) // u1 of acme: an editor seat
	check := func(path, authorization string) authz.Result {
		return a.Check(context.Background(), decision.APIExtAuthzGRPC, authz.Request{Method: "GET", Path: path, Authorization: authorization})
	}
	if r := check("/editor/x", good); r.Status != authz.Unavailable {
		t.Errorf("before any state: %+v, want Unavailable", r)
	}
	e.SetPolicy(p)
	e.SetSnapshot(decision.NewSnapshot(semtest.Document(t), 1))
	for _, c := range []struct {
		path, authorization string
		status              authz.Status
		reason, failure     string
	}{
		{"/editor/x", good, authz.Allowed, "seat_assigned", ""},
		{"/elsewhere", good, authz.Denied, "no_route", ""},
		{"/editor/../elsewhere", good, authz.Invalid, "invalid_path", ""},
		{"/editor/x", "", authz.Unauthenticated, "unauthenticated", auth.ReasonMissing},
		{"/editor/x", "Basic x", authz.Unauthenticated, "unauthenticated", auth.ReasonMalformed},
		{"/editor/x", "Bearer " + testjwt.Sign(t, testjwt.RSA(t, "k1"), nil), authz.Unauthenticated, "unauthenticated", auth.ReasonBadSignature},
	} {
		r := check(c.path, c.authorization)
		if r.Status != c.status || r.Reason != c.reason || r.AuthFailure != c.failure {
			t.Errorf("Check(%s, %.20q) = %+v, want status %d reason %s failure %q", c.path, c.authorization, r, c.status, c.reason, c.failure)
		}
		if (r.Status == authz.Allowed || r.Status == authz.Denied) && len(r.DecisionID) != 32 {
			t.Errorf("Check(%s): decision id %q", c.path, r.DecisionID)
		}
	}
}
