package decision

import (
	"hash/maphash"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Principal is a person or a group of a tenant.
type Principal struct {
	Type PrincipalType
	ID   string
}

// principal is one person or group of a tenant with what it holds, as
// ranges of the tenant's memberOf, seatIdx and entIdx.
type principal struct {
	id  string
	typ PrincipalType
	// parents[g0:g1]: the groups the principal is a direct member of;
	// seatIdx[s0:s1] its assignments by license, then id; entIdx[e0:e1]
	// its entitlements by asset, then id.
	g0, g1, s0, s1, e0, e1 uint32
}

// seat is an assignment as a snapshot keeps it: license, asset and app
// are indexes into the tenant's refs, the assignee into its prins. About
// half the size of an Assignment; Records turns seats back into records.
type seat struct {
	id                     string
	lic, asset, app        uint32
	assignee               int32
	typ                    PrincipalType
	res                    Reservation
	status                 Status
	deleted                bool
	validFrom, expiresAt   Instant
	assignedAt, lastUsedAt Instant
}

// grant is an entitlement as a snapshot keeps it (see seat).
type grant struct {
	id                              string
	asset, typ, app                 uint32
	principal                       int32
	ptype                           PrincipalType
	source                          GrantSource
	status                          Status
	deleted                         bool
	grantedAt, validFrom, expiresAt Instant
}

func newSeat(a *Assignment, id string, lic, asset, app uint32, assignee int32) seat {
	return seat{id: id, lic: lic, asset: asset, app: app, assignee: assignee, typ: a.AssigneeType, res: a.Reservation,
		status: a.Status, deleted: a.Deleted, validFrom: a.ValidFrom, expiresAt: a.ExpiresAt, assignedAt: a.AssignedAt, lastUsedAt: a.LastUsedAt}
}

func newGrant(e *Entitlement, id string, asset, typ, app uint32, principal int32) grant {
	return grant{id: id, asset: asset, typ: typ, app: app, principal: principal, ptype: e.PrincipalType, source: e.GrantSource,
		status: e.Status, deleted: e.Deleted, grantedAt: e.GrantedAt, validFrom: e.ValidFrom, expiresAt: e.ExpiresAt}
}

// noRef is a ref index no record holds.
const noRef = ^uint32(0)

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
	persons map[string]int32
	groups  map[string]int32
	prins   []principal
	parents []int32
	// memo[p] remembers principal p's groups (groupsOf) once a check has
	// walked them, when they are few. In-place edits share it: they keep
	// the groups and the indexes of existing principals as they are.
	memo     []atomic.Pointer[[]int32]
	seatIdx  []int32
	entIdx   []int32
	licSeats []int32 // live seats by license, then id
	// refs holds the distinct license ids, asset ids, app ids and
	// entitlement types, sorted, with refs[0] == "": comparing indexes
	// orders like comparing the strings.
	refs   []string
	refIdx map[string]uint32
	seats  []seat  // by id
	grants []grant // by id
	// ranks memoizes the rankings of licenses with a seat limit, cands
	// the candidate holders of checks.
	ranks *rankMemo
	cands *candMemo
	// leases are the floating seats held; a rebuild of the tenant's
	// records keeps them.
	leases *tenantLeases

	Licenses []*License
	Groups   []*Group
}

// Snapshot is an immutable, indexed state of every tenant. It is safe for
// concurrent use; nothing in it changes after NewSnapshot returns.
type Snapshot struct {
	Revision uint64
	Built    time.Time
	// token is the snapshot's revision token, and text its text form.
	token Token
	text  string
	// id is unique in the process (revisions need not be): cache entries
	// remember the snapshot in which they were last checked.
	id uint64
	// Tenants are sharded by id hash so that a change copies one small
	// shard, not an index of every tenant.
	shards [tenantShards]map[string]*Tenant
	counts [4]int
}

const tenantShards = 256

var (
	shardSeed   = maphash.MakeSeed()
	snapshotIDs atomic.Uint64
)

func shardOf(id string) int { return int(maphash.String(shardSeed, id) % tenantShards) }

// Stamp sets the snapshot's revision token; a source calls it before it
// publishes the snapshot. Engine.SetSnapshot stamps a local token on a
// snapshot that has none.
func (s *Snapshot) Stamp(t Token) {
	s.token, s.text = t, t.String()
}

// Token is the snapshot's revision token.
func (s *Snapshot) Token() Token { return s.token }

// TokenText is the token's text form, as answers carry it.
func (s *Snapshot) TokenText() string {
	if s == nil {
		return ""
	}
	return s.text
}

