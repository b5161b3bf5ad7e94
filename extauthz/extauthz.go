// Package extauthz is the room of the service-mesh fronts. Its core is
// transport-free: it verifies the caller's bearer token (jwtauth), reads
// the proxied path (SplitPath), matches it against the route table
// (Routes), asks the route policy, whose built-ins run seat and
// entitlement checks as the verified caller, and encodes the answer once
// (Result.Reply). The adapters beside it, grpcfront (Envoy's gRPC Check)
// and httpfront (Envoy's HTTP service), only convert to and from it.
package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
	"github.com/usher-authz/usher/jwtauth"
	"github.com/usher-authz/usher/policy"
)

// Config configures an Authorizer.
type Config struct {
	Engine   *decision.Engine
	Policy   func() *policy.Compiled // the policy in force
	Routes   *Routes                 // nil: every request is no_route
	Verifier *jwtauth.Verifier
	Logger   *slog.Logger
	// Leases checks out floating seats for routes with checkout: true;
	// nil (a sidecar without Redis) answers those 503.
	Leases Checkouts
	// NoRouteMemo evaluates the route policy on every request, not only
	// when the memo cannot answer (memo.go).
	NoRouteMemo bool
}

// Checkouts takes or renews a lease of a floating license in Redis
// (statesync.LeaseService does): granted reports a lease held, and
// revision names a state that holds it.
type Checkouts interface {
	CheckoutLease(ctx context.Context, tenant, license, subject, client string) (granted bool, revision decision.Token, err error)
}

// ClientIDHeader names the header a route with checkout: true takes the
// lease's client id from.
const ClientIDHeader = "x-usher-client-id"

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Engine == nil {
		errs = append(errs, errors.New("authz: Engine is required"))
	}
	if c.Policy == nil {
		errs = append(errs, errors.New("authz: Policy is required"))
	}
	if c.Verifier == nil {
		errs = append(errs, errors.New("jwks: the ext_authz fronts verify tokens and need a key set (--jwks)"))
	}
	return errors.Join(errs...)
}

// Authorizer answers ext_authz checks. It is safe for concurrent use.
type Authorizer struct {
	cfg  Config
	memo atomic.Pointer[routeMemo]
}

// New validates cfg.
func New(cfg Config) (*Authorizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Authorizer{cfg: cfg}, nil
}

// Routes is the route table the authorizer matches requests against.
func (a *Authorizer) Routes() *Routes { return a.cfg.Routes }

// Metrics returns the metrics of the engine it asks, or nil.
func (a *Authorizer) Metrics() *decision.Metrics { return a.cfg.Engine.Metrics() }

// Request is what an ext_authz front extracts from the proxied request.
type Request struct {
	Method string
	// Path is the request path as sent on the wire: percent-encoded, not
	// normalized, possibly with a query (which routing ignores). Both
	// fronts pass it raw, so both read it through the same SplitPath.
	Path          string
	Authorization string // the Authorization header value
	// MinRevision is the x-usher-min-revision header: answer from a state
	// at or after this revision token.
	MinRevision string
	// ClientID is the x-usher-client-id header (routes with checkout: true).
	ClientID string
	// Header looks up a request header by lower-case name, for routes that
	// take a value from_header; nil: none.
	Header func(name string) string
}

// MinRevisionHeader names the header that carries Request.MinRevision.
const MinRevisionHeader = "x-usher-min-revision"

// Status is the kind of answer.
type Status int

const (
	Allowed Status = iota
	Denied
	Unauthenticated
	Unavailable
	// Invalid: the path is not canonical (SplitPath); refused
	// with 400 invalid_path on both fronts.
	Invalid
)

// Result is the answer to one ext_authz check.
type Result struct {
	Status     Status
	Reason     string // the decision reason; otherwise "unauthenticated", "unavailable", "invalid_path"
	DecisionID string
	Message    string // why, for Unauthenticated, Unavailable and Invalid
	// AuthFailure is why the token was refused (jwtauth.FailureReasons).
	AuthFailure string
	Headers     map[string]string // added upstream when allowed
	// Revision is the revision token of the state answered from.
	Revision string
	// Tenant and Subject are the verified caller's (empty when the token
	// was refused).
	Tenant, Subject string
}

