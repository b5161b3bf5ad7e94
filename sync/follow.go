package statesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
)

// RedisConfig's defaults.
const (
	DefaultSnapshotInterval = 10 * time.Second
	DefaultVerifyInterval   = time.Second
)

// RedisConfig configures a RedisFollower.
type RedisConfig struct {
	// Client is the Redis to follow; required. Its commands must honour
	// their context's deadline (NewClient's do), or a hung Redis is only
	// noticed after the client's own read timeouts and retries.
	Client redis.UniversalClient
	// Namespace prefixes every key; default "usher".
	Namespace string
	// Publish receives each new snapshot; required.
	Publish func(*decision.Snapshot)
	// Fresh is told whenever Redis confirmed the snapshot is current, and
	// before each Publish.
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
	// VerifyInterval is the longest time between two checks that the
	// stream still continues from the follower's position (each round trip
	// checks, and one XREAD blocks at most this long); default 1s.
	VerifyInterval time.Duration
	// StallTimeout is how much longer than its block a round trip may take
	// before Redis counts as unreachable; default 1s.
	StallTimeout time.Duration
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
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"snapshot-interval", c.SnapshotInterval}, {"sync-verify-interval", c.VerifyInterval}, {"stall-timeout", c.StallTimeout},
		{"backoff-min", c.BackoffMin}, {"backoff-max", c.BackoffMax}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", d.name))
		}
	}
	if c.VerifyInterval > 0 && c.VerifyInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("sync-verify-interval: must be at least 10ms, got %s", c.VerifyInterval))
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

// Status is what the follower reports about itself.
type Status struct {
	State     string
	Lag       time.Duration // write-to-apply time of the last applied change
	LastError string
	Position  string // last applied stream id
	Epoch     string // the namespace's epoch the state was loaded in; "" if it has none
	// ErrorSince is when the current outage began (zero while following).
	ErrorSince time.Time
}

// RedisFollower loads the state from Redis, then follows the change stream,
// applying each batch of changes as a new snapshot that rebuilds only the
// tenants it touches. Every round trip also proves that the stream still
// continues from its position in the same namespace epoch; whatever cannot
// be proven continuous reloads in full. On a lost connection it keeps the
// last snapshot, reconnects with backoff and resumes from its position.
type RedisFollower struct {
	cfg RedisConfig
	k   Keys
	log *slog.Logger

	// Owned by the Run goroutine.
	cur *decision.Snapshot
	rev uint64
	at  position

	state     atomic.Pointer[string]
	lastErr   atomic.Pointer[string]
	errSince  atomic.Int64
	lag       atomic.Int64
	view      atomic.Pointer[position]
	confirmed atomic.Pointer[confirmation]
	file      snapshotFile

	connected, lagGauge prometheus.Gauge
	events, bad         prometheus.Counter
	reloads             *prometheus.CounterVec
}

// position is where the follower stands in the namespace.
type position struct {
	// ID is the last applied stream id ("0-0" before any).
	ID string
	// Anchored says the entry ID was seen in the stream, so its absence
	// later proves entries were lost. A full load of a stream that holds no
	// entries starts unanchored at its last generated id.
	Anchored bool
	// EntriesAdded is the stream's entries-added counter at ID.
	EntriesAdded int64
	// MaxDeleted is the stream's max-deleted-entry-id when last checked.
	MaxDeleted string
	// Epoch is the namespace's epoch ("" for a namespace without one).
	Epoch string
}