// derive starts a copy of s at revision rev that shares every tenant.
func (s *Snapshot) derive(rev uint64) *snapshotEdit {
	return &snapshotEdit{s: &Snapshot{Revision: rev, Built: time.Now(), id: snapshotIDs.Add(1), shards: s.shards, counts: s.counts}}
}

// snapshotEdit replaces tenants of a derived snapshot, copying each shard
// it touches once.
type snapshotEdit struct {
	s      *Snapshot
	copied [tenantShards]bool
}

// set makes t the tenant id (nil removes it).
func (e *snapshotEdit) set(id string, t *Tenant) {
	sh := shardOf(id)
	m := e.s.shards[sh]
	if !e.copied[sh] {
		m = maps.Clone(m)
		if m == nil {
			m = make(map[string]*Tenant)
		}
		e.s.shards[sh], e.copied[sh] = m, true
	}
	if old := m[id]; old != nil {
		e.s.count(old, -1)
		delete(m, id)
	}
	if t != nil {
		m[id] = t
		e.s.count(t, 1)
	}
}

// NewSnapshot indexes a validated document as revision rev. The snapshot
// keeps its own copies of the records; doc is not changed.
func NewSnapshot(doc *Document, rev uint64) *Snapshot {
	by := doc.ByTenant()
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
	return SnapshotOf(rev, built)
}

// TenantBuilder builds the tenants of a snapshot that arrives piecewise,
// as a full load from Redis does, so that a tenant's records can be
// dropped as soon as it is built. A builder is for one goroutine; run
// several for speed.
type TenantBuilder struct{ in *interner }

// NewTenantBuilder returns a builder with an interner of its own.
func NewTenantBuilder() *TenantBuilder { return &TenantBuilder{in: newInterner()} }

// Build indexes one tenant's records (all of tenant id) for revision rev;
// the tenant keeps its own copies, d is not changed.
func (b *TenantBuilder) Build(id string, d *Document, rev uint64) *Tenant {
	return buildTenant(b.in, id, d, rev)
}

// SnapshotOf assembles built tenants (distinct ids, all built for rev)
// into a snapshot.
func SnapshotOf(rev uint64, tenants []*Tenant) *Snapshot {
	e := (&Snapshot{}).derive(rev)
	for _, t := range tenants {
		e.set(t.ID, t)
	}
	return e.s
}

// WithTenants returns a copy of s at revision rev in which each listed
// tenant is rebuilt from its document (a nil or empty document removes
// it). Tenants not listed are shared with s, cached decisions included.
func (s *Snapshot) WithTenants(rev uint64, docs map[string]*Document) *Snapshot {
	e := s.derive(rev)
	for id, d := range docs {
		var t *Tenant
		if d != nil && d.Len() > 0 {
			// No interning: the records of a rebuilt tenant mostly come
			// from the previous snapshot and already share their strings.
			t = buildTenant(nil, id, d, rev)
			if old := s.Tenant(id); old != nil {
				t.leases = old.leases
			}
		}
		e.set(id, t)
	}
	return e.s
}

func (s *Snapshot) count(t *Tenant, sign int) {
	s.counts[KindLicense] += sign * len(t.Licenses)
	s.counts[KindAssignment] += sign * len(t.seats)
	s.counts[KindEntitlement] += sign * len(t.grants)
	s.counts[KindGroup] += sign * len(t.Groups)
}

// Tenant returns the tenant's state, or nil when the snapshot has none.
func (s *Snapshot) Tenant(id string) *Tenant { return s.shards[shardOf(id)][id] }

// Count returns the number of records of a kind.
func (s *Snapshot) Count(k Kind) int { return s.counts[k] }

// Len returns the number of records of all kinds.
func (s *Snapshot) Len() int {
	n := 0
	for _, c := range s.counts {
		n += c
	}
	return n
}

