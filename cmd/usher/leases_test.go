package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/internal/testredis"
	statesync "github.com/usher-authz/usher/sync"
)

const floatingState = `{"licenses": [
	{"id": "fl", "tenant_id": "t1", "name": "cad", "type": "floating", "seat_limit": 1, "lease_duration_s": 60},
	{"id": "nm", "tenant_id": "t1", "name": "named"}],
 "assignments": [
	{"id": "d1", "tenant_id": "t1", "license_id": "fl", "assignee_id": "u1", "reservation": "dynamic"},
	{"id": "d2", "tenant_id": "t1", "license_id": "fl", "assignee_id": "u2", "reservation": "dynamic"},
	{"id": "x3", "tenant_id": "t1", "license_id": "fl", "assignee_id": "u3", "reservation": "denied"}]}`

// loadFloating writes floatingState through w.
func loadFloating(t *testing.T, w *statesync.Writer) {
	t.Helper()
	doc, err := decision.DecodeDocument(strings.NewReader(floatingState))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Load(context.Background(), doc, false); err != nil {
		t.Fatal(err)
	}
}

// The lease endpoints of a sidecar following Redis: checkout, evaluate
// from memory, heartbeat, release, the operators' list, and every refusal.
func TestServeLeases(t *testing.T) {
	url, ns, w := redisNamespace(t, 0)
	loadFloating(t, w)
	p := startServe(t, []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns})
	checkout := func(subject string) (int, map[string]any) {
		code, _, got := p.post(t, "/v1/leases/checkout", fmt.Sprintf(`{"tenant_id": "t1", "subject": {"id": %q}, "seat": {"license": "cad"}}`, subject))
		return code, got
	}
	seat := func(subject, rev string) map[string]any {
		_, _, got := p.post(t, "/v1/evaluate", fmt.Sprintf(`{"tenant_id": "t1", "subject": {"id": %q}, "seat": {"license": "cad"}, "min_revision": %q}`, subject, rev))
		return got
	}
	if got := seat("u1", ""); got["reason"] != "not_checked_out" {
		t.Fatalf("before any checkout: %v", got)
	}
	code, got := checkout("u1")
	lease, _ := got["lease"].(map[string]any)
	seats, _ := got["seats"].(map[string]any)
	if code != 200 || got["granted"] != true || lease["license_id"] != "fl" || lease["subject"] != "u1" || seats["limit"] != 1.0 || seats["in_use"] != 1.0 {
		t.Fatalf("checkout u1 = %d %v", code, got)
	}
	id, rev := lease["id"].(string), got["revision"].(string)
	if got := seat("u1", rev); got["reason"] != "seat_leased" || got["grant"].(map[string]any)["id"] != id {
		t.Errorf("evaluate at the checkout's revision = %v, want seat_leased with the lease", got)
	}
	if code, got := checkout("u1"); code != 200 || got["granted"] != true || got["lease"].(map[string]any)["id"] != id {
		t.Errorf("a retried checkout = %d %v, want the same lease", code, got)
	}
	if code, got := checkout("u2"); code != 200 || got["granted"] != false || got["reason"] != "no_seat_available" {
		t.Errorf("checkout past the limit = %d %v", code, got)
	}
	if code, got := checkout("u3"); code != 200 || got["granted"] != false || got["reason"] != "assignment_denied" {
		t.Errorf("checkout by a denied person = %d %v", code, got)
	}
	if code, got := checkout("nobody"); code != 200 || got["granted"] != false || got["reason"] != "no_assignment" {
		t.Errorf("checkout without an assignment = %d %v", code, got)
	}
	code, _, got = p.post(t, "/v1/leases/heartbeat", fmt.Sprintf(`{"tenant_id": "t1", "lease_id": %q}`, id))
	if l, _ := got["lease"].(map[string]any); code != 200 || l["id"] != id || got["revision"] == nil {
		t.Errorf("heartbeat = %d %v", code, got)
	}
	list := func(query string) (int, string) {
		t.Helper()
		r, err := http.Get(p.base + "/v1/leases?tenant_id=t1&license=cad" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	// The operators' list at the heartbeat's revision holds the lease: no waiting.
	if code, b := list("&min_revision=" + got["revision"].(string)); code != 200 || !strings.Contains(b, `"id":"`+id+`","subject":"u1"`) {
		t.Errorf("the list at the heartbeat's revision = %d %s", code, b)
	}
	if code, b := list("&min_revision=nonsense"); code != 400 || !strings.Contains(b, "min_revision: ") {
		t.Errorf("the list with a malformed min_revision = %d %s, want 400 naming min_revision", code, b)
	}
	code, _, got = p.post(t, "/v1/leases/release", fmt.Sprintf(`{"tenant_id": "t1", "lease_id": %q}`, id))
	if code != 200 || got["released"] != true {
		t.Errorf("release = %d %v", code, got)
	}
	rel := got["revision"].(string)
	if got := seat("u1", rel); got["reason"] != "not_checked_out" {
		t.Errorf("evaluate after the release = %v", got)
	}
	if code, got := checkout("u2"); code != 200 || got["granted"] != true {
		t.Errorf("the freed seat = %d %v", code, got)
	}
	for _, tc := range []struct {
		path, body string
		code       int
		errCode    string
		msg        string
	}{
		{"/v1/leases/release", fmt.Sprintf(`{"tenant_id": "t1", "lease_id": %q}`, id), 200, "", ""},
		{"/v1/leases/heartbeat", `{"tenant_id": "t1", "lease_id": "lease_nope"}`, 404, "lease_not_found", "no such lease"},
		{"/v1/leases/heartbeat", fmt.Sprintf(`{"tenant_id": "other", "lease_id": %q}`, id), 404, "lease_not_found", "no such lease"},
		{"/v1/leases/checkout", `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "named"}}`, 400, "invalid_request", `seat.license: "named" is a named license`},
		{"/v1/leases/checkout", `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "cad"}, "duration_s": -5}`, 400, "invalid_request", "duration_s: must be from 1 to 86400 seconds"},
		{"/v1/leases/checkout", `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "cad"}, "duration_s": 1.5}`, 400, "invalid_request", "duration_s: must be a whole number"},
		{"/v1/leases/checkout", `{"tenant_id": "t1", "seat": {"license": "cad"}}`, 400, "invalid_request", "subject.id: is required"},
		{"/v1/leases/checkout", `{"tenant_id": "t1", "subject": {"id": "g", "type": "group"}, "seat": {"license": "cad"}}`, 400, "invalid_request", "subject.type: must be person"},
		{"/v1/leases/checkout", `{"subject": {"id": "u1"}}`, 400, "invalid_request", "tenant_id: is required"},
		{"/v1/leases/heartbeat", `{"tenant_id": "t1"}`, 400, "invalid_request", "lease_id: is required"},
		{"/v1/leases/release", `[1]`, 400, "invalid_request", "must be a JSON object"},
	} {
		code, _, got := p.post(t, tc.path, tc.body)
		if tc.code == 200 {
			if code != 200 || got["released"] != false {
				t.Errorf("%s %s = %d %v, want released false", tc.path, tc.body, code, got)
			}
			continue
		}
		e, _ := got["error"].(map[string]any)
		if msg, _ := e["message"].(string); code != tc.code || e["code"] != tc.errCode || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %s = %d %v; want %d %s containing %q", tc.path, tc.body, code, got, tc.code, tc.errCode, tc.msg)
		}
	}
	metrics := p.metricsText(t)
	for _, want := range []string{`usher_lease_operations_total{op="checkout",result="granted"} 2`, `usher_lease_operations_total{op="checkout",result="no_seat_available"} 1`,
		`usher_lease_operations_total{op="release",result="released"} 1`, "usher_leases_active 1", `usher_requests_total{api="leases",code="404"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Operators list and end leases from the command line.
	env := []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns}
	out, stderr, exit := runUsherEnv(t, env, "leases", "list", "--tenant", "t1", "--license", "fl")
	fields := strings.Fields(out)
	if exit != 0 || len(fields) < 10 || fields[5] == "" || fields[6] != "u2" || !strings.Contains(stderr, "1 live leases of fl in tenant t1") {
		t.Fatalf("usher leases list = %q, %q, exit %d", out, stderr, exit)
	}
	out, stderr, exit = runUsherEnv(t, env, "leases", "release", "--tenant", "t1", fields[5])
	if exit != 0 || !strings.HasPrefix(out, "released "+fields[5]+": its seat is free (revision ") {
		t.Errorf("usher leases release = %q, %q, exit %d", out, stderr, exit)
	}
	if _, stderr, exit := runUsherEnv(t, env, "leases", "list", "--tenant", "t1"); exit != 2 || !strings.Contains(stderr, "license: required") {
		t.Errorf("usher leases list without --license: exit %d, %q", exit, stderr)
	}

	// Without Redis, leases cannot be counted.
	demo := startServe(t, nil)
	if code, _, got := demo.post(t, "/v1/leases/checkout", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`); code != 503 ||
		got["error"].(map[string]any)["code"] != "redis_unavailable" {
		t.Errorf("checkout on the demo = %d %v, want 503 redis_unavailable", code, got)
	}
}

