package server

// What a subject holds, and who holds a seat or entitlement:
// POST /v1/holdings and POST /v1/holders.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
)

// Page sizes of the holdings reads.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

type holdBody struct {
	tenantID, appID, at, minRevision, kind, assetID string
	subject                                         evalSubject
	hasSubject, hasSeat, hasEnt                     bool
	seat                                            evalSeat
	ent                                             evalEntitlement
	limit                                           int64
	cursor                                          string
}

func readHoldBody(body []byte, holders bool) (holdBody, error) {
	var b holdBody
	if err := emptyBody(body, ""); err != nil {
		return b, err
	}
	r := newStrictReader(body, "")
	obj := func(field string, fields map[string]*string) (bool, error) {
		return r.object(field, func(key, field string) (bool, error) {
			if dst := fields[key]; dst != nil {
				return true, r.str(field, dst)
			}
			return false, nil
		})
	}
	err := r.body(func(key, field string) (bool, error) {
		var err error
		switch {
		case key == "tenant_id":
			return true, r.str(field, &b.tenantID)
		case key == "app_id":
			return true, r.str(field, &b.appID)
		case key == "at":
			return true, r.str(field, &b.at)
		case key == "min_revision":
			return true, r.str(field, &b.minRevision)
		case key == "page":
			_, err = r.object(field, func(key, field string) (bool, error) {
				switch key {
				case "limit":
					return true, r.integer(field, &b.limit)
				case "cursor":
					return true, r.str(field, &b.cursor)
				}
				return false, nil
			})
			return true, err
		case !holders && key == "subject":
			b.hasSubject, err = obj(field, map[string]*string{"id": &b.subject.ID, "type": &b.subject.Type})
			return true, err
		case !holders && key == "kind":
			return true, r.str(field, &b.kind)
		case !holders && key == "asset_id":
			return true, r.str(field, &b.assetID)
		case holders && key == "seat":
			b.hasSeat, err = obj(field, map[string]*string{"license": &b.seat.License})
			return true, err
		case holders && key == "entitlement":
			b.hasEnt, err = obj(field, map[string]*string{"asset_id": &b.ent.AssetID, "type": &b.ent.Type})
			return true, err
		}
		return false, nil
	})
	return b, err
}

// request validates what the body asks into a decision request.
func (b *holdBody) request(holders bool) (decision.Request, error) {
	var errs []error
	fail := func(field, rule string) { errs = append(errs, &RequestError{field, rule}) }
	// The evaluate rules for the fields the two bodies share.
	f := fastBody{tenantID: b.tenantID, appID: b.appID, at: b.at, minRevision: b.minRevision, hasSubject: true, subject: evalSubject{ID: "-"}, hasSeat: true, seat: evalSeat{License: "-"}}
	if !holders {
		f.hasSubject, f.subject = b.hasSubject, b.subject
		switch b.kind {
		case "seat":
		case "entitlement":
			f.hasSeat, f.hasEnt, f.ent = false, true, evalEntitlement{AssetID: "-", Type: "-"}
		case "":
			fail("kind", "is required: seat or entitlement")
		default:
			fail("kind", "must be seat or entitlement, got "+decision.Quote(b.kind))
		}
		if b.assetID != "" && b.kind == "seat" {
			fail("asset_id", "only applies to kind entitlement")
		}
	} else {
		f.hasSeat, f.seat, f.hasEnt, f.ent = b.hasSeat, b.seat, b.hasEnt, b.ent
	}
	var r decision.Request
	if err := f.request("", &r); err != nil {
		errs = append(errs, err)
	}
	if b.limit < 0 || b.limit > MaxPageLimit {
		fail("page.limit", fmt.Sprintf("must be from 1 to %d (0 or absent: %d), got %d", MaxPageLimit, DefaultPageLimit, b.limit))
	}
	if len(errs) > 0 {
		return r, join(errs)
	}
	return r, nil
}

type cursor struct {
	Revision string `json:"r"`
	After    string `json:"a"`
}