// TenantIDs returns the tenant ids in order.
func (s *Snapshot) TenantIDs() []string {
	var ids []string
	for _, m := range s.shards {
		for id := range m {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Document returns the whole state as a document, sorted by tenant and id.
func (s *Snapshot) Document() *Document {
	d := &Document{}
	for _, id := range s.TenantIDs() {
		d.Append(s.Tenant(id).Records())
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

// Records returns the tenant's records as a document. Licenses and groups
// are the snapshot's own (immutable: the caller must not change them);
// assignments and entitlements are rebuilt from the compact form.
func (t *Tenant) Records() *Document {
	as := make([]Assignment, len(t.seats))
	ap := make([]*Assignment, len(t.seats))
	for i := range t.seats {
		t.assignment(i, &as[i])
		ap[i] = &as[i]
	}
	es := make([]Entitlement, len(t.grants))
	ep := make([]*Entitlement, len(t.grants))
	for i := range t.grants {
		g := &t.grants[i]
		es[i] = Entitlement{ID: g.id, TenantID: t.ID, AssetID: t.refs[g.asset], PrincipalID: t.prins[g.principal].id,
			Type: t.refs[g.typ], AppID: t.refs[g.app], PrincipalType: g.ptype, GrantSource: g.source, Status: g.status,
			Deleted: g.deleted, GrantedAt: g.grantedAt, ValidFrom: g.validFrom, ExpiresAt: g.expiresAt}
		ep[i] = &es[i]
	}
	return &Document{Licenses: t.Licenses, Assignments: ap, Entitlements: ep, Groups: t.Groups}
}

func (t *Tenant) assignment(i int, a *Assignment) {
	s := &t.seats[i]
	*a = Assignment{ID: s.id, TenantID: t.ID, LicenseID: t.refs[s.lic], AssigneeID: t.prins[s.assignee].id,
		AssetID: t.refs[s.asset], AppID: t.refs[s.app], AssigneeType: s.typ, Reservation: s.res, Status: s.status,
		Deleted: s.deleted, AssignedAt: s.assignedAt, ValidFrom: s.validFrom, ExpiresAt: s.expiresAt, LastUsedAt: s.lastUsedAt}
}

// licenseSeats returns the indexes into seats of the live assignments of
// the license with ref lic, by id.
func (t *Tenant) licenseSeats(lic uint32) []int32 {
	lo := sort.Search(len(t.licSeats), func(i int) bool { return t.seats[t.licSeats[i]].lic >= lic })
	hi := lo
	for hi < len(t.licSeats) && t.seats[t.licSeats[hi]].lic == lic {
		hi++
	}
	return t.licSeats[lo:hi]
}

// LicenseAssignments returns the live assignments of a license, sorted by id.
func (t *Tenant) LicenseAssignments(licenseID string) []*Assignment {
	ref, ok := t.refIdx[licenseID]
	if !ok {
		return nil
	}
	seats := t.licenseSeats(ref)
	out := make([]*Assignment, len(seats))
	vals := make([]Assignment, len(seats))
	for i, si := range seats {
		t.assignment(int(si), &vals[i])
		out[i] = &vals[i]
	}
	return out
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
		refIdx:    map[string]uint32{"": 0},
		ranks:     &rankMemo{},
		cands:     &candMemo{},
	}
	// Licenses and groups new to snapshots are copied (the caller keeps
	// its own, and interning writes to them); those of an older snapshot
	// are shared as they are: they never change.
	t.Licenses = sortedCopies(d.Licenses, func(l *License) string { return l.ID }, func(l *License) *bool { return &l.owned })
	t.Groups = sortedCopies(d.Groups, func(g *Group) string { return g.ID }, func(g *Group) *bool { return &g.owned })
	as := slices.Clone(d.Assignments)
	slices.SortFunc(as, func(a, b *Assignment) int { return strings.Compare(a.ID, b.ID) })
	es := slices.Clone(d.Entitlements)
	slices.SortFunc(es, func(a, b *Entitlement) int { return strings.Compare(a.ID, b.ID) })

	ref := func(s string) {
		if _, ok := t.refIdx[s]; !ok {
			t.refIdx[in.of(s)] = 0
		}
	}
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
		ref(l.ID)
	}
	for _, a := range as {
		ref(a.LicenseID)
		ref(a.AssetID)
		ref(a.AppID)
	}
	for _, e := range es {
		ref(e.AssetID)
		ref(e.Type)
		ref(e.AppID)
	}
	t.refs = make([]string, 0, len(t.refIdx))
	for s := range t.refIdx {
		t.refs = append(t.refs, s)
	}
	slices.Sort(t.refs)
	for i, s := range t.refs {
		t.refIdx[s] = uint32(i)
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
		t.principal(Principal{GroupPrincipal, g.ID}, in)
	}
	// Seats and grants in id order.
	t.seats = make([]seat, len(as))
	for i, a := range as {
		p := t.principal(Principal{a.AssigneeType, a.AssigneeID}, in)
		t.seats[i] = newSeat(a, in.copy(a.ID), t.refIdx[a.LicenseID], t.refIdx[a.AssetID], t.refIdx[a.AppID], p)
	}
	t.grants = make([]grant, len(es))
	for i, e := range es {
		p := t.principal(Principal{e.PrincipalType, e.PrincipalID}, in)
		t.grants[i] = newGrant(e, in.copy(e.ID), t.refIdx[e.AssetID], t.refIdx[e.Type], t.refIdx[e.AppID], p)
	}

	// Direct memberships only, as ranges of one array (a counting sort):
	// linear in the memberships whatever the nesting. The groups a
	// principal belongs to through nesting are walked when a check asks
	// (groupsOf); materializing them for everyone is quadratic in a chain
	// or a cycle of groups.
	for _, g := range t.Groups {
		for _, m := range g.Members {
			t.prins[t.principal(Principal{m.Type, m.ID}, in)].g1++
		}
	}
	n := uint32(0)
	for i := range t.prins {
		pr := &t.prins[i]
		pr.g0, pr.g1, n = n, n, n+pr.g1
	}
	t.parents = make([]int32, n)
	for _, g := range t.Groups {
		gi := t.groups[g.ID]
		for _, m := range g.Members {
			pr := &t.prins[t.principal(Principal{m.Type, m.ID}, in)]
			t.parents[pr.g1] = gi
			pr.g1++
		}
	}
	t.memo = make([]atomic.Pointer[[]int32], len(t.prins))
	t.indexSeats()
	t.indexGrants()
	return t
}

// groupsOf appends to out the groups principal p belongs to, directly or
// through nesting, in id order; a group in a cycle does not belong to
// itself. It walks the direct memberships breadth first, out doubling as
// the queue: while it is small (as in any sane state) the visited check
// is a scan of out and nothing is allocated; past smallClosure groups a
// bitmap takes over, so a chain or cycle of N groups costs O(N) a walk.
func (t *Tenant) groupsOf(p int32, out []int32) []int32 {
	start := len(out)
	var seen []uint64
	visit := func(g int32) bool {
		if g == p {
			return false
		}
		if seen != nil {
			if seen[g>>6]&(1<<(g&63)) != 0 {
				return false
			}
			seen[g>>6] |= 1 << (g & 63)
			return true
		}
		if slices.Contains(out[start:], g) {
			return false
		}
		if len(out)-start == smallClosure {
			seen = make([]uint64, (len(t.prins)+63)/64)
			for _, q := range out[start:] {
				seen[q>>6] |= 1 << (q & 63)
			}
			seen[g>>6] |= 1 << (g & 63)
		}
		return true
	}
	pr := &t.prins[p]
	for _, g := range t.parents[pr.g0:pr.g1] {
		if visit(g) {
			out = append(out, g)
		}
	}
	for i := start; i < len(out); i++ {
		q := &t.prins[out[i]]
		for _, g := range t.parents[q.g0:q.g1] {
			if visit(g) {
				out = append(out, g)
			}
		}
	}
	found := out[start:]
	if len(found) <= 16 {
		for i := 1; i < len(found); i++ { // insertion sort: no allocation
			for j := i; j > 0 && t.prins[found[j]].id < t.prins[found[j-1]].id; j-- {
				found[j], found[j-1] = found[j-1], found[j]
			}
		}
	} else {
		slices.SortFunc(found, func(a, b int32) int { return strings.Compare(t.prins[a].id, t.prins[b].id) })
	}
	return out
}

// smallClosure is how many groups a walk tracks without a bitmap, and
// the most a memo keeps.
const smallClosure = 64

// memberships returns the groups principal p belongs to (groupsOf),
// walking them once per snapshot lineage when they are few; buf is
// scratch space for a walk.
func (t *Tenant) memberships(p int32, buf []int32) []int32 {
	if pr := &t.prins[p]; pr.g0 == pr.g1 {
		return nil // in no group
	}
	if int(p) < len(t.memo) {
		if m := t.memo[p].Load(); m != nil {
			return *m
		}
	}
	out := t.groupsOf(p, buf)
	if int(p) < len(t.memo) && len(out) <= smallClosure {
		m := slices.Clone(out)
		t.memo[p].Store(&m)
	}
	return out
}

// index is the id -> prins map of a principal type.
func (t *Tenant) index(typ PrincipalType) map[string]int32 {
	if typ == GroupPrincipal {
		return t.groups
	}
	return t.persons
}

// principal returns the index of p's entry, adding it when new.
func (t *Tenant) principal(p Principal, in *interner) int32 {
	if i := t.lookup(p); i >= 0 {
		return i
	}
	i := int32(len(t.prins))
	id := in.of(p.ID)
	t.prins = append(t.prins, principal{id: id, typ: p.Type})
	t.index(p.Type)[id] = i
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
			if gs := t.groupsOf(i, nil); len(gs) > 0 {
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