// A route with checkout: true takes the caller's floating seat on its
// first request behind Envoy, reuses the lease while it has time left, and
// denies when the pool is full.
func TestServeMeshCheckout(t *testing.T) {
	url, ns, w := redisNamespace(t, 0)
	loadFloating(t, w)
	dir := t.TempDir()
	key := testjwt.RSA(t, "k1")
	jwks := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwks, testjwt.JWKS(key), 0o644)
	routes := filepath.Join(dir, "routes.yaml")
	os.WriteFile(routes, []byte("routes:\n  - {path: \"/cad/*\", seat: cad, checkout: true}\n  - {path: \"/named/*\", seat: named, checkout: true}\n"), 0o644)
	p := startServe(t, []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns}, "--jwks", jwks, "--routes", routes, "--grpc-addr", freeAddr(t))
	call := func(sub string) (int, string) {
		code, _, body := p.send(t, "GET", "/ext_authz/cad/drawing", "",
			"Authorization", "Bearer "+testjwt.Sign(t, key, map[string]any{"sub": sub, "tenant_id": "t1"}), "x-usher-client-id", "workstation")
		return code, body
	}
	if code, body := call("u1"); code != 200 {
		t.Fatalf("u1's first request = %d %s, want 200 with a lease taken", code, body)
	}
	active, err := w.ActiveLeases(context.Background(), "t1", "fl")
	if err != nil || len(active) != 1 || active[0].Subject != "u1" || active[0].ClientID != "workstation" {
		t.Fatalf("leases after the first request = %+v, %v", active, err)
	}
	if code, _ := call("u1"); code != 200 {
		t.Errorf("u1's second request = %d", code)
	}
	if n := len(mustLeases(t, w)); n != 1 {
		t.Errorf("%d leases after a second request, want the same one", n)
	}
	if code, body := call("u2"); code != 403 || !strings.Contains(body, "not_checked_out") {
		t.Errorf("u2 with the pool full = %d %s, want 403 not_checked_out", code, body)
	}
	if code, body := call("u3"); code != 403 || !strings.Contains(body, "assignment_denied") {
		t.Errorf("u3 (denied) = %d %s", code, body)
	}
	if _, err := extauthz.ParseRoutes([]byte(`routes: [{path: "/x/{asset_id}", entitlement: admin, checkout: true}]`)); err == nil ||
		!strings.Contains(err.Error(), "routes[0] (any method /x/{asset_id}): checkout: only applies to seat routes") {
		t.Errorf("checkout on an entitlement route: %v", err)
	}
}

