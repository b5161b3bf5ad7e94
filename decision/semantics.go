package decision

import "math"

// Reason is the closed set of decision reasons.
type Reason uint8

const (
	ReasonNone Reason = iota
	// Seat reasons, in the order of the seat rules.
	LicenseNotFound
	LicenseSuspended
	LicenseRevoked
	LicenseNotYetValid
	LicenseExpired
	AssignmentDenied
	SeatAssigned
	SeatAssignedViaGroup
	AssignmentExpired
	AssignmentNotYetValid
	AssignmentInactive
	NoAssignment
	SeatLimitExceeded
	SeatLeased
	NotCheckedOut
	// Entitlement reasons.
	Entitled
	EntitledViaGroup
	EntitlementPendingApproval
	EntitlementExpired
	EntitlementInactive
	NotEntitled
	// Route reasons (ext_authz).
	NoRoute
	numReasons
)

var reasonNames = [numReasons]string{
	"", "license_not_found", "license_suspended", "license_revoked", "license_not_yet_valid",
	"license_expired", "assignment_denied", "seat_assigned", "seat_assigned_via_group",
	"assignment_expired", "assignment_not_yet_valid", "assignment_inactive", "no_assignment",
	"seat_limit_exceeded", "seat_leased", "not_checked_out", "entitled", "entitled_via_group", "entitlement_pending_approval", "entitlement_expired",
	"entitlement_inactive", "not_entitled", "no_route",
}

func (r Reason) String() string { return reasonNames[r] }

// ParseReason looks a reason up by name.
func ParseReason(s string) (Reason, bool) {
	for i, n := range reasonNames {
		if i > 0 && n == s {
			return Reason(i), true
		}
	}
	return ReasonNone, false
}

// SeatReason reports whether r belongs to the seat check's reasons.
func (r Reason) Seat() bool { return r >= LicenseNotFound && r <= NotCheckedOut }

// EntitlementReason reports whether r belongs to the entitlement check's reasons.
func (r Reason) Entitlement() bool { return r >= Entitled && r <= NotEntitled }

// Outcome is what a policy decides from facts.
type Outcome struct {
	Allowed bool
	Reason  Reason
}

// License states and validity in SeatFacts.
const (
	LicStateAbsent    = 0
	LicStateActive    = 1
	LicStateSuspended = 2
	LicStateRevoked   = 3

	ValidityInEffect    = 0
	ValidityNotYetValid = 1
	ValidityExpired     = 2
)

// SeatFacts is everything the seat policy may look at, packed in fifteen
// bits: the license's state (bits 0–1) and validity (bits 2–3), which kinds
// of assignment S and its groups hold (bits 4–9), where S ranks on a named
// license with a seat limit (bits 10–11: within the overage, or past it),
// and for a floating license (bit 14) whether S holds a lease (bit 12) or
// may check one out (bit 13). On a floating license SeatDirect and
// SeatViaGroup count reserved assignments only.
// Decisions are memoized per policy revision over this small domain.
type SeatFacts uint16

const (
	SeatDenied SeatFacts = 1 << (iota + 4)
	SeatDirect
	SeatViaGroup
	SeatExpired
	SeatNotYetValid
	SeatInactive
	// SeatOverLimit: S ranks past seat_limit, within seat_overage.
	SeatOverLimit
	// SeatBeyondLimit: S ranks past seat_limit + seat_overage.
	SeatBeyondLimit
	// SeatHasLease: S holds a live lease of the floating license.
	SeatHasLease
	// SeatMayCheckOut: a live dynamic assignment of the floating license
	// reaches S.
	SeatMayCheckOut
	// SeatFloating: the license is floating.
	SeatFloating
)

// NumSeatFacts bounds SeatFacts values.
const NumSeatFacts = 1 << 15

// Possible reports whether the facts can arise: the seat limit's two
// bits exclude each other and apply to named licenses only; lease facts
// only to floating ones.
func (f SeatFacts) Possible() bool {
	switch {
	case f.Validity() > ValidityExpired, f.Has(SeatOverLimit | SeatBeyondLimit):
		return false
	case f.Has(SeatFloating):
		return f&(SeatOverLimit|SeatBeyondLimit) == 0
	}
	return f&(SeatHasLease|SeatMayCheckOut) == 0
}

