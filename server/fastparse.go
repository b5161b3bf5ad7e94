package server

import (
	"strings"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonscan"
)

// fastBody is what parseEvaluateFast reads; presence flags stand in for
// the pointers of evalBody so nothing escapes to the heap.
type fastBody struct {
	tenantID, appID, at string
	hasSubject          bool
	subject             evalSubject
	hasSeat             bool
	seat                evalSeat
	hasEnt              bool
	ent                 evalEntitlement
}

// parseEvaluateFast parses the common shape of an evaluate body without
// allocating: the strings it returns alias body and are valid only while
// body is. It reports false for anything unusual (escapes in strings, a
// wrong type, a key that differs from a known one only in case, invalid
// JSON), and the caller then takes the encoding/json path, which gives the
// precise error. On success f holds what json.Unmarshal would decode.
func parseEvaluateFast(body []byte, f *fastBody) bool {
	p := jsonscan.Scanner{Buf: body}
	p.WS()
	if !p.Byte('{') {
		return false
	}
	if !p.Object(func(key string) bool {
		switch key {
		case "tenant_id":
			return p.Str(&f.tenantID)
		case "app_id":
			return p.Str(&f.appID)
		case "at":
			return p.Str(&f.at)
		case "subject":
			if p.Null() {
				f.hasSubject = false
				return true
			}
			if !f.hasSubject {
				f.subject = evalSubject{}
			}
			f.hasSubject = true
			return p.Byte('{') && p.Object(func(k string) bool {
				switch k {
				case "id":
					return p.Str(&f.subject.ID)
				case "type":
					return p.Str(&f.subject.Type)
				}
				return !strings.EqualFold(k, "id") && !strings.EqualFold(k, "type") && p.Skip()
			})
		case "seat":
			if p.Null() {
				f.hasSeat = false
				return true
			}
			if !f.hasSeat {
				f.seat = evalSeat{}
			}
			f.hasSeat = true
			return p.Byte('{') && p.Object(func(k string) bool {
				if k == "license" {
					return p.Str(&f.seat.License)
				}
				return !strings.EqualFold(k, "license") && p.Skip()
			})
		case "entitlement":
			if p.Null() {
				f.hasEnt = false
				return true
			}
			if !f.hasEnt {
				f.ent = evalEntitlement{}
			}
			f.hasEnt = true
			return p.Byte('{') && p.Object(func(k string) bool {
				switch k {
				case "asset_id":
					return p.Str(&f.ent.AssetID)
				case "type":
					return p.Str(&f.ent.Type)
				}
				return !strings.EqualFold(k, "asset_id") && !strings.EqualFold(k, "type") && p.Skip()
			})
		}
		for _, known := range [...]string{"tenant_id", "app_id", "at", "subject", "seat", "entitlement"} {
			if strings.EqualFold(key, known) {
				return false
			}
		}
		return p.Skip()
	}) {
		return false
	}
	return p.Done()
}

// parseEvaluateInto parses and validates an evaluate body; on success the
// request's strings may alias body. tenant, when set, is the verified
// caller's tenant: it stands in for a missing tenant_id.
func parseEvaluateInto(body []byte, prefix, tenant string, r *decision.Request) error {
	var f fastBody
	if !parseEvaluateFast(body, &f) {
		return parseEvaluateSlow(body, prefix, tenant, r)
	}
	if f.tenantID == "" {
		f.tenantID = tenant
	}
	return f.request(prefix, r)
}
