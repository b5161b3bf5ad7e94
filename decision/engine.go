package decision

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
)

// Check is the kind of question a request asks.
type Check uint8

const (
	CheckSeat Check = iota
	CheckEntitlement
	// CheckRoute labels ext_authz requests that matched no route; it is
	// never a Request's check.
	CheckRoute
	numChecks
)

var checkNames = [numChecks]string{"seat", "entitlement", "route"}

func (c Check) String() string { return checkNames[c] }

// API names the front a decision was asked through; it labels metrics.
type API uint8

const (
	APIEvaluate API = iota
	APIBatch
	APICompat
	APIExtAuthzGRPC
	APIExtAuthzHTTP
	APICLI
	numAPIs
)

var apiNames = [numAPIs]string{"evaluate", "batch", "compat", "ext_authz_grpc", "ext_authz_http", "cli"}

func (a API) String() string { return apiNames[a] }

// Request is one seat or entitlement check. The engine does not retain it.
type Request struct {
	TenantID string
	// AppID is the caller's app scope: when set, only records stamped with
	// the same app_id are visible.
	AppID   string
	Subject Principal
	Check   Check
	License string // seat: a license id or name
	AssetID string // entitlement
	Type    string // entitlement type
	// At is the time the check is asked about; zero or NoTime means now.
	At Instant
	// MinRevision, when set, is the oldest state the answer may come from:
	// Decide first waits for it (Await).
	MinRevision Token
}

// ID identifies one decision: a per-process random prefix and a
// counter, so ids are unique without a lock or an allocation.
type ID [16]byte

// AppendText appends the id as 32 hex digits.
func (id ID) AppendText(b []byte) []byte {
	var dst [32]byte
	hex.Encode(dst[:], id[:])
	return append(b, dst[:]...)
}

func (id ID) String() string { return string(id.AppendText(nil)) }

// Decision is the answer to a Request.
type Decision struct {
	ID      ID
	Allowed bool
	Reason  Reason
	Grant   Grant // set only when Allowed
	// LicenseID is the license a seat check was decided on, "" when none.
	LicenseID string
	Revision  uint64
	// Token is the revision token's text form (the "revision" answered).
	Token  string
	Cached bool
}

// Policy decides outcomes from facts. Implementations are immutable and
// safe for concurrent use; a new policy revision is a new value.
type Policy interface {
	Revision() uint64
	Seat(SeatFacts) Outcome
	Entitlement(EntFacts) Outcome
	// Implying returns the entitlement types, other than typ itself, whose
	// holders also hold typ.
	Implying(typ string) []string
	// Implied lists, sorted, every type some other type implies.
	Implied() []string
}

// Errors the engine returns; fronts map them to statuses.
var (
	ErrNoState  = errors.New("no state snapshot loaded")
	ErrNoPolicy = errors.New("no policy compiled")
)

// Config configures an Engine.
type Config struct {
	// CacheEntries is how many entries the decision cache is sized for
	// (its admission counters and front table); 0 means the default of
	// 1,000,000 and a negative value disables the cache.
	CacheEntries int64
	// CacheMaxBytes bounds the memory the cache's entries hold, in bytes;
	// 0 means the default of 64 MiB. The front table of recent entries and
	// the admission counters add a fixed ~20 MB at the default sizing, and
	// the Go heap's headroom can put the process at 2-3x the live bytes.
	CacheMaxBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics receives decision and cache metrics; nil records none.
	Metrics *Metrics
	// Log receives sampled decisions; nil logs none.
	Log *Logger
	// ConsistencyWait is the longest a request with a min_revision waits
	// for the state to reach it (Await); 0 means the default of 250ms and
	// a negative value not to wait.
	ConsistencyWait time.Duration
}

// DefaultConsistencyWait is ConsistencyWait's default.
const DefaultConsistencyWait = 250 * time.Millisecond

type cacheEntry struct {
	key       string
	tenantRev uint64
	// seen is the id of the newest snapshot in which tenantRev was found
	// current: a hit in that snapshot needs no tenant lookup.
	seen      atomic.Uint64
	policyRev uint64
	win       window
	outcome   Outcome
	grant     Grant
	license   string
}

// The cache's defaults: CacheEntries and CacheMaxBytes.
const (
	DefaultCacheEntries  = 1_000_000
	DefaultCacheMaxBytes = 64 << 20
)

// entryCost is the memory an entry holds, for the cache's byte bound: its
// own key, the entry, and ristretto's bookkeeping for it. Its other
// strings point into the snapshot.
func entryCost(c *cacheEntry) int64 {
	return int64(len(c.key)) + int64(unsafe.Sizeof(cacheEntry{})) + 144
}

type policyBox struct{ p Policy }

