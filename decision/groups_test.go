package decision_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/decision"
)

// groupGraph is a tenant whose n groups form a chain (g0 ⊂ g1 ⊂ … ⊂ gn-1)
// or, with cycle, a ring (gn-1 ⊂ g0 too); person p is in g0, and only the
// last group holds the editor seat and an admin entitlement.
func groupGraph(n int, cycle bool) string {
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "l", "tenant_id": "t", "name": "editor"}],
	 "assignments": [{"id": "a", "tenant_id": "t", "license_id": "l", "assignee_id": "`)
	fmt.Fprintf(&b, "g%06d", n-1)
	b.WriteString(`", "assignee_type": "group"}],
	 "entitlements": [{"id": "e", "tenant_id": "t", "asset_id": "doc", "principal_id": "`)
	fmt.Fprintf(&b, "g%06d", n-1)
	b.WriteString(`", "principal_type": "group", "entitlement_type": "admin"}], "groups": [`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": "g%06d", "tenant_id": "t", "members": [`, i)
		switch {
		case i == 0:
			b.WriteString(`{"id": "p", "type": "person"}`)
			if cycle {
				fmt.Fprintf(&b, `, {"id": "g%06d", "type": "group"}`, n-1)
			}
		default:
			fmt.Fprintf(&b, `{"id": "g%06d", "type": "group"}`, i-1)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

// Any group graph builds in time and memory linear in its groups and
// memberships: 100,000 groups in one chain or one cycle (the quadratic
// closure took 20-60 s for 10,000-20,000), and checks through it answer.
func TestLargeGroupGraphs(t *testing.T) {
	for _, c := range []struct {
		name  string
		cycle bool
	}{{"chain", false}, {"cycle", true}} {
		t.Run(c.name, func(t *testing.T) {
			const n = 100_000
			raw := groupGraph(n, c.cycle)
			start := time.Now()
			doc := mustDocument(t, []byte(raw))
			e := newEngine(t, decision.Config{CacheEntries: -1}, doc)
			t.Logf("%d groups in a %s: parsed, validated and built in %v", n, c.name, time.Since(start).Round(time.Millisecond))
			last := fmt.Sprintf("g%06d", n-1)
			for _, q := range []struct {
				who  decision.Principal
				req  decision.Request
				want string
				via  string
			}{
				{decision.Principal{ID: "p"}, decision.Request{Check: decision.CheckSeat, License: "editor"}, "seat_assigned_via_group", last},
				{decision.Principal{ID: "p"}, decision.Request{Check: decision.CheckEntitlement, AssetID: "doc", Type: "read_only"}, "entitled_via_group", last},
				{decision.Principal{ID: "g000500", Type: decision.GroupPrincipal}, decision.Request{Check: decision.CheckSeat, License: "editor"}, "seat_assigned_via_group", last},
				{decision.Principal{ID: "nobody"}, decision.Request{Check: decision.CheckSeat, License: "editor"}, "no_assignment", ""},
			} {
				q.req.TenantID, q.req.Subject = "t", q.who
				d, err := e.Decide(decision.APIEvaluate, &q.req)
				if err != nil || d.Reason.String() != q.want || d.Grant.ViaGroup != q.via {
					t.Errorf("Decide(%v %v) = %v via %q, %v; want %s via %q", q.who, q.req.Check, d.Reason, d.Grant.ViaGroup, err, q.want, q.via)
				}
			}
			// In a cycle every group belongs to every other, never to itself.
			if c.cycle {
				req := decision.Request{TenantID: "t", Subject: decision.Principal{ID: last, Type: decision.GroupPrincipal}, Check: decision.CheckSeat, License: "editor"}
				if d, _ := e.Decide(decision.APIEvaluate, &req); d.Reason.String() != "seat_assigned" {
					t.Errorf("the holder group itself: %v, want seat_assigned (directly, not via itself)", d.Reason)
				}
			}
		})
	}
}

// The walk through nested groups gives the groups in id order, also past
// the size where it switches to a bitmap, so via_group does not depend on
// the walk.
func TestGroupsInIDOrder(t *testing.T) {
	// p is in 100 groups directly; several of them hold the seat.
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "l", "tenant_id": "t", "name": "editor"}], "assignments": [`)
	for i, g := range []int{97, 42, 63, 80} {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": "a%d", "tenant_id": "t", "license_id": "l", "assignee_id": "g%03d", "assignee_type": "group"}`, i, g)
	}
	b.WriteString(`], "groups": [`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		// Reverse order of ids in the document, to show the sort.
		fmt.Fprintf(&b, `{"id": "g%03d", "tenant_id": "t", "members": [{"id": "p", "type": "person"}]}`, 99-i)
	}
	b.WriteString(`]}`)
	e := newEngine(t, decision.Config{CacheEntries: -1}, mustDocument(t, []byte(b.String())))
	req := decision.Request{TenantID: "t", Subject: decision.Principal{ID: "p"}, Check: decision.CheckSeat, License: "editor"}
	if d, _ := e.Decide(decision.APIEvaluate, &req); d.Grant.ViaGroup != "g042" {
		t.Errorf("via %q, want g042, the first holder in id order", d.Grant.ViaGroup)
	}
}
