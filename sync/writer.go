package statesync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
)

// ErrNotFound marks a delete of a record that does not exist.
var ErrNotFound = errors.New("not found")

// ErrSeatLimitExceeded marks an assignment refused because it would grant
// a seat past its license's seat_limit + seat_overage.
var ErrSeatLimitExceeded = errors.New("seat_limit_exceeded")

// ErrConflict marks a write that kept losing a race with other writers.
var ErrConflict = errors.New("concurrent writes kept changing the same keys; try again")

// stageChunk is how many bytes of records a load stages a round trip.
const stageChunk = 4 << 20

// DefaultStreamMaxLen is how many change events the stream keeps (about).
const DefaultStreamMaxLen = 100_000

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Client is the Redis to write; required.
	Client redis.UniversalClient
	// Namespace prefixes every key; default "usher".
	Namespace string
	// StreamMaxLen caps the change stream (approximately); default 100,000.
	// A follower that falls further behind reloads in full.
	StreamMaxLen int64
	// Now is the clock stamped on change events; nil means time.Now.
	Now func() time.Time
	// Progress, when set, is told after each round trip of a Load how
	// many of its records are staged and how many bytes they took.
	Progress func(done, total int, bytes int64)
}

// Writer validates records and writes them with their change events. Each
// Put and Delete is one MULTI/EXEC: the record change and its event land
// together or not at all. It is safe for concurrent use.
type Writer struct {
	c        redis.UniversalClient
	k        Keys
	maxLen   int64
	now      func() time.Time
	progress func(done, total int, bytes int64)
}

// NewWriter validates cfg.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	k, err := NewKeys(cfg.Namespace)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.Client == nil {
		errs = append(errs, errors.New("writer: Client is required"))
	}
	if cfg.StreamMaxLen < 0 {
		errs = append(errs, errors.New("stream-max-len: must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.StreamMaxLen == 0 {
		cfg.StreamMaxLen = DefaultStreamMaxLen
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Writer{c: cfg.Client, k: k, maxLen: cfg.StreamMaxLen, now: cfg.Now, progress: cfg.Progress}, nil
}

// Keys returns the writer's key layout.
func (w *Writer) Keys() Keys { return w.k }

func (w *Writer) event(p redis.Pipeliner, ctx context.Context, values ...any) *redis.StringCmd {
	values = append(values, FieldAt, unixMillis(w.now()))
	return p.XAdd(ctx, &redis.XAddArgs{Stream: w.k.Changes(), MaxLen: w.maxLen, Approx: true, Values: values})
}

// token is the revision token of a committed write: its namespace epoch
// (read in the write's transaction) and the id of its last event.
func (w *Writer) token(epoch, id *redis.StringCmd) decision.Token {
	t, _ := decision.RedisToken(w.k.Namespace(), epoch.Val(), id.Val())
	return t
}

// Revision returns the revision token of the state Redis holds now: a
// sidecar answering with min_revision set to it has applied every write
// committed before the call.
func (w *Writer) Revision(ctx context.Context) (decision.Token, error) {
	pipe := w.c.Pipeline()
	epoch := pipe.Get(ctx, w.k.Epoch())
	last := pipe.XRevRangeN(ctx, w.k.Changes(), "+", "-", 1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return decision.Token{}, err
	}
	id := "0-0"
	if msgs := last.Val(); len(msgs) > 0 {
		id = msgs[0].ID
	}
	t, _ := decision.RedisToken(w.k.Namespace(), epoch.Val(), id)
	return t, nil
}

// stampEpoch queues the creation of the namespace's epoch where it has
// none: a namespace that Redis lost gets a new one with its next write,
// which tells every sidecar to reload.
func (w *Writer) stampEpoch(p redis.Pipeliner, ctx context.Context) *redis.StringCmd {
	p.SetNX(ctx, w.k.Epoch(), newEpoch(), 0)
	return p.Get(ctx, w.k.Epoch())
}

func newEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// refused names why Redis discarded a transaction: EXEC only says
// EXECABORT, the queued command's own error (OOM, READONLY, NOPERM…) says why.
func refused(cmds []redis.Cmder, err error) error {
	if err == nil || !strings.HasPrefix(err.Error(), "EXECABORT") {
		return err
	}
	for _, c := range cmds {
		if ce := c.Err(); ce != nil && !strings.HasPrefix(ce.Error(), "EXECABORT") {
			return fmt.Errorf("redis refused the write: %w", ce)
		}
	}
	return err
}

// retry runs a WATCH transaction until it commits or loses too often.
func (w *Writer) retry(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	for range 10 {
		err := w.c.Watch(ctx, fn, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
	}
	return ErrConflict
}

// Put validates one record (the state format of that kind) and writes it,
// replacing any record of the same kind, tenant and id. It returns the
// revision token of the state that holds the write.
func (w *Writer) Put(ctx context.Context, kind decision.Kind, raw []byte) (decision.Token, error) {
	rec, err := decision.DecodeRecord(kind, raw)
	if err != nil {
		return decision.Token{}, err
	}
	tenant, id := rec.Key()
	canonical := rec.AppendJSON(nil)
	key := w.k.Records(tenant, kind)
	watch := []string{key}
	if kind == decision.KindAssignment {
		// The license, and the groups that decide whom it reaches: a
		// concurrent write to either retries the seat count.
		watch = append(watch, w.k.Records(tenant, decision.KindLicense), w.k.Records(tenant, decision.KindGroup))
	}
	var epoch, event *redis.StringCmd
	err = w.retry(ctx, func(tx *redis.Tx) error {
		switch r := rec.(type) {
		case *decision.Assignment:
			ok, err := tx.HExists(ctx, w.k.Records(tenant, decision.KindLicense), r.LicenseID).Result()
			if err != nil {
				return err
			}
			if !ok {
				return &decision.RecordError{Kind: kind, Index: -1, ID: id, Field: "license_id",
					Rule: fmt.Sprintf("must name a license of tenant %q, no license %q there", tenant, r.LicenseID)}
			}
			if err := w.checkSeats(ctx, tx, r); err != nil {
				return err
			}
		case *decision.Group:
			for i, m := range r.Members {
				if m.Type != decision.GroupPrincipal || m.ID == r.ID {
					continue
				}
				ok, err := tx.HExists(ctx, key, m.ID).Result()
				if err != nil {
					return err
				}
				if !ok {
					return &decision.RecordError{Kind: kind, Index: -1, ID: id, Field: fmt.Sprintf("members[%d].id", i),
						Rule: fmt.Sprintf("must name a group of tenant %q, no group %q there", tenant, m.ID)}
				}
			}
		}
		return refused(tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, id, canonical)
			p.SAdd(ctx, w.k.Tenants(), tenant)
			epoch = w.stampEpoch(p, ctx)
			event = w.event(p, ctx, FieldOp, OpPut, FieldKind, kind.String(), FieldTenant, tenant, FieldID, id, FieldRecord, canonical)
			return nil
		}))
	}, watch...)
	if err != nil {
		return decision.Token{}, err
	}
	return w.token(epoch, event), nil
}

