package decision

import (
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Principal is a person or a group of a tenant.
type Principal struct {
	Type PrincipalType
	ID   string
}

// principal is one person or group of a tenant with what it holds.
type principal struct {
	id string
	// groups indexes (into Tenant.prins) every group the principal belongs
	// to directly or through nesting, in id order.
	groups []int32
	seats  []*Assignment  // by license id, then id
	ents   []*Entitlement // by asset id, then id
}

// Tenant is the immutable, indexed state of one tenant.
type Tenant struct {
	ID string
	// Revision is the snapshot revision at which this tenant last changed;
	// cached decisions carry it and die with it.
	Revision uint64

	licByID   map[string]*License
	licByName map[string][]*License
	// persons and groups map ids to entries of prins: a check costs one
	// map lookup for the subject, then slice walks.
	persons   map[string]int32
	groups    map[string]int32
	prins     []principal
	byLicense map[string][]*Assignment

	Licenses     []*License
	Assignments  []*Assignment
	Entitlements []*Entitlement
	Groups       []*Group
}

// Snapshot is an immutable, indexed state of every tenant. It is safe for
// concurrent use; nothing in it changes after NewSnapshot returns.
type Snapshot struct {
	Revision uint64
	Built    time.Time
	tenants  map[string]*Tenant
	counts   [4]int
}

// NewSnapshot indexes a validated document as revision rev. The snapshot
// keeps its own copies of the records; doc is not changed.
func NewSnapshot(doc *Document, rev uint64) *Snapshot {
	by := doc.ByTenant()
	s := &Snapshot{Revision: rev, Built: time.Now(), tenants: make(map[string]*Tenant, len(by))}
	ids := make([]string, 0, len(by))
	for id := range by {
		ids = append(ids, id)
	}
	// Tenants are independent: build them on every core, each worker with
	// an interner of its own.
	built := make([]*Tenant, len(ids))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(ids)/8))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := newInterner()
			for i := w; i < len(ids); i += workers {
				built[i] = buildTenant(in, ids[i], by[ids[i]], rev)
			}
		}()
	}
	wg.Wait()
	for _, t := range built {
		s.tenants[t.ID] = t
		s.count(t, 1)
	}
	return s
}

// WithTenants returns a copy of s at revision rev in which each listed
// tenant is rebuilt from its document (a nil or empty document removes
// it). Tenants not listed are shared with s, cached decisions included.
func (s *Snapshot) WithTenants(rev uint64, docs map[string]*Document) *Snapshot {
	n := &Snapshot{Revision: rev, Built: time.Now(), tenants: maps.Clone(s.tenants), counts: s.counts}
	// No interning: the records of a rebuilt tenant mostly come from the
	// previous snapshot and already share their strings.
	var in *interner
	for id, d := range docs {
		if old := n.tenants[id]; old != nil {
			n.count(old, -1)
			delete(n.tenants, id)
		}
		if d == nil || d.Len() == 0 {
			continue
		}
		t := buildTenant(in, id, d, rev)
		n.tenants[id] = t
		n.count(t, 1)
	}
	return n
}

func (s *Snapshot) count(t *Tenant, sign int) {
	s.counts[KindLicense] += sign * len(t.Licenses)
	s.counts[KindAssignment] += sign * len(t.Assignments)
	s.counts[KindEntitlement] += sign * len(t.Entitlements)
	s.counts[KindGroup] += sign * len(t.Groups)
}

// Tenant returns the tenant's state, or nil when the snapshot has none.
func (s *Snapshot) Tenant(id string) *Tenant { return s.tenants[id] }

// Count returns the number of records of a kind.
func (s *Snapshot) Count(k Kind) int { return s.counts[k] }

