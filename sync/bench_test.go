package statesync_test

import (
	"context"
	"fmt"
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
