package decision

import (
	"slices"
	"strings"
	"sync"
)

// Holding is one seat or entitlement a subject holds, or one person who
// holds a seat or entitlement: the answer evaluate gives for it.
type Holding struct {
	LicenseID, LicenseName string // seat holdings
	AssetID, Type          string // entitlement holdings
	Person                 string // holders
	Reason                 Reason
	Grant                  Grant
	// ExpiresAt is when the granting record (or lease) ends; 0: never.
	ExpiresAt Instant
}

// SeatHoldings lists every license req's subject holds a seat of at
// req.At, by license id: each visible license evaluated as evaluate
// would (req's Check and License are ignored).
func (e *Engine) SeatHoldings(snap *Snapshot, req Request) ([]Holding, error) {
	t := snap.Tenant(req.TenantID)
	var out []Holding
	if t == nil {
		return nil, nil
	}
	for _, l := range t.Licenses { // by id
		if !l.VisibleTo(req.AppID) {
			continue
		}
		q := req
		q.Check, q.License = CheckSeat, l.ID
		o, g, err := e.EvaluateGrant(snap, &q)
		if err != nil {
			return nil, err
		}
		if o.Allowed {
			out = append(out, Holding{LicenseID: l.ID, LicenseName: l.Name, Reason: o.Reason, Grant: g, ExpiresAt: t.grantEnd(CheckSeat, l.ID, g.ID)})
		}
	}
	return out, nil
}

// EntitlementHoldings lists every (asset, type) req's subject holds at
// req.At, by asset then type, optionally of one asset: every type the
// subject's and its groups' entitlements name or imply, evaluated as
// evaluate would.
func (e *Engine) EntitlementHoldings(snap *Snapshot, req Request, asset string) ([]Holding, error) {
	t := snap.Tenant(req.TenantID)
	box := e.pol.Load()
	if t == nil || box == nil {
		return nil, nil
	}
	// The (asset, type) pairs the subject's records name, then the
	// types those imply; sorted and deduplicated (no maps: this is the
	// part of the answer that is not evaluation).
	type pair struct{ asset, typ string }
	var buf [16]pair
	pairs := buf[:0]
	t.eachHolder(req.Subject, func(p *principal, _ bool) {
		for _, i := range t.entIdx[p.e0:p.e1] {
			g := &t.grants[i]
			if g.deleted {
				continue
			}
			if a := t.refs[g.asset]; asset == "" || a == asset {
				pairs = append(pairs, pair{a, t.refs[g.typ]})
			}
		}
	})
	named := len(pairs)
	for _, typ := range box.p.Implied() {
		for _, by := range box.p.Implying(typ) {
			for k := range named {
				if pairs[k].typ == by {
					pairs = append(pairs, pair{pairs[k].asset, typ})
				}
			}
		}
	}
	slices.SortFunc(pairs, func(x, y pair) int {
		if c := strings.Compare(x.asset, y.asset); c != 0 {
			return c
		}
		return strings.Compare(x.typ, y.typ)
	})
	pairs = slices.Compact(pairs)
	var out []Holding
	for _, pr := range pairs {
		q := req
		q.Check, q.AssetID, q.Type = CheckEntitlement, pr.asset, pr.typ
		o, g, err := e.EvaluateGrant(snap, &q)
		if err != nil {
			return nil, err
		}
		if o.Allowed {
			out = append(out, Holding{AssetID: pr.asset, Type: pr.typ, Reason: o.Reason, Grant: g, ExpiresAt: t.grantEnd(CheckEntitlement, "", g.ID)})
		}
	}
	return out, nil
}

// Holders lists, by id, the persons req's check would allow at req.At
// whose id sorts after after, up to limit: every person its records (and,
// for a floating license, its leases) reach, directly or through groups,
// evaluated as evaluate would. more reports persons past the page.
func (e *Engine) Holders(snap *Snapshot, req Request, after string, limit int) (page []Holding, more bool, err error) {
	t := snap.Tenant(req.TenantID)
	box := e.pol.Load()
	if t == nil || box == nil {
		return nil, false, nil
	}
	lic := ""
	if req.Check == CheckSeat {
		l := t.VisibleLicense(req.License, req.AppID)
		if l == nil {
			return nil, false, nil
		}
		lic = l.ID
	}
	cands := t.candidates(req, lic, box.p)
	i, _ := slices.BinarySearch(cands, after)
	if i < len(cands) && cands[i] == after {
		i++
	}
	for ; i < len(cands); i++ {
		if len(page) == limit {
			return page, true, nil
		}
		q := req
		q.Subject = Principal{Type: Person, ID: cands[i]}
		o, g, err := e.EvaluateGrant(snap, &q)
		if err != nil {
			return nil, false, err
		}
		if o.Allowed {
			page = append(page, Holding{Person: cands[i], Reason: o.Reason, Grant: g, ExpiresAt: t.grantEnd(req.Check, lic, g.ID)})
		}
	}
	return page, false, nil
}

type candKey struct {
	check          Check
	license, asset string
	typ            string
	policyRevision uint64
}

// candMemo keeps each check's candidate holders, sorted: a tenant is
// immutable, and they depend on no time.
type candMemo struct{ m sync.Map } // candKey -> []string

// candidates returns the persons a check's records reach, sorted by id.
func (t *Tenant) candidates(req Request, lic string, pol Policy) []string {
	key := candKey{check: req.Check, license: lic, policyRevision: pol.Revision()}
	if req.Check == CheckEntitlement {
		key.asset, key.typ = req.AssetID, req.Type
	}
	if v, ok := t.cands.m.Load(key); ok {
		return v.([]string)
	}
	set := map[string]bool{}
	var buf []int32
	switch req.Check {
	case CheckSeat:
		if ref, ok := t.refIdx[lic]; ok {
			for _, si := range t.licenseSeats(ref) {
				for _, p := range t.personsOf(t.seats[si].assignee, buf[:0]) {
					set[t.prins[p].id] = true
				}
			}
		}
		for _, ls := range t.Leases(lic) {
			set[ls.Subject] = true
		}
	case CheckEntitlement:
		if ref, ok := t.refIdx[req.AssetID]; ok {
			implying := pol.Implying(req.Type)
			for i := range t.grants {
				g := &t.grants[i]
				if g.asset == ref && !g.deleted && satisfies(t.refs[g.typ], req.Type, implying) {
					for _, p := range t.personsOf(g.principal, buf[:0]) {
						set[t.prins[p].id] = true
					}
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	t.cands.m.Store(key, out)
	return out
}

// grantEnd is when the record (or lease) with id that granted a check
// ends; 0: never or unknown.
func (t *Tenant) grantEnd(check Check, license, id string) Instant {
	if id == "" {
		return 0
	}
	if check == CheckEntitlement {
		if i, ok := slices.BinarySearchFunc(t.grants, id, func(g grant, id string) int { return strings.Compare(g.id, id) }); ok {
			return t.grants[i].expiresAt
		}
		return 0
	}
	if i, ok := slices.BinarySearchFunc(t.seats, id, func(s seat, id string) int { return strings.Compare(s.id, id) }); ok {
		return t.seats[i].expiresAt
	}
	if l := t.leaseByID(id); l != nil && l.LicenseID == license {
		return l.ExpiresAt
	}
	return 0
}