// confirmation is a moment Redis confirmed the state at a position current.
type confirmation struct {
	id string
	at time.Time
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
	def(&cfg.SnapshotInterval, DefaultSnapshotInterval)
	def(&cfg.VerifyInterval, DefaultVerifyInterval)
	def(&cfg.StallTimeout, time.Second)
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
	f := &RedisFollower{cfg: cfg, k: k, log: cfg.Logger, at: position{ID: "0-0"},
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "usher_sync_connected", Help: "1 while the Redis follower is connected."}),
		lagGauge:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "usher_sync_lag_seconds", Help: "Write-to-apply time of the last change applied from Redis."}),
		events:    prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_sync_events_total", Help: "Change events read from the Redis stream."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_sync_full_reloads_total",
			Help: "Full reloads from Redis after the first load, by why the change stream could not be followed on."}, []string{"reason"}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_sync_invalid_records_total", Help: "Records in Redis that broke the state rules and were left out."}),
	}
	for _, r := range ReloadReasons {
		f.reloads.WithLabelValues(r)
	}
	f.file = snapshotFile{path: cfg.SnapshotFile, ns: k.Namespace(), interval: cfg.SnapshotInterval, log: cfg.Logger, kick: make(chan struct{}, 1)}
	f.setState(StateConnecting)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(f.connected, f.lagGauge, f.events, f.reloads, f.bad)
	}
	return f, nil
}

func (f *RedisFollower) setState(s string) { f.state.Store(&s) }

// Status reports the follower's state; safe for concurrent use.
func (f *RedisFollower) Status() Status {
	s := Status{State: *f.state.Load(), Lag: time.Duration(f.lag.Load())}
	if e := f.lastErr.Load(); e != nil {
		s.LastError = *e
		s.ErrorSince = time.Unix(0, f.errSince.Load())
	}
	if p := f.view.Load(); p != nil {
		s.Position, s.Epoch = p.ID, p.Epoch
	}
	return s
}

// Run loads and follows until ctx ends, then writes the last snapshot
// file (when configured) before it returns.
func (f *RedisFollower) Run(ctx context.Context) {
	backoff := f.cfg.BackoffMin
	needLoad, reason := true, ""
	if f.cfg.SnapshotFile != "" {
		if err := f.loadSnapshotFile(); err == nil {
			needLoad = false
		} else if !errors.Is(err, os.ErrNotExist) {
			f.log.Warn("snapshot file unusable; loading from Redis", "path", f.cfg.SnapshotFile, "error", err)
		}
		var wg sync.WaitGroup
		wg.Go(func() { f.file.run(ctx, f.confirmed.Load) })
		defer wg.Wait()
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
			if err := f.fullLoad(ctx, reason); err != nil {
				if ctx.Err() != nil || !wait(err) {
					return
				}
				continue
			}
			needLoad = false
		}
		streams, gap, err := f.roundTrip(ctx)
		if err == nil && gap != "" {
			f.log.Warn("the change stream cannot be followed on from our position; reloading in full",
				"reason", gap, "position", f.at.ID, "epoch", f.at.Epoch)
			needLoad, reason = true, gap
			continue
		}
		if err == nil {
			err = f.apply(ctx, streams)
		}
		if err != nil {
			if ctx.Err() != nil || !wait(err) {
				return
			}
			continue
		}
		f.up()
		backoff = f.cfg.BackoffMin
	}
}

// up records that Redis just confirmed the state current.
func (f *RedisFollower) up() {
	now := time.Now()
	f.connected.Set(1)
	f.setState(StateFollowing)
	f.lastErr.Store(nil)
	f.cfg.Fresh(now)
	at := f.at
	f.view.Store(&at)
	f.confirmed.Store(&confirmation{id: at.ID, at: now})
}

func (f *RedisFollower) down(err error) {
	f.connected.Set(0)
	f.setState(StateDisconnected)
	if f.lastErr.Load() == nil {
		f.errSince.Store(time.Now().UnixNano())
	}
	s := err.Error()
	f.lastErr.Store(&s)
	if f.cur != nil {
		f.log.Warn("redis sync interrupted; serving the last snapshot", "error", err, "position", f.at.ID)
	} else {
		f.log.Warn("redis sync interrupted; no state to serve yet", "error", err)
	}
}

