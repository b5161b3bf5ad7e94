package decision_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/usher-authz/usher/decision"
)

// Holdings and holders agree with evaluate for every subject and every
// license, asset and type of the semantics state, at several times.
func TestHoldingsAndHoldersAgreeWithEvaluate(t *testing.T) {
	s := loadSemantics(t)
	doc := mustDocument(t, s.State)
	e := newEngine(t, decision.Config{CacheEntries: -1}, doc)
	snap := e.Snapshot()
	byTenant := doc.ByTenant()
	types := []string{"owner", "admin", "contributor", "read_only", "billing"}
	checked := 0
	for tenant, d := range byTenant {
		persons := map[string]bool{"nobody": true}
		for _, a := range d.Assignments {
			persons[a.AssigneeID] = true
		}
		for _, en := range d.Entitlements {
			persons[en.PrincipalID] = true
		}
		for _, g := range d.Groups {
			for _, m := range g.Members {
				persons[m.ID] = true
			}
		}
		assets := map[string]bool{}
		for _, en := range d.Entitlements {
			assets[en.AssetID] = true
		}
		for _, at := range []string{s.At, "2025-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2027-06-01T00:00:00Z"} {
			when := mustInstant(t, at)
			for _, app := range []string{"", "app1"} {
				holders := map[string][]string{} // check -> persons
				for _, l := range d.Licenses {
					hs, err := e.Holders(snap, decision.Request{TenantID: tenant, AppID: app, Check: decision.CheckSeat, License: l.ID, At: when})
					if err != nil {
						t.Fatal(err)
					}
					for _, h := range hs {
						holders["seat "+l.ID] = append(holders["seat "+l.ID], h.Person)
					}
				}
				for a := range assets {
					for _, typ := range types {
						hs, err := e.Holders(snap, decision.Request{TenantID: tenant, AppID: app, Check: decision.CheckEntitlement, AssetID: a, Type: typ, At: when})
						if err != nil {
							t.Fatal(err)
						}
						for _, h := range hs {
							holders["ent "+a+" "+typ] = append(holders["ent "+a+" "+typ], h.Person)
						}
					}
				}
				for p := range persons {
					subject := decision.Principal{Type: decision.Person, ID: p}
					req := decision.Request{TenantID: tenant, AppID: app, Subject: subject, At: when}
					seats, err := e.SeatHoldings(snap, req)
					if err != nil {
						t.Fatal(err)
					}
					ents, err := e.EntitlementHoldings(snap, req, "")
					if err != nil {
						t.Fatal(err)
					}
					held := map[string]bool{}
					for _, h := range seats {
						held["seat "+h.LicenseID] = true
					}
					for _, h := range ents {
						held["ent "+h.AssetID+" "+h.Type] = true
					}
					ask := func(key string, q decision.Request) {
						q.TenantID, q.AppID, q.Subject, q.At = tenant, app, subject, when
						o, err := e.Evaluate(snap, &q)
						if err != nil {
							t.Fatal(err)
						}
						checked++
						where := fmt.Sprintf("%s/%s app %q at %s: %s", tenant, p, app, at, key)
						if held[key] != o.Allowed {
							t.Errorf("%s: holdings say %v, evaluate %v (%s)", where, held[key], o.Allowed, o.Reason)
						}
						if slices.Contains(holders[key], p) != o.Allowed {
							t.Errorf("%s: holders say %v, evaluate %v (%s)", where, slices.Contains(holders[key], p), o.Allowed, o.Reason)
						}
					}
					for _, l := range d.Licenses {
						ask("seat "+l.ID, decision.Request{Check: decision.CheckSeat, License: l.ID})
					}
					for a := range assets {
						for _, typ := range types {
							ask("ent "+a+" "+typ, decision.Request{Check: decision.CheckEntitlement, AssetID: a, Type: typ})
						}
					}
				}
			}
		}
	}
	t.Logf("%d (subject, check) pairs agree", checked)
}
