package decision

import (
	"maps"
	"slices"
)

// Edit puts (Record set) or deletes (Record nil) one record of a tenant.
// Record is a valid record of Kind and of the tenant it is listed under.
type Edit struct {
	Kind   Kind
	ID     string
	Record Record
}

// WithEdits returns a copy of s at revision rev with each tenant's edits
// applied in order. Tenants not listed are shared with s. A tenant whose
// edits touch only assignments and entitlements of known licenses,
// assets, apps and types is updated in place of a rebuild: its maps,
// groups and licenses are shared, and only the changed kind's arrays and
// indexes are new.
func (s *Snapshot) WithEdits(rev uint64, edits map[string][]Edit) *Snapshot {
	e := s.derive(rev)
	for id, es := range edits {
		old := s.Tenant(id)
		t := old.withEdits(rev, es)
		if t == nil {
			t = buildTenant(nil, id, applyEdits(old, es), rev)
			if old != nil {
				t.leases = old.leases
			}
		}
		if len(t.Licenses)+len(t.seats)+len(t.grants)+len(t.Groups) == 0 {
			t = nil
		}
		e.set(id, t)
	}
	return e.s
}

// applyEdits returns the tenant's records with the edits applied.
func applyEdits(t *Tenant, edits []Edit) *Document {
	var base *Document
	if t != nil {
		base = t.Records()
	} else {
		base = &Document{}
	}
	var last [4]map[string]Record // kind -> id -> record, or nil for a delete
	for _, e := range edits {
		if last[e.Kind] == nil {
			last[e.Kind] = map[string]Record{}
		}
		last[e.Kind][e.ID] = e.Record
	}
	d := &Document{
		Licenses:     merge(base.Licenses, last[KindLicense], func(r *License) string { return r.ID }),
		Assignments:  merge(base.Assignments, last[KindAssignment], func(r *Assignment) string { return r.ID }),
		Entitlements: merge(base.Entitlements, last[KindEntitlement], func(r *Entitlement) string { return r.ID }),
		Groups:       merge(base.Groups, last[KindGroup], func(r *Group) string { return r.ID }),
	}
	return d
}

// merge returns recs with the records of changes put and their deletes
// applied; the order does not matter (builds sort by id).
func merge[T any](recs []*T, changes map[string]Record, id func(*T) string) []*T {
	if len(changes) == 0 {
		return recs
	}
	out := make([]*T, 0, len(recs)+len(changes))
	for _, r := range recs {
		if _, changed := changes[id(r)]; !changed {
			out = append(out, r)
		}
	}
	for _, c := range changes {
		if r, ok := any(c).(*T); ok && r != nil {
			out = append(out, r)
		}
	}
	return out
}

// withEdits applies assignment and entitlement edits to t without a
// rebuild, or returns nil when they need one: a tenant that does not
// exist yet, a license or group edit, or a reference (license, asset,
// app, type) the tenant does not hold yet, which would renumber its refs.
func (t *Tenant) withEdits(rev uint64, edits []Edit) *Tenant {
	if t == nil {
		return nil
	}
	var as, es map[string]any
	for _, e := range edits {
		switch e.Kind {
		case KindAssignment:
			if as == nil {
				as = map[string]any{}
			}
			as[e.ID] = e.Record
		case KindEntitlement:
			if es == nil {
				es = map[string]any{}
			}
			es[e.ID] = e.Record
		default:
			return nil
		}
	}
	n := *t
	n.Revision = rev
	n.ranks, n.cands = &rankMemo{}, &candMemo{}
	n.prins = slices.Clone(t.prins)
	// A new subject gets an entry of its own; it belongs to no group
	// (memberships come only from groups, which did not change).
	var clonedPersons, clonedGroups bool
	addPrincipal := func(typ PrincipalType, id string) int32 {
		if i, ok := n.index(typ)[id]; ok {
			return i
		}
		switch {
		case typ == GroupPrincipal && !clonedGroups:
			n.groups, clonedGroups = maps.Clone(t.groups), true
		case typ != GroupPrincipal && !clonedPersons:
			n.persons, clonedPersons = maps.Clone(t.persons), true
		}
		i := int32(len(n.prins))
		n.prins = append(n.prins, principal{id: id, typ: typ})
		n.index(typ)[id] = i
		return i
	}
	ref := func(s string) (uint32, bool) { r, ok := t.refIdx[s]; return r, ok }
	if as != nil {
		seats, ok := mergeCompact(t.seats, as, func(s *seat) string { return s.id }, func(a *Assignment) (seat, bool) {
			lic, ok1 := ref(a.LicenseID)
			asset, ok2 := ref(a.AssetID)
			app, ok3 := ref(a.AppID)
			if !ok1 || !ok2 || !ok3 {
				return seat{}, false
			}
			return newSeat(a, a.ID, lic, asset, app, addPrincipal(a.AssigneeType, a.AssigneeID)), true
		})
		if !ok {
			return nil
		}
		n.seats = seats
	}
	if es != nil {
		grants, ok := mergeCompact(t.grants, es, func(g *grant) string { return g.id }, func(e *Entitlement) (grant, bool) {
			asset, ok1 := ref(e.AssetID)
			typ, ok2 := ref(e.Type)
			app, ok3 := ref(e.AppID)
			if !ok1 || !ok2 || !ok3 {
				return grant{}, false
			}
			return newGrant(e, e.ID, asset, typ, app, addPrincipal(e.PrincipalType, e.PrincipalID)), true
		})
		if !ok {
			return nil
		}
		n.grants = grants
	}
	// A new entry belongs to no group; index* set its other ranges.
	for i := len(t.prins); i < len(n.prins); i++ {
		n.prins[i].g0, n.prins[i].g1 = 0, 0
	}
	if as != nil || len(n.prins) != len(t.prins) {
		n.indexSeats()
	}
	if es != nil || len(n.prins) != len(t.prins) {
		n.indexGrants()
	}
	return &n
}