// MakeSeatFacts packs a license state and validity with assignment flags.
func MakeSeatFacts(state, validity int, flags SeatFacts) SeatFacts {
	return SeatFacts(state) | SeatFacts(validity)<<2 | flags
}

// LicenseState returns the license's state (LicStateAbsent … LicStateRevoked).
func (f SeatFacts) LicenseState() int { return int(f & 3) }

// Validity returns the license's validity (ValidityInEffect …).
func (f SeatFacts) Validity() int { return int(f>>2) & 3 }

// Has reports whether every flag in g is set.
func (f SeatFacts) Has(g SeatFacts) bool { return f&g == g }

// EntFacts says which kinds of candidate entitlement S and its groups hold.
type EntFacts uint8

const (
	EntDirect EntFacts = 1 << iota
	EntViaGroup
	EntPending
	EntExpired
	EntInactive
	NumEntFacts = 1 << 5
)

// Has reports whether every flag in g is set.
func (f EntFacts) Has(g EntFacts) bool { return f&g == g }

// Grant names the record that allowed a decision.
type Grant struct {
	ID       string `json:"id"`
	ViaGroup string `json:"via_group,omitempty"`
	// OverLimit: the seat is one of the license's seat_overage seats.
	OverLimit bool `json:"over_limit,omitempty"`
}

// window is the half-open interval [lo, hi) of times over which the
// records examined give the same answer.
type window struct{ lo, hi Instant }

var always = window{math.MinInt64 + 1, math.MaxInt64}

func (w *window) bound(at, b Instant) {
	if !b.Set() {
		return
	}
	if b <= at {
		if b > w.lo {
			w.lo = b
		}
	} else if b < w.hi {
		w.hi = b
	}
}

func (w window) holds(at Instant) bool { return w.lo <= at && at < w.hi }

func (w *window) intersect(o window) {
	w.lo = max(w.lo, o.lo)
	w.hi = min(w.hi, o.hi)
}

// visible reports whether a record stamped app is in the caller's scope.
func visible(scope, app string) bool { return scope == "" || scope == app }

// inEffect reports whether [from, until) holds at.
func inEffect(from, until, at Instant) bool {
	return (!from.Set() || from <= at) && (!until.Set() || at < until)
}

// seatCandidate gathers the facts of one license for a subject.
type seatCandidate struct {
	facts   SeatFacts
	direct  *seat
	group   *seat
	groupID string
	lease   *Lease
	win     window
	license *License
}

