package statesync

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
)

// Floating seats: a lease holds a seat of a floating license until it
// expires. Redis is the only place a seat is counted: each operation is
// one server-side script (leases.lua) that takes the time from Redis,
// drops the license's expired leases, reads the limit from the license
// record, counts leases and reserved seats, and appends the change to the
// change stream, so every sidecar learns every lease.

//go:embed leases.lua
var leasesLua string

var leaseScript = redis.NewScript(leasesLua)

// Leases returns the HASH of a tenant's leases: lease id -> lease JSON.
func (k Keys) Leases(tenant string) string { return k.prefix() + "t:" + tenant + ":leases" }

// LeaseExpiries returns the ZSET of a license's leases by expiry (Unix ms).
func (k Keys) LeaseExpiries(tenant, license string) string {
	return k.prefix() + "t:" + tenant + ":lease-expiries:" + license
}

// LeaseHolders returns the HASH of a license's leases by holder: subject
// NUL client id -> lease id.
func (k Keys) LeaseHolders(tenant, license string) string {
	return k.prefix() + "t:" + tenant + ":lease-holders:" + license
}

// LeaseReserved returns the HASH caching a license's reserved-seat count
// for the lease script: count, until (Unix ms, -1), the stream id the
// count is known current at, and the epoch. Deleting it is always safe.
func (k Keys) LeaseReserved(tenant, license string) string {
	return k.prefix() + "t:" + tenant + ":lease-reserved:" + license
}

// Lease is one held seat of a floating license.
type Lease struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	LicenseID string    `json:"license_id"`
	Subject   string    `json:"subject"`
	ClientID  string    `json:"client_id"`
	Duration  int64     `json:"duration_s"`
	GrantedAt time.Time `json:"-"`
	ExpiresAt time.Time `json:"-"`
}

// leaseWire is a lease as Redis and the change stream hold it.
type leaseWire struct {
	ID        string `json:"id"`
	TenantID  string `json:"tenant_id"`
	LicenseID string `json:"license_id"`
	Subject   string `json:"subject"`
	ClientID  string `json:"client_id"`
	Duration  int64  `json:"duration_s"`
	GrantedMs int64  `json:"granted_ms"`
	ExpiresMs int64  `json:"expires_ms"`
}

// ParseLease decodes a lease as Redis and lease events hold it.
func ParseLease(raw []byte) (Lease, error) {
	var w leaseWire
	if err := json.Unmarshal(raw, &w); err != nil {
		return Lease{}, fmt.Errorf("lease: %w", err)
	}
	if w.ID == "" || w.TenantID == "" || w.LicenseID == "" || w.Subject == "" || w.ExpiresMs <= 0 {
		return Lease{}, fmt.Errorf("lease %q: id, tenant_id, license_id, subject and expires_ms are required", w.ID)
	}
	return Lease{ID: w.ID, TenantID: w.TenantID, LicenseID: w.LicenseID, Subject: w.Subject, ClientID: w.ClientID,
		Duration: w.Duration, GrantedAt: time.UnixMilli(w.GrantedMs).UTC(), ExpiresAt: time.UnixMilli(w.ExpiresMs).UTC()}, nil
}

// Snapshot is the lease as a snapshot keeps it.
func (l Lease) Snapshot() decision.Lease {
	return decision.Lease{ID: l.ID, LicenseID: l.LicenseID, Subject: l.Subject, ClientID: l.ClientID,
		GrantedAt: decision.InstantOf(l.GrantedAt), ExpiresAt: decision.InstantOf(l.ExpiresAt), Duration: time.Duration(l.Duration) * time.Second}
}

// readLeases reads the listed tenants' leases; unreadable ones are left
// out and reported.
func readLeases(ctx context.Context, c redis.UniversalClient, k Keys, tenants []string) (map[string][]decision.LeaseChange, []error, error) {
	pipe := c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(tenants))
	for i, t := range tenants {
		cmds[i] = pipe.HGetAll(ctx, k.Leases(t))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read leases: %w", err)
	}
	out := map[string][]decision.LeaseChange{}
	var bad []error
	for i, t := range tenants {
		for id, raw := range cmds[i].Val() {
			l, err := ParseLease([]byte(raw))
			if err == nil && (l.ID != id || l.TenantID != t) {
				err = fmt.Errorf("lease stored under tenant %q id %q names tenant %q id %q", t, id, l.TenantID, l.ID)
			}
			if err != nil {
				bad = append(bad, fmt.Errorf("key %s field %q: %w", k.Leases(t), id, err))
				continue
			}
			out[t] = append(out[t], decision.LeaseChange{Lease: l.Snapshot()})
		}
	}
	return out, bad, nil
}

// Lease operation results.
const (
	LeaseGranted         = "granted"
	LeaseRenewed         = "renewed"
	LeaseReleased        = "released"
	LeaseNotHeld         = "not_held"
	LeaseNotFound        = "lease_not_found"
	LeaseExpired         = "lease_expired"
	LeaseNoSeatAvailable = "no_seat_available"
	LeaseNotFloating     = "not_floating"
	LeaseNoLicense       = "license_not_found"
	LeaseReaped          = "reaped"
)

// Seats is a floating license's pool: Limit is seat_limit + seat_overage
// (-1: unlimited); InUse counts live leases and reserved seats (the
// reserved ones only in a checkout's answer).
type Seats struct {
	Limit, InUse int64
}

// LeaseResult is what a lease operation did.
type LeaseResult struct {
	Status string // one of the Lease… results
	Lease  *Lease // the lease granted or renewed
	Seats  Seats
	// Revision is the revision token of the state holding the change (or,
	// when nothing changed, of the state Redis holds now).
	Revision decision.Token
}

// MaxLeaseDuration bounds a lease asked for a license without its own
// lease_duration_s.
const MaxLeaseDuration = 24 * time.Hour

// Checkout grants subject (from client, "" for none) a lease of the
// floating license, or returns the lease it already holds, extended: a
// retry never takes a second seat. duration 0 means the license's
// lease_duration_s (or 300 s); a longer one is cut to it.
func (w *Writer) Checkout(ctx context.Context, tenant, license, subject, client string, duration time.Duration) (LeaseResult, error) {
	var errs []error
	for _, f := range []struct{ name, v string }{{"tenant_id", tenant}, {"license", license}, {"subject", subject}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%s: is required", f.name))
		}
	}
	for _, f := range []struct{ name, v string }{{"tenant_id", tenant}, {"license", license}, {"subject", subject}, {"client_id", client}} {
		if len(f.v) > decision.MaxIDLen {
			errs = append(errs, fmt.Errorf("%s: must be at most %d bytes, got %d", f.name, decision.MaxIDLen, len(f.v)))
		}
	}
	if duration < 0 || duration > MaxLeaseDuration || duration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("duration_s: must be a whole number of seconds from 1 to %d (0 or absent: the license's lease_duration_s), got %s",
			int64(MaxLeaseDuration/time.Second), duration))
	}
	if len(errs) > 0 {
		return LeaseResult{}, errors.Join(errs...)
	}
	var id [16]byte
	rand.Read(id[:])
	return w.lease(ctx, "checkout", tenant, license, subject, client, int64(duration/time.Second), "lease_"+hex.EncodeToString(id[:]), "")
}

// Heartbeat extends a lease by its duration from now. An expired lease is
// ended (LeaseExpired); an unknown one is LeaseNotFound.
func (w *Writer) Heartbeat(ctx context.Context, tenant, leaseID string) (LeaseResult, error) {
	return w.byLease(ctx, "heartbeat", tenant, leaseID)
}

// HeartbeatOf is Heartbeat for a lease whose license the caller knows (a
// sidecar, from its snapshot): one round trip instead of two. A license
// that is not the lease's answers LeaseNotFound.
func (w *Writer) HeartbeatOf(ctx context.Context, tenant, license, leaseID string) (LeaseResult, error) {
	if tenant == "" || leaseID == "" || license == "" {
		return LeaseResult{}, errors.New("tenant_id, license and lease_id: all are required")
	}
	return w.lease(ctx, "heartbeat", tenant, license, "", "", 0, "", leaseID)
}

