package statesync

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
)

// RedisConfig configures a RedisFollower.
type RedisConfig struct {
	// Client is the Redis to follow; required.
	Client redis.UniversalClient
	// Namespace prefixes every key; default "usher".
	Namespace string
	// Publish receives each new snapshot; required.
	Publish func(*decision.Snapshot)
	// Fresh is told whenever Redis confirmed the snapshot is current.
	Fresh func(time.Time)
	// Logger reports sync events; nil discards.
	Logger *slog.Logger
	// Registerer receives the usher_sync_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// SnapshotFile, when set, keeps the last applied state on disk, so a
	// restarted sidecar can serve while Redis is down.
	SnapshotFile string
	// SnapshotInterval bounds how often SnapshotFile is rewritten; default 10s.
	SnapshotInterval time.Duration
	// Block is how long one XREAD waits for events; default 1s.
	Block time.Duration
	// BackoffMin and BackoffMax bound the reconnect backoff; default 50ms and 5s.
	BackoffMin, BackoffMax time.Duration
	// Batch is the most events applied as one revision; default 1000.
	Batch int64
}

// Validate reports every problem of the configuration.
func (c RedisConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("redis follower: Client is required"))
	}
	if c.Publish == nil {
		errs = append(errs, errors.New("redis follower: Publish is required"))
	}
	if _, err := NewKeys(c.Namespace); c.Namespace != "" && err != nil {
		errs = append(errs, err)
	}
	for name, d := range map[string]time.Duration{"snapshot-interval": c.SnapshotInterval, "block": c.Block, "backoff-min": c.BackoffMin, "backoff-max": c.BackoffMax} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", name))
		}
	}
	if c.Batch < 0 {
		errs = append(errs, errors.New("batch: must not be negative"))
	}
	return errors.Join(errs...)
}

// Sync states reported in /v1/status.
const (
	StateConnecting   = "connecting"
	StateFollowing    = "following"
	StateDisconnected = "disconnected"
	StateReloading    = "reloading"
)

// SyncStatus is what the follower reports about itself.
type SyncStatus struct {
	State     string
	Lag       time.Duration // write-to-apply time of the last applied change
	LastError string
	Position  string // last applied stream id
}

// RedisFollower loads the state from Redis, then follows the change stream,
// applying each batch of changes as a new snapshot that rebuilds only the
// tenants it touches. On a lost connection it keeps the last snapshot,
// reconnects with backoff and resumes from its stream position; when the
// stream no longer holds that position it reloads in full.
type RedisFollower struct {
	cfg RedisConfig
	k   Keys
	log *slog.Logger

	// Owned by the Run goroutine.
	cur          *decision.Snapshot
	rev          uint64
	pos          string
	entriesAdded int64

	state       atomic.Pointer[string]
	lastErr     atomic.Pointer[string]
	lag         atomic.Int64
	posView     atomic.Pointer[string]
	filePending atomic.Pointer[pendingFile]
	fileKick    chan struct{}

	connected, lagGauge  prometheus.Gauge
	events, reloads, bad prometheus.Counter
}

// NewRedisFollower validates cfg.
func NewRedisFollower(cfg RedisConfig) (*RedisFollower, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	k, _ := NewKeys(cfg.Namespace)
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.SnapshotInterval, 10*time.Second)
	def(&cfg.Block, time.Second)
	def(&cfg.BackoffMin, 50*time.Millisecond)
	def(&cfg.BackoffMax, 5*time.Second)
	if cfg.Batch == 0 {
		cfg.Batch = 1000
	}
	if cfg.Fresh == nil {
		cfg.Fresh = func(time.Time) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &RedisFollower{cfg: cfg, k: k, log: cfg.Logger, pos: "0-0", fileKick: make(chan struct{}, 1),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "usher_sync_connected", Help: "1 while the Redis follower is connected."}),
		lagGauge:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "usher_sync_lag_seconds", Help: "Write-to-apply time of the last change applied from Redis."}),
		events:    prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_sync_events_total", Help: "Change events read from the Redis stream."}),
		reloads:   prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_sync_full_reloads_total", Help: "Full reloads from Redis after the first load (stream trimmed past our position, or Redis lost it)."}),
		bad:       prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_sync_invalid_records_total", Help: "Records in Redis that broke the state rules and were left out."}),
	}
	f.setState(StateConnecting)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(f.connected, f.lagGauge, f.events, f.reloads, f.bad)
	}
	return f, nil
}

