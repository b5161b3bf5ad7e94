package statesync

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/usher-authz/usher/decision"
)

// fullLoad reads every tenant and publishes a new snapshot. reason says
// why a loaded follower reloads ("" for the first load).
func (f *RedisFollower) fullLoad(ctx context.Context, reason string) error {
	reload := f.cur != nil
	prev := 0
	if reload {
		f.setState(StateReloading)
		prev = f.cur.Len()
	}
	start := time.Now()
	c := f.cfg.Client
	// The position first: writes that land during the load are in the
	// stream after it and are applied again, harmlessly (events are absolute).
	var v streamCmds
	pipe := c.TxPipeline()
	v.queue(ctx, pipe, f.k, position{})
	pipe.Exec(ctx)
	got, err := v.result()
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	at := position{ID: "0-0", Epoch: got.epoch}
	if got.exists {
		at.EntriesAdded, at.MaxDeleted = got.info.EntriesAdded, got.info.MaxDeletedEntryID
		at.ID = got.info.LastGeneratedID
		if got.info.Length > 0 {
			at.ID, at.Anchored = got.info.LastEntry.ID, true
		}
	}
	tenants, err := c.SMembers(ctx, f.k.Tenants()).Result()
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	sort.Strings(tenants)
	// One goroutine reads tenants from Redis, a batch a round trip, while
	// workers decode and build the batches already read: a tenant's
	// replies and records are garbage once it is built.
	rev := f.rev + 1
	batches := make(chan []rawTenant, 2)
	var fetchErr error
	go func() {
		defer close(batches)
		for i := 0; i < len(tenants); i += 100 {
			raws, err := fetchTenants(ctx, c, f.k, tenants[i:min(i+100, len(tenants))], false)
			if err != nil {
				fetchErr = fmt.Errorf("load: %w", err)
				return
			}
			batches <- raws
		}
	}()
	var (
		mu    sync.Mutex
		built []*decision.Tenant
		bad   []error
		wg    sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			b := decision.NewTenantBuilder()
			for raws := range batches {
				for i := range raws {
					d, errs := raws[i].decode(f.k, nil)
					var t *decision.Tenant
					if d.Len() > 0 {
						t = b.Build(raws[i].tenant, d, rev)
					}
					mu.Lock()
					if t != nil {
						built = append(built, t)
					}
					bad = append(bad, errs...)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if fetchErr != nil {
		return fetchErr // nothing applied
	}
	// Leases read after the records may be newer than the position: the
	// events replayed from it then put or end them again, to the same end.
	leases, badLeases, err := readLeases(ctx, c, f.k, tenants)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	bad = append(bad, badLeases...)
	slices.SortFunc(bad, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	f.reportBad(bad)
	f.rev = rev
	snap := decision.SnapshotOf(rev, built)
	if len(leases) > 0 {
		snap = snap.WithLeases(rev, leases)
	}
	f.cur, f.at = snap, at
	f.cfg.Fresh(time.Now())
	f.publish(snap)
	if reload {
		f.reloads.WithLabelValues(reason).Inc()
	}
	f.up()
	if reload && f.cur != nil && prev > 0 && snap.Len() == 0 {
		f.log.Warn("redis now holds no records for this namespace; every check denies", "namespace", f.k.Namespace(), "before", prev, "now", 0)
	}
	f.log.Info("state loaded from redis", "namespace", f.k.Namespace(), "tenants", len(tenants), "records", snap.Len(),
		"position", at.ID, "epoch", at.Epoch, "revision", f.rev, "took", time.Since(start).Round(time.Millisecond).String())
	// A full load leaves the raw replies and decoded copies as garbage, a
	// few times the snapshot's size; hand that memory back now rather than
	// holding it as RSS until the next GC cycles get to it (in the
	// background: the new state is already serving).
	go debug.FreeOSMemory()
	return nil
}