type checker struct {
	e   *decision.Engine
	api decision.API
	id  jwtauth.Identity
}

func (c checker) Seat(s decision.Principal, license string) (decision.Decision, error) {
	return c.e.Decide(c.api, &decision.Request{TenantID: c.id.Tenant, AppID: c.id.App, Subject: s, Check: decision.CheckSeat, License: license})
}

func (c checker) Entitled(s decision.Principal, asset, typ string) (decision.Decision, error) {
	return c.e.Decide(c.api, &decision.Request{TenantID: c.id.Tenant, AppID: c.id.App, Subject: s,
		Check: decision.CheckEntitlement, AssetID: asset, Type: typ})
}

// Check authorizes one proxied request.
func (a *Authorizer) Check(ctx context.Context, api decision.API, r Request) (res Result) {
	tok, err := jwtauth.BearerToken(r.Authorization)
	var id jwtauth.Identity
	defer func() { res.Tenant, res.Subject = id.Tenant, id.Subject }() // every answer past the token names the caller
	if err == nil {
		id, err = a.cfg.Verifier.Verify(ctx, tok)
	}
	if err != nil {
		return Result{Status: Unauthenticated, Reason: "unauthenticated", Message: strings.TrimPrefix(err.Error(), "unauthenticated: "),
			AuthFailure: jwtauth.FailureReason(err)}
	}
	pol := a.cfg.Policy()
	switch {
	case pol == nil || !a.cfg.Engine.Ready():
		return Result{Status: Unavailable, Reason: "unavailable", Message: "no state or policy loaded yet"}
	case !pol.HasRoute():
		return Result{Status: Unavailable, Reason: "unavailable", Message: "the policy defines no " + policy.RouteQuery}
	}
	segs, err := SplitPath(r.Path)
	if err != nil {
		return Result{Status: Invalid, Reason: "invalid_path", Message: err.Error()}
	}
	if r.MinRevision != "" {
		if res, ok := a.await(r.MinRevision); !ok {
			return res
		}
	}
	path := r.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	m, matched := a.cfg.Routes.Match(r.Method, segs, r.Header)
	if matched && m.Missing != "" {
		return Result{Status: Invalid, Reason: "invalid_request", Message: fmt.Sprintf("routes[%d] (%s): %s: the request holds no value for it", m.Index, m.Route.Path, m.Missing)}
	}
	if matched && m.Route.Checkout {
		if res, ok := a.checkout(ctx, id, m.License, r.ClientID); !ok {
			return res
		}
	}
	ch := checker{a.cfg.Engine, api, id}
	memo := a.memoFor(pol)
	var kb [256]byte
	var key []byte
	if memo != nil {
		key = memoKey(kb[:0], r.Method, path, id.Tenant, id.App, id.Subject, m.License, m.Type, m.Asset)
		out, ok, err := memo.replay(key, ch)
		if err != nil {
			return a.policyFailed(err, path)
		}
		if ok {
			return a.result(api, id, out)
		}
	}
	var pc policy.Checker = ch
	var rec *recorder
	if memo != nil {
		rec = &recorder{ch: ch}
		pc = rec
	}
	out, err := pol.Route(policy.WithChecker(ctx, pc), routeInput(r.Method, path, id, m, matched))
	if err != nil {
		return a.policyFailed(err, path)
	}
	if memo != nil {
		memo.record(key, rec.calls, out)
	}
	return a.result(api, id, out)
}

