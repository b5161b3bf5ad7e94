package decision_test

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/decision"
)

var (
	scaleOnce sync.Once
	scaleSnap *decision.Snapshot
	scaleMiB  float64
	scaleTook time.Duration
)

// scaleSnapshot builds the 1,000-tenant, ~1,000,000-record snapshot once
// and measures the heap it holds.
func scaleSnapshot(b *testing.B) *decision.Snapshot {
	b.Helper()
	scaleOnce.Do(func() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		doc := gen.Generate(gen.Default())
		start := time.Now()
		scaleSnap = decision.NewSnapshot(doc, 1)
		scaleTook = time.Since(start)
		doc = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		scaleMiB = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	})
	return scaleSnap
}

func scaleRequests(n int, seed uint64) []decision.Request { return gen.Checks(gen.Default(), n, seed) }

func BenchmarkSnapshot(b *testing.B) {
	s := scaleSnapshot(b)
	records := s.Len()
	for b.Loop() {
	}
	b.ReportMetric(scaleMiB, "heap-MiB")
	b.ReportMetric(float64(records), "records")
	b.ReportMetric(scaleTook.Seconds(), "build-s")
}

func BenchmarkDecide(b *testing.B) {
	snap := scaleSnapshot(b)
	p := shippedPolicy(b)
	newScaleEngine := func(b *testing.B, entries int64) *decision.Engine {
		e, err := decision.NewEngine(decision.Config{CacheEntries: entries})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(e.Close)
		e.SetPolicy(p)
		e.SetSnapshot(snap)
		return e
	}
	// warm returns an engine whose cache holds the 4,096 checks it returns.
	warm := func(b *testing.B) (*decision.Engine, []decision.Request) {
		e := newScaleEngine(b, 0)
		reqs := scaleRequests(4096, 1)
		for i := range reqs {
			e.Decide(decision.APIEvaluate, &reqs[i])
		}
		e.WaitCache()
		return e, reqs
	}
	// cycle asks reqs (a power of two of them) in turn, reporting the hit ratio.
	cycle := func(b *testing.B, e *decision.Engine, reqs []decision.Request) {
		b.ReportAllocs()
		i, hits := 0, 0
		for b.Loop() {
			d, _ := e.Decide(decision.APIEvaluate, &reqs[i&(len(reqs)-1)])
			if d.Cached {
				hits++
			}
			i++
		}
		b.ReportMetric(float64(hits)/float64(i), "hit-ratio")
	}
	b.Run("hit", func(b *testing.B) {
		e, reqs := warm(b)
		cycle(b, e, reqs)
	})
	b.Run("miss", func(b *testing.B) { cycle(b, newScaleEngine(b, 0), scaleRequests(1<<20, 2)) })
	b.Run("nocache", func(b *testing.B) { cycle(b, newScaleEngine(b, -1), scaleRequests(1<<16, 3)) })
	b.Run("hit-parallel", func(b *testing.B) {
		e, reqs := warm(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(4096)
			for pb.Next() {
				e.Decide(decision.APIEvaluate, &reqs[i&4095])
				i++
			}
		})
	})
}

// BenchmarkApplyChange is the cost of applying one changed record at the
// 1,000,000-record scale: the touched tenant is rebuilt, the rest shared.
func BenchmarkApplyChange(b *testing.B) {
	snap := scaleSnapshot(b)
	c := gen.Default()
	// One changed assignment per tenant: what the Redis follower applies.
	changed := make([]*decision.Assignment, c.Tenants)
	for i := range changed {
		tid := gen.TenantID(i)
		a := *snap.Tenant(tid).LicenseAssignments(tid + "-lic00")[0]
		a.Status = decision.StatusSuspended
		changed[i] = &a
	}
	run := func(b *testing.B, apply func(rev uint64, a *decision.Assignment) *decision.Snapshot) {
		rev := snap.Revision
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			a := changed[i%len(changed)]
			rev++
			next := apply(rev, a)
			if next.Count(decision.KindAssignment) != snap.Count(decision.KindAssignment) || next.Tenant(a.TenantID).Revision != rev {
				b.Fatal("change not applied")
			}
			i++
		}
	}
	b.Run("edit", func(b *testing.B) {
		run(b, func(rev uint64, a *decision.Assignment) *decision.Snapshot {
			return snap.WithEdits(rev, map[string][]decision.Edit{a.TenantID: {{Kind: decision.KindAssignment, ID: a.ID, Record: a}}})
		})
	})
	b.Run("rebuild", func(b *testing.B) {
		run(b, func(rev uint64, a *decision.Assignment) *decision.Snapshot {
			doc := snap.Tenant(a.TenantID).TenantDocument()
			for j, x := range doc.Assignments {
				if x.ID == a.ID {
					doc.Assignments[j] = a
				}
			}
			return snap.WithTenants(rev, map[string]*decision.Document{a.TenantID: doc})
		})
	})
}

// BenchmarkLoadDocument parses the 1,000,000-record state document and
// builds its snapshot: what `usher serve --state` does at start.
func BenchmarkLoadDocument(b *testing.B) {
	var buf bytes.Buffer
	if _, err := gen.Generate(gen.Default()).WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	raw := buf.Bytes()
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for b.Loop() {
		doc, err := decision.ParseDocumentBytes(raw) // as serve --state reads its file
		if err != nil {
			b.Fatal(err)
		}
		decision.NewSnapshot(doc, 1)
	}
}

// scaleEngine is an engine without a cache over the 1,000,000-record state.
func scaleEngine(b *testing.B) (*decision.Engine, *decision.Snapshot) {
	snap := scaleSnapshot(b)
	e, err := decision.NewEngine(decision.Config{CacheEntries: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	e.SetPolicy(shippedPolicy(b))
	e.SetSnapshot(snap)
	return e, snap
}

// timed runs f over reqs in turn and reports the p99 beside the mean.
func timed(b *testing.B, reqs []decision.Request, f func(r *decision.Request)) {
	var lat []time.Duration
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		r := &reqs[i%len(reqs)]
		i++
		start := time.Now()
		f(r)
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkHoldings asks for the seat and the entitlement holdings of
// persons of the 1,000,000-record state; it reports the p99 too.
func BenchmarkHoldings(b *testing.B) {
	e, snap := scaleEngine(b)
	reqs := scaleRequests(4096, 7)
	b.Run("seat", func(b *testing.B) {
		timed(b, reqs, func(r *decision.Request) { e.SeatHoldings(snap, *r) })
	})
	b.Run("entitlement", func(b *testing.B) {
		timed(b, reqs, func(r *decision.Request) { e.EntitlementHoldings(snap, *r, "") })
	})
}

// BenchmarkExplain explains checks of the 1,000,000-record state.
func BenchmarkExplain(b *testing.B) {
	e, snap := scaleEngine(b)
	timed(b, scaleRequests(4096, 11), func(r *decision.Request) {
		q := *r // Explain may fill the request in
		e.Explain(snap, &q)
	})
}
