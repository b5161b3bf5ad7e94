package statesync_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/testredis"
	statesync "github.com/usher-authz/usher/sync"
)

// Each fault below must end, without any later write, in a follower whose
// state equals Redis's, with the reload counted under its reason.
const convergeWithin = 5 * time.Second

// faultSetup starts a Redis of the test's own holding the semantics state,
// and a follower of it.
func faultSetup(t *testing.T, o testredis.Options) (*testredis.Server, redis.UniversalClient, *statesync.Writer, *follower) {
	t.Helper()
	srv := testredis.Start(t, o)
	c, err := statesync.NewClient(srv.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := semanticsWriter(t, c, "faults")
	fl := startFollower(t, srv.URL(), "faults", "")
	converged(t, fl, w, convergeWithin)
	return srv, c, w, fl
}

// put writes one record, retrying while Redis comes back.
func put(t *testing.T, w *statesync.Writer, kind decision.Kind, rec string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.Put(context.Background(), kind, []byte(rec))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("put %s: %v", rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func wantReloads(t *testing.T, fl *follower, reason string, n float64) {
	t.Helper()
	waitFor(t, "the reload counted", 2*time.Second, func() bool { return fl.metric("usher_sync_full_reloads_total", "reason", reason) == n })
	if total := fl.metric("usher_sync_full_reloads_total"); total != n {
		t.Errorf("usher_sync_full_reloads_total = %v in all, want %v, all %s", total, n, reason)
	}
}

// Redis restarts without the last write it acknowledged (appendfsync
// everysec, or no AOF), and one more write lands before the follower looks:
// the lost record must not stay applied. The stream's counters look
// continuous then; only the missing entry at the follower's position tells.
func TestFollowerReloadsAfterRedisLostItsLastWrite(t *testing.T) {
	srv, _, w, fl := faultSetup(t, testredis.Options{AOF: true})
	srv.Stop()
	before := srv.SaveFiles()
	srv.Start()
	put(t, w, decision.KindAssignment, `{"id": "lost", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "nobody"}`)
	converged(t, fl, w, convergeWithin)
	if !hasAssignment(fl.snap.Load().Tenant("acme").LicenseAssignments("lic_editor"), "lost") {
		t.Fatal("the follower never applied the write that Redis is about to lose")
	}
	srv.Stop()
	// What Redis comes back with: the files from before the lost write,
	// plus one later write, made on a server of its own.
	other := testredis.Start(t, testredis.Options{AOF: true})
	other.Stop()
	other.RestoreFiles(before)
	other.Start()
	oc, err := statesync.NewClient(other.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	put(t, newWriter(t, oc, "faults"), decision.KindAssignment, `{"id": "after", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "someone"}`)
	oc.Close()
	other.Stop()
	srv.RestoreFiles(other.SaveFiles())
	srv.Start()
	converged(t, fl, w, convergeWithin)
	if hasAssignment(fl.snap.Load().Tenant("acme").LicenseAssignments("lic_editor"), "lost") {
		t.Error("the write Redis lost is still applied")
	}
	wantReloads(t, fl, statesync.ReloadRolledBack, 1)
}

func hasAssignment(as []*decision.Assignment, id string) bool {
	for _, a := range as {
		if a.ID == id {
			return true
		}
	}
	return false
}

// Redis restarts empty (no AOF) and nothing is written after: the follower
// must not keep serving the old state.
func TestFollowerReloadsWhenRedisRestartsEmpty(t *testing.T) {
	srv, _, w, fl := faultSetup(t, testredis.Options{AOF: false})
	srv.Stop()
	srv.Start()
	converged(t, fl, w, convergeWithin)
	if n := fl.snap.Load().Len(); n != 0 {
		t.Errorf("the follower holds %d records of a Redis that holds none", n)
	}
	wantReloads(t, fl, statesync.ReloadLost, 1)
}

// Redis is brought back from an older copy of its files, with no write
// after: every change since that copy must be undone.
func TestFollowerReloadsAfterRestoreOfOlderFiles(t *testing.T) {
	srv, _, w, fl := faultSetup(t, testredis.Options{AOF: true})
	srv.Stop()
	before := srv.SaveFiles()
	srv.Start()
	writeChanges(t, w, 20, 0)
	converged(t, fl, w, convergeWithin)
	srv.Stop()
	srv.RestoreFiles(before)
	srv.Start()
	converged(t, fl, w, convergeWithin)
	if n := fl.snap.Load().Count(decision.KindAssignment); n != corpusAssignments(t) {
		t.Errorf("the follower holds %d assignments, want the %d of the restored Redis", n, corpusAssignments(t))
	}
	wantReloads(t, fl, statesync.ReloadRolledBack, 1)
}

// A follower that falls further behind than the stream reaches reloads,
// also when no error was ever seen: trimming does not move Redis 7.0's
// max-deleted-entry-id, so only the entry at our position tells.
func TestFollowerReloadsWhenTrimmedPastItsPosition(t *testing.T) {
	c, ns, url := testRedis(t)
	w := semanticsWriter(t, c, ns)
	fl := startFollower(t, url, ns, "")
	converged(t, fl, w, convergeWithin)
	// The follower stands at the last entry; trim the stream behind its
	// back to the last entry but one, as a burst of writes with a short
	// MAXLEN would, then write on.
	writeChanges(t, w, 3, 0)
	converged(t, fl, w, convergeWithin)
	writeTrimmed(t, c, w)
	converged(t, fl, w, convergeWithin)
	if !hasAssignment(fl.snap.Load().Tenant("acme").LicenseAssignments("lic_editor"), "trimmed1") {
		t.Error("the change whose event was trimmed away is not applied")
	}
	wantReloads(t, fl, statesync.ReloadTrimmed, 1)
}

// writeTrimmed, in one transaction so no follower reads in between,
// writes two changes and trims the stream to the last event: the
// follower's own entry and the first change's event are gone.
func writeTrimmed(t *testing.T, c redis.UniversalClient, w *statesync.Writer) {
	t.Helper()
	ctx := context.Background()
	k := w.Keys()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range []string{"trimmed1", "trimmed2"} {
			rec := `{"id":"` + id + `","tenant_id":"acme","license_id":"lic_editor","assignee_id":"u1","status":"suspended"}`
			p.HSet(ctx, k.Records("acme", decision.KindAssignment), id, rec)
			p.XAdd(ctx, &redis.XAddArgs{Stream: k.Changes(), Values: []any{"op", "put", "kind", "assignment", "tenant", "acme", "id", id, "record", rec}})
		}
		p.XTrimMaxLen(ctx, k.Changes(), 1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A Redis that stops answering (SIGSTOP, DEBUG SLEEP) is an outage within
// 3 s with the default settings, and following resumes without a reload.
func TestFollowerSeesAHungRedis(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	c, err := statesync.NewClient(srv.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := semanticsWriter(t, c, "hung")
	fl := startFollowerWith(t, srv.URL(), "hung", func(*statesync.RedisConfig) {})
	converged(t, fl, w, convergeWithin)
	outage := func(what string) {
		t.Helper()
		start := time.Now()
		waitFor(t, what+" to show as an outage", 3*time.Second, func() bool {
			return fl.f.Status().State == statesync.StateDisconnected && fl.metric("usher_sync_connected") == 0
		})
		t.Logf("%s: disconnected after %v", what, time.Since(start).Round(time.Millisecond))
	}
	srv.Pause()
	outage("SIGSTOP")
	if st := fl.f.Status(); st.LastError == "" || st.ErrorSince.IsZero() {
		t.Errorf("status %+v, want the error and since when", st)
	}
	srv.Resume()
	waitFor(t, "following again", 10*time.Second, func() bool { return fl.f.Status().State == statesync.StateFollowing })

	sleeper := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: -1})
	defer sleeper.Close()
	slept := make(chan error, 1)
	go func() { slept <- sleeper.Do(context.Background(), "DEBUG", "SLEEP", "4").Err() }()
	outage("DEBUG SLEEP")
	if err := <-slept; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "following again", 10*time.Second, func() bool { return fl.f.Status().State == statesync.StateFollowing })
	writeChanges(t, w, 3, 0)
	converged(t, fl, w, convergeWithin)
	if got := fl.metric("usher_sync_full_reloads_total"); got != 0 {
		t.Errorf("usher_sync_full_reloads_total = %v after pauses that lost nothing, want 0", got)
	}
}

// The epoch: a namespace that lost it reloads (lost), one that has another
// reloads (epoch_changed) — each without any change event.
func TestFollowerReloadsOnEpochChange(t *testing.T) {
	c, ns, url := testRedis(t)
	w := semanticsWriter(t, c, ns)
	fl := startFollower(t, url, ns, "")
	converged(t, fl, w, convergeWithin)
	ctx := context.Background()
	epoch := c.Get(ctx, w.Keys().Epoch()).Val()
	if len(epoch) != 16 {
		t.Fatalf("epoch %q after a load, want 16 hex digits", epoch)
	}
	if got := fl.f.Status().Epoch; got != epoch {
		t.Errorf("status epoch %q, want %q", got, epoch)
	}
	c.Set(ctx, w.Keys().Epoch(), "another", 0)
	wantReloads(t, fl, statesync.ReloadEpochChanged, 1)
	waitFor(t, "the new epoch in the status", 2*time.Second, func() bool { return fl.f.Status().Epoch == "another" })
	c.Del(ctx, w.Keys().Epoch())
	waitFor(t, "the lost epoch counted", 2*time.Second, func() bool {
		return fl.metric("usher_sync_full_reloads_total", "reason", statesync.ReloadLost) == 1
	})
	// The next write creates a new epoch, which the follower adopts: the
	// stream shows it continuous.
	writeChanges(t, w, 1, 0)
	converged(t, fl, w, convergeWithin)
	if e := c.Get(ctx, w.Keys().Epoch()).Val(); e == "" || e == epoch {
		t.Errorf("epoch %q after a write to a namespace without one, want a new one", e)
	}
	waitFor(t, "the new epoch adopted", 2*time.Second, func() bool { return fl.f.Status().Epoch == c.Get(ctx, w.Keys().Epoch()).Val() })
	if got := fl.metric("usher_sync_full_reloads_total"); got != 2 {
		t.Errorf("usher_sync_full_reloads_total = %v, want 2 (an adopted epoch needs no reload)", got)
	}
}

// The snapshot file says when its state was last confirmed current, not
// when it changed: a restart from it while Redis is down is as old as the
// last confirmation.
func TestSnapshotFileKeepsTheConfirmationTime(t *testing.T) {
	c, ns, url := testRedis(t)
	w := semanticsWriter(t, c, ns)
	file := filepath.Join(t.TempDir(), "snapshot.json")
	fl := startFollowerWith(t, url, ns, func(cfg *statesync.RedisConfig) {
		cfg.SnapshotFile, cfg.SnapshotInterval, cfg.VerifyInterval = file, time.Hour, 100*time.Millisecond
	})
	converged(t, fl, w, convergeWithin)
	header := func() string {
		b, _ := os.ReadFile(file)
		line, _, _ := strings.Cut(string(b), "\n")
		return line
	}
	waitFor(t, "the snapshot file", 5*time.Second, func() bool { return strings.Contains(header(), `"confirmed_at"`) })
	first := header()
	// Nothing changes; the file's confirmation moves on in place.
	waitFor(t, "a later confirmation", 5*time.Second, func() bool {
		h := header()
		return h != first && len(h) == len(first)
	})
	fl.stop()
	stopped := time.Now()

	dead := "redis://" + closedPort(t) + "/0"
	var freshAt time.Time
	down := startFollowerWith(t, dead, ns, func(cfg *statesync.RedisConfig) {
		cfg.SnapshotFile, cfg.Fresh = file, func(at time.Time) { freshAt = at }
	})
	waitFor(t, "the snapshot from file", 2*time.Second, func() bool { return down.snap.Load() != nil })
	if age := stopped.Sub(freshAt); age < 0 || age > 1500*time.Millisecond {
		t.Errorf("state from the file confirmed %v before the follower stopped, want under 1.5s (the file was written %v before)", age, stopped.Sub(fileWritten(t, first)))
	}
	if _, err := decision.ParseDocument(strings.NewReader(string(mustRead(t, file)))); err != nil {
		t.Errorf("snapshot file is not a valid state document: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fileWritten(t *testing.T, header string) time.Time {
	_, rest, _ := strings.Cut(header, `"written_at":"`)
	at, _ := time.Parse(time.RFC3339Nano, rest[:30])
	return at
}

// A write Redis refuses for memory says so, not just EXECABORT.
func TestWriterNamesWhyRedisRefused(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Args: []string{"--maxmemory", "1"}})
	c, err := statesync.NewClient(srv.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := newWriter(t, c, "oom")
	_, err = w.Put(context.Background(), decision.KindLicense, []byte(`{"id": "l1", "tenant_id": "acme", "name": "editor"}`))
	if err == nil || !strings.Contains(err.Error(), "redis refused the write: OOM command not allowed") {
		t.Errorf("Put under maxmemory: %v, want the OOM named", err)
	}
}

// A load that Redis refuses part way (here: out of memory) says why and
// leaves no staging keys behind: "nothing written" means nothing.
func TestFailedLoadLeavesNothing(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Args: []string{"--maxmemory", "8mb", "--maxmemory-policy", "noeviction"}})
	c, err := statesync.NewClient(srv.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "l", "tenant_id": "t", "name": "editor", "description": "`)
	b.WriteString(strings.Repeat("d", 200))
	b.WriteString(`"}], "assignments": [`)
	for i := range 80_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": "a%d", "tenant_id": "t", "license_id": "l", "assignee_id": "person-with-a-longish-id-%d"}`, i, i)
	}
	b.WriteString(`]}`)
	var rounds int
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: c, Namespace: "big", Progress: func(done, total int, _ int64) { rounds++ }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Load(context.Background(), parse(t, b.String()), false)
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("Load into a full Redis: %v, want the OOM named", err)
	}
	if rounds == 0 {
		t.Error("no round trip staged anything before Redis filled up; the test means nothing")
	}
	if keys := c.Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Errorf("after a failed load Redis holds %v, want nothing", keys)
	}
}