func (f *RedisFollower) setState(s string) { f.state.Store(&s) }

func (f *RedisFollower) setErr(err error) {
	if err == nil {
		f.lastErr.Store(nil)
		return
	}
	s := err.Error()
	f.lastErr.Store(&s)
}

// Status reports the follower's state; safe for concurrent use.
func (f *RedisFollower) Status() SyncStatus {
	s := SyncStatus{State: *f.state.Load(), Lag: time.Duration(f.lag.Load())}
	if e := f.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	if p := f.posView.Load(); p != nil {
		s.Position = *p
	}
	return s
}

// Run loads and follows until ctx ends.
func (f *RedisFollower) Run(ctx context.Context) {
	if f.cfg.SnapshotFile != "" {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); f.fileWriter(ctx) }()
		defer wg.Wait()
	}
	backoff := f.cfg.BackoffMin
	needLoad, verify := true, false
	if f.cfg.SnapshotFile != "" {
		if err := f.loadSnapshotFile(); err == nil {
			needLoad, verify = false, true
		} else if !errors.Is(err, os.ErrNotExist) {
			f.log.Warn("snapshot file unusable; loading from Redis", "path", f.cfg.SnapshotFile, "error", err)
		}
	}
	wait := func(err error) bool {
		f.down(err)
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, f.cfg.BackoffMax)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		if needLoad {
			if err := f.fullLoad(ctx); err != nil {
				if ctx.Err() != nil || !wait(err) {
					return
				}
				continue
			}
			needLoad, verify = false, false
		}
		if verify {
			ok, err := f.holds(ctx)
			if err != nil {
				if ctx.Err() != nil || !wait(err) {
					return
				}
				continue
			}
			if !ok {
				f.log.Warn("the change stream no longer holds our position; reloading in full", "position", f.pos)
				needLoad = true
				continue
			}
			verify = false
		}
		// One round trip: the read, then the stream's state right after it.
		pipe := f.cfg.Client.Pipeline()
		xr := pipe.XRead(ctx, &redis.XReadArgs{Streams: []string{f.k.Changes(), f.pos}, Count: f.cfg.Batch, Block: f.cfg.Block})
		xi := pipe.XInfoStream(ctx, f.k.Changes())
		pipe.Exec(ctx)
		if ctx.Err() != nil {
			return
		}
		streams, err := xr.Result()
		if errors.Is(err, redis.Nil) {
			f.up()
			backoff = f.cfg.BackoffMin
			continue
		}
		if err == nil {
			// Entries trimmed after our position were never read: reload.
			var ok bool
			if ok, err = f.stillHeld(xi); err == nil && !ok {
				f.log.Warn("the change stream was trimmed past our position, or lost; reloading in full", "position", f.pos)
				needLoad = true
				continue
			}
		}
		if err == nil {
			err = f.apply(ctx, streams)
		}
		if err != nil {
			verify = true
			if !wait(err) {
				return
			}
			continue
		}
		f.up()
		backoff = f.cfg.BackoffMin
	}
}

func (f *RedisFollower) up() {
	f.connected.Set(1)
	f.setState(StateFollowing)
	f.setErr(nil)
	f.cfg.Fresh(time.Now())
}

func (f *RedisFollower) down(err error) {
	f.connected.Set(0)
	f.setState(StateDisconnected)
	f.setErr(err)
	f.log.Warn("redis sync interrupted; serving the last snapshot", "error", err, "position", f.pos)
}

// stillHeld checks, from an XINFO STREAM taken right after a read, that
// nothing after our position was trimmed and the stream was not recreated.
func (f *RedisFollower) stillHeld(xi *redis.XInfoStreamCmd) (bool, error) {
	info, err := xi.Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return false, nil // we just read from it: it vanished since
		}
		return false, err
	}
	if info.EntriesAdded < f.entriesAdded {
		return false, nil
	}
	return info.MaxDeletedEntryID == "" || !streamLess(f.pos, info.MaxDeletedEntryID), nil
}

// holds reports whether the stream still holds everything after our
// position: nothing after it was trimmed, and (for a real position) the
// entry itself is still there, which also tells a Redis that lost its data.
func (f *RedisFollower) holds(ctx context.Context) (bool, error) {
	info, err := f.cfg.Client.XInfoStream(ctx, f.k.Changes()).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return f.pos == "0-0" && f.entriesAdded == 0, nil
		}
		return false, err
	}
	if info.EntriesAdded < f.entriesAdded {
		return false, nil // the stream was recreated
	}
	if info.MaxDeletedEntryID != "" && streamLess(f.pos, info.MaxDeletedEntryID) {
		return false, nil
	}
	if f.pos != "0-0" {
		got, err := f.cfg.Client.XRange(ctx, f.k.Changes(), f.pos, f.pos).Result()
		if err != nil {
			return false, err
		}
		if len(got) == 0 {
			return false, nil
		}
	}
	return true, nil
}

