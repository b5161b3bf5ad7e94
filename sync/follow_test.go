package statesync_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/testredis"
	statesync "github.com/usher-authz/usher/sync"
)

type follower struct {
	f    *statesync.RedisFollower
	reg  *prometheus.Registry
	snap atomic.Pointer[decision.Snapshot]
	stop func()
	done chan struct{}
}

func startFollower(t testing.TB, url, ns, snapshotFile string) *follower {
	t.Helper()
	return startFollowerWith(t, url, ns, func(cfg *statesync.RedisConfig) {
		cfg.SnapshotFile, cfg.SnapshotInterval = snapshotFile, time.Nanosecond
		cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
		cfg.VerifyInterval = 200 * time.Millisecond
	})
}

// startFollowerWith runs a follower of ns configured by set (defaults
// otherwise), stopped at the end of the test.
func startFollowerWith(t testing.TB, url, ns string, set func(*statesync.RedisConfig)) *follower {
	t.Helper()
	c, err := statesync.NewClient(url, "usher-sidecar-"+ns)
	if err != nil {
		t.Fatal(err)
	}
	fl := &follower{reg: prometheus.NewRegistry(), done: make(chan struct{})}
	cfg := statesync.RedisConfig{Client: c, Namespace: ns, Registerer: fl.reg,
		Publish: func(s *decision.Snapshot) { fl.snap.Store(s) }, Logger: slog.New(slog.NewTextHandler(testLog{t}, nil))}
	set(&cfg)
	fl.f, err = statesync.NewRedisFollower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { fl.f.Run(ctx); close(fl.done) }()
	var once sync.Once
	fl.stop = func() {
		once.Do(func() {
			cancel()
			<-fl.done
			c.Close()
		})
	}
	t.Cleanup(fl.stop)
	return fl
}

// testLog sends the follower's log to the test's.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// metric sums a metric's series whose labels include the given name=value
// pairs; -1 when it is not registered.
func (fl *follower) metric(name string, labels ...string) float64 {
	mfs, _ := fl.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		sum := 0.0
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue series
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			} else {
				sum += m.Gauge.GetValue()
			}
		}
		return sum
	}
	return -1
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

