// Package gen generates large, realistic state documents for benchmarks:
// many tenants, nested groups, and a mix of grants, denials, expiries,
// pending approvals and suspended licenses. Output is deterministic for a
// given Config.
package gen

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/usher-authz/usher/decision"
)

// Config sizes a generated state. The defaults (Default) give 1,000
// tenants, 100,000 persons and about 1,000,000 records.
type Config struct {
	Tenants           int
	PersonsPerTenant  int
	LicensesPerTenant int
	GroupsPerTenant   int
	AssetsPerTenant   int
	// SeatsPerPerson and EntitlementsPerPerson are the mean direct
	// assignments and entitlements per person.
	SeatsPerPerson        int
	EntitlementsPerPerson int
	Seed                  uint64
	// Now anchors validity windows: some records expired before it, some
	// start after it.
	Now time.Time
}

// Default is the benchmark scale of the issues: 1,000 tenants, 100,000
// persons, about 1,000,000 records.
func Default() Config {
	return Config{
		Tenants: 1000, PersonsPerTenant: 100, LicensesPerTenant: 10, GroupsPerTenant: 20,
		AssetsPerTenant: 50, SeatsPerPerson: 5, EntitlementsPerPerson: 4, Seed: 1,
		Now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
	}
}

// TenantID, PersonID, LicenseName, AssetID and GroupID name generated
// records, so request generators can aim at them.
func TenantID(t int) string     { return fmt.Sprintf("t%04d", t) }
func PersonID(t, p int) string  { return fmt.Sprintf("t%04d-u%03d", t, p) }
func LicenseID(t, l int) string { return fmt.Sprintf("t%04d-lic%02d", t, l) }
func LicenseName(l int) string  { return fmt.Sprintf("product-%02d", l) }
func AssetID(t, a int) string   { return fmt.Sprintf("t%04d-asset%03d", t, a) }
func GroupID(t, g int) string   { return fmt.Sprintf("t%04d-g%02d", t, g) }
func EntitlementTypes() []string {
	return []string{"owner", "admin", "contributor", "read_only", "billing"}
}
func at(now time.Time, days int) decision.Instant {
	return decision.InstantOf(now.Add(time.Duration(days) * 24 * time.Hour))
}

