package statesync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/decision"
)

// DefaultNamespace prefixes every key unless --namespace says otherwise.
const DefaultNamespace = "usher"

// Keys is the Redis key layout of one namespace (see docs/redis.md). Every
// key carries the hash tag {NS}, so a namespace lives in one Cluster slot
// and a record change and its change event can be written atomically.
type Keys struct{ ns string }

// NewKeys validates a namespace.
func NewKeys(ns string) (Keys, error) {
	if ns == "" {
		return Keys{}, errors.New("namespace: must not be empty")
	}
	if strings.ContainsAny(ns, "{}") || strings.ContainsFunc(ns, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return Keys{}, fmt.Errorf("namespace: must not contain braces, spaces or control characters, got %q", ns)
	}
	return Keys{ns: ns}, nil
}

// Namespace returns the namespace.
func (k Keys) Namespace() string { return k.ns }

func (k Keys) prefix() string { return "{" + k.ns + "}:" }

// Tenants is the SET of tenant ids that hold records.
func (k Keys) Tenants() string { return k.prefix() + "tenants" }

// Records is the HASH of one tenant's records of a kind: id -> record JSON.
func (k Keys) Records(tenant string, kind decision.Kind) string {
	return k.prefix() + "t:" + tenant + ":" + kind.String() + "s"
}

// Changes is the change STREAM.
func (k Keys) Changes() string { return k.prefix() + "changes" }

// Epoch is the STRING naming this lifetime of the namespace: a random id
// that every write creates when it is missing (SET NX), so a namespace
// that was lost or replaced has none or another one.
func (k Keys) Epoch() string { return k.prefix() + "epoch" }

func (k Keys) stage(token, tenant string, kind decision.Kind) string {
	return k.prefix() + "stage:" + token + ":" + tenant + ":" + kind.String() + "s"
}

// Kinds lists the record kinds in storage order.
var Kinds = [...]decision.Kind{decision.KindLicense, decision.KindAssignment, decision.KindEntitlement, decision.KindGroup}

// Change event fields and operations.
const (
	FieldOp     = "op"
	FieldKind   = "kind"
	FieldTenant = "tenant"
	FieldID     = "id"
	FieldRecord = "record"
	FieldAt     = "at" // writer's clock, Unix milliseconds

	OpPut    = "put"
	OpDelete = "delete"
	OpTenant = "tenant" // the tenant's records were replaced wholesale: reread them
	// OpLease and OpLeaseEnd are floating-seat changes (leases.lua):
	// FieldLease holds the lease granted or renewed; a lease_end names
	// its lease in FieldID, with FieldReason released or expired.
	OpLease     = "lease"
	OpLeaseEnd  = "lease_end"
	FieldLease  = "lease"
	FieldReason = "reason"
)

// NewClient connects to the Redis named by url and names its connections
// (CLIENT SETNAME) so operators can tell them apart. Its commands honour
// their context's deadline, which is how a follower notices a hung Redis. Schemes: redis://,
// rediss:// (TLS); redis+cluster:// and rediss+cluster:// with extra nodes
// as addr= parameters; redis+sentinel:// and rediss+sentinel:// with the
// sentinels' addresses and master_name=.
func NewClient(rawURL, name string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis-url: %w", err)
	}
	base, mode, _ := strings.Cut(u.Scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("redis-url: scheme must be redis, rediss, redis+cluster or redis+sentinel, got %q", u.Scheme)
	}
	plain := base + "://" + strings.TrimPrefix(rawURL, u.Scheme+"://")
	switch mode {
	case "":
		o, err := redis.ParseURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis-url: %w", err)
		}
		o.ClientName, o.ContextTimeoutEnabled = name, true
		return redis.NewClient(o), nil
	case "cluster":
		o, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis-url: %w", err)
		}
		o.ClientName, o.ContextTimeoutEnabled = name, true
		return redis.NewClusterClient(o), nil
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis-url: %w", err)
		}
		o.ClientName, o.ContextTimeoutEnabled = name, true
		return redis.NewFailoverClient(o), nil
	}
	return nil, fmt.Errorf("redis-url: unknown mode %q (want cluster or sentinel)", mode)
}

// pipeliner is a client or a WATCH transaction's connection.
type pipeliner interface {
	Pipeline() redis.Pipeliner
	TxPipeline() redis.Pipeliner
}

// readTenants reads the listed tenants' records with one pipeline. Records
// that break a rule are left out and reported.
func readTenants(ctx context.Context, c pipeliner, k Keys, tenants []string, tx bool) (map[string]*decision.Document, []error, error) {
	raws, err := fetchTenants(ctx, c, k, tenants, tx)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*decision.Document, len(tenants))
	var bad []error
	for _, r := range raws {
		var d *decision.Document
		d, bad = r.decode(k, bad)
		out[r.tenant] = d
	}
	return out, bad, nil
}

// rawTenant is one tenant's four hashes as Redis returned them.
type rawTenant struct {
	tenant string
	kinds  [len(Kinds)]map[string]string
}

// fetchTenants reads the listed tenants' hashes with one pipeline.
func fetchTenants(ctx context.Context, c pipeliner, k Keys, tenants []string, tx bool) ([]rawTenant, error) {
	pipe := c.Pipeline()
	if tx {
		pipe = c.TxPipeline()
	}
	cmds := make([][len(Kinds)]*redis.MapStringStringCmd, len(tenants))
	for i, t := range tenants {
		for j, kind := range Kinds {
			cmds[i][j] = pipe.HGetAll(ctx, k.Records(t, kind))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read tenants: %w", err)
	}
	out := make([]rawTenant, len(tenants))
	for i, t := range tenants {
		out[i].tenant = t
		for j := range Kinds {
			out[i].kinds[j] = cmds[i][j].Val()
		}
	}
	return out, nil
}

// decode checks and decodes the tenant's records; those that break a rule
// are left out and appended to bad.
func (r *rawTenant) decode(k Keys, bad []error) (*decision.Document, []error) {
	d := &decision.Document{}
	for j, kind := range Kinds {
		for id, raw := range r.kinds[j] {
			// The decoders only read their input: no copy of the reply.
			rec, err := decision.DecodeRecord(kind, unsafe.Slice(unsafe.StringData(raw), len(raw)))
			if err == nil {
				if rt, rid := rec.Key(); rt != r.tenant || rid != id {
					err = fmt.Errorf("%s %q stored under tenant %q id %q names tenant %q id %q", kind, id, r.tenant, id, rt, rid)
				}
			}
			if err != nil {
				bad = append(bad, fmt.Errorf("key %s field %q: %w", k.Records(r.tenant, kind), id, err))
				continue
			}
			d.Add(rec)
		}
	}
	return d, bad
}

// streamPos compares stream ids ("ms-seq").
func streamLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	if am != bm {
		return am < bm
	}
	return as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

func unixMillis(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }
