package server

// The floating-seat endpoints: /v1/leases/checkout, heartbeat, release,
// and GET /v1/leases.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
	statesync "github.com/usher-authz/usher/sync"
)

// LeaseStore takes, renews and ends leases in Redis (statesync.Writer).
type LeaseStore interface {
	Checkout(ctx context.Context, tenant, license, subject, client string, d time.Duration) (statesync.LeaseResult, error)
	// Heartbeat's license, when not "", is the lease's as the snapshot
	// knows it (it saves a round trip).
	Heartbeat(ctx context.Context, tenant, license, leaseID string) (statesync.LeaseResult, error)
	Release(ctx context.Context, tenant, leaseID string) (statesync.LeaseResult, error)
}

// leaseTimeout bounds a lease operation's round trip to Redis.
const leaseTimeout = 2 * time.Second

type leaseBody struct {
	tenantID, subject, subjectType, license, clientID, leaseID string
	hasSubject, hasSeat                                        bool
	durationS                                                  int64
}

// readLeaseBody decodes a lease request with exact keys; op says which
// keys it takes.
func readLeaseBody(body []byte, op string) (leaseBody, error) {
	var b leaseBody
	if err := emptyBody(body, ""); err != nil {
		return b, err
	}
	r := newStrictReader(body, "")
	err := r.body(func(key, field string) (bool, error) {
		switch {
		case key == "tenant_id":
			return true, r.str(field, &b.tenantID)
		case key == "lease_id" && op != "checkout":
			return true, r.str(field, &b.leaseID)
		case key == "client_id" && op == "checkout":
			return true, r.str(field, &b.clientID)
		case key == "duration_s" && op == "checkout":
			return true, r.integer(field, &b.durationS)
		case key == "subject" && op == "checkout":
			var err error
			b.hasSubject, err = r.object(field, func(key, field string) (bool, error) {
				switch key {
				case "id":
					return true, r.str(field, &b.subject)
				case "type":
					return true, r.str(field, &b.subjectType)
				}
				return false, nil
			})
			return true, err
		case key == "seat" && op == "checkout":
			var err error
			b.hasSeat, err = r.object(field, func(key, field string) (bool, error) {
				if key == "license" {
					return true, r.str(field, &b.license)
				}
				return false, nil
			})
			return true, err
		}
		return false, nil
	})
	if err != nil {
		return b, err
	}
	var errs []error
	fail := func(field, rule string) { errs = append(errs, &RequestError{field, rule}) }
	if b.tenantID == "" {
		fail("tenant_id", "is required")
	}
	if op == "checkout" {
		switch {
		case !b.hasSubject || b.subject == "":
			fail("subject.id", "is required")
		case b.subjectType != "" && b.subjectType != "person" && b.subjectType != "user":
			fail("subject.type", "must be person (user means person): a lease is a person's, got "+decision.Quote(b.subjectType))
		}
		if !b.hasSeat || b.license == "" {
			fail("seat.license", "is required")
		}
		if b.durationS < 0 || time.Duration(b.durationS)*time.Second > statesync.MaxLeaseDuration {
			fail("duration_s", fmt.Sprintf("must be from 1 to %d seconds (0 or absent: the license's lease_duration_s), got %d",
				int64(statesync.MaxLeaseDuration/time.Second), b.durationS))
		}
	} else if b.leaseID == "" {
		fail("lease_id", "is required")
	}
	for _, f := range [...]struct{ field, v string }{{"tenant_id", b.tenantID}, {"subject.id", b.subject}, {"seat.license", b.license},
		{"client_id", b.clientID}, {"lease_id", b.leaseID}} {
		if len(f.v) > decision.MaxIDLen {
			fail(f.field, fmt.Sprintf("must be at most %d bytes, got %d", decision.MaxIDLen, len(f.v)))
		}
	}
	if len(errs) > 0 {
		return b, join(errs)
	}
	return b, nil
}

