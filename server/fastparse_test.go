package server

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func slowBody(t *testing.T, b []byte) (fastBody, bool) {
	t.Helper()
	var e evalBody
	if json.Unmarshal(b, &e) != nil {
		return fastBody{}, false
	}
	f := fastBody{tenantID: e.TenantID, appID: e.AppID, at: e.At}
	if e.Subject != nil {
		f.hasSubject, f.subject = true, *e.Subject
	}
	if e.Seat != nil {
		f.hasSeat, f.seat = true, *e.Seat
	}
	if e.Entitlement != nil {
		f.hasEnt, f.ent = true, *e.Entitlement
	}
	return f, true
}

func checkFast(t *testing.T, b []byte) bool {
	var f fastBody
	if !parseEvaluateFast(b, &f) {
		return false
	}
	want, ok := slowBody(t, b)
	if !ok {
		t.Fatalf("fast path accepted %q, encoding/json rejects it", b)
	}
	if diff := cmp.Diff(want, f, cmp.AllowUnexported(fastBody{})); diff != "" {
		t.Fatalf("fast path on %q differs from encoding/json (-json +fast):\n%s", b, diff)
	}
	return true
}

func TestParseEvaluateFast(t *testing.T) {
	for _, tc := range []struct {
		body string
		fast bool
	}{
		{`{"tenant_id": "acme", "subject": {"id": "u1", "type": "person"}, "seat": {"license": "editor"}, "at": "2026-01-01T00:00:00Z"}`, true},
		{` {"tenant_id":"acme","subject":{"id":"u1"},"entitlement":{"asset_id":"a","type":"admin"}} `, true},
		{`{"tenant_id": "acme", "extra": {"a": [1, -2.5e3, true, false, null, "x", {}]}, "subject": {"id": "u1", "x": []}, "seat": {"license": "e", "y": 0}}`, true},
		{`{"subject": {"id": "a"}, "subject": {"type": "group"}}`, true},
		{`{"subject": {"id": "a"}, "subject": null, "subject": {"type": "group"}}`, true},
		{`{"seat": null, "entitlement": null, "tenant_id": null}`, true},
		{`{}`, true},
		{`{"tenant_id": "a\"b"}`, false},
		{`{"Tenant_ID": "acme"}`, false},
		{`{"subject": {"ID": "u1"}}`, false},
		{`{"tenant_id": 7}`, false},
		{`{"tenant_id": "é"}`, false},
		{`{"tenant_id": "acme"} x`, false},
		{`{"tenant_id": "acme",}`, false},
		{`[]`, false},
		{`{"a": 01}`, false},
		{`{"a": [1,]}`, false},
	} {
		if got := checkFast(t, []byte(tc.body)); got != tc.fast {
			t.Errorf("parseEvaluateFast(%s) = %v, want %v", tc.body, got, tc.fast)
		}
	}
}

// FuzzParseEvaluateFast checks that whenever the fast path accepts a body,
// it decodes exactly what encoding/json decodes.
func FuzzParseEvaluateFast(f *testing.F) {
	f.Add([]byte(`{"tenant_id": "acme", "subject": {"id": "u1", "type": "person"}, "seat": {"license": "editor"}, "at": "2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"tenant_id":"acme","subject":{"id":"u1"},"entitlement":{"asset_id":"a","type":"admin"},"x":[1,{"y":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) { checkFast(t, b) })
}
