package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/semtest"
	"github.com/usher-authz/usher/server"
)

type fixture struct {
	base   string
	engine *decision.Engine
	reg    *prometheus.Registry
}

// start serves on a loopback port; withState false leaves the engine
// without a snapshot.
func start(t *testing.T, withState bool, maxBody int) *fixture {
	t.Helper()
	return startWith(t, withState, func(c *server.Config) { c.MaxBodyBytes = maxBody })
}

// startWith is start with the server's configuration set by set.
func startWith(t *testing.T, withState bool, set func(*server.Config)) *fixture {
	t.Helper()
	revision := uint64(0)
	if withState {
		revision = 42
	}
	engine, reg := semtest.Engine(t, revision)
	cfg := server.Config{Engine: engine, Gatherer: reg,
		Info: func() server.Info { return server.Info{Source: "file", SyncState: "following"} }}
	set(&cfg)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &fixture{base: "http://" + ln.Addr().String(), engine: engine, reg: reg}
}

func (f *fixture) do(t *testing.T, method, path, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if method != http.MethodHead && path != "/metrics" {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type = %q, want application/json", method, path, ct)
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: body %q is not JSON: %v", method, path, raw, err)
		}
	} else {
		out = map[string]any{"text": string(raw)}
	}
	return resp.StatusCode, resp.Header, out
}

