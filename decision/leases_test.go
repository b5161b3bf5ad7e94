package decision_test

import (
	"slices"
	"testing"
	"time"

	"github.com/usher-authz/usher/decision"
)

const floatingDoc = `{"licenses": [
	{"id": "fl", "tenant_id": "t", "name": "cad", "type": "floating", "seat_limit": 2},
	{"id": "nm", "tenant_id": "t", "name": "named"}],
 "groups": [{"id": "g", "tenant_id": "t", "members": [{"id": "u_dyn_g", "type": "person"}, {"id": "u_res_g", "type": "person"}]}],
 "assignments": [
	{"id": "a_res", "tenant_id": "t", "license_id": "fl", "assignee_id": "u_res", "reservation": "reserved"},
	{"id": "a_dyn", "tenant_id": "t", "license_id": "fl", "assignee_id": "u_dyn", "reservation": "dynamic"},
	{"id": "a_dyn2", "tenant_id": "t", "license_id": "fl", "assignee_id": "u_gone", "reservation": "dynamic", "expires_at": "2026-03-01T00:00:00Z"},
	{"id": "a_g", "tenant_id": "t", "license_id": "fl", "assignee_id": "g", "assignee_type": "group", "reservation": "dynamic"},
	{"id": "a_gres", "tenant_id": "t", "license_id": "fl", "assignee_id": "u_res_g", "reservation": "reserved"},
	{"id": "a_deny", "tenant_id": "t", "license_id": "fl", "assignee_id": "u_denied", "reservation": "denied"},
	{"id": "a_nm", "tenant_id": "t", "license_id": "nm", "assignee_id": "u_dyn", "reservation": "dynamic"}]}`

// Floating seats: a lease grants seat_leased, a reserved assignment holds a
// seat without one, a dynamic assignment alone says not_checked_out.
func TestFloatingSeats(t *testing.T) {
	doc := mustDocument(t, []byte(floatingDoc))
	at := func(s string) decision.Instant { return mustInstant(t, s) }
	lease := func(id, subject, from, until string) decision.LeaseChange {
		return decision.LeaseChange{Lease: decision.Lease{ID: id, LicenseID: "fl", Subject: subject, GrantedAt: at(from), ExpiresAt: at(until)}}
	}
	snap := decision.NewSnapshot(doc, 1).WithLeases(2, map[string][]decision.LeaseChange{"t": {
		lease("L1", "u_dyn", "2026-06-01T00:00:00Z", "2026-06-01T00:05:00Z"),
		lease("L2", "u_denied", "2026-06-01T00:00:00Z", "2026-06-01T00:05:00Z"),
		lease("L3", "u_dyn_g", "2026-06-01T00:00:00Z", "2026-06-01T00:05:00Z"),
		lease("L4", "u_old", "2026-05-01T00:00:00Z", "2026-05-01T00:05:00Z"),
		lease("L5", "u_ended", "2026-06-01T00:00:00Z", "2026-06-01T00:05:00Z"),
		{End: "L5"},
		{End: "nope"},
	}, "absent": {lease("X", "u", "2026-06-01T00:00:00Z", "2026-06-01T00:05:00Z")}})
	e := newEngine(t, decision.Config{}, doc)
	e.SetSnapshot(snap)
	now := "2026-06-01T00:01:00Z"
	for _, c := range []struct {
		subject, typ, license, at string
		want                      decision.Reason
		grant                     string
	}{
		{"u_dyn", "", "cad", now, decision.SeatLeased, "L1"},
		{"u_dyn_g", "", "cad", now, decision.SeatLeased, "L3"},
		{"u_res", "", "cad", now, decision.SeatAssigned, "a_res"},
		{"u_res_g", "", "cad", now, decision.SeatAssigned, "a_gres"},             // reserved beats the group's dynamic assignment
		{"u_dyn", "", "cad", "2026-06-01T00:05:00Z", decision.NotCheckedOut, ""}, // the lease ends at its expiry
		{"u_dyn", "", "cad", "2026-05-31T23:59:59Z", decision.NotCheckedOut, ""}, // and starts at its grant
		{"u_ended", "", "cad", now, decision.NoAssignment, ""},                   // released
		{"u_old", "", "cad", now, decision.NoAssignment, ""},
		{"u_old", "", "cad", "2026-05-01T00:01:00Z", decision.SeatLeased, "L4"}, // a lease grants even without an assignment
		{"u_denied", "", "cad", now, decision.AssignmentDenied, ""},             // a denial overrides a lease
		{"u_gone", "", "cad", now, decision.AssignmentExpired, ""},
		{"g", "group", "cad", now, decision.NotCheckedOut, ""},
		{"u_dyn", "", "named", now, decision.SeatAssigned, "a_nm"}, // dynamic grants on a named license
	} {
		pt, _ := decision.ParsePrincipalType(c.typ)
		req := &decision.Request{TenantID: "t", Subject: decision.Principal{Type: pt, ID: c.subject}, Check: decision.CheckSeat, License: c.license, At: at(c.at)}
		for range 2 { // computed, then cached
			d, err := e.Decide(decision.APIEvaluate, req)
			if err != nil || d.Reason != c.want || d.Grant.ID != c.grant || d.Allowed != (c.grant != "") {
				t.Errorf("%s %s at %s = %+v, %v; want %s grant %q", c.subject, c.license, c.at, d, err, c.want, c.grant)
			}
			e.WaitCache()
		}
	}

	// Holdings and holders say when the granting lease ends.
	req := decision.Request{TenantID: "t", Subject: decision.Principal{ID: "u_dyn"}, At: at(now)}
	hs, err := e.SeatHoldings(snap, req)
	if err != nil || !slices.ContainsFunc(hs, func(h decision.Holding) bool {
		return h.LicenseID == "fl" && h.Grant.ID == "L1" && h.ExpiresAt == at("2026-06-01T00:05:00Z")
	}) {
		t.Errorf("u_dyn's seat holdings = %+v, %v; want fl by L1 until its expiry", hs, err)
	}
	page, _, err := e.Holders(snap, decision.Request{TenantID: "t", Check: decision.CheckSeat, License: "cad", At: at(now)}, "", 100)
	if err != nil || !slices.ContainsFunc(page, func(h decision.Holding) bool {
		return h.Person == "u_dyn_g" && h.Grant.ID == "L3" && h.ExpiresAt == at("2026-06-01T00:05:00Z")
	}) {
		t.Errorf("cad's holders = %+v, %v; want u_dyn_g by L3 until its expiry", page, err)
	}

	// A cached leased answer dies with the lease's end and with a release.
	var clock time.Time
	e2 := newEngine(t, decision.Config{Now: func() time.Time { return clock }}, doc)
	e2.SetSnapshot(snap)
	ask := func(when string) decision.Decision {
		clock = time.Time(mustTime(t, when))
		d, _ := e2.Decide(decision.APIEvaluate, &decision.Request{TenantID: "t", Subject: decision.Principal{ID: "u_dyn"}, Check: decision.CheckSeat, License: "cad"})
		e2.WaitCache()
		return d
	}
	ask(now)
	if d := ask("2026-06-01T00:04:59Z"); d.Reason != decision.SeatLeased || !d.Cached {
		t.Errorf("within the lease: %+v, want a cached seat_leased", d)
	}
	if d := ask("2026-06-01T00:05:00Z"); d.Reason != decision.NotCheckedOut || d.Cached {
		t.Errorf("at the lease's end: %+v, want not_checked_out, computed", d)
	}
	ask(now)
	e2.SetSnapshot(snap.WithLeases(3, map[string][]decision.LeaseChange{"t": {{End: "L1"}}}))
	if d := ask(now); d.Reason != decision.NotCheckedOut || d.Cached {
		t.Errorf("after the release: %+v, want not_checked_out, computed", d)
	}
	// A rebuild of the tenant's records keeps its leases.
	rebuilt := snap.WithTenants(4, map[string]*decision.Document{"t": doc})
	if ls := rebuilt.Tenant("t").Leases("fl"); len(ls) != 4 {
		t.Errorf("leases after a rebuild: %v, want 4", ls)
	}
}