// Generate builds the document.
func Generate(c Config) *decision.Document {
	r := rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
	doc := &decision.Document{}
	created := at(c.Now, -365)
	types := EntitlementTypes()
	for t := range c.Tenants {
		tid := TenantID(t)
		for l := range c.LicensesPerTenant {
			lic := &decision.License{ID: LicenseID(t, l), TenantID: tid, Name: LicenseName(l), SeatLimit: int64(c.PersonsPerTenant),
				ValidFrom: decision.NoTime, ExpiresAt: decision.NoTime, CreatedAt: created, UpdatedAt: created}
			switch l % 10 {
			case 7:
				lic.Status = decision.StatusSuspended
			case 8:
				lic.ExpiresAt = at(c.Now, -30)
			case 9:
				lic.ExpiresAt = at(c.Now, 30+r.IntN(300))
				lic.Type = decision.Floating
			}
			doc.Licenses = append(doc.Licenses, lic)
		}
		// Groups form a tree (g_i inside g_(i-1)/2) plus one cycle per tenant.
		groups := make([]*decision.Group, c.GroupsPerTenant)
		for g := range groups {
			groups[g] = &decision.Group{ID: GroupID(t, g), TenantID: tid}
			if g > 0 {
				parent := groups[(g-1)/2]
				parent.Members = append(parent.Members, decision.Member{ID: groups[g].ID, Type: decision.GroupPrincipal})
			}
		}
		if len(groups) > 3 {
			groups[len(groups)-1].Members = append(groups[len(groups)-1].Members, decision.Member{ID: groups[1].ID, Type: decision.GroupPrincipal})
		}
		for p := range c.PersonsPerTenant {
			for range 1 + r.IntN(2) {
				g := groups[r.IntN(len(groups))]
				g.Members = append(g.Members, decision.Member{ID: PersonID(t, p), Type: decision.Person})
			}
		}
		doc.Groups = append(doc.Groups, groups...)

		n := 0
		assign := func(license int, who string, kind decision.PrincipalType) {
			n++
			a := &decision.Assignment{ID: fmt.Sprintf("%s-a%05d", tid, n), TenantID: tid, LicenseID: LicenseID(t, license),
				AssigneeID: who, AssigneeType: kind, AssignedAt: created, ValidFrom: decision.NoTime, ExpiresAt: decision.NoTime, LastUsedAt: decision.NoTime}
			switch x := r.IntN(100); {
			case x < 5:
				a.Reservation = decision.Denied
			case x < 12:
				a.ExpiresAt = at(c.Now, -r.IntN(200)-1)
			case x < 16:
				a.ValidFrom = at(c.Now, r.IntN(200)+1)
			case x < 20:
				a.Status = decision.StatusSuspended
			case x < 22:
				a.Status = decision.StatusRevoked
			case x < 35:
				a.Reservation = decision.Dynamic
				a.ExpiresAt = at(c.Now, r.IntN(400)+1)
			}
			doc.Assignments = append(doc.Assignments, a)
		}
		for p := range c.PersonsPerTenant {
			for range c.SeatsPerPerson {
				assign(r.IntN(c.LicensesPerTenant), PersonID(t, p), decision.Person)
			}
		}
		for g := range c.GroupsPerTenant {
			assign(r.IntN(c.LicensesPerTenant), GroupID(t, g), decision.GroupPrincipal)
		}

		n = 0
		entitle := func(who string, kind decision.PrincipalType) {
			n++
			e := &decision.Entitlement{ID: fmt.Sprintf("%s-e%05d", tid, n), TenantID: tid, AssetID: AssetID(t, r.IntN(c.AssetsPerTenant)),
				PrincipalID: who, PrincipalType: kind, Type: types[r.IntN(len(types))], GrantedAt: created,
				ValidFrom: decision.NoTime, ExpiresAt: decision.NoTime}
			switch x := r.IntN(100); {
			case x < 8:
				e.Status = decision.StatusPendingApproval
			case x < 15:
				e.ExpiresAt = at(c.Now, -r.IntN(200)-1)
			case x < 20:
				e.Status = decision.StatusRevoked
			case x < 23:
				e.Status = decision.StatusSuspended
			case x < 40:
				e.ExpiresAt = at(c.Now, r.IntN(400)+1)
				e.GrantSource = decision.SourceProvisioned
			}
			doc.Entitlements = append(doc.Entitlements, e)
		}
		for p := range c.PersonsPerTenant {
			for range c.EntitlementsPerPerson {
				entitle(PersonID(t, p), decision.Person)
			}
		}
		for g := range c.GroupsPerTenant {
			entitle(GroupID(t, g), decision.GroupPrincipal)
			entitle(GroupID(t, g), decision.GroupPrincipal)
		}
	}
	return doc
}

// Checks draws n checks over a generated state: alternately a seat (by
// license name) and an entitlement, of persons, at c.Now. Deterministic
// for a seed.
func Checks(c Config, n int, seed uint64) []decision.Request {
	r := rand.New(rand.NewPCG(seed, 7))
	types := EntitlementTypes()
	at := decision.InstantOf(c.Now)
	reqs := make([]decision.Request, n)
	for i := range reqs {
		t, p := r.IntN(c.Tenants), r.IntN(c.PersonsPerTenant)
		req := decision.Request{TenantID: TenantID(t), Subject: decision.Principal{ID: PersonID(t, p)}, At: at}
		if i%2 == 0 {
			req.Check, req.License = decision.CheckSeat, LicenseName(r.IntN(c.LicensesPerTenant))
		} else {
			req.Check, req.AssetID, req.Type = decision.CheckEntitlement, AssetID(t, r.IntN(c.AssetsPerTenant)), types[r.IntN(len(types))]
		}
		reqs[i] = req
	}
	return reqs
}
