package decision

import "slices"

// Explanation is why a check was decided as it was: the decision (always
// evaluate's), the rule that decided, every record considered, and the
// window over which the answer holds.
type Explanation struct {
	Allowed        bool
	Reason         Reason
	Rule           string
	Grant          Grant
	Records        []Considered
	From, Until    Instant // the answer holds over [From, Until); NoTime: unbounded
	PolicyRevision uint64
	Revision       string // the state's revision token
}

// Considered is one record a check looked at, and what it did.
type Considered struct {
	Kind        string // license, assignment, entitlement, lease
	ID          string
	Holder      Principal // whom the record names (assignments, entitlements, leases)
	GroupPath   []string  // from the subject to Holder, when Holder is a group it belongs to
	Status      string
	Reservation string // assignments
	Type        string // entitlements: the type held
	From, Until Instant
	Verdict     string
}

// rules words the rule each reason comes from (docs/semantics.md).
var rules = map[Reason]string{
	LicenseNotFound:            "seat rule 1: no visible license of that id or name",
	LicenseSuspended:           "seat rule 2: the license is suspended",
	LicenseRevoked:             "seat rule 2: the license is revoked",
	LicenseNotYetValid:         "seat rule 3: the license is not in effect yet",
	LicenseExpired:             "seat rule 3: the license has expired",
	AssignmentDenied:           "seat rule 4: an active, in-effect denial reaches the subject",
	SeatAssigned:               "seat rule 5: an active, in-effect assignment to the subject",
	SeatAssignedViaGroup:       "seat rule 5: an active, in-effect assignment to a group of the subject",
	SeatLimitExceeded:          "seat rule 5: the subject ranks past seat_limit + seat_overage",
	SeatLeased:                 "seat rule 5 (floating): the subject holds a live lease",
	NotCheckedOut:              "seat rule 5 (floating): a dynamic assignment lets the subject check out; it holds no lease",
	AssignmentExpired:          "seat rule 6: the subject's assignments have expired",
	AssignmentNotYetValid:      "seat rule 6: the subject's assignments are not in effect yet",
	AssignmentInactive:         "seat rule 6: the subject's assignments are suspended or revoked",
	NoAssignment:               "seat rule 6: no assignment of the license reaches the subject",
	Entitled:                   "entitlement rule 1: an active, in-effect entitlement held by the subject",
	EntitledViaGroup:           "entitlement rule 1: an active, in-effect entitlement held by a group of the subject",
	EntitlementPendingApproval: "entitlement rule 2: the entitlement awaits approval",
	EntitlementExpired:         "entitlement rule 2: the entitlement has expired",
	EntitlementInactive:        "entitlement rule 2: the entitlement is suspended or revoked",
	NotEntitled:                "entitlement rule 2: no entitlement of that type (or one implying it) on the asset",
}

// Explain decides req from snap as Evaluate does and says why. It is never
// cached.
func (e *Engine) Explain(snap *Snapshot, req *Request) (Explanation, error) {
	box := e.pol.Load()
	switch {
	case snap == nil:
		return Explanation{}, ErrNoState
	case box == nil:
		return Explanation{}, ErrNoPolicy
	}
	pol := box.p
	at := req.At.Or(InstantOf(e.now()))
	t := snap.Tenant(req.TenantID)
	x := Explanation{PolicyRevision: pol.Revision(), Revision: snap.TokenText(), From: NoTime, Until: NoTime}
	var o Outcome
	var win window
	switch req.Check {
	case CheckSeat:
		o, x.Grant, _, win = decideSeat(t, pol, req, at)
		if t != nil {
			x.Records = t.explainSeat(req, at)
		}
	case CheckEntitlement:
		o, x.Grant, win = decideEntitlement(t, pol, req, at)
		if t != nil {
			x.Records = t.explainEntitlement(req, pol.Implying(req.Type), at)
		}
	default:
		return Explanation{}, ErrNoState
	}
	if !o.Allowed {
		x.Grant = Grant{}
	}
	x.Allowed, x.Reason, x.Rule = o.Allowed, o.Reason, rules[o.Reason]
	if win.lo != always.lo {
		x.From = win.lo
	}
	if win.hi != always.hi {
		x.Until = win.hi
	}
	return x, nil
}

func verdictOf(status Status, from, until, at Instant, grants string) string {
	switch {
	case until.Set() && at >= until:
		return "expired"
	case from.Set() && at < from:
		return "not_yet_valid"
	case status == StatusPendingApproval:
		return "pending_approval"
	case status != StatusActive:
		return "inactive"
	}
	return grants
}