// checkSeats refuses an assignment that would grant a seat of a named
// license with a seat_limit past seat_limit + seat_overage now. It reads
// the tenant's assignments and groups inside the write's WATCH, so two
// writers cannot both take the last seat.
func (w *Writer) checkSeats(ctx context.Context, tx *redis.Tx, a *decision.Assignment) error {
	if a.Reservation == decision.Denied || a.Status != decision.StatusActive || a.Deleted {
		return nil // grants nothing
	}
	raw, err := tx.HGet(ctx, w.k.Records(a.TenantID, decision.KindLicense), a.LicenseID).Result()
	if err != nil {
		return err
	}
	lic, err := decision.DecodeLicense([]byte(raw))
	if err != nil || lic.SeatLimit < 0 || lic.Type != decision.Named {
		return nil // a record sidecars leave out, unlimited, or floating
	}
	assignments, err := tx.HGetAll(ctx, w.k.Records(a.TenantID, decision.KindAssignment)).Result()
	if err != nil {
		return err
	}
	groups, err := tx.HGetAll(ctx, w.k.Records(a.TenantID, decision.KindGroup)).Result()
	if err != nil {
		return err
	}
	doc := &decision.Document{Licenses: []*decision.License{lic}}
	for id, raw := range assignments {
		if o, err := decision.DecodeAssignment([]byte(raw)); err == nil && o.LicenseID == lic.ID && id != a.ID {
			doc.Assignments = append(doc.Assignments, o)
		}
	}
	for _, raw := range groups {
		if g, err := decision.DecodeGroup([]byte(raw)); err == nil {
			doc.Groups = append(doc.Groups, g)
		}
	}
	now := decision.InstantOf(w.now())
	before := decision.NewSnapshot(doc, 1).Tenant(a.TenantID).SeatsInUse(lic.ID, now)
	doc.Assignments = append(doc.Assignments, a)
	after := decision.NewSnapshot(doc, 1).Tenant(a.TenantID).SeatsInUse(lic.ID, now)
	if most := lic.SeatLimit + lic.SeatOverage; after > before && int64(after) > most {
		return fmt.Errorf("%w: assignment %q would grant %d seats of license %q of tenant %q, which has %d (seat_limit %d + seat_overage %d) and %d in use",
			ErrSeatLimitExceeded, a.ID, after, lic.ID, a.TenantID, most, lic.SeatLimit, lic.SeatOverage, before)
	}
	return nil
}

