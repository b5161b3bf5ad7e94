package server

// The DataRobot-compatible seat license allocation evaluate.

import (
	"crypto/sha1"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	writeJSON(ctx, fasthttp.StatusOK, appendAllocation(nil, d.Allowed, d.Token, t, lic, s.allocationHolders(snap, t, lic, req.AppID)))
}

// allocationHolders are an allocation's subjects: the persons the seat
// rules allow now, reached directly or through groups, denials and the
// seat limit applied, in seat rank order; currentAllocation counts them.
func (s *Server) allocationHolders(snap *decision.Snapshot, t *decision.Tenant, lic *decision.License, app string) []decision.SeatHolder {
	var holders []decision.SeatHolder
	for _, h := range t.Granted(lic.ID, app, decision.InstantOf(time.Now())) {
		o, err := s.cfg.Engine.Evaluate(snap, &decision.Request{TenantID: t.ID, AppID: app,
			Subject: decision.Principal{Type: decision.Person, ID: h.Person}, Check: decision.CheckSeat, License: lic.ID})
		if err == nil && o.Allowed {
			holders = append(holders, h)
		}
	}
	return holders
}

// LicenseUUID is the stable id the DataRobot-compatible answers give a
// tenant's license (their schema wants 32 to 36 characters).
func LicenseUUID(tenant, license string) string {
	return nameUUID("usher-seat-license", tenant, license)
}

// AllocationID derives the stable allocation id of a tenant's license as a
// name-based (version 5 style) UUID.
func AllocationID(tenant, license string) string {
	return nameUUID("usher-seat-allocation", tenant, license)
}

