package server

import (
	"strings"
	"unsafe"

	"github.com/usher-authz/usher/decision"
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
	p := scanner{buf: body}
	p.ws()
	if !p.byte('{') {
		return false
	}
	if !p.object(func(key string) bool {
		switch key {
		case "tenant_id":
			return p.str(&f.tenantID)
		case "app_id":
			return p.str(&f.appID)
		case "at":
			return p.str(&f.at)
		case "subject":
			if p.null() {
				f.hasSubject = false
				return true
			}
			if !f.hasSubject {
				f.subject = evalSubject{}
			}
			f.hasSubject = true
			return p.byte('{') && p.object(func(k string) bool {
				switch k {
				case "id":
					return p.str(&f.subject.ID)
				case "type":
					return p.str(&f.subject.Type)
				}
				return !strings.EqualFold(k, "id") && !strings.EqualFold(k, "type") && p.skip()
			})
		case "seat":
			if p.null() {
				f.hasSeat = false
				return true
			}
			if !f.hasSeat {
				f.seat = evalSeat{}
			}
			f.hasSeat = true
			return p.byte('{') && p.object(func(k string) bool {
				if k == "license" {
					return p.str(&f.seat.License)
				}
				return !strings.EqualFold(k, "license") && p.skip()
			})
		case "entitlement":
			if p.null() {
				f.hasEnt = false
				return true
			}
			if !f.hasEnt {
				f.ent = evalEntitlement{}
			}
			f.hasEnt = true
			return p.byte('{') && p.object(func(k string) bool {
				switch k {
				case "asset_id":
					return p.str(&f.ent.AssetID)
				case "type":
					return p.str(&f.ent.Type)
				}
				return !strings.EqualFold(k, "asset_id") && !strings.EqualFold(k, "type") && p.skip()
			})
		}
		for _, known := range [...]string{"tenant_id", "app_id", "at", "subject", "seat", "entitlement"} {
			if strings.EqualFold(key, known) {
				return false
			}
		}
		return p.skip()
	}) {
		return false
	}
	p.ws()
	return p.i == len(p.buf)
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

// scanner is a minimal JSON reader for parseEvaluateFast.
type scanner struct {
	buf   []byte
	i     int
	depth int
}

// maxDepth bounds nesting; deeper bodies take the encoding/json path.
const maxDepth = 64

func (p *scanner) ws() {
	for p.i < len(p.buf) {
		switch p.buf[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) byte(c byte) bool {
	p.ws()
	if p.i < len(p.buf) && p.buf[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *scanner) lit(s string) bool {
	p.ws()
	if len(p.buf)-p.i >= len(s) && string(p.buf[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *scanner) null() bool { return p.lit("null") }

// object reads members after '{' up to '}', calling member with each key
// positioned at its value.
func (p *scanner) object(member func(key string) bool) bool {
	if p.depth++; p.depth > maxDepth {
		return false
	}
	defer func() { p.depth-- }()
	if p.byte('}') {
		return true
	}
	for {
		var key string
		if !p.rawString(&key) || !p.byte(':') || !member(key) {
			return false
		}
		if p.byte(',') {
			continue
		}
		return p.byte('}')
	}
}

// str reads a string value (null leaves dst as it is, as encoding/json does).
func (p *scanner) str(dst *string) bool {
	if p.null() {
		return true
	}
	return p.rawString(dst)
}

// rawString reads a string without escapes or control characters.
func (p *scanner) rawString(dst *string) bool {
	if !p.byte('"') {
		return false
	}
	start := p.i
	for p.i < len(p.buf) {
		c := p.buf[p.i]
		switch {
		case c == '"':
			n := p.i - start
			p.i++
			if n == 0 {
				*dst = ""
			} else {
				*dst = unsafe.String(&p.buf[start], n)
			}
			return true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return false // escapes, control characters and non-ASCII go the slow way
		}
		p.i++
	}
	return false
}

// skip reads any JSON value the fast path does not need.
func (p *scanner) skip() bool {
	p.ws()
	if p.i >= len(p.buf) {
		return false
	}
	switch c := p.buf[p.i]; {
	case c == '"':
		var s string
		return p.rawString(&s)
	case c == '{':
		p.i++
		return p.object(func(string) bool { return p.skip() })
	case c == '[':
		p.i++
		if p.depth++; p.depth > maxDepth {
			return false
		}
		defer func() { p.depth-- }()
		if p.byte(']') {
			return true
		}
		for {
			if !p.skip() {
				return false
			}
			if p.byte(',') {
				continue
			}
			return p.byte(']')
		}
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'n':
		return p.null()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return false
}

// number reads a JSON number per the grammar.
func (p *scanner) number() bool {
	digits := func() int {
		n := 0
		for p.i < len(p.buf) && p.buf[p.i] >= '0' && p.buf[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.buf[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.buf) && p.buf[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return false
	}
	if p.i < len(p.buf) && p.buf[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.buf) && (p.buf[p.i] == 'e' || p.buf[p.i] == 'E') {
		p.i++
		if p.i < len(p.buf) && (p.buf[p.i] == '+' || p.buf[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