// Delete removes one record. A license that assignments still name, or a
// group that other groups still contain, is not deleted. It returns the
// revision token of the state without the record.
func (w *Writer) Delete(ctx context.Context, kind decision.Kind, tenant, id string) (decision.Token, error) {
	key := w.k.Records(tenant, kind)
	watch := []string{key}
	if kind == decision.KindLicense {
		watch = append(watch, w.k.Records(tenant, decision.KindAssignment))
	}
	var epoch, event *redis.StringCmd
	err := w.retry(ctx, func(tx *redis.Tx) error {
		ok, err := tx.HExists(ctx, key, id).Result()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no %s %q in tenant %q", ErrNotFound, kind, id, tenant)
		}
		var users []string
		switch kind {
		case decision.KindLicense:
			all, err := tx.HGetAll(ctx, w.k.Records(tenant, decision.KindAssignment)).Result()
			if err != nil {
				return err
			}
			for aid, raw := range all {
				if a, err := decision.DecodeAssignment([]byte(raw)); err == nil && a.LicenseID == id {
					users = append(users, "assignment "+aid)
				}
			}
		case decision.KindGroup:
			all, err := tx.HGetAll(ctx, key).Result()
			if err != nil {
				return err
			}
			for gid, raw := range all {
				if g, err := decision.DecodeGroup([]byte(raw)); err == nil && gid != id {
					for _, m := range g.Members {
						if m.Type == decision.GroupPrincipal && m.ID == id {
							users = append(users, "group "+gid)
						}
					}
				}
			}
		}
		if len(users) > 0 {
			sort.Strings(users)
			if len(users) > 5 {
				users = append(users[:5], fmt.Sprintf("and %d more", len(users)-5))
			}
			return fmt.Errorf("%s %q of tenant %q is still named by %s: delete or change those first", kind, id, tenant, strings.Join(users, ", "))
		}
		return refused(tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, key, id)
			epoch = w.stampEpoch(p, ctx)
			event = w.event(p, ctx, FieldOp, OpDelete, FieldKind, kind.String(), FieldTenant, tenant, FieldID, id)
			return nil
		}))
	}, watch...)
	if err != nil {
		return decision.Token{}, err
	}
	return w.token(epoch, event), nil
}

// LoadResult says what a Load changed.
type LoadResult struct {
	Tenants int // tenants whose records were replaced
	Records int // records those tenants now hold
	// Revision is the revision token of the state that holds the load.
	Revision decision.Token
}

// Load writes a document. Without replace it merges: each record replaces
// the stored record of the same kind, tenant and id, others stay. With
// replace, Redis afterwards holds exactly the document. The merged state
// is validated as a whole (docs/state.md) before anything is written; the
// touched tenants are then swapped in with one MULTI/EXEC, each with a
// "tenant" change event, so a load is all-or-nothing.
func (w *Writer) Load(ctx context.Context, doc *decision.Document, replace bool) (LoadResult, error) {
	incoming := doc.ByTenant()
	var res LoadResult
	err := w.retry(ctx, func(tx *redis.Tx) error {
		current, err := tx.SMembers(ctx, w.k.Tenants()).Result()
		if err != nil {
			return err
		}
		affected := map[string]bool{}
		for t := range incoming {
			affected[t] = true
		}
		if replace {
			for _, t := range current {
				affected[t] = true
			}
		}
		tenants := make([]string, 0, len(affected))
		for t := range affected {
			tenants = append(tenants, t)
		}
		sort.Strings(tenants)
		var live []string
		for _, t := range tenants {
			for _, kind := range Kinds {
				live = append(live, w.k.Records(t, kind))
			}
		}
		if err := tx.Watch(ctx, live...).Err(); err != nil {
			return err
		}
		merged := map[string]*decision.Document{}
		if replace {
			for _, t := range tenants {
				merged[t] = incoming[t]
				if merged[t] == nil {
					merged[t] = &decision.Document{}
				}
			}
		} else {
			stored, bad, err := readTenants(ctx, tx, w.k, tenants, false)
			if err != nil {
				return err
			}
			if len(bad) > 0 {
				return fmt.Errorf("Redis holds records that break the state rules; fix them or load with --replace: %w", errors.Join(bad...))
			}
			for _, t := range tenants {
				merged[t] = overlay(stored[t], incoming[t])
			}
		}
		whole := &decision.Document{}
		for _, t := range tenants {
			d := merged[t]
			whole.Append(d)
		}
		if err := whole.Validate(); err != nil {
			return err
		}
		return w.swap(ctx, tx, tenants, merged, &res)
	}, w.k.Tenants())
	if err == nil && res.Revision.IsZero() { // nothing to swap: no event written
		res.Revision, err = w.Revision(ctx)
	}
	return res, err
}

