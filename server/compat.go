package server

// The DataRobot-compatible seat license allocation evaluate.

import (
	"crypto/sha1"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
)

func (s *Server) compat(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	req, err := ParseCompat(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
		return
	}
	if id.Tenant != "" && req.TenantID != id.Tenant {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", fmt.Sprintf("orgId: %q is outside the token's tenant %q", req.TenantID, id.Tenant))
		return
	}
	req.AppID = id.App
	d, err := s.cfg.Engine.Decide(decision.APICompat, &req)
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	snap := s.cfg.Engine.Snapshot() // at or after the decision's (after any min_revision wait)
	var lic *decision.License
	var t *decision.Tenant
	if d.LicenseID != "" {
		if t = snap.Tenant(req.TenantID); t != nil {
			lic = t.License(d.LicenseID)
		}
	}
	if d.Reason == decision.LicenseNotFound || lic == nil {
		writeError(ctx, fasthttp.StatusNotFound, "license_not_found",
			fmt.Sprintf("no seat license %q in org %q", req.License, req.TenantID))
		return
	}
	// The allocation's subjects are the persons the seat rules allow now:
	// reached directly or through groups, denials and the seat limit
	// applied, in seat rank order; currentAllocation counts them.
	holds := func(person string) bool {
		o, err := s.cfg.Engine.Evaluate(snap, &decision.Request{TenantID: req.TenantID, AppID: req.AppID,
			Subject: decision.Principal{Type: decision.Person, ID: person}, Check: decision.CheckSeat, License: lic.ID})
		return err == nil && o.Allowed
	}
	var holders []decision.SeatHolder
	for _, h := range t.Granted(lic.ID, req.AppID, decision.InstantOf(time.Now())) {
		if holds(h.Person) {
			holders = append(holders, h)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, appendAllocation(nil, d.Allowed, d.Token, t, lic, holders))
}

// AllocationID derives the stable allocation id of a tenant's license as a
// name-based (version 5 style) UUID.
func AllocationID(tenant, license string) string {
	h := sha1.Sum([]byte("usher-seat-allocation\x00" + tenant + "\x00" + license))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	const hex = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hex[h[i]>>4], hex[h[i]&0xf]
		j += 2
	}
	return string(out[:])
}

// appendAllocation appends the compatible answer: the allocation of a
// license and the persons holding its seats now (holders, in seat rank
// order: through groups too, overage included, the limit applied).
func appendAllocation(b []byte, allowed bool, revision string, t *decision.Tenant, l *decision.License, holders []decision.SeatHolder) []byte {
	limit := l.SeatLimit // -1: unlimited
	created, updated := l.CreatedAt, l.UpdatedAt
	if !created.Set() {
		created = 0
	}
	if !updated.Set() {
		updated = created
	}
	b = append(b, `{"allowed":`...)
	b = jsonw.Bool(b, allowed)
	b = append(b, `,"revision":`...)
	b = jsonw.String(b, revision)
	b = append(b, `,"seatLicenseAllocation":{"id":`...)
	b = jsonw.String(b, AllocationID(t.ID, l.ID))
	b = append(b, `,"orgId":`...)
	b = jsonw.String(b, t.ID)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, `,"currentAllocation":`...)
	b = strconv.AppendInt(b, int64(len(holders)), 10)
	b = append(b, `,"seatLicense":{"id":`...)
	b = jsonw.String(b, l.ID)
	b = append(b, `,"name":`...)
	b = jsonw.String(b, l.Name)
	b = append(b, `,"description":`...)
	b = jsonw.String(b, l.Description)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, `,"currentAllocation":`...)
	b = strconv.AppendInt(b, int64(len(holders)), 10)
	b = append(b, `,"createdAt":`...)
	b = created.AppendJSON(b)
	b = append(b, `},"subjects":[`...)
	for i, a := range holders {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"subjectId":`...)
		b = jsonw.String(b, a.Person)
		b = append(b, `,"subjectType":"user","createdAt":`...)
		ts := a.AssignedAt
		if !ts.Set() {
			ts = created
		}
		b = ts.AppendJSON(b)
		b = append(b, '}')
	}
	b = append(b, `],"createdAt":`...)
	b = created.AppendJSON(b)
	b = append(b, `,"updatedAt":`...)
	b = updated.AppendJSON(b)
	return append(b, "}}"...)
}