var decisionID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestEvaluate(t *testing.T) {
	f := start(t, true, 0)
	rev := f.engine.Snapshot().TokenText() // the engine's local token of revision 42
	if want := regexp.MustCompile(`^l\.[0-9a-f]{8}\.42$`); !want.MatchString(rev) {
		t.Fatalf("revision token %q, want l.<8 hex>.42", rev)
	}
	for _, tc := range []struct {
		name, body string
		want       map[string]any
	}{
		{"seat via group", `{"tenant_id": "acme", "subject": {"id": "u2", "type": "person"}, "seat": {"license": "editor"}, "at": "2026-06-01T00:00:00Z"}`,
			map[string]any{"allowed": true, "reason": "seat_assigned_via_group", "revision": rev, "grant": map[string]any{"id": "a02", "via_group": "g_all"}}},
		{"direct seat", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "lic_editor"}}`,
			map[string]any{"allowed": true, "reason": "seat_assigned", "revision": rev, "grant": map[string]any{"id": "a01", "via_group": nil}}},
		{"denial", `{"tenant_id": "acme", "subject": {"id": "u5"}, "seat": {"license": "editor"}}`,
			map[string]any{"allowed": false, "reason": "assignment_denied", "revision": rev}},
		{"entitlement", `{"tenant_id": "acme", "subject": {"id": "u1"}, "entitlement": {"asset_id": "doc1", "type": "read_only"}}`,
			map[string]any{"allowed": true, "reason": "entitled", "revision": rev, "grant": map[string]any{"id": "e01", "via_group": nil}}},
		{"pending", `{"tenant_id": "acme", "subject": {"id": "u4"}, "entitlement": {"asset_id": "doc1", "type": "admin"}}`,
			map[string]any{"allowed": false, "reason": "entitlement_pending_approval", "revision": rev}},
		{"app scope from body", `{"tenant_id": "acme", "app_id": "app2", "subject": {"id": "u1"}, "seat": {"license": "appseat"}}`,
			map[string]any{"allowed": false, "reason": "license_not_found", "revision": rev}},
		{"unknown fields ignored", `{"tenant_id": "acme", "subject": {"id": "u1", "x": 1}, "seat": {"license": "editor"}, "extra": [1]}`,
			map[string]any{"allowed": true, "reason": "seat_assigned", "revision": rev, "grant": map[string]any{"id": "a01", "via_group": nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, got := f.do(t, "POST", "/v1/evaluate", tc.body)
			if status != 200 {
				t.Fatalf("POST /v1/evaluate %s = %d %v, want 200", tc.body, status, got)
			}
			id, _ := got["decision_id"].(string)
			if !decisionID.MatchString(id) {
				t.Errorf("decision_id = %q, want 32 hex digits", id)
			}
			delete(got, "decision_id")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("POST /v1/evaluate %s mismatch (-want +got):\n%s", tc.body, diff)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	f := start(t, true, 2048)
	empty := start(t, false, 0)
	for _, tc := range []struct {
		name         string
		f            *fixture
		method, path string
		body         string
		status       int
		code, msg    string
	}{
		{"malformed json", f, "POST", "/v1/evaluate", `{"tenant_id": `, 400, "invalid_request", "body: not valid JSON"},
		{"empty body", f, "POST", "/v1/evaluate", ``, 400, "invalid_request", "body: must be a JSON object, got nothing"},
		{"not an object", f, "POST", "/v1/evaluate", `[1]`, 400, "invalid_request", "body: must be a JSON object, got JSON array"},
		{"missing tenant", f, "POST", "/v1/evaluate", `{"subject": {"id": "u1"}, "seat": {"license": "editor"}}`, 400, "invalid_request", "tenant_id: is required"},
		{"missing subject", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "seat": {"license": "editor"}}`, 400, "invalid_request", "subject: is required"},
		{"missing subject id", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {}, "seat": {"license": "editor"}}`, 400, "invalid_request", "subject.id: is required"},
		{"bad subject type", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1", "type": "robot"}, "seat": {"license": "editor"}}`, 400, "invalid_request", `subject.type: must be person or group`},
		{"wrong field type", f, "POST", "/v1/evaluate", `{"tenant_id": 7, "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, 400, "invalid_request", "tenant_id: must be a string, got JSON number"},
		{"neither check", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}}`, 400, "invalid_request", "exactly one of seat and entitlement is required"},
		{"both checks", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "e"}, "entitlement": {"asset_id": "a", "type": "admin"}}`, 400, "invalid_request", "got both"},
		{"missing license", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {}}`, 400, "invalid_request", "seat.license: is required"},
		{"missing asset", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "entitlement": {"type": "admin"}}`, 400, "invalid_request", "entitlement.asset_id: is required"},
		{"missing type", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "entitlement": {"asset_id": "doc1"}}`, 400, "invalid_request", "entitlement.type: is required"},
		{"bad at", f, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}, "at": "yesterday"}`, 400, "invalid_request", `at: must be an RFC 3339 time, got "yesterday"`},
		{"unknown path", f, "GET", "/v2/nothing", ``, 404, "not_found", "no such path: /v2/nothing"},
		{"wrong method", f, "GET", "/v1/evaluate", ``, 405, "method_not_allowed", "use POST"},
		{"wrong method on health", f, "POST", "/health/live", `{}`, 405, "method_not_allowed", "use GET"},
		{"body too large", f, "POST", "/v1/evaluate", `{"tenant_id": "` + strings.Repeat("a", 4096) + `"}`, 413, "body_too_large", "exceeds the limit of 2048 bytes"},
		{"no state", empty, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, 503, "no_state", "no state snapshot loaded yet"},
		{"no state batch", empty, "POST", "/v1/evaluate/batch", `{"checks": []}`, 503, "no_state", "no state snapshot loaded yet"},
		{"no state compat", empty, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`, 503, "no_state", "no state"},
		{"batch without checks", f, "POST", "/v1/evaluate/batch", `{}`, 400, "invalid_request", "checks: is required"},
		{"batch checks type", f, "POST", "/v1/evaluate/batch", `{"checks": {}}`, 400, "invalid_request", "checks: must be an array"},
		{"batch checks null", f, "POST", "/v1/evaluate/batch", `{"checks": null}`, 400, "invalid_request", "checks: is required"},
		{"batch not JSON inside a check", f, "POST", "/v1/evaluate/batch", `{"checks": [{"tenant_id": }]}`, 400, "invalid_request", "body: not valid JSON"},
		{"batch trailing data", f, "POST", "/v1/evaluate/batch", `{"checks": []} {}`, 400, "invalid_request", ""},
		{"compat missing fields", f, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme"}`, 400, "invalid_request", "seatName: is required; subjectId: is required; subjectType: is required"},
		{"compat subject type", f, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "editor", "subjectId": "u1", "subjectType": "group"}`, 400, "invalid_request", `subjectType: must be user, got "group"`},
		{"compat no such seat", f, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "nope", "subjectId": "u1", "subjectType": "user"}`, 404, "license_not_found", `no seat license "nope" in org "acme"`},
		{"compat other org", f, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "initech", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`, 404, "license_not_found", `no seat license "editor" in org "initech"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, got := tc.f.do(t, tc.method, tc.path, tc.body)
			e, _ := got["error"].(map[string]any)
			code, _ := e["code"].(string)
			msg, _ := e["message"].(string)
			if status != tc.status || code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s %s %.60s = %d %v, want %d code %q message containing %q", tc.method, tc.path, tc.body, status, got, tc.status, tc.code, tc.msg)
			}
			if status == 405 && hdr.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}
}