// Release ends a lease now; releasing one that is not held is not an
// error (LeaseNotHeld).
func (w *Writer) Release(ctx context.Context, tenant, leaseID string) (LeaseResult, error) {
	return w.byLease(ctx, "release", tenant, leaseID)
}

// Reap ends the license's expired leases, writing their lease_end events;
// many sidecars may reap at once.
func (w *Writer) Reap(ctx context.Context, tenant, license string) (LeaseResult, error) {
	return w.lease(ctx, "reap", tenant, license, "", "", 0, "", "")
}

func (w *Writer) byLease(ctx context.Context, op, tenant, leaseID string) (LeaseResult, error) {
	if tenant == "" || leaseID == "" {
		return LeaseResult{}, errors.New("tenant_id and lease_id: both are required")
	}
	raw, err := w.c.HGet(ctx, w.k.Leases(tenant), leaseID).Result()
	if errors.Is(err, redis.Nil) {
		status := LeaseNotFound
		if op == "release" {
			status = LeaseNotHeld
		}
		rev, err := w.Revision(ctx)
		return LeaseResult{Status: status, Seats: Seats{Limit: -1}, Revision: rev}, err
	}
	if err != nil {
		return LeaseResult{}, err
	}
	l, err := ParseLease([]byte(raw))
	if err != nil {
		return LeaseResult{}, err
	}
	return w.lease(ctx, op, tenant, l.LicenseID, "", "", 0, "", leaseID)
}

func (w *Writer) lease(ctx context.Context, op, tenant, license, subject, client string, durationS int64, newID, leaseID string) (LeaseResult, error) {
	keys := []string{
		w.k.Records(tenant, decision.KindLicense), w.k.Records(tenant, decision.KindAssignment), w.k.Records(tenant, decision.KindGroup),
		w.k.Leases(tenant), w.k.LeaseExpiries(tenant, license), w.k.LeaseHolders(tenant, license), w.k.Changes(), w.k.Epoch(),
		w.k.LeaseReserved(tenant, license),
	}
	v, err := leaseScript.Run(ctx, w.c, keys, op, tenant, license, subject, client, durationS, newID, leaseID, w.maxLen, newEpoch()).Slice()
	if err != nil {
		return LeaseResult{}, refusedScript(err)
	}
	if len(v) != 6 {
		return LeaseResult{}, fmt.Errorf("lease script answered %v", v)
	}
	status, _ := v[0].(string)
	js, _ := v[1].(string)
	inUse, _ := v[2].(int64)
	limit, _ := v[3].(int64)
	event, _ := v[4].(string)
	epoch, _ := v[5].(string)
	res := LeaseResult{Status: status, Seats: Seats{Limit: limit, InUse: inUse}}
	if js != "" {
		l, err := ParseLease([]byte(js))
		if err != nil {
			return LeaseResult{}, err
		}
		res.Lease = &l
	}
	if event != "" {
		res.Revision, _ = decision.RedisToken(w.k.Namespace(), epoch, event)
	} else if res.Revision, err = w.Revision(ctx); err != nil {
		return LeaseResult{}, err
	}
	return res, nil
}

