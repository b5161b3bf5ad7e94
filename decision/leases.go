package decision

import (
	"maps"
	"time"
)

// Lease is a held seat of a floating license (docs/semantics.md, floating
// seats): it grants its subject the license over [GrantedAt, ExpiresAt).
type Lease struct {
	ID, LicenseID, Subject, ClientID string
	GrantedAt, ExpiresAt             Instant
	// Duration is how long a renewal extends it, from the renewal.
	Duration time.Duration
}

// LeaseChange puts a lease (granted or renewed: Lease set) or ends one
// (End names it) in a tenant.
type LeaseChange struct {
	Lease Lease
	End   string
}

type leaseKey struct{ license, subject string }

// tenantLeases is a tenant's leases, immutable once in a snapshot.
type tenantLeases struct {
	by   map[leaseKey][]Lease
	byID map[string]leaseKey
}

// WithLeases returns a copy of s at revision rev with each tenant's lease
// changes applied in order. A changed tenant is a shallow copy with a new
// revision (its cached decisions die with it); its records are shared.
// Changes for a tenant the snapshot does not hold are dropped: a lease
// needs its license.
func (s *Snapshot) WithLeases(rev uint64, changes map[string][]LeaseChange) *Snapshot {
	e := s.derive(rev)
	for id, cs := range changes {
		old := s.Tenant(id)
		if old == nil {
			continue
		}
		n := *old
		n.Revision = rev
		n.leases = old.leases.with(cs)
		n.cands = &candMemo{} // leaseholders are candidate holders
		e.set(id, &n)
	}
	return e.s
}

func (l *tenantLeases) with(cs []LeaseChange) *tenantLeases {
	n := &tenantLeases{by: map[leaseKey][]Lease{}, byID: map[string]leaseKey{}}
	if l != nil {
		n.by, n.byID = maps.Clone(l.by), maps.Clone(l.byID)
	}
	drop := func(id string) {
		k, ok := n.byID[id]
		if !ok {
			return
		}
		delete(n.byID, id)
		var keep []Lease
		for _, x := range n.by[k] {
			if x.ID != id {
				keep = append(keep, x)
			}
		}
		if len(keep) == 0 {
			delete(n.by, k)
		} else {
			n.by[k] = keep
		}
	}
	for _, c := range cs {
		if c.End != "" {
			drop(c.End)
			continue
		}
		drop(c.Lease.ID) // a renewal replaces the lease
		k := leaseKey{c.Lease.LicenseID, c.Lease.Subject}
		n.by[k] = append(n.by[k], c.Lease)
		n.byID[c.Lease.ID] = k
	}
	return n
}

// lease returns a lease of the license held by subject at at, and the
// window over which the subject's leases of it give the same answer.
func (t *Tenant) lease(license, subject string, at Instant) (*Lease, window) {
	win := always
	if t.leases == nil {
		return nil, win
	}
	var held *Lease
	ls := t.leases.by[leaseKey{license, subject}]
	for i := range ls {
		l := &ls[i]
		win.bound(at, l.GrantedAt)
		win.bound(at, l.ExpiresAt)
		if held == nil && inEffect(l.GrantedAt, l.ExpiresAt, at) {
			held = l
		}
	}
	return held, win
}

// LeaseLicense returns the license of the tenant's lease id, "" when the
// snapshot does not know the lease.
func (t *Tenant) LeaseLicense(id string) string {
	if t == nil || t.leases == nil {
		return ""
	}
	return t.leases.byID[id].license
}

// leaseByID returns the tenant's lease id, or nil.
func (t *Tenant) leaseByID(id string) *Lease {
	if t == nil || t.leases == nil {
		return nil
	}
	k, ok := t.leases.byID[id]
	if !ok {
		return nil
	}
	ls := t.leases.by[k]
	for i := range ls {
		if ls[i].ID == id {
			return &ls[i]
		}
	}
	return nil
}

