package decision

import (
	"encoding/json"
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