// ActiveLeases lists a license's leases that have not expired by Redis's
// clock, by expiry.
func (w *Writer) ActiveLeases(ctx context.Context, tenant, license string) ([]Lease, error) {
	now, err := w.c.Time(ctx).Result()
	if err != nil {
		return nil, err
	}
	ids, err := w.c.ZRangeByScore(ctx, w.k.LeaseExpiries(tenant, license), &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	raws, err := w.c.HMGet(ctx, w.k.Leases(tenant), ids...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Lease, 0, len(raws))
	for _, r := range raws {
		if s, ok := r.(string); ok {
			if l, err := ParseLease([]byte(s)); err == nil {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// refusedScript names why Redis refused a script (OOM, READONLY, NOSCRIPT…).
func refusedScript(err error) error {
	var re redis.Error
	if errors.As(err, &re) {
		return fmt.Errorf("redis refused the lease operation: %w", err)
	}
	return err
}

// LeaseService is the sidecar's lease operations: the writer's, timed and
// counted (usher_lease_operations_total, usher_lease_operation_duration_seconds),
// and a reaper.
type LeaseService struct {
	w        *Writer
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// LeaseOps and LeaseOpResults are the label values of the lease metrics.
var (
	LeaseOps       = []string{"checkout", "heartbeat", "release", "reap"}
	LeaseOpResults = []string{LeaseGranted, LeaseRenewed, LeaseReleased, LeaseNotHeld, LeaseNotFound, LeaseExpired,
		LeaseNoSeatAvailable, LeaseNotFloating, LeaseNoLicense, LeaseReaped, "error"}
)

// NewLeaseService wraps w; reg receives the metrics (nil: none).
func NewLeaseService(w *Writer, reg prometheus.Registerer) *LeaseService {
	s := &LeaseService{w: w,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_lease_operations_total",
			Help: "Lease operations on Redis, by operation and result (error: Redis did not answer)."}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "usher_lease_operation_duration_seconds",
			Help: "Round trip of a lease operation to Redis.", Buckets: decision.DurationBuckets}, []string{"op"}),
	}
	for _, op := range LeaseOps {
		s.duration.WithLabelValues(op)
		for _, r := range LeaseOpResults {
			s.ops.WithLabelValues(op, r)
		}
	}
	if reg != nil {
		reg.MustRegister(s.ops, s.duration)
	}
	return s
}

func (s *LeaseService) observe(op string, start time.Time, res LeaseResult, err error) (LeaseResult, error) {
	s.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := res.Status
	if err != nil {
		result = "error"
	}
	s.ops.WithLabelValues(op, result).Inc()
	return res, err
}

// Checkout is Writer.Checkout, counted.
func (s *LeaseService) Checkout(ctx context.Context, tenant, license, subject, client string, d time.Duration) (LeaseResult, error) {
	start := time.Now()
	res, err := s.w.Checkout(ctx, tenant, license, subject, client, d)
	return s.observe("checkout", start, res, err)
}

// CheckoutLease is Checkout for the mesh: the license's default duration,
// granted when a lease is held.
func (s *LeaseService) CheckoutLease(ctx context.Context, tenant, license, subject, client string) (bool, decision.Token, error) {
	res, err := s.Checkout(ctx, tenant, license, subject, client, 0)
	return err == nil && res.Lease != nil, res.Revision, err
}

// Heartbeat is Writer.Heartbeat, counted; with the lease's license known
// (license not ""), Writer.HeartbeatOf.
func (s *LeaseService) Heartbeat(ctx context.Context, tenant, license, leaseID string) (LeaseResult, error) {
	start := time.Now()
	var res LeaseResult
	var err error
	if license != "" {
		res, err = s.w.HeartbeatOf(ctx, tenant, license, leaseID)
	} else {
		res, err = s.w.Heartbeat(ctx, tenant, leaseID)
	}
	return s.observe("heartbeat", start, res, err)
}

// Release is Writer.Release, counted.
func (s *LeaseService) Release(ctx context.Context, tenant, leaseID string) (LeaseResult, error) {
	start := time.Now()
	res, err := s.w.Release(ctx, tenant, leaseID)
	return s.observe("release", start, res, err)
}

// RunReaper asks Redis, every interval until ctx ends, to end the leases
// that snapshot() shows expired, so their lease_end events are written
// even when nobody touches the license. Several sidecars may reap at once:
// each end is written once.
func (s *LeaseService) RunReaper(ctx context.Context, snapshot func() *decision.Snapshot, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap := snapshot()
		if snap == nil {
			continue
		}
		for _, tl := range snap.ExpiredLeases(decision.InstantOf(time.Now())) {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			start := time.Now()
			res, err := s.w.Reap(rctx, tl[0], tl[1])
			cancel()
			s.observe("reap", start, res, err)
		}
	}
}