func (s *Server) holdings(ctx *fasthttp.RequestCtx, holders bool) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	b, err := readHoldBody(ctx.PostBody(), holders)
	if err == nil && b.tenantID == "" {
		b.tenantID = id.Tenant
	}
	var req decision.Request
	if err == nil {
		req, err = b.request(holders)
	}
	var after cursor
	if err == nil && b.cursor != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(b.cursor)
		if derr != nil || json.Unmarshal(raw, &after) != nil || after.After == "" {
			err = &RequestError{"page.cursor", "not a cursor (use the next_cursor of the page before, as it was given)"}
		}
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
		return
	}
	if err := scope(id, &req, ""); err != nil {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", err.Error())
		return
	}
	if !s.await(ctx, req.MinRevision) {
		return
	}
	e := s.cfg.Engine
	snap := e.Snapshot()
	if snap == nil || e.Policy() == nil {
		s.engineError(ctx, readinessError(e))
		return
	}
	if !req.At.Set() {
		req.At = decision.InstantOf(ctx.Time())
	}
	key := func(h decision.Holding) string {
		switch {
		case holders:
			return h.Person
		case b.kind == "seat":
			return h.LicenseID
		}
		return h.AssetID + "\x00" + h.Type
	}
	limit := int(b.limit)
	if limit == 0 {
		limit = DefaultPageLimit
	}
	var page []decision.Holding
	var more bool
	total := -1
	if holders {
		// Paged as it is evaluated: a page costs its own persons, not the group's.
		page, more, err = e.Holders(snap, req, after.After, limit)
	} else {
		var list []decision.Holding
		if b.kind == "seat" {
			list, err = e.SeatHoldings(snap, req)
		} else {
			list, err = e.EntitlementHoldings(snap, req, b.assetID)
		}
		start := 0
		for start < len(list) && after.After != "" && key(list[start]) <= after.After {
			start++
		}
		page, more, total = list[start:min(len(list), start+limit)], start+limit < len(list), len(list)
	}
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	name := "holdings"
	if holders {
		name = "holders"
	}
	out := append([]byte(`{"`), name...)
	out = append(out, `":[`...)
	for i, h := range page {
		if i > 0 {
			out = append(out, ',')
		}
		switch {
		case holders:
			out = append(out, `{"id":`...)
			out = jsonw.String(out, h.Person)
		case b.kind == "seat":
			out = append(out, `{"license_id":`...)
			out = jsonw.String(out, h.LicenseID)
			out = append(out, `,"name":`...)
			out = jsonw.String(out, h.LicenseName)
		default:
			out = append(out, `{"asset_id":`...)
			out = jsonw.String(out, h.AssetID)
			out = append(out, `,"type":`...)
			out = jsonw.String(out, h.Type)
		}
		out = append(out, `,"reason":`...)
		out = jsonw.String(out, h.Reason.String())
		out = append(out, `,"grant":{"id":`...)
		out = jsonw.String(out, h.Grant.ID)
		out = append(out, `,"via_group":`...)
		out = jsonw.NullString(out, h.Grant.ViaGroup)
		if h.Grant.OverLimit {
			out = append(out, `,"over_limit":true`...)
		}
		out = append(out, `},"expires_at":`...)
		out = h.ExpiresAt.AppendJSON(out)
		out = append(out, '}')
	}
	out = append(out, `],"next_cursor":`...)
	rev := snap.TokenText()
	if more && len(page) > 0 {
		c, _ := json.Marshal(cursor{Revision: rev, After: key(page[len(page)-1])})
		out = jsonw.String(out, base64.RawURLEncoding.EncodeToString(c))
	} else {
		out = append(out, "null"...)
	}
	out = append(out, `,"revision_changed":`...)
	out = jsonw.Bool(out, after.Revision != "" && after.Revision != rev)
	if total >= 0 {
		out = append(out, `,"total":`...)
		out = strconv.AppendInt(out, int64(total), 10)
	}
	out = append(out, `,"revision":`...)
	out = jsonw.String(out, rev)
	writeJSON(ctx, fasthttp.StatusOK, append(out, '}'))
}
