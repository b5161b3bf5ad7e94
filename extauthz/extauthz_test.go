package extauthz_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/internal/semtest"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/jwtauth"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

// parts are what an authorizer is made of: a signing key and the verifier
// of its key set, the routes, and an engine of cfg without state or policy.
func parts(t *testing.T, routesYAML string, cfg decision.Config) (testjwt.Key, *jwtauth.Verifier, *extauthz.Routes, *decision.Engine) {
	t.Helper()
	key := testjwt.RSA(t, "k1")
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwks, testjwt.JWKS(key), 0o644)
	v, err := jwtauth.NewVerifier(context.Background(), jwtauth.Config{JWKS: jwks})
	if err != nil {
		t.Fatal(err)
	}
	routes, err := extauthz.ParseRoutes([]byte(routesYAML))
	if err != nil {
		t.Fatal(err)
	}
	e, err := decision.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return key, v, routes, e
}

// The transport-free core on its own: each kind of answer, and what the
// fronts need to word and count it.
func TestCheck(t *testing.T) {
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		t.Fatal(err)
	}
	key, v, routes, e := parts(t, `routes: [{path: "/editor/*", seat: editor}]`, decision.Config{})
	a, err := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return p }, Routes: routes, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	good := "Bearer " + testjwt.Sign(t, key, nil) // u1 of acme: an editor seat
	check := func(path, authorization string) extauthz.Result {
		return a.Check(context.Background(), decision.APIExtAuthzGRPC, extauthz.Request{Method: "GET", Path: path, Authorization: authorization})
	}
	if r := check("/editor/x", good); r.Status != extauthz.Unavailable {
		t.Errorf("before any state: %+v, want Unavailable", r)
	}
	e.SetPolicy(p)
	e.SetSnapshot(decision.NewSnapshot(semtest.Document(t), 1))
	for _, c := range []struct {
		path, authorization string
		status              extauthz.Status
		reason, failure     string
	}{
		{"/editor/x", good, extauthz.Allowed, "seat_assigned", ""},
		{"/elsewhere", good, extauthz.Denied, "no_route", ""},
		{"/editor/../elsewhere", good, extauthz.Invalid, "invalid_path", ""},
		{"/editor/x", "", extauthz.Unauthenticated, "unauthenticated", jwtauth.ReasonMissing},
		{"/editor/x", "Basic x", extauthz.Unauthenticated, "unauthenticated", jwtauth.ReasonMalformed},
		{"/editor/x", "Bearer " + testjwt.Sign(t, testjwt.RSA(t, "k1"), nil), extauthz.Unauthenticated, "unauthenticated", jwtauth.ReasonBadSignature},
	} {
		r := check(c.path, c.authorization)
		if r.Status != c.status || r.Reason != c.reason || r.AuthFailure != c.failure {
			t.Errorf("Check(%s, %.20q) = %+v, want status %d reason %s failure %q", c.path, c.authorization, r, c.status, c.reason, c.failure)
		}
		if (r.Status == extauthz.Allowed || r.Status == extauthz.Denied) && len(r.DecisionID) != 32 {
			t.Errorf("Check(%s): decision id %q", c.path, r.DecisionID)
		}
	}

	// x-usher-min-revision: the answer says its revision; a token the state
	// has not reached is a 503 to retry, a malformed one a 400.
	rev := e.Snapshot().Token()
	withMin := func(min string) extauthz.Result {
		return a.Check(context.Background(), decision.APIExtAuthzGRPC, extauthz.Request{Method: "GET", Path: "/editor/x", Authorization: good, MinRevision: min})
	}
	if r := withMin(rev.String()); r.Status != extauthz.Allowed || r.Revision != rev.String() {
		t.Errorf("at the current revision: %+v", r)
	}
	ahead := rev
	ahead.Seq++
	r := withMin(ahead.String())
	rep := r.Reply()
	if r.Status != extauthz.Unavailable || r.Reason != "state_behind" || rep.Status != 503 || !slices.Contains(rep.Headers, extauthz.Header{Key: "retry-after", Value: "1"}) ||
		!strings.Contains(string(rep.Body), `"code":"state_behind"`) {
		t.Errorf("a revision ahead: %+v, reply %d %v %s", r, rep.Status, rep.Headers, rep.Body)
	}
	if r := withMin("nope"); r.Status != extauthz.Invalid || r.Reply().Status != 400 || !strings.Contains(r.Message, "x-usher-min-revision: not a revision token") {
		t.Errorf("a malformed revision: %+v", r)
	}
	if rep := withMin("").Reply(); !slices.Contains(rep.Headers, extauthz.Header{Key: "x-usher-revision", Value: rev.String()}) {
		t.Errorf("an allowed reply's headers %v lack x-usher-revision", rep.Headers)
	}
}