// Engine answers checks from the current snapshot and policy. It is safe
// for concurrent use; SetSnapshot and SetPolicy swap atomically and every
// Decide sees one snapshot and one policy from start to end.
type Engine struct {
	snap  atomic.Pointer[Snapshot]
	pol   atomic.Pointer[policyBox]
	fresh atomic.Int64
	cache *ristretto.Cache[uint64, *cacheEntry]
	// front is a small direct-mapped table of recent entries before the
	// cache: a hot check costs one atomic load, not ristretto's admission
	// bookkeeping. Entries are checked exactly as cache entries are.
	front   []atomic.Pointer[cacheEntry]
	seed    maphash.Seed
	now     func() time.Time
	metrics *Metrics
	log     *Logger
	idBase  [8]byte
	idSeq   atomic.Uint64
	// space numbers this engine's local tokens; cons wakes Await.
	space uint32
	wait  time.Duration
	cons  consistency
}

// NewEngine returns an engine with no state and no policy yet.
func NewEngine(cfg Config) (*Engine, error) {
	e := &Engine{seed: maphash.MakeSeed(), now: cfg.Now, metrics: cfg.Metrics, log: cfg.Log, wait: cfg.ConsistencyWait}
	if e.now == nil {
		e.now = time.Now
	}
	if e.wait == 0 {
		e.wait = DefaultConsistencyWait
	}
	if _, err := rand.Read(e.idBase[:]); err != nil {
		return nil, fmt.Errorf("decision id seed: %w", err)
	}
	e.space = binary.LittleEndian.Uint32(e.idBase[:4]) ^ binary.LittleEndian.Uint32(e.idBase[4:])
	e.cons.changed.broadcast()
	if cfg.CacheEntries >= 0 {
		n := cfg.CacheEntries
		if n == 0 {
			n = DefaultCacheEntries
		}
		maxBytes := cfg.CacheMaxBytes
		if maxBytes <= 0 {
			maxBytes = DefaultCacheMaxBytes
		}
		c, err := ristretto.NewCache(&ristretto.Config[uint64, *cacheEntry]{
			NumCounters:        10 * n,
			MaxCost:            maxBytes,
			BufferItems:        64,
			IgnoreInternalCost: true,
		})
		if err != nil {
			return nil, fmt.Errorf("decision cache: %w", err)
		}
		e.cache = c
		e.front = make([]atomic.Pointer[cacheEntry], min(frontSlots, 1<<bits.Len64(uint64(n-1))))
	}
	return e, nil
}

// frontSlots bounds the front table (a power of two).
const frontSlots = 1 << 15

// Close releases the cache's goroutines.
func (e *Engine) Close() {
	if e.cache != nil {
		e.cache.Close()
	}
}

// SetSnapshot publishes a new state snapshot. The state's age is the
// source's to tell (MarkFresh, before it publishes); a snapshot published
// with none told is taken as current when it was built.
func (e *Engine) SetSnapshot(s *Snapshot) {
	if s.token.IsZero() {
		s.Stamp(Token{Local: true, Space: e.space, Seq: s.Revision})
	}
	e.fresh.CompareAndSwap(0, s.Built.UnixNano())
	prev := e.snap.Swap(s)
	if prev != nil {
		e.cons.served(prev.token, s.token)
	}
	e.cons.changed.broadcast()
	if e.metrics != nil {
		e.metrics.setState(s)
	}
}

// ConsistencyWait is the longest Await waits.
func (e *Engine) ConsistencyWait() time.Duration { return max(0, e.wait) }

// Metrics returns the metrics the engine records to, or nil.
func (e *Engine) Metrics() *Metrics { return e.metrics }

// MarkFresh records that the state was known to be current at t.
func (e *Engine) MarkFresh(t time.Time) { e.fresh.Store(t.UnixNano()) }

// FreshAt returns when the state was last known to be current.
func (e *Engine) FreshAt() time.Time { return time.Unix(0, e.fresh.Load()) }

// Snapshot returns the current snapshot, or nil.
func (e *Engine) Snapshot() *Snapshot { return e.snap.Load() }

// SetPolicy publishes a new policy.
func (e *Engine) SetPolicy(p Policy) { e.pol.Store(&policyBox{p}) }

// Policy returns the current policy, or nil.
func (e *Engine) Policy() Policy {
	if b := e.pol.Load(); b != nil {
		return b.p
	}
	return nil
}

// Ready reports whether the engine has both a snapshot and a policy.
func (e *Engine) Ready() bool { return e.snap.Load() != nil && e.pol.Load() != nil }

// WaitCache blocks until pending cache writes are applied (for tests).
func (e *Engine) WaitCache() {
	if e.cache != nil {
		e.cache.Wait()
	}
}