func (t *Tenant) seatFacts(l *License, s Principal, scope string, at Instant) seatCandidate {
	c := seatCandidate{win: always, license: l}
	c.win.bound(at, l.ValidFrom)
	c.win.bound(at, l.ExpiresAt)
	state := LicStateActive
	switch l.Status {
	case StatusSuspended:
		state = LicStateSuspended
	case StatusRevoked:
		state = LicStateRevoked
	}
	validity := ValidityInEffect
	switch {
	case l.ValidFrom.Set() && at < l.ValidFrom:
		validity = ValidityNotYetValid
	case l.ExpiresAt.Set() && at >= l.ExpiresAt:
		validity = ValidityExpired
	}
	var flags SeatFacts
	floating := l.Type == Floating
	if floating {
		flags |= SeatFloating
	}
	lic, scopeRef := t.refIdx[l.ID], t.scopeRef(scope)
	scan := func(p *principal, viaGroup bool) {
		for _, i := range t.seatIdx[p.s0:p.s1] {
			a := &t.seats[i]
			if a.lic != lic {
				if a.lic > lic {
					return
				}
				continue
			}
			if scope != "" && a.app != scopeRef {
				continue
			}
			c.win.bound(at, a.validFrom)
			c.win.bound(at, a.expiresAt)
			live := a.status == StatusActive && inEffect(a.validFrom, a.expiresAt, at)
			switch {
			case a.res == Denied:
				if live {
					flags |= SeatDenied
				}
			case live && floating && a.res == Dynamic:
				flags |= SeatMayCheckOut // a lease, not the assignment, holds the seat
			case live && !viaGroup:
				flags |= SeatDirect
				if c.direct == nil {
					c.direct = a
				}
			case live:
				flags |= SeatViaGroup
				if c.group == nil {
					c.group, c.groupID = a, p.id
				}
			default:
				if a.expiresAt.Set() && at >= a.expiresAt {
					flags |= SeatExpired
				}
				if a.validFrom.Set() && at < a.validFrom {
					flags |= SeatNotYetValid
				}
				if a.status != StatusActive {
					flags |= SeatInactive
				}
			}
		}
	}
	t.eachHolder(s, scan)
	if floating && s.Type != GroupPrincipal {
		held, win := t.lease(l.ID, s.ID, at)
		c.win.intersect(win)
		if held != nil {
			flags |= SeatHasLease
			c.lease = held
		}
	}
	if !floating && l.SeatLimit >= 0 && s.Type != GroupPrincipal && flags&(SeatDirect|SeatViaGroup) != 0 && flags&SeatDenied == 0 {
		pos, win, ok := t.rankOf(lic, scope, scopeRef, t.lookup(s), at)
		c.win.intersect(win)
		switch {
		case ok && int64(pos) < l.SeatLimit:
		case ok && int64(pos) < l.SeatLimit+l.SeatOverage:
			flags |= SeatOverLimit
		default:
			flags |= SeatBeyondLimit
		}
	}
	c.facts = MakeSeatFacts(state, validity, flags)
	return c
}

// entCandidate gathers the entitlement facts for a subject.
type entCandidate struct {
	facts   EntFacts
	direct  *grant
	group   *grant
	groupID string
	win     window
}

func (t *Tenant) entFacts(asset, typ string, implying []string, s Principal, scope string, at Instant) entCandidate {
	c := entCandidate{win: always}
	ref, ok := t.refIdx[asset]
	if !ok {
		return c // no record names the asset
	}
	scopeRef := t.scopeRef(scope)
	scan := func(p *principal, viaGroup bool) {
		for _, i := range t.entIdx[p.e0:p.e1] {
			e := &t.grants[i]
			if e.asset != ref {
				if e.asset > ref {
					return
				}
				continue
			}
			if (scope != "" && e.app != scopeRef) || !satisfies(t.refs[e.typ], typ, implying) {
				continue
			}
			c.win.bound(at, e.validFrom)
			c.win.bound(at, e.expiresAt)
			live := e.status == StatusActive && inEffect(e.validFrom, e.expiresAt, at)
			switch {
			case live && !viaGroup:
				c.facts |= EntDirect
				if c.direct == nil {
					c.direct = e
				}
			case live:
				c.facts |= EntViaGroup
				if c.group == nil {
					c.group, c.groupID = e, p.id
				}
			default:
				if e.status == StatusPendingApproval {
					c.facts |= EntPending
				}
				if e.expiresAt.Set() && at >= e.expiresAt {
					c.facts |= EntExpired
				}
				if e.status == StatusSuspended || e.status == StatusRevoked {
					c.facts |= EntInactive
				}
			}
		}
	}
	t.eachHolder(s, scan)
	return c
}

// eachHolder calls scan with the subject's own entry, then with each group
// it belongs to, directly or through nesting.
func (t *Tenant) eachHolder(s Principal, scan func(p *principal, viaGroup bool)) {
	if si := t.lookup(s); si >= 0 {
		scan(&t.prins[si], false)
		var buf [smallClosure]int32
		for _, g := range t.memberships(si, buf[:0]) {
			scan(&t.prins[g], true)
		}
	}
}

// scopeRef is the ref of an app scope; noRef when no record names it.
func (t *Tenant) scopeRef(scope string) uint32 {
	if r, ok := t.refIdx[scope]; ok {
		return r
	}
	return noRef
}

func satisfies(held, want string, implying []string) bool {
	if held == want {
		return true
	}
	for _, t := range implying {
		if held == t {
			return true
		}
	}
	return false
}
