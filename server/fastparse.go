package server

import (
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonscan"
)

// fastBody is what parseEvaluateFast reads; presence flags stand in for
// the pointers of evalBody so nothing escapes to the heap.
type fastBody struct {
	tenantID, appID, at string
	minRevision         string
	hasSubject          bool
	subject             evalSubject
	hasSeat             bool
	seat                evalSeat
	hasEnt              bool
	ent                 evalEntitlement
}

// parseEvaluateFast parses the common shape of an evaluate body without
// allocating: the strings it returns alias body and are valid only while
// body is. Keys match exactly, as in readEvaluate. It reports false for
// anything unusual (escapes in strings, a wrong type, a repeated key, many
// unknown keys, invalid JSON), and the caller then takes readEvaluate,
// which decides the same and words the precise error. On success f holds
// what readEvaluate would decode.
func parseEvaluateFast(body []byte, f *fastBody) bool {
	p := jsonscan.Scanner{Buf: body}
	p.WS()
	if !p.Byte('{') {
		return false
	}
	var keys keySet
	if !p.Object(func(key string) bool {
		if !keys.add(key) {
			return false
		}
		switch key {
		case "tenant_id":
			return p.Str(&f.tenantID)
		case "app_id":
			return p.Str(&f.appID)
		case "at":
			return p.Str(&f.at)
		case "min_revision":
			return p.Str(&f.minRevision)
		case "subject":
			if f.hasSubject = !p.Null(); !f.hasSubject {
				return true
			}
			var sub keySet
			return p.Byte('{') && p.Object(func(k string) bool {
				switch {
				case !sub.add(k):
					return false
				case k == "id":
					return p.Str(&f.subject.ID)
				case k == "type":
					return p.Str(&f.subject.Type)
				}
				return p.Skip()
			})
		case "seat":
			if f.hasSeat = !p.Null(); !f.hasSeat {
				return true
			}
			var sub keySet
			return p.Byte('{') && p.Object(func(k string) bool {
				switch {
				case !sub.add(k):
					return false
				case k == "license":
					return p.Str(&f.seat.License)
				}
				return p.Skip()
			})
		case "entitlement":
			if f.hasEnt = !p.Null(); !f.hasEnt {
				return true
			}
			var sub keySet
			return p.Byte('{') && p.Object(func(k string) bool {
				switch {
				case !sub.add(k):
					return false
				case k == "asset_id":
					return p.Str(&f.ent.AssetID)
				case k == "type":
					return p.Str(&f.ent.Type)
				}
				return p.Skip()
			})
		}
		return p.Skip()
	}) {
		return false
	}
	return p.Done()
}

// keySet remembers the keys of one object without allocating, to tell a
// repeated one; past its capacity it reports false, handing the body to
// the strict reader.
type keySet struct {
	keys [8]string
	n    int
}

func (s *keySet) add(k string) bool {
	for _, seen := range s.keys[:s.n] {
		if seen == k {
			return false
		}
	}
	if s.n == len(s.keys) {
		return false
	}
	s.keys[s.n] = k
	s.n++
	return true
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
