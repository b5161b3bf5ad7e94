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

type evalSubject struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

type evalSeat struct {
	License string `json:"license"`
}

type evalEntitlement struct {
	AssetID string `json:"asset_id"`
	Type    string `json:"type"`
}

type evalBody struct {
	TenantID    string           `json:"tenant_id"`
	AppID       string           `json:"app_id"`
	Subject     *evalSubject     `json:"subject"`
	Seat        *evalSeat        `json:"seat"`
	Entitlement *evalEntitlement `json:"entitlement"`
	At          string           `json:"at"`
}

// ParseEvaluate parses and validates one evaluate body (DESIGN §4). The
// returned request does not refer to body.
func ParseEvaluate(body []byte) (decision.Request, error) {
	var r decision.Request
	err := parseEvaluateSlow(body, "", "", &r)
	return r, err
}

func parseEvaluateSlow(body []byte, prefix, tenant string, r *decision.Request) error {
	var b evalBody
	if err := unmarshal(body, &b, prefix); err != nil {
		return err
	}
	f := fastBody{tenantID: b.TenantID, appID: b.AppID, at: b.At}
	if f.tenantID == "" {
		f.tenantID = tenant
	}
	if b.Subject != nil {
		f.hasSubject, f.subject = true, *b.Subject
	}
	if b.Seat != nil {
		f.hasSeat, f.seat = true, *b.Seat
	}
	if b.Entitlement != nil {
		f.hasEnt, f.ent = true, *b.Entitlement
	}
	return f.request(prefix, r)
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
	if !b.hasSubject {
		fail("subject", "is required")
	} else {
		if b.subject.ID == "" {
			fail("subject.id", "is required")
		}
		pt, ok := decision.ParsePrincipalType(b.subject.Type)
		if !ok {
			fail("subject.type", fmt.Sprintf("must be person or group (user means person), got %q", b.subject.Type))
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

// unmarshal decodes a JSON object, reporting type errors by field.
func unmarshal(body []byte, v any, prefix string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &RequestError{whole(prefix), "must be a JSON object, got nothing"}
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return &RequestError{whole(prefix), "must be a JSON object, got JSON " + te.Value}
		}
		want := "a string"
		switch te.Type.Kind().String() {
		case "ptr", "struct":
			want = "an object"
		case "slice":
			want = "an array"
		case "bool":
			want = "true or false"
		}
		return &RequestError{prefix + te.Field, "must be " + want + ", got JSON " + te.Value}
	}
	return &RequestError{whole(prefix), "not valid JSON: " + err.Error()}
}

// whole names the whole body ("body") or the whole batch slot ("checks[3]").
func whole(prefix string) string {
	if prefix == "" {
		return "body"
	}
	return strings.TrimSuffix(prefix, ".")
}

type batchBody struct {
	Checks *[]json.RawMessage `json:"checks"`
}

type compatBody struct {
	OrgID       string `json:"orgId"`
	SeatName    string `json:"seatName"`
	SubjectID   string `json:"subjectId"`
	SubjectType string `json:"subjectType"`
}

// ParseCompat parses the DataRobot-compatible seat evaluate body.
func ParseCompat(body []byte) (decision.Request, error) {
	var b compatBody
	if err := unmarshal(body, &b, ""); err != nil {
		return decision.Request{}, err
	}
	var errs []error
	for _, f := range []struct{ name, v string }{{"orgId", b.OrgID}, {"seatName", b.SeatName}, {"subjectId", b.SubjectID}, {"subjectType", b.SubjectType}} {
		if f.v == "" {
			errs = append(errs, &RequestError{f.name, "is required"})
		}
	}
	if b.SubjectType != "" && b.SubjectType != "user" {
		errs = append(errs, &RequestError{"subjectType", fmt.Sprintf("must be user, got %q", b.SubjectType)})
	}
	if len(errs) > 0 {
		return decision.Request{}, join(errs)
	}
	return decision.Request{TenantID: b.OrgID, Subject: decision.Principal{Type: decision.Person, ID: b.SubjectID},
		Check: decision.CheckSeat, License: b.SeatName}, nil
}