func TestBatch(t *testing.T) {
	f := start(t, true, 0)
	status, _, got := f.do(t, "POST", "/v1/evaluate/batch", `{"checks": [
		{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}},
		{"tenant_id": "acme", "subject": {"id": "u1"}},
		"nonsense",
		{"tenant_id": "acme", "subject": {"id": "u7"}, "entitlement": {"asset_id": "doc1", "type": "read_only"}}
	]}`)
	if status != 200 {
		t.Fatalf("batch = %d %v, want 200", status, got)
	}
	results, _ := got["results"].([]any)
	if len(results) != 4 {
		t.Fatalf("batch results = %v, want 4 in order", got)
	}
	reason := func(i int) string { r, _ := results[i].(map[string]any)["reason"].(string); return r }
	errMsg := func(i int) string {
		e, _ := results[i].(map[string]any)["error"].(map[string]any)
		m, _ := e["message"].(string)
		return m
	}
	if reason(0) != "seat_assigned" || reason(3) != "entitlement_inactive" {
		t.Errorf("batch reasons = %q, %q, want seat_assigned, entitlement_inactive", reason(0), reason(3))
	}
	if !strings.Contains(errMsg(1), "checks[1].seat: exactly one of seat and entitlement is required") {
		t.Errorf("batch slot 1 error = %q, want it to name checks[1].seat", errMsg(1))
	}
	if !strings.Contains(errMsg(2), "checks[2]: must be a JSON object, got JSON string") {
		t.Errorf("batch slot 2 error = %q, want it to name checks[2]", errMsg(2))
	}
	var many strings.Builder
	many.WriteString(`{"checks": [`)
	for i := range server.MaxBatchChecks + 1 {
		if i > 0 {
			many.WriteByte(',')
		}
		many.WriteString(`{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`)
	}
	many.WriteString(`]}`)
	status, _, got = f.do(t, "POST", "/v1/evaluate/batch", many.String())
	if status != 400 || !strings.Contains(got["error"].(map[string]any)["message"].(string), "at most 1000 checks per batch, got 1001") {
		t.Errorf("batch of 1001 = %d %v, want 400 naming the limit", status, got)
	}
	status, _, got = f.do(t, "POST", "/v1/evaluate/batch", `{"checks": []}`)
	if status != 200 || len(got["results"].([]any)) != 0 {
		t.Errorf("empty batch = %d %v, want 200 with no results", status, got)
	}
	// Keys match exactly: another spelling is an unknown key, ignored; a
	// repeated key is refused, so no gateway reads another batch than Usher.
	for _, tc := range []struct{ body, want string }{
		{`{"note": {"x": [1, "\u00e9"]}, "checks": [{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}]}`, ""},
		{`{"\u0063hecks": [{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}]}`, ""}, // an escape spells the same key
		{`{"Checks": [{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}]}`, "checks: is required"},
		{`{"checks": [], "checks": [{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}]}`, "checks: appears twice in one object"},
		{`{"x": 1, "x": 2, "checks": []}`, "x: appears twice in one object"},
	} {
		status, _, got = f.do(t, "POST", "/v1/evaluate/batch", tc.body)
		if tc.want == "" {
			if rs, _ := got["results"].([]any); status != 200 || len(rs) != 1 || rs[0].(map[string]any)["reason"] != "seat_assigned" {
				t.Errorf("batch %s = %d %v, want one seat_assigned", tc.body, status, got)
			}
			continue
		}
		if msg, _ := got["error"].(map[string]any)["message"].(string); status != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("batch %s = %d %v, want 400 saying %q", tc.body, status, got, tc.want)
		}
	}
}