// fullLoad reads every tenant and publishes a new snapshot.
func (f *RedisFollower) fullLoad(ctx context.Context) error {
	reload := f.cur != nil
	if reload {
		f.setState(StateReloading)
	}
	start := time.Now()
	c := f.cfg.Client
	pos := "0-0"
	var added int64
	if info, err := c.XInfoStream(ctx, f.k.Changes()).Result(); err == nil {
		pos, added = info.LastGeneratedID, info.EntriesAdded
	} else if !strings.Contains(err.Error(), "no such key") {
		return fmt.Errorf("load: %w", err)
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
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
	}
	wg.Wait()
	if fetchErr != nil {
		return fetchErr // nothing applied
	}
	slices.SortFunc(bad, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	f.reportBad(bad)
	f.rev = rev
	snap := decision.SnapshotOf(rev, built)
	f.cur, f.pos, f.entriesAdded = snap, pos, added
	f.posView.Store(&pos)
	f.cfg.Publish(snap)
	if reload {
		f.reloads.Inc()
	}
	f.up()
	f.log.Info("state loaded from redis", "namespace", f.k.Namespace(), "tenants", len(tenants), "records", snap.Len(),
		"position", pos, "revision", f.rev, "took", time.Since(start).Round(time.Millisecond))
	f.maybeWriteFile()
	// A full load leaves the raw replies and decoded copies as garbage, a
	// few times the snapshot's size; hand that memory back now rather than
	// holding it as RSS until the next GC cycles get to it (in the
	// background: the new state is already serving).
	go debug.FreeOSMemory()
	return nil
}

func (f *RedisFollower) reportBad(bad []error) {
	if len(bad) == 0 {
		return
	}
	f.bad.Add(float64(len(bad)))
	for i, err := range bad {
		if i == 5 {
			f.log.Error("more invalid records left out", "count", len(bad)-5)
			break
		}
		f.log.Error("invalid record in redis left out", "error", err)
	}
}

// apply turns one XREAD batch into one new snapshot.
func (f *RedisFollower) apply(ctx context.Context, streams []redis.XStream) error {
	edits := map[string][]decision.Edit{}
	reread := map[string]bool{}
	pos := f.pos
	var lastAt int64
	var bad []error
	n := 0
	for _, s := range streams {
		for _, m := range s.Messages {
			n++
			pos = m.ID
			str := func(k string) string { v, _ := m.Values[k].(string); return v }
			if at, err := strconv.ParseInt(str(FieldAt), 10, 64); err == nil {
				lastAt = at
			}
			tenant, id := str(FieldTenant), str(FieldID)
			switch op := str(FieldOp); op {
			case OpTenant:
				reread[tenant] = true
			case OpPut, OpDelete:
				kind, err := decision.ParseKind(str(FieldKind))
				if err != nil {
					bad = append(bad, fmt.Errorf("event %s: %w", m.ID, err))
					continue
				}
				if op == OpDelete {
					edits[tenant] = append(edits[tenant], decision.Edit{Kind: kind, ID: id})
					continue
				}
				rec, err := decodeRecord(kind, []byte(str(FieldRecord)))
				if err == nil {
					if rt, rid := identity(rec); rt != tenant || rid != id {
						err = fmt.Errorf("record names tenant %q id %q, the event tenant %q id %q", rt, rid, tenant, id)
					}
				}
				if err != nil {
					bad = append(bad, fmt.Errorf("event %s: %w", m.ID, err))
					continue
				}
				edits[tenant] = append(edits[tenant], decision.Edit{Kind: kind, ID: id, Record: rec})
			default:
				bad = append(bad, fmt.Errorf("event %s: unknown op %q", m.ID, op))
			}
		}
	}
	if n == 0 {
		return nil
	}
	f.rev++
	snap := f.cur
	if len(reread) > 0 {
		list := make([]string, 0, len(reread))
		for t := range reread {
			list = append(list, t)
		}
		docs, b, err := readTenants(ctx, f.cfg.Client, f.k, list, false)
		if err != nil {
			return err // nothing applied; the batch is read again from f.pos
		}
		bad = append(bad, b...)
		// A tenant read now holds every change of the batch.
		for _, t := range list {
			delete(edits, t)
		}
		snap = snap.WithTenants(f.rev, docs)
	}
	f.reportBad(bad)
	if len(edits) > 0 {
		snap = snap.WithEdits(f.rev, edits)
	}
	f.cur, f.pos = snap, pos
	f.entriesAdded += int64(n)
	f.posView.Store(&pos)
	f.cfg.Publish(snap)
	f.events.Add(float64(n))
	if lastAt > 0 {
		lag := time.Since(time.UnixMilli(lastAt))
		f.lag.Store(int64(lag))
		f.lagGauge.Set(lag.Seconds())
	}
	f.maybeWriteFile()
	return nil
}

// snapshotHeader is the first line of a snapshot file; the rest is a state
// document, so `usher serve --state FILE` can read the file too.
type snapshotHeader struct {
	Namespace    string    `json:"namespace"`
	Position     string    `json:"position"`
	EntriesAdded int64     `json:"entries_added"`
	WrittenAt    time.Time `json:"written_at"`
}

// maybeWriteFile hands the current state to the file writer, which keeps
// only the newest and writes at most once per SnapshotInterval.
func (f *RedisFollower) maybeWriteFile() {
	if f.cfg.SnapshotFile == "" {
		return
	}
	p := &pendingFile{snap: f.cur, h: snapshotHeader{Namespace: f.k.Namespace(), Position: f.pos, EntriesAdded: f.entriesAdded, WrittenAt: time.Now().UTC()}}
	f.filePending.Store(p)
	select {
	case f.fileKick <- struct{}{}:
	default:
	}
}

type pendingFile struct {
	snap *decision.Snapshot
	h    snapshotHeader
}

// fileWriter writes pending states until ctx ends, then writes the last.
func (f *RedisFollower) fileWriter(ctx context.Context) {
	write := func() {
		if p := f.filePending.Swap(nil); p != nil {
			if err := writeSnapshotFile(f.cfg.SnapshotFile, p.snap, p.h); err != nil {
				f.log.Error("snapshot file not written", "path", f.cfg.SnapshotFile, "error", err)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			write()
			return
		case <-f.fileKick:
		}
		write()
		select {
		case <-ctx.Done():
			write()
			return
		case <-time.After(f.cfg.SnapshotInterval):
		}
	}
}

func writeSnapshotFile(path string, snap *decision.Snapshot, h snapshotHeader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	hb, _ := json.Marshal(h)
	fmt.Fprintf(w, "{\"usher_snapshot\": %s,\n", hb)
	var body bytes.Buffer
	if _, err := snap.Document().WriteTo(&body); err != nil {
		return err
	}
	w.Write(body.Bytes()[1:]) // the document without its opening brace
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadSnapshotFile publishes the state kept on disk, positioned where it
// was written.
func (f *RedisFollower) loadSnapshotFile() error {
	b, err := os.ReadFile(f.cfg.SnapshotFile)
	if err != nil {
		return err
	}
	var head struct {
		H *snapshotHeader `json:"usher_snapshot"`
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	header := append(bytes.Clone(bytes.TrimSuffix(line, []byte(","))), '}') // b must stay intact
	if err := json.Unmarshal(header, &head); err != nil || head.H == nil {
		return fmt.Errorf("snapshot file %s: no usher_snapshot header", f.cfg.SnapshotFile)
	}
	if head.H.Namespace != f.k.Namespace() {
		return fmt.Errorf("snapshot file %s is of namespace %q, not %q", f.cfg.SnapshotFile, head.H.Namespace, f.k.Namespace())
	}
	doc, err := decision.DecodeDocumentBytes(b)
	if err != nil {
		return fmt.Errorf("snapshot file %s: %w", f.cfg.SnapshotFile, err)
	}
	f.rev++
	snap := decision.NewSnapshot(doc, f.rev)
	f.cur, f.pos, f.entriesAdded = snap, head.H.Position, head.H.EntriesAdded
	f.posView.Store(&f.pos)
	f.cfg.Publish(snap)
	f.cfg.Fresh(head.H.WrittenAt) // the state is as old as the file
	f.log.Info("serving the snapshot file until redis answers", "path", f.cfg.SnapshotFile, "records", doc.Len(),
		"position", f.pos, "written_at", head.H.WrittenAt)
	return nil
}