// Decide answers one check. A cache hit costs no allocation.
func (e *Engine) Decide(api API, req *Request) (Decision, error) {
	if !req.MinRevision.IsZero() {
		if _, err := e.Await(req.MinRevision); err != nil {
			return Decision{}, err
		}
	}
	start := e.now()
	snap := e.snap.Load()
	if snap == nil {
		return Decision{}, ErrNoState
	}
	box := e.pol.Load()
	if box == nil {
		return Decision{}, ErrNoPolicy
	}
	pol := box.p
	at := req.At.Or(InstantOf(start))
	d := Decision{ID: e.nextID(), Revision: snap.Revision, Token: snap.text}

	var arr [256]byte
	key := appendKey(arr[:0], req)
	var h uint64
	var t *Tenant
	var trev uint64 // t's revision; 0 when the snapshot has no such tenant
	looked := false
	tenant := func() {
		if !looked {
			t, looked = snap.Tenant(req.TenantID), true
			if t != nil {
				trev = t.Revision
			}
		}
	}
	// usable reports whether c answers req now: same key and policy, the
	// time inside its window, and its tenant unchanged since it was made.
	usable := func(c *cacheEntry) bool {
		if c == nil || c.key != string(key) || c.policyRev != pol.Revision() || !c.win.holds(at) {
			return false
		}
		if c.seen.Load() == snap.id {
			return true
		}
		tenant()
		if trev != c.tenantRev {
			return false
		}
		c.seen.Store(snap.id)
		return true
	}
	if e.cache != nil {
		h = maphash.Bytes(e.seed, key)
		slot := &e.front[h&uint64(len(e.front)-1)]
		c := slot.Load()
		hit := usable(c)
		if !hit {
			if c, hit = e.cache.Get(h); hit {
				if hit = usable(c); hit {
					slot.Store(c)
				}
			}
		}
		if hit {
			d.Allowed, d.Reason, d.Grant, d.LicenseID, d.Cached = c.outcome.Allowed, c.outcome.Reason, c.grant, c.license, true
			e.observe(api, req, d, start)
			return d, nil
		}
	}
	tenant()
	var (
		o   Outcome
		g   Grant
		lic string
		win window
	)
	switch req.Check {
	case CheckSeat:
		o, g, lic, win = decideSeat(t, pol, req, at)
	case CheckEntitlement:
		o, g, win = decideEntitlement(t, pol, req, at)
	default:
		// CheckRoute and anything else is not a question about the state.
		return Decision{}, fmt.Errorf("unknown check %d", req.Check)
	}
	if !o.Allowed {
		g = Grant{}
	}
	d.Allowed, d.Reason, d.Grant, d.LicenseID = o.Allowed, o.Reason, g, lic
	if e.cache != nil {
		c := &cacheEntry{key: string(key), tenantRev: trev, policyRev: pol.Revision(), win: win, outcome: o, grant: g, license: lic}
		c.seen.Store(snap.id)
		e.cache.Set(h, c, entryCost(c))
		e.front[h&uint64(len(e.front)-1)].Store(c)
	}
	e.observe(api, req, d, start)
	return d, nil
}

// NoRoute records an ext_authz request that matched no route and returns
// its decision.
func (e *Engine) NoRoute(api API, tenant string) Decision {
	start := e.now()
	d := Decision{ID: e.nextID(), Reason: NoRoute}
	if s := e.snap.Load(); s != nil {
		d.Revision, d.Token = s.Revision, s.text
	}
	if e.metrics != nil {
		e.metrics.observeDecision(api, CheckRoute, d, e.now().Sub(start))
	}
	if e.log != nil && e.log.sampled() {
		e.log.Log(LogEntry{ID: d.ID, Time: start, API: api, Tenant: strings.Clone(tenant), Check: CheckRoute, Reason: NoRoute, Revision: d.Token, Latency: e.now().Sub(start)})
	}
	return d
}

func (e *Engine) observe(api API, req *Request, d Decision, start time.Time) {
	if e.metrics == nil && e.log == nil {
		return
	}
	took := e.now().Sub(start)
	if e.metrics != nil {
		e.metrics.observe(api, req.Check, d, took)
	}
	if e.log != nil && e.log.sampled() {
		// The request's strings may alias its body: the entry keeps copies.
		e.log.Log(LogEntry{ID: d.ID, Time: start, API: api, Tenant: strings.Clone(req.TenantID), App: strings.Clone(req.AppID),
			Subject: Principal{req.Subject.Type, strings.Clone(req.Subject.ID)}, Check: req.Check, License: strings.Clone(req.License),
			Asset: strings.Clone(req.AssetID), Type: strings.Clone(req.Type), At: req.At, Grant: d.Grant,
			Allowed: d.Allowed, Reason: d.Reason, Revision: d.Token, Latency: took, Cached: d.Cached})
	}
}

