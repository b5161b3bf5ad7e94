package decision_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/decision"
)

// model is the state as plain maps, edited alongside the snapshot.
type model map[string]decision.Record // "kind\x00tenant\x00id" -> record

func newModel(d *decision.Document) model {
	m := model{}
	for _, k := range []decision.Kind{decision.KindLicense, decision.KindAssignment, decision.KindEntitlement, decision.KindGroup} {
		for _, r := range d.RecordsOf(k) {
			tenant, id := r.Key()
			m.put(k, tenant, id, r)
		}
	}
	return m
}

func (m model) put(k decision.Kind, tenant, id string, rec decision.Record) {
	key := k.String() + "\x00" + tenant + "\x00" + id
	if rec == nil {
		delete(m, key)
		return
	}
	m[key] = rec
}

func (m model) document() *decision.Document {
	d := &decision.Document{}
	for _, r := range m {
		d.Add(r)
	}
	return d
}

func export(t *testing.T, s *decision.Snapshot) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := s.Document().WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestWithEditsEqualsRebuild applies random batches of edits (most on the
// in-place path; new licenses, assets, apps, types, groups and tenants on
// the rebuild path) and checks after each that the snapshot exports the
// same state and gives the same decisions as one built from scratch.
func TestWithEditsEqualsRebuild(t *testing.T) {
	g := gen.Default()
	g.Tenants, g.PersonsPerTenant, g.GroupsPerTenant, g.AssetsPerTenant = 3, 30, 6, 8
	doc := gen.Generate(g)
	m := newModel(doc)
	snap := decision.NewSnapshot(doc, 1)
	checks := gen.Checks(g, 400, 3)
	r := rand.New(rand.NewPCG(5, 9))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	ts := func() string {
		if r.IntN(3) == 0 {
			return "null"
		}
		return fmt.Sprintf("%q", g.Now.Add(time.Duration(r.IntN(48)-24)*time.Hour).Format(time.RFC3339))
	}
	decode := func(k decision.Kind, js string) decision.Record {
		rec, err := decision.DecodeRecord(k, []byte(js))
		if err != nil {
			t.Fatalf("generated record %s: %v", js, err)
		}
		return rec
	}
	a, b := newEngine(t, decision.Config{CacheEntries: -1}, doc), newEngine(t, decision.Config{CacheEntries: -1}, doc)
	for round := range 200 {
		edits := map[string][]decision.Edit{}
		for range 1 + r.IntN(4) {
			tenant := gen.TenantID(r.IntN(g.Tenants + 1)) // one tenant is new
			person := gen.PersonID(r.IntN(g.Tenants), r.IntN(g.PersonsPerTenant+3))
			rare := r.IntN(12) == 0
			var k decision.Kind
			var id, js string
			switch n := r.IntN(10); {
			case n < 5:
				k, id = decision.KindAssignment, fmt.Sprintf("edit-a%02d", r.IntN(40))
				lic := tenant + "-lic0" + fmt.Sprint(r.IntN(3))
				if rare {
					lic = "new-license"
				}
				js = fmt.Sprintf(`{"id": %q, "tenant_id": %q, "license_id": %q, "assignee_id": %q, "assignee_type": %q, "reservation": %q, "status": %q, "valid_from": %s, "expires_at": null, "assigned_at": %s, "last_used_at": %s, "is_deleted": %v, "app_id": %s}`,
					id, tenant, lic, person, pick("person", "person", "group"), pick("reserved", "dynamic", "denied"), pick("active", "active", "suspended"),
					ts(), ts(), ts(), r.IntN(8) == 0, pick("null", "null", `"studio"`))
			case n < 9:
				k, id = decision.KindEntitlement, fmt.Sprintf("edit-e%02d", r.IntN(40))
				asset := gen.AssetID(r.IntN(g.Tenants), r.IntN(g.AssetsPerTenant))
				if rare {
					asset = "new-asset"
				}
				js = fmt.Sprintf(`{"id": %q, "tenant_id": %q, "asset_id": %q, "principal_id": %q, "principal_type": "person", "entitlement_type": %q, "status": %q, "expires_at": %s, "granted_at": %s, "is_deleted": %v}`,
					id, tenant, asset, person, pick(gen.EntitlementTypes()...), pick("active", "active", "pending_approval", "revoked"), ts(), ts(), r.IntN(8) == 0)
			default:
				k, id = decision.KindGroup, fmt.Sprintf("edit-g%d", r.IntN(3))
				js = fmt.Sprintf(`{"id": %q, "tenant_id": %q, "members": [{"id": %q, "type": "person"}]}`, id, tenant, person)
			}
			var rec decision.Record
			if r.IntN(4) > 0 {
				rec = decode(k, js)
			}
			edits[tenant] = append(edits[tenant], decision.Edit{Kind: k, ID: id, Record: rec})
			m.put(k, tenant, id, rec)
		}
		rev := uint64(round + 2)
		snap = snap.WithEdits(rev, edits)
		want := decision.NewSnapshot(m.document(), rev)
		if got, w := export(t, snap), export(t, want); got != w {
			t.Fatalf("round %d: edited snapshot exports\n%s\nrebuilt exports\n%s", round, got, w)
		}
		for k := decision.KindLicense; k <= decision.KindGroup; k++ {
			if snap.Count(k) != want.Count(k) {
				t.Fatalf("round %d: Count(%s) = %d, rebuilt %d", round, k, snap.Count(k), want.Count(k))
			}
		}
		a.SetSnapshot(snap)
		b.SetSnapshot(want)
		for i := range checks {
			req := checks[i]
			if i%4 == 0 { // subjects the edits add
				req.Subject.ID = gen.PersonID(0, g.PersonsPerTenant+i%3)
			}
			da, err1 := a.Decide(decision.APIEvaluate, &req)
			db, err2 := b.Decide(decision.APIEvaluate, &req)
			if err1 != nil || err2 != nil || da.Reason != db.Reason || da.Grant != db.Grant || da.LicenseID != db.LicenseID {
				t.Fatalf("round %d: %+v: edited %v %+v %q (%v), rebuilt %v %+v %q (%v)", round, req, da.Reason, da.Grant, da.LicenseID, err1, db.Reason, db.Grant, db.LicenseID, err2)
			}
		}
		for _, tid := range snap.TenantIDs() {
			for _, lic := range []string{tid + "-lic00", tid + "-lic01", "new-license"} {
				x, y := snap.Tenant(tid).LicenseAssignments(lic), want.Tenant(tid).LicenseAssignments(lic)
				if !slices.EqualFunc(x, y, func(p, q *decision.Assignment) bool { return *p == *q }) {
					t.Fatalf("round %d: LicenseAssignments(%s, %s) differ: %d vs %d", round, tid, lic, len(x), len(y))
				}
			}
		}
	}
}
