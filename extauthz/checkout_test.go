package extauthz_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

// checkouts records the checkouts asked for and answers as told.
type checkouts struct {
	calls   []string
	granted bool
	err     error
	engine  *decision.Engine
}

func (c *checkouts) CheckoutLease(_ context.Context, tenant, license, subject, client string) (bool, decision.Token, error) {
	c.calls = append(c.calls, subject+"/"+client)
	if c.err != nil {
		return false, decision.Token{}, c.err
	}
	return c.granted, c.engine.Snapshot().Token(), nil
}

// A checkout route goes to Redis only when the caller holds no lease or
// one past half its duration, and says so when Redis cannot be reached.
func TestCheckoutRoute(t *testing.T) {
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		t.Fatal(err)
	}
	key, v, routes, e := parts(t, `routes: [{path: "/cad/*", seat: cad, checkout: true}]`, decision.Config{CacheEntries: -1})
	doc, err := decision.ParseDocumentBytes([]byte(`{"licenses": [{"id": "fl", "tenant_id": "acme", "name": "cad", "type": "floating", "seat_limit": 5}],
		"assignments": [{"id": "d", "tenant_id": "acme", "license_id": "fl", "assignee_id": "u1", "reservation": "dynamic"},
		{"id": "d2", "tenant_id": "acme", "license_id": "fl", "assignee_id": "u2", "reservation": "dynamic"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(p)
	now := time.Now()
	lease := func(subject string, left time.Duration) decision.LeaseChange {
		return decision.LeaseChange{Lease: decision.Lease{ID: "L" + subject, LicenseID: "fl", Subject: subject, ClientID: "ws",
			GrantedAt: decision.InstantOf(now.Add(-time.Minute)), ExpiresAt: decision.InstantOf(now.Add(left)), Duration: time.Minute}}
	}
	// u1's lease has 50 s of 60 left; u2's 10 s.
	e.SetSnapshot(decision.NewSnapshot(doc, 1).WithLeases(2, map[string][]decision.LeaseChange{"acme": {lease("u1", 50*time.Second), lease("u2", 10*time.Second)}}))
	store := &checkouts{granted: true, engine: e}
	a, err := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return p }, Routes: routes, Verifier: v, Leases: store})
	if err != nil {
		t.Fatal(err)
	}
	check := func(a *extauthz.Authorizer, sub string) extauthz.Result {
		return a.Check(context.Background(), decision.APIExtAuthzHTTP, extauthz.Request{Method: "GET", Path: "/cad/x",
			Authorization: "Bearer " + testjwt.Sign(t, key, map[string]any{"sub": sub}), ClientID: "ws"})
	}
	if r := check(a, "u1"); r.Status != extauthz.Allowed || r.Reason != "seat_leased" || len(store.calls) != 0 {
		t.Errorf("u1 with most of its lease left: %+v, calls %v; want seat_leased without Redis", r, store.calls)
	}
	if r := check(a, "u2"); r.Status != extauthz.Allowed || len(store.calls) != 1 || store.calls[0] != "u2/ws" {
		t.Errorf("u2 past half its lease: %+v, calls %v; want a renewal", r, store.calls)
	}
	store.err = errors.New("connection refused")
	if r := check(a, "u2"); r.Status != extauthz.Allowed {
		t.Errorf("u2 with Redis down: %+v; want its lease to keep granting", r)
	}
	e.SetSnapshot(decision.NewSnapshot(doc, 3)) // no leases
	if r := check(a, "u1"); r.Status != extauthz.Unavailable || r.Reason != "redis_unavailable" || r.Reply().Status != 503 {
		t.Errorf("u1 without a lease, Redis down: %+v", r)
	}
	store.err, store.granted = nil, false
	if r := check(a, "u1"); r.Status != extauthz.Denied || r.Reason != "not_checked_out" {
		t.Errorf("u1 with no seat free: %+v; want denied not_checked_out", r)
	}
	noRedis, _ := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return p }, Routes: routes, Verifier: v})
	if r := check(noRedis, "u1"); r.Status != extauthz.Unavailable || r.Reason != "redis_unavailable" {
		t.Errorf("a sidecar without Redis: %+v", r)
	}
}