func (e *Engine) nextID() ID {
	var id ID
	copy(id[:8], e.idBase[:])
	binary.BigEndian.PutUint64(id[8:], e.idSeq.Add(1))
	return id
}

// appendKey encodes everything a decision depends on except the clock.
func appendKey(b []byte, r *Request) []byte {
	b = append(b, byte(r.Check), byte(r.Subject.Type))
	b = appendField(b, r.TenantID)
	b = appendField(b, r.AppID)
	b = appendField(b, r.Subject.ID)
	if r.Check == CheckSeat {
		return appendField(b, r.License)
	}
	b = appendField(b, r.AssetID)
	return appendField(b, r.Type)
}

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func decideSeat(t *Tenant, pol Policy, req *Request, at Instant) (Outcome, Grant, string, window) {
	if t == nil {
		return pol.Seat(MakeSeatFacts(LicStateAbsent, 0, 0)), Grant{}, "", always
	}
	var (
		best     Outcome
		bestC    seatCandidate
		found    bool
		win      = always
		consider = func(l *License) {
			c := t.seatFacts(l, req.Subject, req.AppID, at)
			win.intersect(c.win)
			o := pol.Seat(c.facts)
			if !found || better(o, best) {
				best, bestC, found = o, c, true
			}
		}
	)
	if l := t.licByID[req.License]; l != nil && l.VisibleTo(req.AppID) {
		consider(l)
	} else {
		for _, l := range t.licByName[req.License] {
			if l.VisibleTo(req.AppID) {
				consider(l)
			}
		}
	}
	if !found {
		return pol.Seat(MakeSeatFacts(LicStateAbsent, 0, 0)), Grant{}, "", always
	}
	var g Grant
	switch {
	case best.Reason == SeatLeased && bestC.lease != nil:
		g = Grant{ID: bestC.lease.ID}
	case best.Reason == SeatAssignedViaGroup && bestC.group != nil:
		g = Grant{ID: bestC.group.id, ViaGroup: bestC.groupID}
	case bestC.direct != nil:
		g = Grant{ID: bestC.direct.id}
	case bestC.group != nil:
		g = Grant{ID: bestC.group.id, ViaGroup: bestC.groupID}
	}
	g.OverLimit = best.Allowed && bestC.facts.Has(SeatOverLimit)
	return best, g, bestC.license.ID, win
}

// Evaluate answers req from snap and the current policy without the
// cache, metrics or decision log: for reads that ask many questions to
// build one answer (the compatible allocation's subjects). A zero At is now.
func (e *Engine) Evaluate(snap *Snapshot, req *Request) (Outcome, error) {
	o, _, err := e.EvaluateGrant(snap, req)
	return o, err
}

// EvaluateGrant is Evaluate with the grant of an allow.
func (e *Engine) EvaluateGrant(snap *Snapshot, req *Request) (Outcome, Grant, error) {
	box := e.pol.Load()
	switch {
	case snap == nil:
		return Outcome{}, Grant{}, ErrNoState
	case box == nil:
		return Outcome{}, Grant{}, ErrNoPolicy
	}
	at := req.At.Or(InstantOf(e.now()))
	t := snap.Tenant(req.TenantID)
	var o Outcome
	var g Grant
	switch req.Check {
	case CheckSeat:
		o, g, _, _ = decideSeat(t, box.p, req, at)
	case CheckEntitlement:
		o, g, _ = decideEntitlement(t, box.p, req, at)
	default:
		return Outcome{}, Grant{}, fmt.Errorf("unknown check %d", req.Check)
	}
	if !o.Allowed {
		g = Grant{}
	}
	return o, g, nil
}

// better prefers an allow, then the denial that got furthest through the
// rules, when a license name matches several licenses.
func better(o, than Outcome) bool {
	if o.Allowed != than.Allowed {
		return o.Allowed
	}
	return o.Reason > than.Reason
}

func decideEntitlement(t *Tenant, pol Policy, req *Request, at Instant) (Outcome, Grant, window) {
	if t == nil {
		return pol.Entitlement(0), Grant{}, always
	}
	c := t.entFacts(req.AssetID, req.Type, pol.Implying(req.Type), req.Subject, req.AppID, at)
	o := pol.Entitlement(c.facts)
	var g Grant
	switch {
	case o.Reason == EntitledViaGroup && c.group != nil:
		g = Grant{ID: c.group.id, ViaGroup: c.groupID}
	case c.direct != nil:
		g = Grant{ID: c.direct.id}
	case c.group != nil:
		g = Grant{ID: c.group.id, ViaGroup: c.groupID}
	}
	return o, g, c.win
}
