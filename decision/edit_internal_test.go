package decision

import "testing"

// The in-place path takes edits of assignments and entitlements that name
// what the tenant already holds; anything else is rebuilt.
func TestWithEditsInPlace(t *testing.T) {
	doc, err := ParseDocumentBytes([]byte(`{
 "licenses": [{"id": "l1", "tenant_id": "t", "name": "editor"}],
 "assignments": [{"id": "a1", "tenant_id": "t", "license_id": "l1", "assignee_id": "u1"}],
 "entitlements": [{"id": "e1", "tenant_id": "t", "asset_id": "doc", "principal_id": "u1", "entitlement_type": "admin"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ten := NewSnapshot(doc, 1).Tenant("t")
	rec := func(js string) *Assignment {
		a, err := DecodeAssignment([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, c := range []struct {
		name    string
		edits   []Edit
		inPlace bool
	}{
		{"new subject, known license", []Edit{{KindAssignment, "a2", rec(`{"id": "a2", "tenant_id": "t", "license_id": "l1", "assignee_id": "u2"}`)}}, true},
		{"delete", []Edit{{KindAssignment, "a1", nil}, {KindEntitlement, "e1", nil}}, true},
		{"unknown license", []Edit{{KindAssignment, "a2", rec(`{"id": "a2", "tenant_id": "t", "license_id": "l9", "assignee_id": "u2"}`)}}, false},
		{"new app", []Edit{{KindAssignment, "a2", rec(`{"id": "a2", "tenant_id": "t", "license_id": "l1", "assignee_id": "u2", "app_id": "x"}`)}}, false},
		{"license edit", []Edit{{KindLicense, "l1", nil}}, false},
	} {
		if got := ten.withEdits(2, c.edits) != nil; got != c.inPlace {
			t.Errorf("%s: in place %v, want %v", c.name, got, c.inPlace)
		}
	}
}