func (s *Server) leaseOp(ctx *fasthttp.RequestCtx, op string) {
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	b, err := readLeaseBody(ctx.PostBody(), op)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
		return
	}
	if id.Tenant != "" && b.tenantID != id.Tenant {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", fmt.Sprintf("tenant_id: %s is outside the token's tenant %s", decision.Quote(b.tenantID), decision.Quote(id.Tenant)))
		return
	}
	if s.cfg.Leases == nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "redis_unavailable", "this sidecar follows no Redis (a file or the demo): leases are counted in Redis only; run it with --redis-url")
		return
	}
	rctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	switch op {
	case "checkout":
		s.checkout(ctx, rctx, b, id.App)
	case "heartbeat":
		license := ""
		if snap := s.cfg.Engine.Snapshot(); snap != nil {
			license = snap.Tenant(b.tenantID).LeaseLicense(b.leaseID)
		}
		res, err := s.cfg.Leases.Heartbeat(rctx, b.tenantID, license, b.leaseID)
		if !s.leaseErr(ctx, err) {
			s.leaseReply(ctx, res, false)
		}
	case "release":
		res, err := s.cfg.Leases.Release(rctx, b.tenantID, b.leaseID)
		if !s.leaseErr(ctx, err) {
			out := []byte(`{"released":`)
			out = jsonw.Bool(out, res.Status == statesync.LeaseReleased)
			out = append(out, `,"revision":`...)
			out = jsonw.String(out, res.Revision.String())
			writeJSON(ctx, fasthttp.StatusOK, append(out, '}'))
		}
	}
}

// checkout decides from memory whether the subject may check out, and
// goes to Redis only then.
func (s *Server) checkout(ctx *fasthttp.RequestCtx, rctx context.Context, b leaseBody, app string) {
	snap := s.cfg.Engine.Snapshot()
	if snap == nil {
		s.engineError(ctx, decision.ErrNoState)
		return
	}
	t := snap.Tenant(b.tenantID)
	lic := t.VisibleLicense(b.license, app)
	if lic != nil && lic.Type != decision.Floating {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", fmt.Sprintf("seat.license: %s is a named license: its seats are assignments, not leases", decision.Quote(b.license)))
		return
	}
	req := decision.Request{TenantID: b.tenantID, AppID: app, Subject: decision.Principal{Type: decision.Person, ID: b.subject},
		Check: decision.CheckSeat, License: b.license}
	o, err := s.cfg.Engine.Evaluate(snap, &req)
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	if o.Reason != decision.SeatLeased && o.Reason != decision.NotCheckedOut {
		// Not a subject who may check out (or one holding a reserved seat,
		// which needs no lease): the seat decision says why.
		out := []byte(`{"granted":`)
		out = jsonw.Bool(out, o.Allowed)
		out = append(out, `,"reason":`...)
		out = jsonw.String(out, o.Reason.String())
		if lic != nil {
			out = appendSeats(out, t.FloatingInUse(lic.ID, decision.InstantOf(time.Now())), lic)
		}
		out = append(out, `,"revision":`...)
		out = jsonw.String(out, snap.TokenText())
		writeJSON(ctx, fasthttp.StatusOK, append(out, '}'))
		return
	}
	res, err := s.cfg.Leases.Checkout(rctx, b.tenantID, lic.ID, b.subject, b.clientID, time.Duration(b.durationS)*time.Second)
	if !s.leaseErr(ctx, err) {
		s.leaseReply(ctx, res, true)
	}
}

func appendSeats(b []byte, inUse int64, l *decision.License) []byte {
	b = append(b, `,"seats":{"limit":`...)
	if l.SeatLimit < 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, l.SeatLimit+l.SeatOverage, 10)
	}
	b = append(b, `,"in_use":`...)
	b = strconv.AppendInt(b, inUse, 10)
	return append(b, '}')
}

// leaseErr answers a failed Redis round trip: 503 redis_unavailable, since
// a seat cannot be counted anywhere else.
func (s *Server) leaseErr(ctx *fasthttp.RequestCtx, err error) bool {
	if err == nil {
		return false
	}
	s.cfg.Logger.Warn("lease operation failed", "error", err)
	ctx.Response.Header.Set("Retry-After", "1")
	writeError(ctx, fasthttp.StatusServiceUnavailable, "redis_unavailable", "the lease could not be counted in Redis: "+err.Error())
	return true
}