// routeInput is the route policy's input (rego/route.rego): the request,
// the verified caller and the matched route with its resolved values.
func routeInput(method, path string, id jwtauth.Identity, m Match, matched bool) ast.Value {
	items := [][2]*ast.Term{
		ast.Item(ast.StringTerm("method"), ast.StringTerm(method)),
		ast.Item(ast.StringTerm("path"), ast.StringTerm(path)),
		ast.Item(ast.StringTerm("tenant_id"), ast.StringTerm(id.Tenant)),
		ast.Item(ast.StringTerm("app_id"), ast.StringTerm(id.App)),
		ast.Item(ast.StringTerm("subject"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("id"), ast.StringTerm(id.Subject)),
			ast.Item(ast.StringTerm("type"), ast.StringTerm("person")))),
	}
	if matched {
		params := ast.NewObject()
		for k, v := range m.Params {
			params.Insert(ast.StringTerm(k), ast.StringTerm(v))
		}
		route := ast.NewObject(
			ast.Item(ast.StringTerm("index"), ast.IntNumberTerm(m.Index)),
			ast.Item(ast.StringTerm("method"), ast.StringTerm(m.Route.Method)),
			ast.Item(ast.StringTerm("path"), ast.StringTerm(m.Route.Path)),
			ast.Item(ast.StringTerm("params"), ast.NewTerm(params)),
		)
		if !m.Route.Seat.IsZero() {
			route.Insert(ast.StringTerm("seat"), ast.StringTerm(m.License))
		} else {
			route.Insert(ast.StringTerm("entitlement"), ast.StringTerm(m.Type))
			route.Insert(ast.StringTerm("asset_id"), ast.StringTerm(m.Asset))
		}
		items = append(items, ast.Item(ast.StringTerm("route"), ast.NewTerm(route)))
	}
	return ast.NewObject(items...)
}

func (a *Authorizer) policyFailed(err error, path string) Result {
	a.cfg.Logger.Error("route policy failed", "error", err, "path", path)
	return Result{Status: Unavailable, Reason: "unavailable", Message: fmt.Sprintf("route policy failed: %v", err)}
}

func (a *Authorizer) result(api decision.API, id jwtauth.Identity, out policy.RouteOutcome) Result {
	res := Result{Status: Denied, Reason: out.Reason.String(), DecisionID: out.DecisionID, Headers: out.Headers,
		Revision: a.cfg.Engine.Snapshot().TokenText()}
	if out.Allowed {
		res.Status = Allowed
	}
	if res.DecisionID == "" {
		d := a.cfg.Engine.NoRoute(api, id.Tenant)
		res.DecisionID = d.ID.String()
	}
	return res
}

// memoFor returns the route memo of pol, or nil when pol's answers cannot
// be reused (or the memo is off).
func (a *Authorizer) memoFor(pol *policy.Compiled) *routeMemo {
	if a.cfg.NoRouteMemo {
		return nil
	}
	if ok, _ := pol.RouteDeterministic(); !ok {
		return nil
	}
	m := a.memo.Load()
	if m != nil && m.pol == pol {
		return m
	}
	n := newRouteMemo(pol)
	if a.memo.CompareAndSwap(m, n) {
		return n
	}
	if m = a.memo.Load(); m != nil && m.pol == pol {
		return m
	}
	return n
}