// BenchmarkLeasedSeat compares a check answered by a lease with one
// answered by a named assignment, from the cache and computed.
func BenchmarkLeasedSeat(b *testing.B) {
	doc := mustDocument(b, []byte(floatingDoc))
	at := func(s string) decision.Instant { return mustInstant(b, s) }
	snap := decision.NewSnapshot(doc, 1).WithLeases(2, map[string][]decision.LeaseChange{"t": {
		{Lease: decision.Lease{ID: "L1", LicenseID: "fl", Subject: "u_dyn", GrantedAt: at("2026-06-01T00:00:00Z"), ExpiresAt: at("2026-06-01T00:05:00Z")}}}})
	for _, c := range []struct{ name, license string }{{"leased", "cad"}, {"named", "named"}} {
		for _, cached := range []bool{true, false} {
			name := c.name + "/hit"
			cfg := decision.Config{}
			if !cached {
				name, cfg = c.name+"/nocache", decision.Config{CacheEntries: -1}
			}
			b.Run(name, func(b *testing.B) {
				e := newEngine(b, cfg, doc)
				e.SetSnapshot(snap)
				req := &decision.Request{TenantID: "t", Subject: decision.Principal{ID: "u_dyn"}, Check: decision.CheckSeat, License: c.license, At: at("2026-06-01T00:01:00Z")}
				want := map[string]decision.Reason{"leased": decision.SeatLeased, "named": decision.SeatAssigned}[c.name]
				if d, _ := e.Decide(decision.APIEvaluate, req); d.Reason != want {
					b.Fatalf("reason %s, want %s", d.Reason, want)
				}
				e.WaitCache()
				b.ReportAllocs()
				for b.Loop() {
					e.Decide(decision.APIEvaluate, req)
				}
			})
		}
	}
}
