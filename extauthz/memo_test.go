package extauthz_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

// withRoute compiles the shipped decision policies with route as the
// route policy.
func withRoute(t *testing.T, route string) *policy.Compiled {
	t.Helper()
	fsys := fstest.MapFS{}
	err := fs.WalkDir(rego.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == "route.rego" || !strings.HasSuffix(path, ".rego") || strings.HasSuffix(path, "_test.rego") {
			return err
		}
		b, err := fs.ReadFile(rego.FS, path)
		fsys[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fsys["route.rego"] = &fstest.MapFile{Data: []byte(route)}
	p, err := policy.Compile(context.Background(), fsys, 1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The route memo reuses an evaluation only while every check it made
// answers the same: a state change, a check that depends on another's
// answer, decision ids in headers, and policies whose answers are not a
// function of their input (time.now_ns) all answer as a fresh evaluation.
func TestRouteMemo(t *testing.T) {
	const (
		editor = `{"licenses": [{"id": "ed", "tenant_id": "acme", "name": "editor"}, {"id": "vw", "tenant_id": "acme", "name": "viewer"}],
		 "assignments": [{"id": "a1", "tenant_id": "acme", "license_id": "ed", "assignee_id": "u1"}, {"id": "a2", "tenant_id": "acme", "license_id": "vw", "assignee_id": "u1"}]}`
		viewerOnly = `{"licenses": [{"id": "ed", "tenant_id": "acme", "name": "editor"}, {"id": "vw", "tenant_id": "acme", "name": "viewer"}],
		 "assignments": [{"id": "a2", "tenant_id": "acme", "license_id": "vw", "assignee_id": "u1"}]}`
		neither = `{"licenses": [{"id": "ed", "tenant_id": "acme", "name": "editor"}, {"id": "vw", "tenant_id": "acme", "name": "viewer"}]}`
	)
	// The viewer seat is checked only when the editor seat is allowed; the
	// answer names both checks' decision ids (and, in one variant, embeds
	// one in a header, which the memo cannot redo).
	chained := `package usher.route
default decision := {"allowed": false, "reason": "no_route"}
decision := {"allowed": v.allowed, "reason": v.reason, "decision_id": v.decision_id,
	"headers": {"x-editor-decision": e.decision_id, "x-trace": TRACE}} if {
	input.route.seat
	e := usher.seat(input.subject, input.route.seat)
	e.allowed
	v := usher.seat(input.subject, "viewer")
}
decision := {"allowed": false, "reason": e.reason, "decision_id": e.decision_id} if {
	input.route.seat
	e := usher.seat(input.subject, input.route.seat)
	not e.allowed
}`
	clock := `package usher.route
decision := {"allowed": true, "reason": "seat_assigned", "headers": {"x-at": sprintf("%d", [time.now_ns()])}}`

	key, v, routes, e := parts(t, `routes: [{path: "/editor/*", seat: editor}]`, decision.Config{})
	state := func(raw string) {
		doc, err := decision.DecodeDocument(strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		e.SetSnapshot(decision.NewSnapshot(doc, e.Snapshot().Revision+1))
	}
	e.SetSnapshot(decision.NewSnapshot(&decision.Document{}, 1))
	good := "Bearer " + testjwt.Sign(t, key, nil)
	check := func(a *extauthz.Authorizer) extauthz.Result {
		return a.Check(context.Background(), decision.APIExtAuthzGRPC, extauthz.Request{Method: "GET", Path: "/editor/x?q=1", Authorization: good})
	}

	for _, trace := range []string{`"none"`, `concat("-", ["id", v.decision_id])`} {
		pol := withRoute(t, strings.Replace(chained, "TRACE", trace, 1))
		if ok, _ := pol.RouteDeterministic(); !ok {
			t.Fatal("the chained policy calls nothing nondeterministic, yet is not memoizable")
		}
		e.SetPolicy(pol)
		memo, err := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return pol }, Routes: routes, Verifier: v})
		if err != nil {
			t.Fatal(err)
		}
		fresh, _ := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return pol }, Routes: routes, Verifier: v, NoRouteMemo: true})
		seen := map[string]bool{}
		for i, st := range []string{editor, editor, viewerOnly, viewerOnly, editor, neither, editor, editor} {
			state(st)
			got, want := check(memo), check(fresh)
			if got.Status != want.Status || got.Reason != want.Reason {
				t.Errorf("trace %s, round %d: memo answers %d %s, a fresh evaluation %d %s", trace, i, got.Status, got.Reason, want.Status, want.Reason)
			}
			if len(got.DecisionID) != 32 || seen[got.DecisionID] {
				t.Errorf("trace %s, round %d: decision id %q is not a new one", trace, i, got.DecisionID)
			}
			seen[got.DecisionID] = true
			if got.Status == extauthz.Allowed {
				ed := got.Headers["x-editor-decision"]
				if len(ed) != 32 || seen[ed] || ed == got.DecisionID {
					t.Errorf("trace %s, round %d: the editor check's decision id header %q is not that call's new id", trace, i, ed)
				}
				seen[ed] = true
				if x := got.Headers["x-trace"]; x != "none" && x != "id-"+got.DecisionID {
					t.Errorf("trace %s, round %d: x-trace %q, want id-%s", trace, i, x, got.DecisionID)
				}
			}
		}
	}

	clocked := withRoute(t, clock)
	if ok, name := clocked.RouteDeterministic(); ok || name != "time.now_ns" {
		t.Fatalf("a policy reading the clock: deterministic %v (%q)", ok, name)
	}
	ca, _ := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return clocked }, Routes: routes, Verifier: v})
	first := check(ca).Headers["x-at"]
	for i := 0; check(ca).Headers["x-at"] == first; i++ {
		if i == 100_000 {
			t.Fatalf("a policy reading the clock answered x-at %s 100,000 times: its answer was reused", first)
		}
	}
}
