package statesync_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
	statesync "github.com/usher-authz/usher/sync"
)

// floatingState is a floating license of three seats with one reserved
// (a group of two persons, one of whom is denied: one seat), and a named one.
const floatingState = `{"licenses": [
	{"id": "fl", "tenant_id": "t", "name": "cad", "type": "floating", "seat_limit": 3, "lease_duration_s": 60},
	{"id": "nm", "tenant_id": "t", "name": "named", "seat_limit": 3}],
 "groups": [{"id": "g", "tenant_id": "t", "members": [{"id": "r1", "type": "person"}, {"id": "r2", "type": "person"}]}],
 "assignments": [
	{"id": "res", "tenant_id": "t", "license_id": "fl", "assignee_id": "g", "assignee_type": "group", "reservation": "reserved"},
	{"id": "deny", "tenant_id": "t", "license_id": "fl", "assignee_id": "r2", "reservation": "denied"},
	{"id": "old", "tenant_id": "t", "license_id": "fl", "assignee_id": "r3", "reservation": "reserved", "expires_at": "2020-01-01T00:00:00+02:00"},
	{"id": "dyn", "tenant_id": "t", "license_id": "fl", "assignee_id": "g", "assignee_type": "group", "reservation": "dynamic"}]}`

func TestLeases(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	if _, err := w.Load(ctx, parse(t, floatingState), false); err != nil {
		t.Fatal(err)
	}
	checkout := func(subject, client string, d time.Duration) statesync.LeaseResult {
		t.Helper()
		res, err := w.Checkout(ctx, "t", "fl", subject, client, d)
		if err != nil {
			t.Fatalf("checkout %s/%s: %v", subject, client, err)
		}
		return res
	}
	// One reserved seat (r1; r2 is denied, r3's assignment expired): two leases fit.
	a := checkout("u1", "", 0)
	if a.Status != statesync.LeaseGranted || a.Lease == nil || a.Seats != (statesync.Seats{Limit: 3, InUse: 2}) ||
		a.Lease.Duration != 60 || a.Lease.ExpiresAt.Sub(a.Lease.GrantedAt) != time.Minute || a.Revision.IsZero() {
		t.Fatalf("first checkout = %+v %+v", a, a.Lease)
	}
	again := checkout("u1", "", 10*time.Second)
	if again.Status != statesync.LeaseRenewed || again.Lease.ID != a.Lease.ID || again.Seats.InUse != 2 || again.Lease.Duration != 10 {
		t.Errorf("a retried checkout = %+v %+v, want the same lease, renewed for the 10 s asked", again, again.Lease)
	}
	if long := checkout("u1", "", time.Hour); long.Lease.Duration != 60 {
		t.Errorf("a checkout asking past lease_duration_s got %d s, want 60", long.Lease.Duration)
	}
	b := checkout("u1", "laptop", 0) // another client of the same person takes its own seat
	if b.Status != statesync.LeaseGranted || b.Lease.ID == a.Lease.ID || b.Seats.InUse != 3 {
		t.Errorf("second client = %+v", b)
	}
	if full := checkout("u2", "", 0); full.Status != statesync.LeaseNoSeatAvailable || full.Lease != nil || full.Seats != (statesync.Seats{Limit: 3, InUse: 3}) {
		t.Errorf("a fourth seat = %+v, want no_seat_available", full)
	}
	// A release frees the seat at once (its answer counts the leases left,
	// not the reserved seats: only a checkout's answer has the pool).
	if r, err := w.Release(ctx, "t", b.Lease.ID); err != nil || r.Status != statesync.LeaseReleased || r.Seats.InUse != 1 {
		t.Errorf("release = %+v, %v", r, err)
	}
	if r, err := w.Release(ctx, "t", b.Lease.ID); err != nil || r.Status != statesync.LeaseNotHeld {
		t.Errorf("second release = %+v, %v; want not_held", r, err)
	}
	if got := checkout("u2", "", 0); got.Status != statesync.LeaseGranted {
		t.Errorf("after a release = %+v", got)
	}
	hb, err := w.Heartbeat(ctx, "t", a.Lease.ID)
	if err != nil || hb.Status != statesync.LeaseRenewed || !hb.Lease.ExpiresAt.After(a.Lease.ExpiresAt.Add(-time.Second)) {
		t.Errorf("heartbeat = %+v, %v", hb, err)
	}
	if hb, err := w.HeartbeatOf(ctx, "t", "fl", a.Lease.ID); err != nil || hb.Status != statesync.LeaseRenewed || hb.Lease.ID != a.Lease.ID {
		t.Errorf("heartbeat with its license = %+v, %v", hb, err)
	}
	if hb, err := w.HeartbeatOf(ctx, "t", "nm", a.Lease.ID); err != nil || hb.Status != statesync.LeaseNotFound {
		t.Errorf("heartbeat naming another license = %+v, %v; want lease_not_found", hb, err)
	}
	if hb, err := w.Heartbeat(ctx, "t", "lease_nope"); err != nil || hb.Status != statesync.LeaseNotFound {
		t.Errorf("heartbeat of an unknown lease = %+v, %v", hb, err)
	}
	if hb, err := w.Heartbeat(ctx, "other", a.Lease.ID); err != nil || hb.Status != statesync.LeaseNotFound {
		t.Errorf("heartbeat of another tenant's lease = %+v, %v", hb, err)
	}
	for _, tc := range []struct{ license, want string }{{"nm", statesync.LeaseNotFloating}, {"nope", statesync.LeaseNoLicense}} {
		if r, err := w.Checkout(ctx, "t", tc.license, "u9", "", 0); err != nil || r.Status != tc.want {
			t.Errorf("checkout of %s = %+v, %v; want %s", tc.license, r, err, tc.want)
		}
	}
	if _, err := w.Checkout(ctx, "t", "fl", "", "", -time.Second); err == nil {
		t.Error("a checkout without a subject and a negative duration was taken")
	}
	active, err := w.ActiveLeases(ctx, "t", "fl")
	if err != nil || len(active) != 2 {
		t.Errorf("active leases = %v, %v; want u1's and u2's", active, err)
	}

	// Every change is on the change stream, with the lease or its end.
	ops := map[string]int{}
	for _, m := range c.XRange(ctx, w.Keys().Changes(), "-", "+").Val() {
		if op, _ := m.Values["op"].(string); op == "lease" || op == "lease_end" {
			ops[op]++
			if op == "lease" {
				if _, err := statesync.ParseLease([]byte(m.Values["lease"].(string))); err != nil {
					t.Errorf("event %s: %v", m.ID, err)
				}
			}
		}
	}
	if ops["lease"] != 7 || ops["lease_end"] != 1 {
		t.Errorf("lease events %v, want 7 grants or renewals and 1 end", ops)
	}

	// A lease not heartbeated ends at its expiry by Redis's clock.
	short := checkout("u3", "", 0)
	if short.Status != statesync.LeaseNoSeatAvailable {
		t.Fatalf("u3 = %+v, want a full pool", short)
	}
	if _, err := w.Release(ctx, "t", a.Lease.ID); err != nil {
		t.Fatal(err)
	}
	s := checkout("u3", "", time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r := checkout("u4", "", time.Second); r.Status == statesync.LeaseGranted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("u3's 1 s lease %s never expired", s.Lease.ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if hb, err := w.Heartbeat(ctx, "t", s.Lease.ID); err != nil || (hb.Status != statesync.LeaseExpired && hb.Status != statesync.LeaseNotFound) {
		t.Errorf("heartbeat of an expired lease = %+v, %v", hb, err)
	}
}

// Racing clients for k seats, with releases and short leases mixed in: at
// no moment do more than k leases exist, by Redis's own count and by the
// change stream replayed, and a freed seat is taken again.
func TestLeasesNeverOverGrant(t *testing.T) {
	c, ns, _ := testRedis(t)
	ctx := context.Background()
	for _, k := range []int{1, 5} {
		t.Run(strconv.Itoa(k), func(t *testing.T) {
			w := newWriter(t, c, ns)
			tenant := fmt.Sprintf("race%d", k)
			if _, err := w.Load(ctx, parse(t, fmt.Sprintf(`{"licenses": [{"id": "fl", "tenant_id": %q, "name": "cad", "type": "floating", "seat_limit": %d}]}`, tenant, k)), false); err != nil {
				t.Fatal(err)
			}
			stop := time.Now().Add(2 * time.Second)
			var attempts, granted atomic.Int64
			var wg sync.WaitGroup
			var over atomic.Int64
			wg.Go(func() { // Redis's own count, watched throughout
				for time.Now().Before(stop) {
					now, _ := c.Time(ctx).Result()
					n, _ := c.ZCount(ctx, w.Keys().LeaseExpiries(tenant, "fl"), "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf").Result()
					if n > int64(k) {
						over.Add(1)
					}
				}
			})
			for i := range 32 {
				wg.Go(func() {
					for j := 0; time.Now().Before(stop); j++ {
						attempts.Add(1)
						r, err := w.Checkout(ctx, tenant, "fl", fmt.Sprintf("s%d-%d", i, j), "", time.Duration(1+j%2)*time.Second)
						if err != nil {
							t.Error(err)
							return
						}
						if r.Status == statesync.LeaseGranted {
							granted.Add(1)
							if j%4 != 0 { // most seats are handed back at once, and taken again
								if rel, err := w.Release(ctx, tenant, r.Lease.ID); err != nil || rel.Status != statesync.LeaseReleased {
									t.Errorf("release %s: %+v, %v", r.Lease.ID, rel, err)
								}
							}
						}
					}
				})
			}
			wg.Wait()
			if over.Load() > 0 {
				t.Errorf("Redis held more than %d live leases %d times", k, over.Load())
			}
			if n := checkLeaseLog(t, c, w.Keys().Changes(), tenant, k); n == 0 || granted.Load() == 0 {
				t.Errorf("no lease granted in %d attempts", attempts.Load())
			}
			t.Logf("k=%d: %d attempts, %d granted", k, attempts.Load(), granted.Load())
		})
	}
}

// checkLeaseLog replays a tenant's lease events in stream order and fails
// when a grant leaves more than k leases live at its time; it returns the
// grants seen.
func checkLeaseLog(t *testing.T, c redis.UniversalClient, stream, tenant string, k int) int {
	t.Helper()
	live := map[string]int64{} // lease id -> expires ms
	grants := 0
	for _, m := range c.XRange(context.Background(), stream, "-", "+").Val() {
		if m.Values["tenant"] != tenant {
			continue
		}
		at, _ := strconv.ParseInt(m.Values["at"].(string), 10, 64)
		for id, exp := range live {
			if exp <= at {
				delete(live, id)
			}
		}
		switch m.Values["op"] {
		case "lease":
			l, err := statesync.ParseLease([]byte(m.Values["lease"].(string)))
			if err != nil {
				t.Fatal(err)
			}
			if _, renewed := live[l.ID]; !renewed {
				grants++
			}
			live[l.ID] = l.ExpiresAt.UnixMilli()
			if len(live) > k {
				t.Errorf("event %s: %d leases live, limit %d", m.ID, len(live), k)
			}
		case "lease_end":
			delete(live, m.Values["id"].(string))
		}
	}
	return grants
}

// A follower knows every live lease: those it finds at its load and those
// the change stream brings after.
func TestFollowerKnowsLeases(t *testing.T) {
	c, ns, url := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	if _, err := w.Load(ctx, parse(t, floatingState), false); err != nil {
		t.Fatal(err)
	}
	first, err := w.Checkout(ctx, "t", "fl", "u1", "", 0)
	if err != nil || first.Status != statesync.LeaseGranted {
		t.Fatalf("checkout = %+v, %v", first, err)
	}
	fl := startFollower(t, url, ns, "")
	leases := func() map[string]string {
		out := map[string]string{}
		if s := fl.snap.Load(); s != nil && s.Tenant("t") != nil {
			for _, l := range s.Tenant("t").Leases("fl") {
				out[l.ID] = l.Subject
			}
		}
		return out
	}
	waitFor(t, "the lease found at the load", 5*time.Second, func() bool { return leases()[first.Lease.ID] == "u1" })
	second, err := w.Checkout(ctx, "t", "fl", "u2", "", 0)
	if err != nil || second.Status != statesync.LeaseGranted {
		t.Fatalf("checkout = %+v, %v", second, err)
	}
	waitFor(t, "the lease from the stream", 5*time.Second, func() bool { return leases()[second.Lease.ID] == "u2" })
	if _, err := w.Release(ctx, "t", first.Lease.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the release", 5*time.Second, func() bool { _, held := leases()[first.Lease.ID]; return !held && len(leases()) == 1 })
	if got := fl.metric("usher_sync_invalid_records_total"); got != 0 {
		t.Errorf("usher_sync_invalid_records_total = %v: lease events counted as invalid", got)
	}
	// The revision a lease operation returns is one the follower reaches.
	tok := fl.snap.Load().Token()
	if tok.Ms < second.Revision.Ms {
		t.Errorf("follower at %s, behind the checkout's %s", tok, second.Revision)
	}
}

// The lease script keeps a license's reserved-seat count between
// operations; every change that can move it is seen: a record of the
// tenant written, a window edge passing, the stream trimmed past the
// count's position, another epoch. Changes of other tenants and lease
// events are not (the count is poisoned here to show it is reused).
func TestLeaseReservedCount(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	if _, err := w.Load(ctx, parse(t, floatingState), false); err != nil {
		t.Fatal(err)
	}
	key := w.Keys().LeaseReserved("t", "fl")
	// inUse checks out for a fresh subject, releases, and answers the pool
	// the checkout saw (leases held by others: none).
	n := 0
	inUse := func() int64 {
		t.Helper()
		n++
		res, err := w.Checkout(ctx, "t", "fl", fmt.Sprintf("probe%d", n), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if res.Lease != nil {
			if _, err := w.Release(ctx, "t", res.Lease.ID); err != nil {
				t.Fatal(err)
			}
			return res.Seats.InUse - 1
		}
		return res.Seats.InUse
	}
	poison := func() {
		t.Helper()
		if err := c.HSet(ctx, key, "count", 7).Err(); err != nil {
			t.Fatal(err)
		}
	}
	put := func(kind decision.Kind, rec string) {
		t.Helper()
		if _, err := w.Put(ctx, kind, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	if got := inUse(); got != 1 {
		t.Fatalf("reserved seats = %d, want 1 (r1)", got)
	}
	poison()
	put(decision.KindLicense, `{"id": "fl", "tenant_id": "other", "name": "cad"}`)
	put(decision.KindAssignment, `{"id": "x", "tenant_id": "other", "license_id": "fl", "assignee_id": "z"}`)
	if got := inUse(); got != 7 {
		t.Fatalf("after writes of another tenant and lease events: %d, want the kept count 7", got)
	}
	for _, tc := range []struct {
		name   string
		change func()
		want   int64
	}{
		{"a reserved assignment added", func() {
			put(decision.KindAssignment, `{"id": "r4", "tenant_id": "t", "license_id": "fl", "assignee_id": "r4"}`)
		}, 2},
		{"a group member added", func() {
			put(decision.KindGroup, `{"id": "g", "tenant_id": "t", "members": [{"id": "r1", "type": "person"}, {"id": "r2", "type": "person"}, {"id": "r5", "type": "person"}]}`)
		}, 3},
		{"an assignment deleted", func() {
			if _, err := w.Delete(ctx, decision.KindAssignment, "t", "r4"); err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"the tenant reloaded", func() {
			if _, err := w.Load(ctx, parse(t, floatingState), false); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"the stream trimmed past the count", func() {
			inUse()
			poison()
			if err := c.XTrimMaxLen(ctx, w.Keys().Changes(), 0).Err(); err != nil {
				t.Fatal(err)
			}
			put(decision.KindAssignment, `{"id": "x2", "tenant_id": "other", "license_id": "fl", "assignee_id": "z"}`)
		}, 1},
		{"another epoch", func() {
			inUse()
			poison()
			if err := c.HSet(ctx, key, "epoch", "elsewhen").Err(); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"a mangled count", func() {
			inUse()
			if err := c.HSet(ctx, key, "count", 7, "until", "soon", "pos", "here").Err(); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"a count without its fields", func() {
			inUse()
			if err := c.HDel(ctx, key, "until", "pos").Err(); err != nil {
				t.Fatal(err)
			}
			poison()
		}, 1},
	} {
		inUse()
		tc.change()
		if got := inUse(); got != tc.want {
			t.Errorf("%s: reserved seats = %d, want %d", tc.name, got, tc.want)
		}
	}

	// A reserved assignment that ends soon stops counting when it ends,
	// by Redis's clock, with no write in between.
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	end := now.Add(1500 * time.Millisecond)
	put(decision.KindAssignment, fmt.Sprintf(`{"id": "brief", "tenant_id": "t", "license_id": "fl", "assignee_id": "r6", "expires_at": %q}`, end.UTC().Format(time.RFC3339Nano)))
	if got := inUse(); got != 2 {
		t.Fatalf("with a brief reserved seat: %d, want 2", got)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := inUse()
		if got == 1 {
			break
		}
		if got != 2 || time.Now().After(deadline) {
			t.Fatalf("after the brief seat's expiry at %s: %d reserved, want 1", end, got)
		}
		time.Sleep(20 * time.Millisecond) // polls a condition with a deadline
	}
}
