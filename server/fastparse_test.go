package server

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// jsonBody is what encoding/json makes of an evaluate body, which matches
// keys case-insensitively and lets a repeated key win: the reference for
// bodies that have neither.
func jsonBody(b []byte) (fastBody, bool) {
	var e struct {
		TenantID string `json:"tenant_id"`
		AppID    string `json:"app_id"`
		At       string `json:"at"`
		Subject  *struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		} `json:"subject"`
		Seat *struct {
			License string `json:"license"`
		} `json:"seat"`
		Entitlement *struct {
			AssetID string `json:"asset_id"`
			Type    string `json:"type"`
		} `json:"entitlement"`
	}
	if json.Unmarshal(b, &e) != nil {
		return fastBody{}, false
	}
	f := fastBody{tenantID: e.TenantID, appID: e.AppID, at: e.At}
	if e.Subject != nil {
		f.hasSubject, f.subject = true, evalSubject{e.Subject.ID, e.Subject.Type}
	}
	if e.Seat != nil {
		f.hasSeat, f.seat = true, evalSeat{e.Seat.License}
	}
	if e.Entitlement != nil {
		f.hasEnt, f.ent = true, evalEntitlement{e.Entitlement.AssetID, e.Entitlement.Type}
	}
	return f, true
}

// checkFast checks that whenever the fast path accepts a body, the strict
// reader decodes exactly the same.
func checkFast(t *testing.T, b []byte) bool {
	var f fastBody
	if !parseEvaluateFast(b, &f) {
		return false
	}
	want, err := readEvaluate(b, "")
	if err != nil {
		t.Fatalf("fast path accepted %q, the strict reader rejects it: %v", b, err)
	}
	if diff := cmp.Diff(want, f, cmp.AllowUnexported(fastBody{})); diff != "" {
		t.Fatalf("fast path on %q differs from the strict reader (-strict +fast):\n%s", b, diff)
	}
	return true
}

// checkStrict checks the strict reader against encoding/json: where no
// key is spelt in another case (which encoding/json folds onto a known
// one, and the strict reader ignores on purpose), never more lenient, and
// the same request.
func checkStrict(t *testing.T, b []byte) {
	got, err := readEvaluate(b, "")
	if err != nil || otherSpelling(b) {
		return
	}
	want, ok := jsonBody(b)
	if !ok {
		t.Fatalf("the strict reader accepted %q, encoding/json rejects it", b)
	}
	if !cmp.Equal(want, got, cmp.AllowUnexported(fastBody{})) {
		t.Fatalf("on %q the strict reader decodes %+v, encoding/json %+v", b, got, want)
	}
}

// otherSpelling reports whether b may spell a known key otherwise than
// exactly: in another case, escaped, or with a rune that folds to ASCII.
func otherSpelling(b []byte) bool {
	if bytes.ContainsRune(b, '\\') || bytes.ContainsRune(b, 0x17f) || bytes.ContainsRune(b, 0x212a) {
		return true
	}
	lower := bytes.ToLower(b)
	for _, k := range []string{"tenant_id", "app_id", "at", "subject", "seat", "entitlement", "id", "type", "license", "asset_id"} {
		if bytes.Count(lower, []byte(`"`+k+`"`)) != bytes.Count(b, []byte(`"`+k+`"`)) {
			return true
		}
	}
	return false
}

func TestParseEvaluateFast(t *testing.T) {
	for _, tc := range []struct {
		body string
		fast bool
	}{
		{`{"tenant_id": "acme", "subject": {"id": "u1", "type": "person"}, "seat": {"license": "editor"}, "at": "2026-01-01T00:00:00Z"}`, true},
		{` {"tenant_id":"acme","subject":{"id":"u1"},"entitlement":{"asset_id":"a","type":"admin"}} `, true},
		{`{"tenant_id": "acme", "extra": {"a": [1, -2.5e3, true, false, null, "x", {}]}, "subject": {"id": "u1", "x": []}, "seat": {"license": "e", "y": 0}}`, true},
		{`{"subject": {"id": "a"}, "subject": {"type": "group"}}`, false},
		{`{"subject": {"id": "a"}, "subject": null}`, false},
		{`{"x": 1, "x": 2}`, false},
		{`{"subject": {"id": "a", "id": "b"}}`, false},
		{`{"seat": null, "entitlement": null, "tenant_id": null}`, true},
		{`{}`, true},
		{`{"Tenant_ID": "globex", "tenant_id": "acme"}`, true}, // another spelling is an unknown key
		{`{"ſeat": {"license": "x"}}`, false},                  // not ASCII: the strict reader decides
		{`{"tenant_id": "a\"b"}`, false},
		{`{"subject": {"ID": "u1"}}`, true},
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

// FuzzParseEvaluateFast checks the fast path against the strict reader,
// and the strict reader against encoding/json.
func FuzzParseEvaluateFast(f *testing.F) {
	f.Add([]byte(`{"tenant_id": "acme", "subject": {"id": "u1", "type": "person"}, "seat": {"license": "editor"}, "at": "2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"tenant_id":"acme","subject":{"id":"u1"},"entitlement":{"asset_id":"a","type":"admin"},"x":[1,{"y":null}]}`))
	f.Add([]byte(`{"Tenant_Id":"globex","tenant_id":"acme","subject":{"id":"u1","id":"u2"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFast(t, b)
		checkStrict(t, b)
	})
}