// converged waits until the follower's state equals what Redis holds.
func converged(t *testing.T, fl *follower, w *statesync.Writer, d time.Duration) {
	t.Helper()
	var want, got string
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		doc, err := w.Export(context.Background())
		if err == nil {
			want = render(t, doc)
			if s := fl.snap.Load(); s != nil {
				got = render(t, s.Document())
				if got == want {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the follower's state never equalled Redis's:\nredis:\n%.2000s\nfollower:\n%.2000s", want, got)
}

func TestFollowerAppliesChanges(t *testing.T) {
	c, ns, url := testRedis(t)
	w := semanticsWriter(t, c, ns)
	ctx := context.Background()
	fl := startFollower(t, url, ns, "")
	waitFor(t, "the first load", 5*time.Second, func() bool { return fl.snap.Load() != nil })
	first := fl.snap.Load()
	if n := first.Count(decision.KindAssignment); n != corpusAssignments(t) {
		t.Fatalf("loaded %d assignments, want %d", n, corpusAssignments(t))
	}
	if _, err := w.Put(ctx, decision.KindAssignment, []byte(`{"id": "a01", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "u1", "status": "suspended"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Delete(ctx, decision.KindEntitlement, "acme", "e01"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both changes", 2*time.Second, func() bool { return fl.metric("usher_sync_events_total") == 2 })
	converged(t, fl, w, 2*time.Second)
	now := fl.snap.Load()
	if now.Revision <= first.Revision {
		t.Errorf("revision %d after changes, want more than %d", now.Revision, first.Revision)
	}
	if now.Tenant("globex") != first.Tenant("globex") {
		t.Errorf("a change to acme rebuilt globex; only the touched tenant may be rebuilt")
	}
	if now.Tenant("acme").Revision != now.Revision {
		t.Errorf("acme revision %d, want the new snapshot's %d", now.Tenant("acme").Revision, now.Revision)
	}
	if st := fl.f.Status(); st.State != statesync.StateFollowing || st.Lag <= 0 || st.Lag > time.Second {
		t.Errorf("status = %+v, want following with a lag under a second", st)
	}
	if fl.metric("usher_sync_connected") != 1 || fl.metric("usher_sync_full_reloads_total") != 0 {
		t.Errorf("connected %v reloads %v, want 1 and 0", fl.metric("usher_sync_connected"), fl.metric("usher_sync_full_reloads_total"))
	}
	// A load of one tenant is one tenant event: the follower rereads it.
	if _, err := w.Load(ctx, parse(t, `{"licenses": [{"id": "l2", "tenant_id": "globex", "name": "viewer"}]}`), false); err != nil {
		t.Fatal(err)
	}
	converged(t, fl, w, 2*time.Second)
}

// killClients kills the Redis connections named name.
func killClients(ctx context.Context, c redis.UniversalClient, name string) int {
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return 0
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		var id string
		named := false
		for _, f := range strings.Fields(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if f == "name="+name {
				named = true
			}
		}
		if named && id != "" && c.Do(ctx, "CLIENT", "KILL", "ID", id).Err() == nil {
			n++
		}
	}
	return n
}

// writeChanges puts n assignment changes, retrying each until Redis takes it.
func writeChanges(t *testing.T, w *statesync.Writer, n int, pause time.Duration) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		status := []string{"active", "suspended", "revoked"}[i%3]
		rec := fmt.Sprintf(`{"id": "chg%03d", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "p%d", "status": %q}`, i%50, i, status)
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := w.Put(ctx, decision.KindAssignment, []byte(rec))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("put %d never succeeded: %v", i, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(pause)
	}
}

func TestFollowerSurvivesKilledConnections(t *testing.T) {
	c, ns, url := testRedis(t)
	w := semanticsWriter(t, c, ns)
	ctx := context.Background()
	fl := startFollower(t, url, ns, "")
	waitFor(t, "the first load", 5*time.Second, func() bool { return fl.snap.Load() != nil })
	const changes = 300
	done := make(chan struct{})
	go func() { writeChanges(t, w, changes, time.Millisecond); close(done) }()
	kills := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(25 * time.Millisecond):
			kills += killClients(ctx, c, "usher-sidecar-"+ns)
		}
	}
	if kills < 3 {
		t.Errorf("killed the follower's connections %d times, want at least 3 for the test to mean something", kills)
	}
	converged(t, fl, w, 10*time.Second)
	waitFor(t, "every change counted", 5*time.Second, func() bool { return fl.metric("usher_sync_events_total") == changes })
	time.Sleep(300 * time.Millisecond)
	if got := fl.metric("usher_sync_events_total"); got != changes {
		t.Errorf("usher_sync_events_total = %v, want %d: each change applied exactly once", got, changes)
	}
	if got := fl.metric("usher_sync_full_reloads_total"); got != 0 {
		t.Errorf("usher_sync_full_reloads_total = %v, want 0: a killed connection resumes from its position", got)
	}
}

func TestFollowerReloadsWhenTheStreamWasTrimmed(t *testing.T) {
	c, ns, url := testRedis(t)
	w := semanticsWriter(t, c, ns)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "snapshot.json")
	fl := startFollower(t, url, ns, file)
	writeChanges(t, w, 5, 0)
	converged(t, fl, w, 5*time.Second)
	pos := fl.f.Status().Position
	waitFor(t, "the snapshot file at the last position", 5*time.Second, func() bool {
		b, _ := os.ReadFile(file)
		return strings.Contains(string(b), `"position":"`+pos+`"`)
	})
	fl.stop()

	// While no follower runs, more changes arrive and the stream is trimmed.
	writeChanges(t, w, 40, 0)
	if err := c.XTrimMaxLen(ctx, w.Keys().Changes(), 3).Err(); err != nil {
		t.Fatal(err)
	}
	again := startFollower(t, url, ns, file)
	converged(t, again, w, 5*time.Second)
	waitFor(t, "a counted full reload", 2*time.Second, func() bool { return again.metric("usher_sync_full_reloads_total") == 1 })
}

func TestFollowerServesSnapshotFileWhileRedisIsDown(t *testing.T) {
	c, ns, url := testRedis(t)
	w := newWriter(t, c, ns)
	if _, err := w.Load(context.Background(), parse(t, semanticsState(t)), false); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "snapshot.json")
	fl := startFollower(t, url, ns, file)
	waitFor(t, "the snapshot file", 5*time.Second, func() bool { _, err := os.Stat(file); return err == nil })
	fl.stop()

	dead := "redis://" + closedPort(t) + "/0"
	down := startFollower(t, dead, ns, file)
	waitFor(t, "the snapshot from file", 2*time.Second, func() bool { return down.snap.Load() != nil })
	if n := down.snap.Load().Count(decision.KindAssignment); n != corpusAssignments(t) {
		t.Errorf("served %d assignments from the file, want %d", n, corpusAssignments(t))
	}
	waitFor(t, "the outage to show", 2*time.Second, func() bool { return down.f.Status().State == statesync.StateDisconnected })
	if down.metric("usher_sync_connected") != 0 || down.f.Status().LastError == "" {
		t.Errorf("status = %+v, want disconnected with the error", down.f.Status())
	}
	// The file is also a plain state document.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decision.ParseDocument(strings.NewReader(string(b))); err != nil {
		t.Errorf("snapshot file is not a valid state document: %v", err)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestFollowerAcrossRedisRestartAndDataLoss(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{AOF: true})
	url := srv.URL()
	c, err := statesync.NewClient(url, "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := "restart"
	w := semanticsWriter(t, c, ns)
	ctx := context.Background()
	fl := startFollower(t, url, ns, "")
	waitFor(t, "the first load", 5*time.Second, func() bool { return fl.snap.Load() != nil })

	// Restart (the append-only file keeps the data) while changes are written.
	done := make(chan struct{})
	go func() { writeChanges(t, w, 150, 2*time.Millisecond); close(done) }()
	time.Sleep(100 * time.Millisecond)
	srv.Stop()
	srv.Start()
	<-done
	converged(t, fl, w, 10*time.Second)
	added := c.XInfoStream(ctx, w.Keys().Changes()).Val().EntriesAdded
	waitFor(t, "every change counted once", 5*time.Second, func() bool {
		return fl.metric("usher_sync_events_total") == float64(added-int64(corpusTenants(t))) // the load's tenant events came before the follower
	})
	if got := fl.metric("usher_sync_full_reloads_total"); got != 0 {
		t.Errorf("usher_sync_full_reloads_total = %v after a restart that kept the data, want 0", got)
	}

	// Now Redis loses everything; new writes follow. The follower must not
	// keep records Redis no longer has.
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, decision.KindLicense, []byte(`{"id": "lic_editor", "tenant_id": "acme", "name": "editor"}`)); err != nil {
		t.Fatal(err)
	}
	writeChanges(t, w, 3, 0)
	converged(t, fl, w, 10*time.Second)
	if n := fl.snap.Load().Count(decision.KindAssignment); n != 3 {
		t.Errorf("after Redis lost its data the follower holds %d assignments, want the 3 written since", n)
	}
	if got := fl.metric("usher_sync_full_reloads_total"); got != 1 {
		t.Errorf("usher_sync_full_reloads_total = %v, want 1", got)
	}
}

// A full load leaves out records in Redis that break a rule or sit under
// the wrong key, counts them, and loads the rest.
func TestFollowerLeavesOutInvalidRecords(t *testing.T) {
	c, ns, url := testRedis(t)
	semanticsWriter(t, c, ns)
	ctx := context.Background()
	k, err := statesync.NewKeys(ns)
	if err != nil {
		t.Fatal(err)
	}
	key := k.Records("acme", decision.KindAssignment)
	if err := c.HSet(ctx, key,
		"bad1", `{"id": "bad1", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "u1", "status": "paused"}`,
		"bad2", `{"id": "elsewhere", "tenant_id": "acme", "license_id": "lic_editor", "assignee_id": "u1"}`).Err(); err != nil {
		t.Fatal(err)
	}
	fl := startFollower(t, url, ns, "")
	waitFor(t, "the first load", 5*time.Second, func() bool { return fl.snap.Load() != nil })
	if n := fl.snap.Load().Count(decision.KindAssignment); n != corpusAssignments(t) {
		t.Errorf("loaded %d assignments, want the %d valid ones", n, corpusAssignments(t))
	}
	if got := fl.metric("usher_sync_invalid_records_total"); got != 2 {
		t.Errorf("usher_sync_invalid_records_total = %v, want 2", got)
	}
	for _, a := range fl.snap.Load().Tenant("acme").LicenseAssignments("lic_editor") {
		if a.ID == "bad1" || a.ID == "elsewhere" || a.ID == "bad2" {
			t.Errorf("invalid record %q was loaded", a.ID)
		}
	}
}