// HeldLease returns subject's lease of the license live at at (from the
// given client when client is not ""), or nil.
func (t *Tenant) HeldLease(license, subject, client string, at Instant) *Lease {
	if t == nil || t.leases == nil {
		return nil
	}
	ls := t.leases.by[leaseKey{license, subject}]
	for i := range ls {
		if l := &ls[i]; inEffect(l.GrantedAt, l.ExpiresAt, at) && (client == "" || l.ClientID == client) {
			return l
		}
	}
	return nil
}

// Leases lists the tenant's leases of a license (in no order), live or
// not: the caller compares ExpiresAt with its clock.
func (t *Tenant) Leases(license string) []Lease {
	if t == nil || t.leases == nil {
		return nil
	}
	var out []Lease
	for k, ls := range t.leases.by {
		if k.license == license {
			out = append(out, ls...)
		}
	}
	return out
}

// VisibleTo reports whether a check in the app scope sees the license:
// not deleted, and stamped with that app when the scope names one.
func (l *License) VisibleTo(app string) bool { return !l.Deleted && visible(app, l.AppID) }

// VisibleLicense returns the license a seat check of license (an id, else
// a name) would decide on in the app scope: the first visible one.
func (t *Tenant) VisibleLicense(license, app string) *License {
	if t == nil {
		return nil
	}
	if l := t.licByID[license]; l != nil && l.VisibleTo(app) {
		return l
	}
	for _, l := range t.licByName[license] {
		if l.VisibleTo(app) {
			return l
		}
	}
	return nil
}

// FloatingInUse counts a floating license's pool as this snapshot knows
// it at at: live leases plus reserved seats (persons an active, in-effect
// reserved assignment reaches, not denied). Redis's count decides grants;
// this is what answers that do not go to Redis report.
func (t *Tenant) FloatingInUse(licenseID string, at Instant) int64 {
	if t == nil {
		return 0
	}
	var n int64
	for _, l := range t.Leases(licenseID) {
		if inEffect(l.GrantedAt, l.ExpiresAt, at) {
			n++
		}
	}
	lic, ok := t.refIdx[licenseID]
	if !ok {
		return n
	}
	held, denied := map[int32]bool{}, map[int32]bool{}
	var buf []int32
	for _, si := range t.licenseSeats(lic) {
		a := &t.seats[si]
		if a.status != StatusActive || !inEffect(a.validFrom, a.expiresAt, at) || a.res == Dynamic {
			continue
		}
		into := held
		if a.res == Denied {
			into = denied
		}
		buf = t.personsOf(a.assignee, buf[:0])
		for _, p := range buf {
			into[p] = true
		}
	}
	for p := range held {
		if !denied[p] {
			n++
		}
	}
	return n
}

// allLeases yields every lease of every tenant, with the tenant's id.
func (s *Snapshot) allLeases(yield func(tenant string, l *Lease) bool) {
	for _, shard := range s.shards {
		for id, t := range shard {
			if t.leases == nil {
				continue
			}
			for _, ls := range t.leases.by {
				for i := range ls {
					if !yield(id, &ls[i]) {
						return
					}
				}
			}
		}
	}
}

// LiveLeases counts the leases live at at in every tenant.
func (s *Snapshot) LiveLeases(at Instant) int {
	n := 0
	for _, l := range s.allLeases {
		if inEffect(l.GrantedAt, l.ExpiresAt, at) {
			n++
		}
	}
	return n
}

// ExpiredLeases lists the (tenant, license) pairs holding leases that
// ended by at: what a reaper asks Redis to end with events.
func (s *Snapshot) ExpiredLeases(at Instant) [][2]string {
	seen := map[[2]string]bool{}
	var out [][2]string
	for id, l := range s.allLeases {
		if key := [2]string{id, l.LicenseID}; l.ExpiresAt <= at && !seen[key] {
			seen[key] = true
			out = append(out, key)
		}
	}
	return out
}