// TenantIDs returns the tenant ids in order.
func (s *Snapshot) TenantIDs() []string {
	ids := make([]string, 0, len(s.tenants))
	for id := range s.tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Document returns the whole state as a document, sorted by tenant and id.
func (s *Snapshot) Document() *Document {
	d := &Document{}
	for _, id := range s.TenantIDs() {
		d.Append(s.tenants[id].Records())
	}
	return d
}

// TenantDocument returns one tenant's records as a document sharing the
// snapshot's (immutable) records.
func (t *Tenant) TenantDocument() *Document {
	d := &Document{}
	d.Append(t.Records())
	return d
}

// Records returns the tenant's records as a document that shares the
// snapshot's slices: the caller must not change it.
func (t *Tenant) Records() *Document {
	return &Document{Licenses: t.Licenses, Assignments: t.Assignments, Entitlements: t.Entitlements, Groups: t.Groups}
}

// LicenseAssignments returns the assignments of a license, sorted by id.
func (t *Tenant) LicenseAssignments(licenseID string) []*Assignment {
	return t.byLicense[licenseID]
}

// interner shares one copy of each repeated string (tenant, license,
// person, asset and type ids) across the records of a build, and copies
// the strings it keeps into large chunks. Decoded records leave their
// strings scattered among the garbage of the decoding; packed together,
// the snapshot's strings do not pin the decoder's memory after a load.
type interner struct {
	m     map[string]string
	chunk []byte
}

const internChunk = 64 << 10

func newInterner() *interner { return &interner{m: make(map[string]string)} }

// of returns the shared copy of s.
func (in *interner) of(s string) string {
	if s == "" || in == nil {
		return s
	}
	if v, ok := in.m[s]; ok {
		return v
	}
	v := in.copy(s)
	in.m[v] = v
	return v
}

// copy returns s packed into the current chunk (ids that never repeat).
func (in *interner) copy(s string) string {
	if s == "" || in == nil {
		return s
	}
	if len(s) > internChunk/8 {
		return strings.Clone(s)
	}
	if cap(in.chunk)-len(in.chunk) < len(s) {
		in.chunk = make([]byte, 0, internChunk)
	}
	off := len(in.chunk)
	in.chunk = append(in.chunk, s...)
	// The chunk's bytes up to len are never written again.
	return unsafe.String(&in.chunk[off], len(s))
}

func buildTenant(in *interner, id string, d *Document, rev uint64) *Tenant {
	id = in.of(id)
	t := &Tenant{
		ID:        id,
		Revision:  rev,
		licByID:   make(map[string]*License, len(d.Licenses)),
		licByName: make(map[string][]*License, len(d.Licenses)),
		persons:   make(map[string]int32),
		groups:    make(map[string]int32, len(d.Groups)),
		byLicense: make(map[string][]*Assignment, len(d.Licenses)),
	}
	// Records new to snapshots are copied (the caller keeps its own, and
	// interning writes to them); records of an older snapshot are shared
	// as they are: they never change.
	t.Licenses = sortedCopies(d.Licenses, func(l *License) string { return l.ID }, func(l *License) *bool { return &l.owned })
	t.Assignments = sortedCopies(d.Assignments, func(a *Assignment) string { return a.ID }, func(a *Assignment) *bool { return &a.owned })
	t.Entitlements = sortedCopies(d.Entitlements, func(e *Entitlement) string { return e.ID }, func(e *Entitlement) *bool { return &e.owned })
	t.Groups = sortedCopies(d.Groups, func(g *Group) string { return g.ID }, func(g *Group) *bool { return &g.owned })

	for _, l := range t.Licenses {
		if !l.owned {
			l.ID = in.copy(l.ID)
			l.Name = in.of(l.Name)
			l.Description = in.copy(l.Description)
			l.TenantID = id
			l.AppID = in.of(l.AppID)
			l.AssetID = in.of(l.AssetID)
			l.owned = true
		}
		t.licByID[l.ID] = l
		t.licByName[l.Name] = append(t.licByName[l.Name], l)
	}
	for _, g := range t.Groups {
		if !g.owned {
			g.TenantID = id
			g.ID = in.of(g.ID)
			g.Members = slices.Clone(g.Members)
			for i := range g.Members {
				g.Members[i].ID = in.of(g.Members[i].ID)
			}
			g.owned = true
		}
		t.principal(Principal{GroupPrincipal, g.ID})
	}
	for _, a := range t.Assignments {
		if !a.owned {
			a.ID = in.copy(a.ID)
			a.TenantID = id
			a.LicenseID = in.of(a.LicenseID)
			a.AssigneeID = in.of(a.AssigneeID)
			a.AssetID = in.of(a.AssetID)
			a.AppID = in.of(a.AppID)
			a.owned = true
		}
		if a.Deleted {
			continue
		}
		p := t.principal(Principal{a.AssigneeType, a.AssigneeID})
		t.prins[p].seats = append(t.prins[p].seats, a)
		t.byLicense[a.LicenseID] = append(t.byLicense[a.LicenseID], a)
	}
	for _, e := range t.Entitlements {
		if !e.owned {
			e.ID = in.copy(e.ID)
			e.TenantID = id
			e.AssetID = in.of(e.AssetID)
			e.PrincipalID = in.of(e.PrincipalID)
			e.Type = in.of(e.Type)
			e.AppID = in.of(e.AppID)
			e.owned = true
		}
		if e.Deleted {
			continue
		}
		p := t.principal(Principal{e.PrincipalType, e.PrincipalID})
		t.prins[p].ents = append(t.prins[p].ents, e)
	}

	// parents: principal index -> groups it is a direct member of.
	parents := make(map[int32][]int32)
	for _, g := range t.Groups {
		gi := t.groups[g.ID]
		for _, m := range g.Members {
			p := t.principal(Principal{m.Type, m.ID})
			parents[p] = append(parents[p], gi)
		}
	}
	var queue []int32
	seen := make(map[int32]bool)
	for p, direct := range parents {
		clear(seen)
		queue = append(queue[:0], direct...)
		var all []int32
		for len(queue) > 0 {
			g := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			if seen[g] {
				continue
			}
			seen[g] = true
			if g != p { // a group in a cycle does not belong to itself
				all = append(all, g)
			}
			queue = append(queue, parents[g]...)
		}
		slices.SortFunc(all, func(a, b int32) int { return strings.Compare(t.prins[a].id, t.prins[b].id) })
		t.prins[p].groups = slices.Clip(all)
	}
	for i := range t.prins {
		pr := &t.prins[i]
		slices.SortStableFunc(pr.seats, func(a, b *Assignment) int { return strings.Compare(a.LicenseID, b.LicenseID) })
		slices.SortStableFunc(pr.ents, func(a, b *Entitlement) int { return strings.Compare(a.AssetID, b.AssetID) })
		pr.seats, pr.ents = slices.Clip(pr.seats), slices.Clip(pr.ents)
	}
	return t
}

// index is the id -> prins map of a principal type.
func (t *Tenant) index(typ PrincipalType) map[string]int32 {
	if typ == GroupPrincipal {
		return t.groups
	}
	return t.persons
}

// principal returns the index of p's entry, adding it when new.
func (t *Tenant) principal(p Principal) int32 {
	if i := t.lookup(p); i >= 0 {
		return i
	}
	i := int32(len(t.prins))
	t.prins = append(t.prins, principal{id: p.ID})
	t.index(p.Type)[p.ID] = i
	return i
}

// lookup returns the index of p's entry, or -1.
func (t *Tenant) lookup(p Principal) int32 {
	if i, ok := t.index(p.Type)[p.ID]; ok {
		return i
	}
	return -1
}

// sortedCopies returns the records sorted by id: those already owned by a
// snapshot as they are, the others copied into one backing array and
// marked fresh (owned stays false until the build marks them).
func sortedCopies[T any](recs []*T, id func(*T) string, owned func(*T) *bool) []*T {
	n := 0
	for _, r := range recs {
		if !*owned(r) {
			n++
		}
	}
	vals := make([]T, 0, n)
	out := make([]*T, len(recs))
	for i, r := range recs {
		if *owned(r) {
			out[i] = r
			continue
		}
		vals = append(vals, *r)
		out[i] = &vals[len(vals)-1]
	}
	sort.Slice(out, func(i, j int) bool { return id(out[i]) < id(out[j]) })
	return out
}

// License returns the license with the id, or nil.
func (t *Tenant) License(id string) *License { return t.licByID[id] }

// Memberships returns, for every principal that belongs to a group, all
// the groups it belongs to directly or through nesting, in id order.
func (t *Tenant) Memberships() map[Principal][]string {
	out := make(map[Principal][]string)
	add := func(m map[string]int32, typ PrincipalType) {
		for id, i := range m {
			if gs := t.prins[i].groups; len(gs) > 0 {
				ids := make([]string, len(gs))
				for j, g := range gs {
					ids[j] = t.prins[g].id
				}
				out[Principal{typ, id}] = ids
			}
		}
	}
	add(t.persons, Person)
	add(t.groups, GroupPrincipal)
	return out
}