func mustLeases(t *testing.T, w *statesync.Writer) []statesync.Lease {
	t.Helper()
	ls, err := w.ActiveLeases(context.Background(), "t1", "fl")
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// With Redis gone, no seat can be taken or renewed (503
// redis_unavailable), and the leases the sidecar knows keep granting.
func TestServeLeasesWhileRedisIsDown(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	c, err := statesync.NewClient(srv.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: c, Namespace: "down"})
	if err != nil {
		t.Fatal(err)
	}
	loadFloating(t, w)
	p := startServe(t, []string{"USHER_REDIS_URL=" + srv.URL(), "USHER_NAMESPACE=down"})
	code, _, got := p.post(t, "/v1/leases/checkout", `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "cad"}}`)
	if code != 200 || got["granted"] != true {
		t.Fatalf("checkout = %d %v", code, got)
	}
	id, rev := got["lease"].(map[string]any)["id"].(string), got["revision"].(string)
	if _, _, got := p.post(t, "/v1/evaluate", `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "cad"}, "min_revision": "`+rev+`"}`); got["reason"] != "seat_leased" {
		t.Fatalf("evaluate = %v", got)
	}
	srv.Stop()
	for _, tc := range []struct{ path, body string }{
		{"/v1/leases/checkout", `{"tenant_id": "t1", "subject": {"id": "u2"}, "seat": {"license": "cad"}}`},
		{"/v1/leases/heartbeat", `{"tenant_id": "t1", "lease_id": "` + id + `"}`},
		{"/v1/leases/release", `{"tenant_id": "t1", "lease_id": "` + id + `"}`},
	} {
		code, retry, got := p.post(t, tc.path, tc.body)
		if e, _ := got["error"].(map[string]any); code != 503 || e["code"] != "redis_unavailable" || retry != "1" {
			t.Errorf("%s with Redis down = %d (Retry-After %q) %v, want 503 redis_unavailable", tc.path, code, retry, got)
		}
	}
	if _, _, got := p.post(t, "/v1/evaluate", `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "cad"}}`); got["reason"] != "seat_leased" {
		t.Errorf("evaluate with Redis down = %v, want the known lease to keep granting", got)
	}
}
