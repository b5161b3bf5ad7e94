package decision_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/decision"
)

// Holdings, holders and explain agree with evaluate for every subject and every
// license, asset and type of the semantics state and of a generated state, at
// several times.
func TestHoldingsAndHoldersAgreeWithEvaluate(t *testing.T) {
	s := loadSemantics(t)
	t.Run("semantics", func(t *testing.T) {
		agreeWithEvaluate(t, mustDocument(t, s.State), s.At, "2025-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2027-06-01T00:00:00Z")
	})
	t.Run("generated", func(t *testing.T) {
		c := gen.Default()
		c.Tenants, c.PersonsPerTenant, c.Seed = 3, 40, 5
		// The generator's windows are around c.Now: before, at and after.
		agreeWithEvaluate(t, gen.Generate(c), "2025-06-01T00:00:00Z", c.Now.Format(time.RFC3339), "2026-09-01T00:00:00Z")
	})
}

func agreeWithEvaluate(t *testing.T, doc *decision.Document, times ...string) {
	e := newEngine(t, decision.Config{CacheEntries: -1}, doc)
	snap := e.Snapshot()
	byTenant := doc.ByTenant()
	types := []string{"owner", "admin", "contributor", "read_only", "billing"}
	for _, en := range doc.Entitlements {
		if !slices.Contains(types, en.Type) {
			types = append(types, en.Type)
		}
	}
	checked, allowed := 0, 0
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
		for _, at := range times {
			when := mustInstant(t, at)
			for _, app := range []string{"", "app1"} {
				holders := map[string][]string{} // check -> persons
				for _, l := range d.Licenses {
					hs, _, err := e.Holders(snap, decision.Request{TenantID: tenant, AppID: app, Check: decision.CheckSeat, License: l.ID, At: when}, "", 1<<30)
					if err != nil {
						t.Fatal(err)
					}
					for _, h := range hs {
						holders["seat "+l.ID] = append(holders["seat "+l.ID], h.Person)
					}
				}
				for a := range assets {
					for _, typ := range types {
						hs, _, err := e.Holders(snap, decision.Request{TenantID: tenant, AppID: app, Check: decision.CheckEntitlement, AssetID: a, Type: typ, At: when}, "", 1<<30)
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
						if o.Allowed {
							allowed++
						}
						where := fmt.Sprintf("%s/%s app %q at %s: %s", tenant, p, app, at, key)
						if held[key] != o.Allowed {
							t.Errorf("%s: holdings say %v, evaluate %v (%s)", where, held[key], o.Allowed, o.Reason)
						}
						x, err := e.Explain(snap, &q)
						if err != nil || x.Allowed != o.Allowed || x.Reason != o.Reason || x.Rule == "" {
							t.Errorf("%s: explain says %v %s (%q), evaluate %v %s", where, x.Allowed, x.Reason, x.Rule, o.Allowed, o.Reason)
						}
						if o.Allowed && !slices.ContainsFunc(x.Records, func(c decision.Considered) bool { return c.ID == x.Grant.ID && c.Verdict != "" }) {
							t.Errorf("%s: explain lists no record for its grant %s: %+v", where, x.Grant.ID, x.Records)
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
	t.Logf("%d (subject, check) pairs agree, %d allowed", checked, allowed)
	if allowed == 0 || allowed == checked {
		t.Fatalf("a state where all %d checks give the same answer proves nothing", checked)
	}
}

// bigGroup is a tenant whose one license is assigned to a group of n persons.
func bigGroup(t testing.TB, n int) *decision.Document {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "lic", "tenant_id": "big", "name": "all"}],
	 "assignments": [{"id": "a", "tenant_id": "big", "license_id": "lic", "assignee_id": "everyone", "assignee_type": "group"}],
	 "groups": [{"id": "everyone", "tenant_id": "big", "members": [`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": "p%06d", "type": "person"}`, i)
	}
	b.WriteString(`]}]}`)
	return mustDocument(t, []byte(b.String()))
}

// The holders of a 100,000-member group's license, paged at 1,000: every
// person exactly once, in order.
func TestHoldersPageThroughALargeGroup(t *testing.T) {
	const n = 100_000
	e := newEngine(t, decision.Config{CacheEntries: -1}, bigGroup(t, n))
	req := decision.Request{TenantID: "big", Check: decision.CheckSeat, License: "lic", At: mustInstant(t, "2026-06-01T00:00:00Z")}
	seen, after, pages := 0, "", 0
	for {
		page, more, err := e.Holders(e.Snapshot(), req, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, h := range page {
			if h.Person <= after {
				t.Fatalf("page %d: %s after %s", pages, h.Person, after)
			}
			after = h.Person
			seen++
		}
		if !more {
			break
		}
	}
	if seen != n || pages != 100 {
		t.Errorf("%d persons over %d pages, want %d over 100", seen, pages, n)
	}
}

func BenchmarkHoldersPage(b *testing.B) {
	e := newEngine(b, decision.Config{CacheEntries: -1}, bigGroup(b, 100_000))
	req := decision.Request{TenantID: "big", Check: decision.CheckSeat, License: "lic", At: mustInstant(b, "2026-06-01T00:00:00Z")}
	e.Holders(e.Snapshot(), req, "", 1) // the candidates, once per snapshot
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		after := fmt.Sprintf("p%06d", (i*7919)%99_000)
		i++
		if page, _, _ := e.Holders(e.Snapshot(), req, after, 1000); len(page) != 1000 {
			b.Fatalf("page of %d", len(page))
		}
	}
}

// Explain names the rule, the records and their verdicts, the group path
// to a group's record, and the window the answer holds over.
func TestExplain(t *testing.T) {
	s := loadSemantics(t)
	e := newEngine(t, decision.Config{}, mustDocument(t, s.State))
	x, err := e.Explain(e.Snapshot(), &decision.Request{TenantID: "lim", Subject: decision.Principal{ID: "p_d"}, Check: decision.CheckSeat, License: "two", At: mustInstant(t, s.At)})
	if err != nil || x.Allowed || x.Reason != decision.SeatLimitExceeded || x.Rule != "seat rule 5: the subject ranks past seat_limit + seat_overage" {
		t.Fatalf("explain p_d = %+v, %v", x, err)
	}
	var viaSub *decision.Considered
	for i, c := range x.Records {
		if c.ID == "l2" {
			viaSub = &x.Records[i]
		}
	}
	if viaSub == nil || viaSub.Verdict != "grants" || viaSub.Holder.ID != "g_team" || len(viaSub.GroupPath) != 2 || viaSub.GroupPath[0] != "g_sub" {
		t.Errorf("the group assignment that reaches p_d through g_sub: %+v", viaSub)
	}
	if x.Until.Set() && x.From.Set() && x.Until <= x.From {
		t.Errorf("window [%v, %v)", x.From, x.Until)
	}
	// An expired assignment is listed as expired, and bounds the window.
	x, _ = e.Explain(e.Snapshot(), &decision.Request{TenantID: "lim", Subject: decision.Principal{ID: "p_x"}, Check: decision.CheckSeat, License: "two", At: mustInstant(t, s.At)})
	if x.Reason != decision.AssignmentExpired || !slices.ContainsFunc(x.Records, func(c decision.Considered) bool { return c.ID == "l5" && c.Verdict == "expired" }) ||
		x.From != mustInstant(t, "2026-03-01T00:00:00Z") {
		t.Errorf("explain p_x = %+v", x)
	}
}