// paths returns, for each group the subject belongs to, the groups from
// the subject to it (nearest first).
func (t *Tenant) paths(s Principal) map[int32][]string {
	out := map[int32][]string{}
	si := t.lookup(s)
	if si < 0 {
		return out
	}
	prev := map[int32]int32{}
	queue := []int32{si}
	seen := map[int32]bool{si: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		pr := &t.prins[p]
		for _, g := range t.parents[pr.g0:pr.g1] {
			if !seen[g] {
				seen[g], prev[g] = true, p
				queue = append(queue, g)
			}
		}
	}
	for g := range prev {
		var path []string
		for q := g; q != si; q = prev[q] {
			path = append(path, t.prins[q].id)
		}
		slices.Reverse(path)
		out[g] = path
	}
	return out
}

func (t *Tenant) explainSeat(req *Request, at Instant) []Considered {
	var out []Considered
	var lics []*License
	if l := t.licByID[req.License]; l != nil {
		lics = []*License{l}
	} else {
		lics = t.licByName[req.License]
	}
	paths := t.paths(req.Subject)
	for _, l := range lics {
		v := verdictOf(l.Status, l.ValidFrom, l.ExpiresAt, at, "in_effect")
		switch {
		case l.Deleted:
			v = "deleted"
		case !visible(req.AppID, l.AppID):
			v = "out_of_scope"
		}
		out = append(out, Considered{Kind: "license", ID: l.ID, Status: l.Status.String(), From: l.ValidFrom, Until: l.ExpiresAt, Verdict: v})
		if v == "deleted" || v == "out_of_scope" {
			continue
		}
		lic, scopeRef := t.refIdx[l.ID], t.scopeRef(req.AppID)
		floating := l.Type == Floating
		scan := func(p *principal, viaGroup bool) {
			for _, i := range t.seatIdx[p.s0:p.s1] {
				a := &t.seats[i]
				if a.lic != lic {
					continue
				}
				c := Considered{Kind: "assignment", ID: a.id, Holder: Principal{Type: p.typ, ID: p.id}, Status: a.status.String(),
					Reservation: a.res.String(), From: a.validFrom, Until: a.expiresAt}
				if viaGroup {
					c.GroupPath = paths[t.groups[p.id]]
				}
				grants := "grants"
				switch {
				case a.res == Denied:
					grants = "denies"
				case floating && a.res == Dynamic:
					grants = "may_check_out"
				}
				c.Verdict = verdictOf(a.status, a.validFrom, a.expiresAt, at, grants)
				if req.AppID != "" && a.app != scopeRef {
					c.Verdict = "out_of_scope"
				}
				out = append(out, c)
			}
		}
		t.eachHolder(req.Subject, scan)
		if floating {
			for _, ls := range t.Leases(l.ID) {
				if ls.Subject == req.Subject.ID && req.Subject.Type != GroupPrincipal {
					v := "leases"
					if !inEffect(ls.GrantedAt, ls.ExpiresAt, at) {
						v = "expired"
					}
					out = append(out, Considered{Kind: "lease", ID: ls.ID, Holder: Principal{Type: Person, ID: ls.Subject}, Status: "active",
						From: ls.GrantedAt, Until: ls.ExpiresAt, Verdict: v})
				}
			}
		}
	}
	return out
}

func (t *Tenant) explainEntitlement(req *Request, implying []string, at Instant) []Considered {
	ref, ok := t.refIdx[req.AssetID]
	if !ok {
		return nil
	}
	var out []Considered
	paths := t.paths(req.Subject)
	scopeRef := t.scopeRef(req.AppID)
	t.eachHolder(req.Subject, func(p *principal, viaGroup bool) {
		for _, i := range t.entIdx[p.e0:p.e1] {
			g := &t.grants[i]
			if g.asset != ref || !satisfies(t.refs[g.typ], req.Type, implying) {
				continue
			}
			c := Considered{Kind: "entitlement", ID: g.id, Holder: Principal{Type: p.typ, ID: p.id}, Status: g.status.String(),
				Type: t.refs[g.typ], From: g.validFrom, Until: g.expiresAt, Verdict: verdictOf(g.status, g.validFrom, g.expiresAt, at, "grants")}
			if viaGroup {
				c.GroupPath = paths[t.groups[p.id]]
			}
			if req.AppID != "" && g.app != scopeRef {
				c.Verdict = "out_of_scope"
			}
			out = append(out, c)
		}
	})
	return out
}