func (s *Server) leaseReply(ctx *fasthttp.RequestCtx, res statesync.LeaseResult, checkout bool) {
	switch res.Status {
	case statesync.LeaseNotFound:
		writeError(ctx, fasthttp.StatusNotFound, "lease_not_found", "no such lease in this tenant")
		return
	case statesync.LeaseExpired:
		writeError(ctx, fasthttp.StatusConflict, "lease_expired", "the lease expired before this heartbeat: check out again")
		return
	}
	var out []byte
	if checkout {
		granted := res.Status == statesync.LeaseGranted || res.Status == statesync.LeaseRenewed
		out = append(out, `{"granted":`...)
		out = jsonw.Bool(out, granted)
		if !granted {
			out = append(out, `,"reason":`...)
			out = jsonw.String(out, res.Status)
		}
	} else {
		out = append(out, '{')
	}
	if res.Lease != nil {
		if checkout {
			out = append(out, ',')
		}
		out = append(out, `"lease":`...)
		out = appendLease(out, res.Lease)
	}
	if checkout {
		out = append(out, `,"seats":{"limit":`...)
		if res.Seats.Limit < 0 {
			out = append(out, "null"...)
		} else {
			out = strconv.AppendInt(out, res.Seats.Limit, 10)
		}
		out = append(out, `,"in_use":`...)
		out = strconv.AppendInt(out, res.Seats.InUse, 10)
		out = append(out, '}')
	}
	out = append(out, `,"revision":`...)
	out = jsonw.String(out, res.Revision.String())
	writeJSON(ctx, fasthttp.StatusOK, append(out, '}'))
}

func appendLease(b []byte, l *statesync.Lease) []byte {
	b = append(b, `{"id":`...)
	b = jsonw.String(b, l.ID)
	b = append(b, `,"license_id":`...)
	b = jsonw.String(b, l.LicenseID)
	b = append(b, `,"subject":`...)
	b = jsonw.String(b, l.Subject)
	b = append(b, `,"client_id":`...)
	b = jsonw.String(b, l.ClientID)
	b = append(b, `,"duration_s":`...)
	b = strconv.AppendInt(b, l.Duration, 10)
	b = append(b, `,"granted_at":`...)
	b = decision.InstantOf(l.GrantedAt).AppendJSON(b)
	b = append(b, `,"expires_at":`...)
	b = decision.InstantOf(l.ExpiresAt).AppendJSON(b)
	return append(b, '}')
}

// listLeases answers GET /v1/leases?tenant_id=T&license=L from memory:
// the license's live leases by expiry.
func (s *Server) listLeases(ctx *fasthttp.RequestCtx) {
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	args := ctx.QueryArgs()
	tenant, license := string(args.Peek("tenant_id")), string(args.Peek("license"))
	if tenant == "" && id.Tenant != "" {
		tenant = id.Tenant
	}
	switch {
	case tenant == "":
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", "tenant_id: is required (a query parameter)")
		return
	case license == "":
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", "license: is required (a query parameter: a license id or name)")
		return
	case id.Tenant != "" && tenant != id.Tenant:
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", fmt.Sprintf("tenant_id: %s is outside the token's tenant %s", decision.Quote(tenant), decision.Quote(id.Tenant)))
		return
	}
	if raw := args.Peek("min_revision"); len(raw) > 0 {
		tok, err := decision.ParseToken(string(raw))
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", "min_revision: "+err.Error())
			return
		}
		if !s.await(ctx, tok) {
			return
		}
	}
	snap := s.cfg.Engine.Snapshot()
	if snap == nil {
		s.engineError(ctx, decision.ErrNoState)
		return
	}
	t := snap.Tenant(tenant)
	lic := t.VisibleLicense(license, id.App)
	if lic == nil {
		writeError(ctx, fasthttp.StatusNotFound, "license_not_found", fmt.Sprintf("no license %s in tenant %s", decision.Quote(license), decision.Quote(tenant)))
		return
	}
	now := decision.InstantOf(time.Now())
	var live []decision.Lease
	for _, l := range t.Leases(lic.ID) {
		if l.GrantedAt <= now && now < l.ExpiresAt {
			live = append(live, l)
		}
	}
	sort.Slice(live, func(i, j int) bool {
		if live[i].ExpiresAt != live[j].ExpiresAt {
			return live[i].ExpiresAt < live[j].ExpiresAt
		}
		return live[i].ID < live[j].ID
	})
	out := []byte(`{"license_id":`)
	out = jsonw.String(out, lic.ID)
	out = append(out, `,"leases":[`...)
	for i, l := range live {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"id":`...)
		out = jsonw.String(out, l.ID)
		out = append(out, `,"subject":`...)
		out = jsonw.String(out, l.Subject)
		out = append(out, `,"client_id":`...)
		out = jsonw.String(out, l.ClientID)
		out = append(out, `,"granted_at":`...)
		out = l.GrantedAt.AppendJSON(out)
		out = append(out, `,"expires_at":`...)
		out = l.ExpiresAt.AppendJSON(out)
		out = append(out, '}')
	}
	out = append(out, `],"revision":`...)
	out = jsonw.String(out, snap.TokenText())
	writeJSON(ctx, fasthttp.StatusOK, append(out, '}'))
}