// roundTrip reads the next events after our position and, in the same
// pipeline right after the read, what proves the stream still continues
// from there: the epoch, the entry at our position, the stream's counters.
// It returns the events and, when continuity cannot be proven, why.
func (f *RedisFollower) roundTrip(ctx context.Context) ([]redis.XStream, string, error) {
	block := f.cfg.VerifyInterval
	rctx, cancel := context.WithTimeout(ctx, block+f.cfg.StallTimeout)
	defer cancel()
	pipe := f.cfg.Client.Pipeline()
	xr := pipe.XRead(rctx, &redis.XReadArgs{Streams: []string{f.k.Changes(), f.at.ID}, Count: f.cfg.Batch, Block: block})
	var v streamCmds
	v.queue(rctx, pipe, f.k, f.at)
	pipe.Exec(rctx)
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	streams, err := xr.Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "", fmt.Errorf("redis did not answer a read of the change stream within %s", block+f.cfg.StallTimeout)
		}
		return nil, "", fmt.Errorf("read the change stream: %w", err)
	}
	got, err := v.result()
	if err != nil {
		return nil, "", fmt.Errorf("check the change stream: %w", err)
	}
	gap := f.at.gap(got)
	if gap == "" {
		f.at.MaxDeleted, f.at.Epoch = got.info.MaxDeletedEntryID, got.epoch
	}
	return streams, gap, nil
}

// apply turns one XREAD batch into one new snapshot.
func (f *RedisFollower) apply(ctx context.Context, streams []redis.XStream) error {
	edits := map[string][]decision.Edit{}
	leases := map[string][]decision.LeaseChange{}
	reread := map[string]bool{}
	pos := f.at.ID
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
			case OpLease:
				l, err := ParseLease([]byte(str(FieldLease)))
				if err == nil && l.TenantID != tenant {
					err = fmt.Errorf("lease names tenant %q, the event tenant %q", l.TenantID, tenant)
				}
				if err != nil {
					bad = append(bad, fmt.Errorf("event %s: %w", m.ID, err))
					continue
				}
				leases[tenant] = append(leases[tenant], decision.LeaseChange{Lease: l.Snapshot()})
			case OpLeaseEnd:
				leases[tenant] = append(leases[tenant], decision.LeaseChange{End: id})
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
				rec, err := decision.DecodeRecord(kind, []byte(str(FieldRecord)))
				if err == nil {
					if rt, rid := rec.Key(); rt != tenant || rid != id {
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
			return err // nothing applied; the batch is read again from our position
		}
		bad = append(bad, b...)
		// A tenant read now holds every change of the batch.
		for _, t := range list {
			delete(edits, t)
		}
		snap = snap.WithTenants(f.rev, docs)
	}
	f.reportBad(bad)
	if len(edits) > 0 || snap == f.cur && len(leases) == 0 {
		// Even a batch that changes nothing moves the position, and so the
		// revision token: a new snapshot (sharing every tenant) carries it.
		snap = snap.WithEdits(f.rev, edits)
	}
	if len(leases) > 0 {
		snap = snap.WithLeases(f.rev, leases)
	}
	f.cur = snap
	f.at.ID, f.at.Anchored = pos, true
	f.at.EntriesAdded += int64(n)
	f.events.Add(float64(n)) // counted before the position shows
	f.publish(snap)
	if lastAt > 0 {
		lag := time.Since(time.UnixMilli(lastAt))
		f.lag.Store(int64(lag))
		f.lagGauge.Set(lag.Seconds())
	}
	return nil
}

// publish hands a new snapshot to the engine and the snapshot file.
func (f *RedisFollower) publish(snap *decision.Snapshot) {
	at := f.at
	f.stamp(snap, at)
	f.view.Store(&at)
	f.cfg.Publish(snap)
	f.file.offer(snap, at)
}

// stamp gives snap the revision token of position at.
func (f *RedisFollower) stamp(snap *decision.Snapshot, at position) {
	if t, ok := decision.RedisToken(f.k.Namespace(), at.Epoch, at.ID); ok {
		snap.Stamp(t)
	}
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