// A gateway that checks the exact keys must see the request Usher answers:
// another spelling never overrides a key, a repeated key is refused.
func TestExactKeys(t *testing.T) {
	f := start(t, true, 0)
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/evaluate", `{"tenant_id": "acme", "Tenant_Id": "globex", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, `"grant":{"id":"a01"`},
		{"/v1/evaluate", `{"tenant_id": "globex", "TENANT_ID": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, `"grant":{"id":"g01"`},
		{"/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "ſeat": {"license": "editor"}}`, `seat: exactly one of seat and entitlement is required`},
		{"/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}, "tenant_id": "globex"}`, `tenant_id: appears twice in one object`},
		{"/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1", "id": "u2"}, "seat": {"license": "editor"}}`, `subject.id: appears twice in one object`},
		{"/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1", "ID": "u2"}, "seat": {"license": "editor"}}`, `"reason":"seat_assigned"`},
		{"/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "ORGID": "globex", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`, `"orgId":"acme"`},
		{"/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "orgId": "globex", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`, `orgId: appears twice in one object`},
	} {
		status, _, got := f.do(t, "POST", tc.path, tc.body)
		if raw, _ := json.Marshal(got); !strings.Contains(string(raw), tc.want) {
			t.Errorf("POST %s %s = %d %s, want it to contain %s", tc.path, tc.body, status, raw, tc.want)
		}
	}
}

func TestCompat(t *testing.T) {
	f := start(t, true, 0)
	status, _, got := f.do(t, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "viewer", "subjectId": "u3", "subjectType": "user"}`)
	if status != 200 {
		t.Fatalf("compat = %d %v", status, got)
	}
	if got["allowed"] != false {
		t.Errorf("allowed = %v, want false (u3's group assignment is suspended)", got["allowed"])
	}
	alloc := got["seatLicenseAllocation"].(map[string]any)
	id := alloc["id"].(string)
	if len(id) < 32 || len(id) > 36 || id != server.AllocationID("acme", "lic_viewer") {
		t.Errorf("allocation id = %q, want the stable 36-character id of acme/lic_viewer", id)
	}
	lic := alloc["seatLicense"].(map[string]any)
	if alloc["orgId"] != "acme" || lic["id"] != server.LicenseUUID("acme", "lic_viewer") || lic["licenseId"] != "lic_viewer" || lic["name"] != "viewer" ||
		alloc["limit"] != -1.0 || lic["limit"] != nil || alloc["createdAt"] != "1970-01-01T00:00:00Z" {
		t.Errorf("allocation = %v, want org acme, license lic_viewer named viewer, limit -1 (unlimited)", alloc)
	}
	for _, k := range []string{"createdAt", "updatedAt", "currentAllocation", "subjects"} {
		if _, ok := alloc[k]; !ok {
			t.Errorf("allocation lacks %q: %v", k, alloc)
		}
	}
	status, _, got = f.do(t, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`)
	alloc = got["seatLicenseAllocation"].(map[string]any)
	// Holders now: a01 u1, a11 u10, a13 u11, a14 u12 (person, active, in effect, not denied),
	// and u2, u3 through a02 to g_all (in seat rank order); u5's a04 is all that, but a group
	// of u5 is denied the editor: u5 holds no seat.
	var subjects []string
	for _, s := range alloc["subjects"].([]any) {
		m := s.(map[string]any)
		subjects = append(subjects, m["subjectId"].(string))
		if m["subjectType"] != "user" {
			t.Errorf("subjectType = %v, want user", m["subjectType"])
		}
	}
	if status != 200 || got["allowed"] != true || alloc["limit"] != 50.0 || alloc["currentAllocation"] != float64(len(subjects)) {
		t.Errorf("compat editor = %d %v", status, got)
	}
	if diff := cmp.Diff([]string{"u1", "u10", "u11", "u12", "u2", "u3"}, subjects); diff != "" {
		t.Errorf("subjects mismatch (-want +got):\n%s", diff)
	}

	// A license with a seat limit: the ranked holders within limit and
	// overage, the same persons evaluate allows.
	_, _, got = f.do(t, "POST", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "lim", "seatName": "two", "subjectId": "p_d", "subjectType": "user"}`)
	alloc = got["seatLicenseAllocation"].(map[string]any)
	subjects = nil
	for _, s := range alloc["subjects"].([]any) {
		subjects = append(subjects, s.(map[string]any)["subjectId"].(string))
	}
	if got["allowed"] != false || alloc["limit"] != 2.0 || alloc["currentAllocation"] != 3.0 {
		t.Errorf("compat two for p_d = %v, want denied, limit 2, 3 allocated (2 + 1 overage)", got)
	}
	if diff := cmp.Diff([]string{"p_c", "p_a", "p_b"}, subjects); diff != "" {
		t.Errorf("limited subjects mismatch (-want +got):\n%s", diff)
	}
	for _, who := range []string{"p_a", "p_b", "p_c", "p_d", "p_e", "p_f", "p_x"} {
		_, _, d := f.do(t, "POST", "/v1/evaluate", `{"tenant_id": "lim", "subject": {"id": "`+who+`"}, "seat": {"license": "two"}}`)
		if held := slices.Contains(subjects, who); d["allowed"] != held {
			t.Errorf("evaluate %s = %v, but the allocation lists it: %v", who, d, held)
		}
		if g, _ := d["grant"].(map[string]any); (who == "p_b") != (g["over_limit"] == true) {
			t.Errorf("evaluate %s: grant %v, want over_limit only for p_b", who, g)
		}
	}
}

func TestHealthStatusMetrics(t *testing.T) {
	f := start(t, true, 0)
	empty := start(t, false, 0)
	if status, _, got := f.do(t, "GET", "/health/live", ""); status != 200 || got["status"] != "ok" {
		t.Errorf("live = %d %v", status, got)
	}
	if status, _, got := f.do(t, "GET", "/health/ready", ""); status != 200 || got["status"] != "ready" {
		t.Errorf("ready = %d %v", status, got)
	}
	if status, _, got := empty.do(t, "GET", "/health/ready", ""); status != 503 || got["status"] != "not_ready" {
		t.Errorf("ready without state = %d %v, want 503 not_ready", status, got)
	}
	f.do(t, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`)
	f.do(t, "POST", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u5"}, "seat": {"license": "editor"}}`)
	status, _, got := f.do(t, "GET", "/v1/status", "")
	state, _ := got["state"].(map[string]any)
	records, _ := state["records"].(map[string]any)
	pol, _ := got["policy"].(map[string]any)
	if status != 200 || got["ready"] != true || state["revision"] != f.engine.Snapshot().TokenText() || records["assignments"] != 35.0 || records["licenses"] != 14.0 ||
		state["source"] != "file" || pol["revision"] != 1.0 || got["sync"].(map[string]any)["state"] != "following" {
		t.Errorf("status = %d %v", status, got)
	}
	_, _, m := f.do(t, "GET", "/metrics", "")
	text := m["text"].(string)
	for _, want := range []string{
		`usher_decisions_total{allowed="true",api="evaluate",check="seat",reason="seat_assigned"} 1`,
		`usher_decisions_total{allowed="false",api="evaluate",check="seat",reason="assignment_denied"} 1`,
		`usher_decision_duration_seconds_bucket{api="evaluate",check="seat",le="1e-06"}`,
		`usher_decision_cache_requests_total{result="miss"} 2`,
		`usher_state_revision 42`,
		`usher_state_records{kind="assignment"} 35`,
		`usher_state_age_seconds`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func FuzzParseEvaluate(f *testing.F) {
	f.Add([]byte(`{"tenant_id": "acme", "subject": {"id": "u1", "type": "person"}, "seat": {"license": "editor"}, "at": "2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"tenant_id": "acme", "subject": {"id": "u1"}, "entitlement": {"asset_id": "a", "type": "admin"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := server.ParseEvaluate(b)
		if err != nil {
			if !strings.Contains(err.Error(), ":") {
				t.Errorf("error %q names no field", err)
			}
			return
		}
		if r.TenantID == "" || r.Subject.ID == "" || (r.License == "" && (r.AssetID == "" || r.Type == "")) {
			t.Errorf("ParseEvaluate(%q) accepted an incomplete request %+v", b, r)
		}
	})
}

// rawHTTP sends a request as written and returns the status line and body.
func rawHTTP(t *testing.T, base, req string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Tokens with group claims make headers of several KB: accepted up to the
// limit, 431 beyond it, 408 for a request that never finishes, and no
// error message echoes what the client sent.
func TestHeaderLimitsAndTransportErrors(t *testing.T) {
	f := startWith(t, true, func(c *server.Config) { c.ReadTimeout = 300 * time.Millisecond })
	body := `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`
	req := func(header string) string {
		return "POST /v1/evaluate HTTP/1.1\r\nHost: usher\r\nConnection: close\r\nAuthorization: Bearer " + header +
			"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	if status, b := rawHTTP(t, f.base, req(strings.Repeat("a", 20<<10))); status != 200 || !strings.Contains(b, "seat_assigned") {
		t.Errorf("20 KB header = %d %s, want 200", status, b)
	}
	secret := strings.Repeat("s", 40<<10)
	status, b := rawHTTP(t, f.base, req(secret))
	if status != 431 || !strings.Contains(b, `"code":"headers_too_large"`) || strings.Contains(b, "sss") {
		t.Errorf("40 KB header = %d %.300s, want 431 headers_too_large without the header", status, b)
	}
	status, b = rawHTTP(t, f.base, "GET /v1/status HTTP/1.1\r\nHost: usher\r\nAuthorization: Bearer top-secret\r\nBad Header\r\n\r\n")
	if status != 400 || strings.Contains(b, "top-secret") {
		t.Errorf("malformed request = %d %s, want 400 not echoing it", status, b)
	}
	status, b = rawHTTP(t, f.base, "POST /v1/evaluate HTTP/1.1\r\nHost: usher\r\nAuthorization: Bearer top-secret\r\n")
	if status != 408 || strings.Contains(b, "top-secret") {
		t.Errorf("a request that never finishes = %d %s, want 408", status, b)
	}
}

func TestHoldingsAndHolders(t *testing.T) {
	f := start(t, true, 0)
	status, _, got := f.do(t, "POST", "/v1/holdings", `{"tenant_id": "lim", "subject": {"id": "p_a"}, "kind": "seat"}`)
	hs, _ := got["holdings"].([]any)
	if status != 200 || len(hs) != 2 || got["next_cursor"] != nil || got["total"] != 2.0 {
		t.Fatalf("seat holdings of p_a = %d %v, want lic_open and lic_two", status, got)
	}
	if h := hs[1].(map[string]any); h["license_id"] != "lic_two" || h["name"] != "two" || h["reason"] != "seat_assigned" || h["grant"].(map[string]any)["id"] != "l1" {
		t.Errorf("holding = %v", h)
	}
	// Holders, paged two at a time: every holder once, in id order.
	var ids []string
	cursor := ""
	for range 10 {
		body := `{"tenant_id": "acme", "seat": {"license": "editor"}, "page": {"limit": 2`
		if cursor != "" {
			body += `, "cursor": "` + cursor + `"`
		}
		status, _, got := f.do(t, "POST", "/v1/holders", body+`}}`)
		if status != 200 || got["revision_changed"] != false {
			t.Fatalf("holders page = %d %v", status, got)
		}
		for _, h := range got["holders"].([]any) {
			ids = append(ids, h.(map[string]any)["id"].(string))
		}
		next, _ := got["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if !slices.IsSorted(ids) || len(ids) != 6 || slices.Compact(slices.Clone(ids))[5] != ids[5] {
		t.Errorf("holders of editor over pages = %v, want 6 distinct, sorted", ids)
	}
	// A cursor from an older revision continues on the current state, and says so.
	_, _, first := f.do(t, "POST", "/v1/holders", `{"tenant_id": "acme", "seat": {"license": "editor"}, "page": {"limit": 2}}`)
	f.engine.SetSnapshot(decision.NewSnapshot(semtest.Document(t), 43))
	_, _, next := f.do(t, "POST", "/v1/holders", `{"tenant_id": "acme", "seat": {"license": "editor"}, "page": {"limit": 2, "cursor": "`+first["next_cursor"].(string)+`"}}`)
	if next["revision_changed"] != true || len(next["holders"].([]any)) != 2 {
		t.Errorf("the next page after a change = %v, want revision_changed", next)
	}
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/holdings", `{"tenant_id": "acme", "subject": {"id": "u1"}}`, "kind: is required: seat or entitlement"},
		{"/v1/holdings", `{"tenant_id": "acme", "subject": {"id": "u1"}, "kind": "seat", "page": {"limit": 5000}}`, "page.limit: must be from 1 to 1000"},
		{"/v1/holdings", `{"tenant_id": "acme", "subject": {"id": "u1"}, "kind": "seat", "page": {"cursor": "nope"}}`, "page.cursor: not a cursor"},
		{"/v1/holders", `{"tenant_id": "acme"}`, "seat: exactly one of seat and entitlement is required"},
		{"/v1/holders", `{"tenant_id": "acme", "entitlement": {"asset_id": "a"}}`, "entitlement.type: is required"},
	} {
		status, _, got := f.do(t, "POST", tc.path, tc.body)
		e, _ := got["error"].(map[string]any)
		if msg, _ := e["message"].(string); status != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s = %d %v, want 400 containing %q", tc.path, tc.body, status, got, tc.want)
		}
	}
	status, _, got = f.do(t, "POST", "/v1/holdings", `{"tenant_id": "acme", "subject": {"id": "u1"}, "kind": "entitlement"}`)
	if status != 200 || len(got["holdings"].([]any)) == 0 {
		t.Errorf("entitlement holdings of u1 = %d %v", status, got)
	}
}

// Explain answers what evaluate answers, for every semantics case.
func TestExplainAgreesWithEvaluate(t *testing.T) {
	f := start(t, true, 0)
	var sem struct {
		At    string                       `json:"at"`
		Cases []map[string]json.RawMessage `json:"cases"`
	}
	if err := json.Unmarshal(semtest.Raw(t), &sem); err != nil {
		t.Fatal(err)
	}
	for _, c := range sem.Cases {
		body := map[string]json.RawMessage{"at": json.RawMessage(strconv.Quote(sem.At))}
		for _, k := range []string{"tenant_id", "app_id", "subject", "seat", "entitlement", "at"} {
			if v, ok := c[k]; ok {
				body[k] = v
			}
		}
		b, _ := json.Marshal(body)
		_, _, d := f.do(t, "POST", "/v1/evaluate", string(b))
		status, _, x := f.do(t, "POST", "/v1/explain", string(b))
		if status != 200 || x["allowed"] != d["allowed"] || x["reason"] != d["reason"] || x["rule"] == "" || x["records"] == nil {
			t.Errorf("%s: explain = %d %v, evaluate %v", c["name"], status, x, d)
		}
	}
}