// mergeCompact returns old (sorted by id) with changes applied: a record
// replaces or adds its id, a nil deletes it. ok is false when a record
// cannot be converted without a rebuild.
func mergeCompact[C any, R any](old []C, changes map[string]any, id func(*C) string, conv func(*R) (C, bool)) ([]C, bool) {
	ids := slices.Sorted(maps.Keys(changes))
	out := make([]C, 0, len(old)+len(ids))
	i := 0
	for _, cid := range ids {
		for i < len(old) && id(&old[i]) < cid {
			out = append(out, old[i])
			i++
		}
		if i < len(old) && id(&old[i]) == cid {
			i++ // replaced or deleted
		}
		if r, _ := changes[cid].(*R); r != nil {
			c, ok := conv(r)
			if !ok {
				return nil, false
			}
			out = append(out, c)
		}
	}
	return append(out, old[i:]...), true
}

// indexSeats rebuilds the seat ranges of every principal, seatIdx and
// licSeats from t.seats.
func (t *Tenant) indexSeats() {
	var start []uint32
	t.licSeats, t.seatIdx, start = countingIndex(len(t.seats), len(t.refs), len(t.prins), func(i int) (uint32, int32, bool) {
		s := &t.seats[i]
		return s.lic, s.assignee, !s.deleted
	})
	for i := range t.prins {
		t.prins[i].s0, t.prins[i].s1 = start[i], start[i+1]
	}
}

// indexGrants rebuilds the entitlement ranges of every principal and
// entIdx from t.grants.
func (t *Tenant) indexGrants() {
	var start []uint32
	_, t.entIdx, start = countingIndex(len(t.grants), len(t.refs), len(t.prins), func(i int) (uint32, int32, bool) {
		g := &t.grants[i]
		return g.asset, g.principal, !g.deleted
	})
	for i := range t.prins {
		t.prins[i].e0, t.prins[i].e1 = start[i], start[i+1]
	}
}

// countingIndex orders the live records 0..n-1 (in id order) by ref, then
// id (byRef), and groups them by owner in that order (byOwner, owner p's
// at byOwner[start[p]:start[p+1]]), by counting sorts: no comparisons.
func countingIndex(n, refs, owners int, rec func(i int) (ref uint32, owner int32, live bool)) (byRef, byOwner []int32, start []uint32) {
	refAt := make([]uint32, refs+1)
	start = make([]uint32, owners+1)
	live := 0
	for i := range n {
		if ref, owner, ok := rec(i); ok {
			refAt[ref+1]++
			start[owner+1]++
			live++
		}
	}
	for i := 1; i < len(refAt); i++ {
		refAt[i] += refAt[i-1]
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	byRef = make([]int32, live)
	for i := range n {
		if ref, _, ok := rec(i); ok {
			byRef[refAt[ref]] = int32(i)
			refAt[ref]++
		}
	}
	byOwner = make([]int32, live)
	next := slices.Clone(start[:owners])
	for _, i := range byRef {
		_, owner, _ := rec(int(i))
		byOwner[next[owner]] = i
		next[owner]++
	}
	return byRef, byOwner, start
}
