package decision

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzFastRecords checks that whenever a fast decoder accepts a record, it
// decodes exactly what encoding/json decodes.
func FuzzFastRecords(f *testing.F) {
	f.Add([]byte(`{"id":"l","tenant_id":"t","name":"x","seat_limit":5,"valid_from":null,"is_deleted":false,"extra":[1,{"a":"b"}]}`))
	f.Add([]byte(`{"id":"a","tenant_id":"t","license_id":"l","assignee_id":"u","assignee_type":"user","expires_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"id":"g","tenant_id":"t","members":[{"id":"u","type":"person"},{"id":"g2","type":"group"}]}`))
	f.Add([]byte(`{"id":"e","tenant_id":"t","asset_id":"a","principal_id":"p","entitlement_type":"admin","status":"pending_approval"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(name string, fast func() (any, bool), slow func() (any, error)) {
			got, ok := fast()
			if !ok {
				return
			}
			want, err := slow()
			if err != nil {
				t.Fatalf("%s: fast path accepted %q, encoding/json rejects it: %v", name, b, err)
			}
			// The wires' unexported slots only back the fast path's time pointers.
			if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(licenseWire{}, assignmentWire{}, entitlementWire{})); diff != "" {
				t.Fatalf("%s on %q: fast differs from encoding/json (-json +fast):\n%s", name, b, diff)
			}
		}
		check("license", func() (any, bool) { var w licenseWire; ok := fastLicense(b, &w); return w, ok },
			func() (any, error) { var w licenseWire; err := json.Unmarshal(b, &w); return w, err })
		check("assignment", func() (any, bool) { var w assignmentWire; ok := fastAssignment(b, &w); return w, ok },
			func() (any, error) { var w assignmentWire; err := json.Unmarshal(b, &w); return w, err })
		check("entitlement", func() (any, bool) { var w entitlementWire; ok := fastEntitlement(b, &w); return w, ok },
			func() (any, error) { var w entitlementWire; err := json.Unmarshal(b, &w); return w, err })
		check("group", func() (any, bool) { var w groupWire; ok := fastGroup(b, &w); return w, ok },
			func() (any, error) { var w groupWire; err := json.Unmarshal(b, &w); return w, err })
	})
}

// Every field of every kind, set, survives the canonical JSON, and the
// fast and the encoding/json decoders read it alike: a field added to a
// wire but forgotten in AppendJSON or in a fast decoder fails here, not
// only when the fuzzer happens on its key.
func TestFullRecordsRoundTrip(t *testing.T) {
	doc, err := ParseDocumentBytes([]byte(`{
	 "licenses": [{"id": "l", "tenant_id": "t", "name": "editor", "description": "d", "asset_id": "p", "seat_limit": 5, "seat_overage": 2,
	   "type": "floating", "status": "suspended", "valid_from": "2026-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z",
	   "lease_duration_s": 60, "app_id": "app", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-06-01T00:00:00Z", "is_deleted": true}],
	 "assignments": [{"id": "a", "tenant_id": "t", "license_id": "l", "assignee_id": "g", "assignee_type": "group", "asset_id": "p",
	   "reservation": "dynamic", "status": "revoked", "assigned_at": "2026-02-01T00:00:00Z", "valid_from": "2026-02-02T00:00:00Z",
	   "expires_at": "2026-03-01T00:00:00Z", "is_deleted": true, "app_id": "app", "last_used_at": "2026-02-15T00:00:00Z"}],
	 "entitlements": [{"id": "e", "tenant_id": "t", "asset_id": "doc", "principal_id": "u", "principal_type": "person",
	   "entitlement_type": "admin", "grant_source": "provisioned", "status": "pending_approval", "granted_at": "2026-01-05T00:00:00Z",
	   "valid_from": "2026-01-06T00:00:00Z", "expires_at": "2026-12-31T00:00:00Z", "is_deleted": true, "app_id": "app"}],
	 "groups": [{"id": "g", "tenant_id": "t", "members": [{"id": "u", "type": "person"}, {"id": "g", "type": "group"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	wires := map[Kind]any{KindLicense: licenseWire{}, KindAssignment: assignmentWire{}, KindEntitlement: entitlementWire{}, KindGroup: groupWire{}}
	for kind, js := range map[Kind][]byte{
		KindLicense: doc.Licenses[0].AppendJSON(nil), KindAssignment: doc.Assignments[0].AppendJSON(nil),
		KindEntitlement: doc.Entitlements[0].AppendJSON(nil), KindGroup: doc.Groups[0].AppendJSON(nil),
	} {
		var all map[string]any
		if err := json.Unmarshal(js, &all); err != nil {
			t.Fatalf("%s: AppendJSON wrote %s: %v", kind, js, err)
		}
		typ := reflect.TypeOf(wires[kind])
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name == "" {
				continue
			}
			if v, ok := all[name]; !ok || v == nil || v == false || v == "" {
				t.Errorf("%s: AppendJSON of a record with every field set writes %s as %v", kind, name, v)
			}
		}
		fast, slow := reflect.New(typ), reflect.New(typ)
		var ok bool
		switch kind {
		case KindLicense:
			ok = fastLicense(js, fast.Interface().(*licenseWire))
		case KindAssignment:
			ok = fastAssignment(js, fast.Interface().(*assignmentWire))
		case KindEntitlement:
			ok = fastEntitlement(js, fast.Interface().(*entitlementWire))
		case KindGroup:
			ok = fastGroup(js, fast.Interface().(*groupWire))
		}
		if !ok {
			t.Errorf("%s: the fast decoder declines the canonical form %s", kind, js)
			continue
		}
		if err := json.Unmarshal(js, slow.Interface()); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(slow.Interface(), fast.Interface(), cmpopts.IgnoreUnexported(licenseWire{}, assignmentWire{}, entitlementWire{})); diff != "" {
			t.Errorf("%s: fast differs from encoding/json on the canonical form (-json +fast):\n%s", kind, diff)
		}
	}
}
