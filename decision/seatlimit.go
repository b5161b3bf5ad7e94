package decision

import (
	"slices"
	"strings"
	"sync"
)

// The seat limit of a named license (docs/semantics.md, seat limits): the
// persons the license would grant at a time are ranked by the earliest
// assigned_at among the granting assignments that reach them (unset ranks
// first), then by id; the first seat_limit hold seats, the next
// seat_overage are granted over the limit, the rest are denied.

// ranking is the order of the persons a limited license grants, the same
// over win.
type ranking struct {
	win   window
	pos   map[int32]int32   // person (index into prins) -> 0-based rank
	first map[int32]Instant // person -> earliest granting assigned_at
}

type rankKey struct {
	lic    uint32
	scope  uint32
	scoped bool
}

// rankMemo keeps each limited license's last ranking: a tenant is
// immutable, so a ranking holds until its window ends.
type rankMemo struct{ m sync.Map } // rankKey -> *ranking

// rankOf returns where person p ranks on license l (ref lic) at at, and
// the window over which that holds; ok is false when p is not among the
// persons the license grants.
func (t *Tenant) rankOf(lic uint32, scope string, scopeRef uint32, p int32, at Instant) (int32, window, bool) {
	key := rankKey{lic: lic, scope: scopeRef, scoped: scope != ""}
	var r *ranking
	if v, ok := t.ranks.m.Load(key); ok && v.(*ranking).win.holds(at) {
		r = v.(*ranking)
	} else {
		r = t.rank(key, at)
		t.ranks.m.Store(key, r)
	}
	pos, ok := r.pos[p]
	return pos, r.win, ok
}

// rank orders the persons the license grants at at.
func (t *Tenant) rank(key rankKey, at Instant) *ranking {
	win := always
	first := map[int32]Instant{} // person -> earliest granting assigned_at
	denied := map[int32]bool{}
	var buf []int32
	for _, si := range t.licenseSeats(key.lic) {
		a := &t.seats[si]
		if key.scoped && a.app != key.scope {
			continue
		}
		// Any of the license's assignments starting or ending can move
		// the ranking.
		win.bound(at, a.validFrom)
		win.bound(at, a.expiresAt)
		if a.status != StatusActive || !inEffect(a.validFrom, a.expiresAt, at) {
			continue
		}
		buf = t.personsOf(a.assignee, buf[:0])
		for _, p := range buf {
			switch {
			case a.res == Denied:
				denied[p] = true
			default:
				if cur, ok := first[p]; !ok || a.assignedAt < cur {
					first[p] = a.assignedAt
				}
			}
		}
	}
	order := make([]int32, 0, len(first))
	for p := range first {
		if !denied[p] {
			order = append(order, p)
		}
	}
	slices.SortFunc(order, func(a, b int32) int {
		if first[a] != first[b] {
			if first[a] < first[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(t.prins[a].id, t.prins[b].id)
	})
	r := &ranking{win: win, pos: make(map[int32]int32, len(order)), first: first}
	for i, p := range order {
		r.pos[p] = int32(i)
	}
	return r
}

// personsOf appends the persons principal i stands for: itself, or every
// person in the group, directly or through nesting (cycles tolerated).
func (t *Tenant) personsOf(i int32, out []int32) []int32 {
	if t.prins[i].typ != GroupPrincipal {
		return append(out, i)
	}
	seen := map[string]bool{t.prins[i].id: true}
	queue := []string{t.prins[i].id}
	for len(queue) > 0 {
		g := t.group(queue[0])
		queue = queue[1:]
		if g == nil {
			continue
		}
		for _, m := range g.Members {
			if m.Type == GroupPrincipal {
				if !seen[m.ID] {
					seen[m.ID] = true
					queue = append(queue, m.ID)
				}
				continue
			}
			if p, ok := t.persons[m.ID]; ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// group returns the group of that id, or nil.
func (t *Tenant) group(id string) *Group {
	i, ok := slices.BinarySearchFunc(t.Groups, id, func(g *Group, id string) int { return strings.Compare(g.ID, id) })
	if !ok {
		return nil
	}
	return t.Groups[i]
}

// SeatsInUse counts the persons the license grants at at, in every app
// scope: the seats its limit counts (the writer's check before it adds an
// assignment).
func (t *Tenant) SeatsInUse(licenseID string, at Instant) int {
	lic, ok := t.refIdx[licenseID]
	if !ok || t.licByID[licenseID] == nil {
		return 0
	}
	return len(t.rank(rankKey{lic: lic}, at).pos)
}

// SeatHolder is a person a license's assignments grant, with the earliest
// assigned_at of those that reach them.
type SeatHolder struct {
	Person     string
	AssignedAt Instant
}

// Granted lists the persons the license's active, in-effect, non-denied
// assignments reach at at in the app scope, directly or through groups,
// in seat rank order (before any seat limit or license state applies).
func (t *Tenant) Granted(licenseID, scope string, at Instant) []SeatHolder {
	lic, ok := t.refIdx[licenseID]
	if !ok || t.licByID[licenseID] == nil {
		return nil
	}
	scopeRef := t.scopeRef(scope)
	r := t.rank(rankKey{lic: lic, scope: scopeRef, scoped: scope != ""}, at)
	out := make([]SeatHolder, len(r.pos))
	for p, i := range r.pos {
		out[i] = SeatHolder{Person: t.prins[p].id, AssignedAt: r.first[p]}
	}
	return out
}
