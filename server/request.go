package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/usher-authz/usher/decision"
)

// RequestError is a client mistake in a request body; Field names the
// offending field (dotted path) and the message says which rule it broke.
type RequestError struct {
	Field, Rule string
}

func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Rule
	}
	return e.Field + ": " + e.Rule
}

type evalSubject struct{ ID, Type string }

type evalSeat struct{ License string }

type evalEntitlement struct{ AssetID, Type string }

// ParseEvaluate parses and validates one evaluate body (docs/api.md). The
// returned request does not refer to body.
func ParseEvaluate(body []byte) (decision.Request, error) {
	var r decision.Request
	err := parseEvaluateSlow(body, "", "", &r)
	return r, err
}

func parseEvaluateSlow(body []byte, prefix, tenant string, r *decision.Request) error {
	f, err := readEvaluate(body, prefix)
	if err != nil {
		return err
	}
	if f.tenantID == "" {
		f.tenantID = tenant
	}
	return f.request(prefix, r)
}

// readEvaluate decodes an evaluate body with exact keys (strictReader).
func readEvaluate(body []byte, prefix string) (fastBody, error) {
	var f fastBody
	if err := emptyBody(body, prefix); err != nil {
		return f, err
	}
	r := newStrictReader(body, prefix)
	err := r.body(func(key, field string) (bool, error) {
		switch key {
		case "tenant_id":
			return true, r.str(field, &f.tenantID)
		case "app_id":
			return true, r.str(field, &f.appID)
		case "at":
			return true, r.str(field, &f.at)
		case "min_revision":
			return true, r.str(field, &f.minRevision)
		case "subject":
			var err error
			f.hasSubject, err = r.object(field, func(key, field string) (bool, error) {
				switch key {
				case "id":
					return true, r.str(field, &f.subject.ID)
				case "type":
					return true, r.str(field, &f.subject.Type)
				}
				return false, nil
			})
			return true, err
		case "seat":
			var err error
			f.hasSeat, err = r.object(field, func(key, field string) (bool, error) {
				if key == "license" {
					return true, r.str(field, &f.seat.License)
				}
				return false, nil
			})
			return true, err
		case "entitlement":
			var err error
			f.hasEnt, err = r.object(field, func(key, field string) (bool, error) {
				switch key {
				case "asset_id":
					return true, r.str(field, &f.ent.AssetID)
				case "type":
					return true, r.str(field, &f.ent.Type)
				}
				return false, nil
			})
			return true, err
		}
		return false, nil
	})
	return f, err
}

// request validates the decoded body into r; field names in errors get
// prefix (e.g. "checks[3].").
func (b *fastBody) request(prefix string, out *decision.Request) error {
	var errs []error
	fail := func(field, rule string) { errs = append(errs, &RequestError{prefix + field, rule}) }
	r := decision.Request{TenantID: b.tenantID, AppID: b.appID}
	if b.tenantID == "" {
		fail("tenant_id", "is required")
	}
	// Ids get the bound ids in the state have: no request makes the
	// decision cache hold more than a small key.
	for _, id := range [...]struct{ field, v string }{{"tenant_id", b.tenantID}, {"app_id", b.appID},
		{"subject.id", b.subject.ID}, {"subject.type", b.subject.Type}, {"seat.license", b.seat.License},
		{"entitlement.asset_id", b.ent.AssetID}, {"entitlement.type", b.ent.Type}, {"at", b.at}} {
		if len(id.v) > decision.MaxIDLen {
			fail(id.field, fmt.Sprintf("must be at most %d bytes, got %d", decision.MaxIDLen, len(id.v)))
		}
	}
	if !b.hasSubject {
		fail("subject", "is required")
	} else {
		if b.subject.ID == "" {
			fail("subject.id", "is required")
		}
		pt, ok := decision.ParsePrincipalType(b.subject.Type)
		if !ok {
			fail("subject.type", "must be person or group (user means person), got "+decision.Quote(b.subject.Type))
		}
		r.Subject = decision.Principal{Type: pt, ID: b.subject.ID}
	}
	switch {
	case b.hasSeat && b.hasEnt:
		fail("seat", "exactly one of seat and entitlement is allowed, got both")
	case b.hasSeat:
		r.Check, r.License = decision.CheckSeat, b.seat.License
		if b.seat.License == "" {
			fail("seat.license", "is required")
		}
	case b.hasEnt:
		r.Check, r.AssetID, r.Type = decision.CheckEntitlement, b.ent.AssetID, b.ent.Type
		if b.ent.AssetID == "" {
			fail("entitlement.asset_id", "is required")
		}
		if b.ent.Type == "" {
			fail("entitlement.type", "is required")
		}
	default:
		fail("seat", "exactly one of seat and entitlement is required")
	}
	if b.at != "" {
		at, err := decision.ParseInstant(b.at)
		if err != nil {
			fail("at", err.Error())
		}
		r.At = at
	}
	if b.minRevision != "" {
		t, err := decision.ParseToken(b.minRevision)
		if err != nil {
			fail("min_revision", err.Error())
		}
		r.MinRevision = t
	}
	if len(errs) > 0 {
		return join(errs)
	}
	*out = r
	return nil
}

