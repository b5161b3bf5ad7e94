package statesync_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/decision"
)

// BenchmarkFollowChange is one change written to Redis and applied by a
// follower holding the 1,000,000-record state, end to end.
func BenchmarkFollowChange(b *testing.B) {
	c, ns, url := testRedis(b)
	w := newWriter(b, c, ns)
	ctx := context.Background()
	if _, err := w.Load(ctx, gen.Generate(gen.Default()), true); err != nil {
		b.Fatal(err)
	}
	fl := startFollower(b, url, ns, "")
	for fl.snap.Load() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		rev := fl.snap.Load().Revision
		rec := fmt.Sprintf(`{"id": "bench-%d", "tenant_id": %q, "license_id": %q, "assignee_id": "p", "status": %q}`,
			i%10, gen.TenantID(i%1000), gen.LicenseID(i%1000, 0), []string{"active", "suspended"}[i%2])
		if _, err := w.Put(ctx, decision.KindAssignment, []byte(rec)); err != nil {
			b.Fatal(err)
		}
		for fl.snap.Load().Revision == rev {
			time.Sleep(50 * time.Microsecond)
		}
		i++
	}
}

// BenchmarkLeaseCheckout is one checkout and one release of a floating
// license whose tenant also holds n named-seat assignments of other
// licenses (and a few reserved seats of this one), on loopback: what a
// lease operation costs as tenants grow.
func BenchmarkLeaseCheckout(b *testing.B) {
	for _, n := range []int{0, 1000, 20000} {
		b.Run(fmt.Sprintf("assignments=%d", n), func(b *testing.B) {
			c, ns, _ := testRedis(b)
			w := newWriter(b, c, ns)
			ctx := context.Background()
			var doc strings.Builder
			doc.WriteString(`{"licenses": [{"id": "fl", "tenant_id": "t", "name": "cad", "type": "floating", "seat_limit": 50},
			 {"id": "named", "tenant_id": "t", "name": "office"}], "assignments": [
			 {"id": "dyn", "tenant_id": "t", "license_id": "fl", "assignee_id": "everyone", "assignee_type": "group", "reservation": "dynamic"},
			 {"id": "r1", "tenant_id": "t", "license_id": "fl", "assignee_id": "boss"},
			 {"id": "r2", "tenant_id": "t", "license_id": "fl", "assignee_id": "deputy"}`)
			for i := range n {
				fmt.Fprintf(&doc, `, {"id": "a%d", "tenant_id": "t", "license_id": "named", "assignee_id": "p%d"}`, i, i)
			}
			doc.WriteString(`], "groups": [{"id": "everyone", "tenant_id": "t", "members": [{"id": "s", "type": "person"}]}]}`)
			d, err := decision.DecodeDocument(strings.NewReader(doc.String()))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Load(ctx, d, true); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				res, err := w.Checkout(ctx, "t", "fl", "s", "", 0)
				if err != nil || res.Lease == nil || res.Seats.InUse != 3 {
					b.Fatalf("checkout: %+v %v", res, err)
				}
				if _, err := w.Release(ctx, "t", res.Lease.ID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
