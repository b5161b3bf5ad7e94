package decision_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/usher-authz/usher/decision"
)

func TestParseDocumentRejects(t *testing.T) {
	const lic = `{"id": "lic_1", "tenant_id": "acme", "name": "editor"}`
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"not json", `{"licenses": [`, []string{"not a JSON object"}},
		{"trailing data", `{} {}`, []string{"unexpected data after the document"}},
		{"missing id", `{"licenses": [{"tenant_id": "acme", "name": "x"}]}`, []string{`licenses[0]: id: is required`}},
		{"missing tenant", `{"licenses": [{"id": "l", "name": "x"}]}`, []string{`licenses[0] (id "l"): tenant_id: is required`}},
		{"bad status", `{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "status": "paused"}]}`,
			[]string{`licenses[0] (id "l"): status: must be one of active|suspended|revoked, got "paused"`}},
		{"negative seat limit", `{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "seat_limit": -1}]}`,
			[]string{`seat_limit: must be a non-negative integer or null, got -1`}},
		{"seat limit type", `{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "seat_limit": "ten"}]}`,
			[]string{`licenses[0] (id "l"): seat_limit: must be an integer, got JSON string`}},
		{"bad type", `{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "type": "site"}]}`, []string{`type: must be one of named|floating`}},
		{"bad time", `{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "expires_at": "tomorrow"}]}`,
			[]string{`expires_at: must be an RFC 3339 time, got "tomorrow"`}},
		{"window", `{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "valid_from": "2026-02-01T00:00:00Z", "expires_at": "2026-01-01T00:00:00Z"}]}`,
			[]string{`expires_at: must be after valid_from`}},
		{"duplicate license", `{"licenses": [` + lic + `,` + lic + `]}`, []string{`licenses[1] (id "lic_1"): id: must be unique among licenses of tenant "acme"`}},
		{"assignment without license", `{"licenses": [` + lic + `], "assignments": [{"id": "a1", "tenant_id": "acme", "license_id": "lic_2", "assignee_id": "u1"}]}`,
			[]string{`assignments[0] (id "a1"): license_id: must name a license of tenant "acme", no license "lic_2" there`}},
		{"cross-tenant license", `{"licenses": [` + lic + `], "assignments": [{"id": "a1", "tenant_id": "globex", "license_id": "lic_1", "assignee_id": "u1"}]}`,
			[]string{`license_id: must name a license of tenant "globex"`}},
		{"bad reservation", `{"licenses": [` + lic + `], "assignments": [{"id": "a1", "tenant_id": "acme", "license_id": "lic_1", "assignee_id": "u1", "reservation": "maybe"}]}`,
			[]string{`reservation: must be one of reserved|dynamic|denied, got "maybe"`}},
		{"bad assignee type", `{"licenses": [` + lic + `], "assignments": [{"id": "a1", "tenant_id": "acme", "license_id": "lic_1", "assignee_id": "u1", "assignee_type": "robot"}]}`,
			[]string{`assignee_type: must be person or group`}},
		{"pending assignment", `{"licenses": [` + lic + `], "assignments": [{"id": "a1", "tenant_id": "acme", "license_id": "lic_1", "assignee_id": "u1", "status": "pending_approval"}]}`,
			[]string{`status: must be one of active|suspended|revoked, got "pending_approval"`}},
		{"entitlement fields", `{"entitlements": [{"id": "e1", "tenant_id": "acme", "principal_type": "team", "grant_source": "magic", "status": "on"}]}`,
			[]string{`entitlements[0] (id "e1"): asset_id: is required`, `principal_id: is required`, `entitlement_type: is required`,
				`principal_type: must be person or group`, `grant_source: must be one of provisioned|inherited|direct`, `status: must be one of active|pending_approval|suspended|revoked`}},
		{"group member unknown", `{"groups": [{"id": "g1", "tenant_id": "acme", "members": [{"id": "g9", "type": "group"}]}]}`,
			[]string{`groups[0] (id "g1"): members[0].id: must name a group of tenant "acme", no group "g9" there`}},
		{"group member type", `{"groups": [{"id": "g1", "tenant_id": "acme", "members": [{"id": "x", "type": "bot"}]}]}`,
			[]string{`groups[0] (id "g1"): members[0].type: must be person or group`}},
		{"control characters", `{"licenses": [{"id": "l\n1", "tenant_id": "t", "name": "x"}]}`, []string{`id: must not contain control characters`}},
		{"rules across tenants reported in document order", `{
 "licenses": [{"id": "l", "tenant_id": "t1", "name": "x"}, {"id": "l", "tenant_id": "t2", "name": "x"}, {"id": "l", "tenant_id": "t2", "name": "y"}],
 "assignments": [{"id": "a", "tenant_id": "t1", "license_id": "nope", "assignee_id": "u"}, {"id": "a", "tenant_id": "t2", "license_id": "l", "assignee_id": "u"},
  {"id": "a", "tenant_id": "t2", "license_id": "gone", "assignee_id": "u"}],
 "groups": [{"id": "g", "tenant_id": "t2", "members": [{"id": "h", "type": "group"}, {"id": "i", "type": "group"}]}]}`,
			[]string{`licenses[2] (id "l"): id: must be unique among licenses of tenant "t2"` + "\n" +
				`assignments[0] (id "a"): license_id: must name a license of tenant "t1", no license "nope" there` + "\n" +
				`assignments[2] (id "a"): id: must be unique among assignments of tenant "t2"` + "\n" +
				`assignments[2] (id "a"): license_id: must name a license of tenant "t2", no license "gone" there` + "\n" +
				`groups[0] (id "g"): members[0].id: must name a group of tenant "t2", no group "h" there` + "\n" +
				`groups[0] (id "g"): members[1].id: must name a group of tenant "t2", no group "i" there`}},
		{"every problem at once, and none twice", `{"licenses": [{"id": "l1", "tenant_id": "t", "name": "x", "status": "paused"}],
 "assignments": [{"id": "a1", "tenant_id": "t", "license_id": "nope", "assignee_id": "u"},
  {"id": "a2", "tenant_id": "t", "license_id": "l1", "assignee_id": "u", "reservation": "maybe"},
  {"id": "a3", "tenant_id": "t", "license_id": "l1", "assignee_id": "v"}]}`,
			[]string{`licenses[0] (id "l1"): status: must be one of active|suspended|revoked, got "paused"` + "\n" +
				`assignments[1] (id "a2"): reservation: must be one of reserved|dynamic|denied, got "maybe"` + "\n" +
				`assignments[0] (id "a1"): license_id: must name a license of tenant "t", no license "nope" there`}},
		{"a syntax error names its line and column", "{\"licenses\": [\n  {\"id\": \"l1\",, }]}",
			[]string{`not valid JSON at line 2, column 15: invalid character ','`}},
		{"errors past the first decoding chunk keep their index and order", manyAssignments(5000, 4500, 4999),
			[]string{`assignments[4500] (id "a4500"): status: must be one of active|suspended|revoked, got "paused"` + "\n" +
				`assignments[4999] (id "a4999"): status: must be one of active|suspended|revoked, got "paused"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := decision.ParseDocument(strings.NewReader(tc.doc))
			if err == nil {
				t.Fatalf("ParseDocument(%s) = %d records, want an error", tc.doc, doc.Len())
			}
			if !errors.Is(err, decision.ErrInvalid) {
				t.Errorf("ParseDocument(%s) error %v is not ErrInvalid", tc.doc, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseDocument(%s) error =\n%v\nwant it to contain %q", tc.doc, err, w)
				}
			}
		})
	}
}

func TestDocumentRoundTrip(t *testing.T) {
	s := loadSemantics(t)
	doc := mustDocument(t, s.State)
	snap := decision.NewSnapshot(doc, 1)
	var first bytes.Buffer
	if _, err := snap.Document().WriteTo(&first); err != nil {
		t.Fatal(err)
	}
	// The snapshot gives back every record as it came in, by tenant and id.
	in := mustDocument(t, s.State)
	by := in.ByTenant()
	sorted := &decision.Document{}
	for _, id := range slices.Sorted(maps.Keys(by)) {
		d := by[id]
		slices.SortFunc(d.Licenses, func(a, b *decision.License) int { return strings.Compare(a.ID, b.ID) })
		slices.SortFunc(d.Assignments, func(a, b *decision.Assignment) int { return strings.Compare(a.ID, b.ID) })
		slices.SortFunc(d.Entitlements, func(a, b *decision.Entitlement) int { return strings.Compare(a.ID, b.ID) })
		slices.SortFunc(d.Groups, func(a, b *decision.Group) int { return strings.Compare(a.ID, b.ID) })
		sorted.Append(d)
	}
	var want bytes.Buffer
	if _, err := sorted.WriteTo(&want); err != nil {
		t.Fatal(err)
	}
	if first.String() != want.String() {
		t.Errorf("export differs from the document loaded:\n%s\n---\n%s", first.String(), want.String())
	}
	again := mustDocument(t, first.Bytes())
	var second bytes.Buffer
	if _, err := decision.NewSnapshot(again, 2).Document().WriteTo(&second); err != nil {
		t.Fatal(err)
	}
	if first.String() != second.String() {
		t.Errorf("export is not stable across a round trip:\n%s\n---\n%s", first.String(), second.String())
	}
	for k, want := range map[decision.Kind]int{decision.KindLicense: 14, decision.KindAssignment: 35, decision.KindEntitlement: 12, decision.KindGroup: 7} {
		if got := snap.Count(k); got != want {
			t.Errorf("Count(%s) = %d, want %d", k, got, want)
		}
	}
	if !strings.Contains(first.String(), `"seat_limit":null`) || !strings.Contains(first.String(), `"assignee_type":"person"`) {
		t.Errorf("export lacks null seat limit or normalized assignee type:\n%s", first.String())
	}
}

// manyAssignments is a document of n assignments of which the listed ones
// have a status no rule allows.
func manyAssignments(n int, bad ...int) string {
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "l", "tenant_id": "t", "name": "x"}], "assignments": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		status := "active"
		if slices.Contains(bad, i) {
			status = "paused"
		}
		fmt.Fprintf(&b, `{"id": "a%d", "tenant_id": "t", "license_id": "l", "assignee_id": "u%d", "status": %q}`, i, i, status)
	}
	b.WriteString("]}")
	return b.String()
}

func FuzzParseDocument(f *testing.F) {
	f.Add([]byte(`{"licenses": [{"id": "l", "tenant_id": "t", "name": "x", "seat_limit": 3}], "assignments": [{"id": "a", "tenant_id": "t", "license_id": "l", "assignee_id": "u"}]}`))
	f.Add([]byte(`{"groups": [{"id": "g", "tenant_id": "t", "members": [{"id": "g", "type": "group"}]}]}`))
	f.Add([]byte(`{"assignments": [{"id": "a", "tenant_id": "t", "license_id": "l", "assignee_id": "u", "x": [}], "licenses": []}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := decision.ParseDocument(bytes.NewReader(b))
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted a document that is not JSON: %q", b)
		}
		var out bytes.Buffer
		if _, err := decision.NewSnapshot(doc, 1).Document().WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if _, err := decision.ParseDocument(&out); err != nil {
			t.Fatalf("export of a valid document does not parse: %v\n%s", err, out.String())
		}
	})
}