// join keeps a single RequestError as is, so callers can inspect it.
func join(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// whole names the whole body ("body") or the whole batch slot ("checks[3]").
func whole(prefix string) string {
	if prefix == "" {
		return "body"
	}
	return strings.TrimSuffix(prefix, ".")
}

// readBatch decodes a batch body's checks with exact keys.
func readBatch(body []byte) ([][]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &RequestError{"body", "must be a JSON object, got nothing"}
	}
	r := newStrictReader(body, "")
	var checks [][]byte
	var hasChecks bool
	present, err := r.object("", func(key, field string) (bool, error) {
		if key != "checks" {
			return false, nil
		}
		var err error
		checks = [][]byte{}
		hasChecks, err = r.array(field, func(raw json.RawMessage) { checks = append(checks, raw) })
		return true, err
	})
	switch {
	case err != nil:
		return nil, err
	case !present:
		return nil, &RequestError{"body", "must be a JSON object, got JSON null"}
	case !hasChecks:
		return nil, &RequestError{"checks", "is required"}
	}
	return checks, r.end()
}

// ParseCompat parses the DataRobot-compatible seat evaluate body.
func ParseCompat(body []byte) (decision.Request, error) {
	if err := emptyBody(body, ""); err != nil {
		return decision.Request{}, err
	}
	var orgID, seatName, subjectID, subjectType, minRevision string
	r := newStrictReader(body, "")
	err := r.body(func(key, field string) (bool, error) {
		dst := map[string]*string{"orgId": &orgID, "seatName": &seatName, "subjectId": &subjectID, "subjectType": &subjectType, "min_revision": &minRevision}[key]
		if dst == nil {
			return false, nil
		}
		return true, r.str(field, dst)
	})
	if err != nil {
		return decision.Request{}, err
	}
	var errs []error
	for _, f := range []struct{ name, v string }{{"orgId", orgID}, {"seatName", seatName}, {"subjectId", subjectID}, {"subjectType", subjectType}} {
		switch {
		case f.v == "":
			errs = append(errs, &RequestError{f.name, "is required"})
		case len(f.v) > decision.MaxIDLen:
			errs = append(errs, &RequestError{f.name, fmt.Sprintf("must be at most %d bytes, got %d", decision.MaxIDLen, len(f.v))})
		}
	}
	if subjectType != "" && subjectType != "user" && len(subjectType) <= decision.MaxIDLen {
		errs = append(errs, &RequestError{"subjectType", "must be user, got " + decision.Quote(subjectType)})
	}
	var min decision.Token
	if minRevision != "" {
		if min, err = decision.ParseToken(minRevision); err != nil {
			errs = append(errs, &RequestError{"min_revision", err.Error()})
		}
	}
	if len(errs) > 0 {
		return decision.Request{}, join(errs)
	}
	return decision.Request{TenantID: orgID, Subject: decision.Principal{Type: decision.Person, ID: subjectID},
		Check: decision.CheckSeat, License: seatName, MinRevision: min}, nil
}