// checkout makes sure the caller holds a lease of a floating license
// before its seat is decided: from memory when it holds one with more than
// half its duration left, else through Redis, then waiting for the
// sidecar's state to hold the lease. A license that is not floating, or a
// caller who may not check out, is left to the seat decision.
func (a *Authorizer) checkout(ctx context.Context, id jwtauth.Identity, license, client string) (Result, bool) {
	snap := a.cfg.Engine.Snapshot()
	t := snap.Tenant(id.Tenant)
	lic := t.VisibleLicense(license, id.App)
	if lic == nil || lic.Type != decision.Floating {
		return Result{}, true
	}
	now := decision.InstantOf(time.Now())
	if l := t.HeldLease(lic.ID, id.Subject, client, now); l != nil && l.ExpiresAt.Time().Sub(now.Time()) > l.Duration/2 {
		return Result{}, true
	}
	o, err := a.cfg.Engine.Evaluate(snap, &decision.Request{TenantID: id.Tenant, AppID: id.App,
		Subject: decision.Principal{Type: decision.Person, ID: id.Subject}, Check: decision.CheckSeat, License: lic.ID})
	if err != nil || o.Reason != decision.NotCheckedOut && o.Reason != decision.SeatLeased {
		return Result{}, true // not one who may check out: the seat decision says why
	}
	if a.cfg.Leases == nil {
		return Result{Status: Unavailable, Reason: "redis_unavailable", Message: "checkout: this sidecar follows no Redis, where floating seats are counted"}, false
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	granted, rev, err := a.cfg.Leases.CheckoutLease(rctx, id.Tenant, lic.ID, id.Subject, client)
	switch {
	case err != nil && o.Reason == decision.SeatLeased:
		return Result{}, true // the lease it holds still grants until it expires
	case err != nil:
		a.cfg.Logger.Warn("checkout failed", "error", err)
		return Result{Status: Unavailable, Reason: "redis_unavailable", Message: "checkout: the seat could not be counted in Redis: " + err.Error()}, false
	case !granted:
		return Result{}, true // no seat available: the seat decision denies not_checked_out
	}
	if _, err := a.cfg.Engine.Await(rev); err != nil {
		return Result{Status: Unavailable, Reason: "state_behind", Message: "checkout: the lease was granted but this sidecar has not applied it yet; retry"}, false
	}
	return Result{}, true
}

// await waits for the state to reach a min_revision header's token, or
// says why not.
func (a *Authorizer) await(text string) (Result, bool) {
	tok, err := decision.ParseToken(text)
	if err == nil {
		_, err = a.cfg.Engine.Await(tok)
	}
	switch {
	case err == nil:
		return Result{}, true
	case errors.Is(err, decision.ErrStateBehind):
		return Result{Status: Unavailable, Reason: "state_behind", Message: fmt.Sprintf("the state has not reached %s within the consistency wait (%s); this sidecar serves revision %s",
			MinRevisionHeader, a.cfg.Engine.ConsistencyWait(), a.cfg.Engine.Snapshot().TokenText())}, false
	}
	return Result{Status: Invalid, Reason: "invalid_request", Message: MinRevisionHeader + ": " + err.Error()}, false
}

// Header is one response header.
type Header struct{ Key, Value string }

// Reply is how both fronts answer a Result, the one encoding of it: the
// HTTP status Envoy returns (200: let the request through), the headers
// (upstream when allowed, to the client when not) and the JSON body of a
// refusal.
type Reply struct {
	Status  int
	Headers []Header
	Body    []byte
}

// ReasonHeader carries an answer's reason, allowed or not, for logs.
const ReasonHeader = "x-usher-reason"

// Reply encodes r.
func (r Result) Reply() Reply {
	if r.Status == Allowed {
		hs := make([]Header, 0, 3+len(r.Headers))
		hs = append(hs, Header{"x-usher-decision-id", r.DecisionID}, Header{"x-usher-revision", r.Revision}, Header{ReasonHeader, r.Reason})
		for k, v := range r.Headers {
			hs = append(hs, Header{k, v})
		}
		return Reply{Status: 200, Headers: hs}
	}
	hs := []Header{{"content-type", "application/json"}, {ReasonHeader, r.Reason}}
	switch r.Status {
	case Denied:
		b := []byte(`{"allowed":false,"reason":`)
		b = jsonw.String(b, r.Reason)
		b = append(b, `,"decision_id":`...)
		b = jsonw.String(b, r.DecisionID)
		b = append(b, `,"revision":`...)
		b = jsonw.String(b, r.Revision)
		return Reply{Status: 403, Headers: append(hs, Header{"x-usher-decision-id", r.DecisionID}, Header{"x-usher-revision", r.Revision}), Body: append(b, '}')}
	case Unauthenticated:
		return Reply{Status: 401, Headers: append(hs, Header{"www-authenticate", `Bearer realm="usher"`}), Body: jsonw.Error(nil, "unauthenticated", r.Message)}
	case Invalid:
		return Reply{Status: 400, Headers: hs, Body: jsonw.Error(nil, r.Reason, r.Message)}
	}
	if r.Reason == "state_behind" {
		return Reply{Status: 503, Headers: append(hs, Header{"retry-after", "1"}), Body: jsonw.Error(nil, r.Reason, r.Message)}
	}
	return Reply{Status: 503, Headers: hs, Body: jsonw.Error(nil, "unavailable", r.Message)}
}