func nameUUID(space, tenant, license string) string {
	h := sha1.Sum([]byte(space + "\x00" + tenant + "\x00" + license))
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
// appendAllocation appends the compatible evaluate answer.
func appendAllocation(b []byte, allowed bool, revision string, t *decision.Tenant, l *decision.License, holders []decision.SeatHolder) []byte {
	b = append(b, `{"allowed":`...)
	b = jsonw.Bool(b, allowed)
	b = append(b, `,"revision":`...)
	b = jsonw.String(b, revision)
	b = append(b, `,"seatLicenseAllocation":`...)
	b = appendAllocationObject(b, t, l, holders)
	return append(b, '}')
}

// maxSubjects is the most subjects an allocation lists (the schema's
// maxItems); currentAllocation still counts them all.
const maxSubjects = 1000

// appendAllocationObject appends one DataRobot seat license allocation:
// the license and the persons holding its seats now (holders, in seat rank
// order). Its limit is -1 when the license is unlimited (the schema wants
// an integer there); the seat license's own limit and currentAllocation
// are null then, as its schema says.
func appendAllocationObject(b []byte, t *decision.Tenant, l *decision.License, holders []decision.SeatHolder) []byte {
	limit := l.SeatLimit // -1: unlimited
	created, updated := l.CreatedAt, l.UpdatedAt
	if !created.Set() {
		created = decision.InstantOf(time.Unix(0, 0)) // the schema requires a date
	}
	if !updated.Set() {
		updated = created
	}
	b = append(b, `{"id":`...)
	b = jsonw.String(b, AllocationID(t.ID, l.ID))
	b = append(b, `,"orgId":`...)
	b = jsonw.String(b, t.ID)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, `,"currentAllocation":`...)
	b = strconv.AppendInt(b, int64(len(holders)), 10)
	b = append(b, `,"seatLicense":{"id":`...)
	b = jsonw.String(b, LicenseUUID(t.ID, l.ID))
	b = append(b, `,"licenseId":`...)
	b = jsonw.String(b, l.ID)
	b = append(b, `,"name":`...)
	b = jsonw.String(b, l.Name)
	b = append(b, `,"description":`...)
	b = jsonw.String(b, l.Description)
	b = append(b, `,"limit":`...)
	if limit < 0 {
		b = append(b, `null,"currentAllocation":null`...)
	} else {
		b = strconv.AppendInt(b, limit, 10)
		b = append(b, `,"currentAllocation":`...)
		b = strconv.AppendInt(b, int64(len(holders)), 10)
	}
	b = append(b, `,"createdAt":`...)
	b = created.AppendJSON(b)
	b = append(b, `},"subjects":[`...)
	for i, a := range holders[:min(len(holders), maxSubjects)] {
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
	return append(b, '}')
}

// maxAllocationsPage is the most allocations a list page holds (the
// schema's maxItems), and its default.
const maxAllocationsPage = 100

// allocations answers GET /api/v2/seatLicenseAllocations/ (a list, with
// orgId, seatLicenseIds, subjectIds, ids, offset, limit) and
// GET /api/v2/seatLicenseAllocations/{allocationId}/ from memory.
func (s *Server) allocations(ctx *fasthttp.RequestCtx, allocationID string) {
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	snap := s.cfg.Engine.Snapshot()
	if snap == nil || s.cfg.Engine.Policy() == nil {
		s.engineError(ctx, readinessError(s.cfg.Engine))
		return
	}
	args := ctx.QueryArgs()
	list := func(name string) []string {
		var out []string
		for _, v := range args.PeekMulti(name) {
			for _, x := range strings.Split(string(v), ",") {
				if x = strings.TrimSpace(x); x != "" {
					out = append(out, x)
				}
			}
		}
		return out
	}
	num := func(name string, def, most int) (int, bool) {
		v := string(args.Peek(name))
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > most {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", fmt.Sprintf("%s: must be a whole number from 0 to %d, got %s", name, most, decision.Quote(v)))
			return 0, false
		}
		return n, true
	}
	org := string(args.Peek("orgId"))
	if id.Tenant != "" {
		if org != "" && org != id.Tenant {
			writeError(ctx, fasthttp.StatusForbidden, "forbidden", fmt.Sprintf("orgId: %q is outside the token's tenant %q", org, id.Tenant))
			return
		}
		org = id.Tenant
	}
	type item struct {
		t *decision.Tenant
		l *decision.License
	}
	var items []item
	tenants := snap.TenantIDs()
	if org != "" {
		tenants = []string{org}
	}
	slices.Sort(tenants)
	licenses, subjects, ids := list("seatLicenseIds"), list("subjectIds"), list("ids")
	if allocationID != "" {
		ids = []string{allocationID}
	}
	for _, tid := range tenants {
		t := snap.Tenant(tid)
		if t == nil {
			continue
		}
		for _, l := range t.Licenses {
			if !l.VisibleTo(id.App) {
				continue
			}
			if len(licenses) > 0 && !slices.Contains(licenses, l.ID) && !slices.Contains(licenses, LicenseUUID(tid, l.ID)) {
				continue
			}
			if len(ids) > 0 && !slices.Contains(ids, AllocationID(tid, l.ID)) {
				continue
			}
			items = append(items, item{t, l})
		}
	}
	holdersOf := func(it item) []decision.SeatHolder { return s.allocationHolders(snap, it.t, it.l, id.App) }
	if len(subjects) > 0 {
		var keep []item
		for _, it := range items {
			if slices.ContainsFunc(holdersOf(it), func(h decision.SeatHolder) bool { return slices.Contains(subjects, h.Person) }) {
				keep = append(keep, it)
			}
		}
		items = keep
	}
	if allocationID != "" {
		if len(items) == 0 {
			writeError(ctx, fasthttp.StatusNotFound, "not_found", "no seat license allocation "+decision.Quote(allocationID))
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, appendAllocationObject(nil, items[0].t, items[0].l, holdersOf(items[0])))
		return
	}
	offset, ok := num("offset", 0, 1<<30)
	if !ok {
		return
	}
	limit, ok := num("limit", maxAllocationsPage, maxAllocationsPage)
	if !ok {
		return
	}
	if limit == 0 {
		limit = maxAllocationsPage
	}
	page := items[min(offset, len(items)):min(offset+limit, len(items))]
	out := []byte(`{"count":`)
	out = strconv.AppendInt(out, int64(len(page)), 10)
	out = append(out, `,"data":[`...)
	for i, it := range page {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendAllocationObject(out, it.t, it.l, holdersOf(it))
	}
	link := func(off int) []byte {
		q := fasthttp.AcquireArgs()
		defer fasthttp.ReleaseArgs(q)
		args.CopyTo(q)
		q.Set("offset", strconv.Itoa(off))
		q.Set("limit", strconv.Itoa(limit))
		return jsonw.String(nil, "/api/v2/seatLicenseAllocations/?"+q.String())
	}
	out = append(out, `],"next":`...)
	if offset+limit < len(items) {
		out = append(out, link(offset+limit)...)
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"previous":`...)
	if offset > 0 {
		out = append(out, link(max(0, offset-limit))...)
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"totalCount":`...)
	out = strconv.AppendInt(out, int64(len(items)), 10)
	out = append(out, `,"revision":`...)
	out = jsonw.String(out, snap.TokenText())
	writeJSON(ctx, fasthttp.StatusOK, append(out, '}'))
}