// swap stages the tenants' new hashes, then renames them into place with
// their events in one transaction.
func (w *Writer) swap(ctx context.Context, tx *redis.Tx, tenants []string, docs map[string]*decision.Document, res *LoadResult) error {
	var tok [8]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return err
	}
	token := hex.EncodeToString(tok[:])
	staged := map[string]bool{}
	committed := false
	defer func() {
		// Staging failed, the WATCH failed or Redis went away: drop what
		// was staged, so "nothing written" leaves nothing behind.
		if committed || len(staged) == 0 {
			return
		}
		keys := make([]string, 0, len(staged))
		for sk := range staged {
			keys = append(keys, sk)
		}
		w.c.Del(context.WithoutCancel(ctx), keys...)
	}()
	// Staged a few MiB a round trip: any load fits the client's default
	// timeouts, and the client never holds more than a chunk of commands.
	total := 0
	for _, t := range tenants {
		total += docs[t].Len()
	}
	pipe := tx.Pipeline()
	var queued, done int
	var written int64
	flush := func() error {
		if cmds, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("stage records: %w", refused(cmds, err))
		}
		queued = 0
		if w.progress != nil {
			w.progress(done, total, written)
		}
		return nil
	}
	for _, t := range tenants {
		for _, kind := range Kinds {
			recs := docs[t].RecordsOf(kind)
			if len(recs) == 0 {
				continue
			}
			sk := w.k.stage(token, t, kind)
			staged[sk] = true
			for start := 0; start < len(recs); start += 1000 {
				args := make([]any, 0, 2*min(1000, len(recs)-start))
				for _, rec := range recs[start:min(start+1000, len(recs))] {
					_, id := rec.Key()
					js := rec.AppendJSON(nil)
					args = append(args, id, js)
					queued += len(id) + len(js)
					written += int64(len(id) + len(js))
				}
				pipe.HSet(ctx, sk, args...)
				done += len(args) / 2
				if queued >= stageChunk {
					pipe.Expire(ctx, sk, time.Hour) // a crash before the swap leaves no litter
					if err := flush(); err != nil {
						return err
					}
				}
			}
			pipe.Expire(ctx, sk, time.Hour)
			res.Records += len(recs)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	var epoch, event *redis.StringCmd
	err := refused(tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epoch = w.stampEpoch(p, ctx)
		for _, t := range tenants {
			empty := true
			for _, kind := range Kinds {
				live, sk := w.k.Records(t, kind), w.k.stage(token, t, kind)
				if staged[sk] {
					p.Rename(ctx, sk, live)
					p.Persist(ctx, live)
					empty = false
				} else {
					p.Del(ctx, live)
				}
			}
			if empty {
				p.SRem(ctx, w.k.Tenants(), t)
			} else {
				p.SAdd(ctx, w.k.Tenants(), t)
			}
			event = w.event(p, ctx, FieldOp, OpTenant, FieldTenant, t)
		}
		return nil
	}))
	if err != nil {
		return err
	}
	committed = true
	res.Tenants = len(tenants)
	if event != nil {
		res.Revision = w.token(epoch, event)
	}
	return nil
}

// Export reads the whole state in one transaction, sorted by tenant and
// id; a record that breaks the state rules makes it fail (ExportValid
// leaves such records out instead).
func (w *Writer) Export(ctx context.Context) (*decision.Document, error) {
	doc, bad, err := w.ExportValid(ctx)
	if err == nil && len(bad) > 0 {
		err = fmt.Errorf("export: Redis holds records that break the state rules: %w", errors.Join(bad...))
	}
	return doc, err
}

// ExportValid reads the whole state in one transaction, sorted by tenant
// and id, leaving out the records that break the state rules, which it
// returns, one error each, naming the key, field and rule.
func (w *Writer) ExportValid(ctx context.Context) (*decision.Document, []error, error) {
	tenants, err := w.c.SMembers(ctx, w.k.Tenants()).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("export: %w", err)
	}
	sort.Strings(tenants)
	docs, bad, err := readTenants(ctx, w.c, w.k, tenants, true)
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(bad, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	whole := &decision.Document{}
	for _, t := range tenants {
		whole.Append(docs[t])
	}
	return decision.NewSnapshot(whole, 0).Document(), bad, nil
}

// overlay returns base with each record of top replacing the one of the
// same kind and id.
func overlay(base, top *decision.Document) *decision.Document {
	if base == nil {
		base = &decision.Document{}
	}
	if top == nil {
		return base
	}
	out := &decision.Document{}
	for _, kind := range Kinds {
		seen := map[string]bool{}
		for _, r := range top.RecordsOf(kind) {
			_, id := r.Key()
			seen[id] = true
			out.Add(r)
		}
		for _, r := range base.RecordsOf(kind) {
			if _, id := r.Key(); !seen[id] {
				out.Add(r)
			}
		}
	}
	return out
}
