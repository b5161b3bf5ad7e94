// Package jsonscan reads the common shapes of JSON request bodies and
// state records without reflection or allocation, for hot and bulk paths
// that fall back to encoding/json for anything unusual and for errors.
package jsonscan

import (
	"bytes"
	"encoding/binary"
	"unsafe"
)

// Scanner reads JSON from a byte slice without allocating. Strings it
// returns alias the buffer. Methods report false on anything they do not
// handle (escapes, control characters and non-ASCII in strings, invalid
// JSON, nesting deeper than MaxDepth); callers then fall back to
// encoding/json.
type Scanner struct {
	Buf   []byte
	I     int
	depth int
}

// MaxDepth bounds nesting.
const MaxDepth = 64

// WS skips whitespace.
func (p *Scanner) WS() {
	for p.I < len(p.Buf) {
		switch p.Buf[p.I] {
		case ' ', '\t', '\n', '\r':
			p.I++
		default:
			return
		}
	}
}

// Byte consumes c after whitespace.
func (p *Scanner) Byte(c byte) bool {
	p.WS()
	if p.I < len(p.Buf) && p.Buf[p.I] == c {
		p.I++
		return true
	}
	return false
}

// Lit consumes the literal s after whitespace.
func (p *Scanner) Lit(s string) bool {
	p.WS()
	if len(p.Buf)-p.I >= len(s) && string(p.Buf[p.I:p.I+len(s)]) == s {
		p.I += len(s)
		return true
	}
	return false
}

// Null consumes null.
func (p *Scanner) Null() bool { return p.Lit("null") }

// Object reads members after '{' up to '}', calling member with each key
// positioned at its value.
func (p *Scanner) Object(member func(key string) bool) bool {
	if p.depth++; p.depth > MaxDepth {
		return false
	}
	defer func() { p.depth-- }()
	if p.Byte('}') {
		return true
	}
	for {
		var key string
		if !p.RawString(&key) || !p.Byte(':') || !member(key) {
			return false
		}
		if p.Byte(',') {
			continue
		}
		return p.Byte('}')
	}
}

// Str reads a string value (null leaves dst as it is, as encoding/json does).
func (p *Scanner) Str(dst *string) bool {
	if p.Null() {
		return true
	}
	return p.RawString(dst)
}

// plain marks the bytes a string holds as they are: printable ASCII
// other than the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const ones, highs = 0x0101010101010101, 0x8080808080808080

// special reports whether any byte of w is not plain (it may report true
// for plain bytes too; never false for a special one).
func special(w uint64) bool {
	zero := func(x uint64) uint64 { return (x - ones) & ^x & highs }
	return (w&highs)|((w-0x20*ones)&^w&highs)|zero(w^('"'*ones))|zero(w^('\\'*ones)) != 0
}

// RawString reads a string without escapes or control characters.
func (p *Scanner) RawString(dst *string) bool {
	if !p.Byte('"') {
		return false
	}
	start, i, buf := p.I, p.I, p.Buf
	// Eight bytes at a time while none is special, then byte by byte.
	for i+8 <= len(buf) && !special(binary.LittleEndian.Uint64(buf[i:])) {
		i += 8
	}
	for i < len(buf) && plain[buf[i]] {
		i++
	}
	// Escapes, control characters and non-ASCII go the slow way.
	if i == len(buf) || buf[i] != '"' {
		return false
	}
	p.I = i + 1
	if i == start {
		*dst = ""
	} else {
		*dst = unsafe.String(&buf[start], i-start)
	}
	return true
}

// Skip reads any JSON value.
func (p *Scanner) Skip() bool {
	p.WS()
	if p.I >= len(p.Buf) {
		return false
	}
	switch c := p.Buf[p.I]; {
	case c == '"':
		var s string
		return p.RawString(&s)
	case c == '{':
		p.I++
		return p.Object(func(string) bool { return p.Skip() })
	case c == '[':
		p.I++
		if p.depth++; p.depth > MaxDepth {
			return false
		}
		defer func() { p.depth-- }()
		if p.Byte(']') {
			return true
		}
		for {
			if !p.Skip() {
				return false
			}
			if p.Byte(',') {
				continue
			}
			return p.Byte(']')
		}
	case c == 't':
		return p.Lit("true")
	case c == 'f':
		return p.Lit("false")
	case c == 'n':
		return p.Null()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.Number()
	}
	return false
}

// Number reads a JSON number per the grammar.
func (p *Scanner) Number() bool {
	digits := func() int {
		n := 0
		for p.I < len(p.Buf) && p.Buf[p.I] >= '0' && p.Buf[p.I] <= '9' {
			p.I++
			n++
		}
		return n
	}
	if p.Buf[p.I] == '-' {
		p.I++
	}
	if p.I < len(p.Buf) && p.Buf[p.I] == '0' {
		p.I++
	} else if digits() == 0 {
		return false
	}
	if p.I < len(p.Buf) && p.Buf[p.I] == '.' {
		p.I++
		if digits() == 0 {
			return false
		}
	}
	if p.I < len(p.Buf) && (p.Buf[p.I] == 'e' || p.Buf[p.I] == 'E') {
		p.I++
		if p.I < len(p.Buf) && (p.Buf[p.I] == '+' || p.Buf[p.I] == '-') {
			p.I++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

// Span skips one value and returns its bytes. Objects and arrays are
// matched by bracket counting outside strings, without checking their
// inside: callers parse the span itself before trusting it.
func (p *Scanner) Span() ([]byte, bool) {
	p.WS()
	start := p.I
	if p.I < len(p.Buf) && (p.Buf[p.I] == '{' || p.Buf[p.I] == '[') {
		if end, ok := matchBrackets(p.Buf, p.I); ok {
			p.I = end
			return p.Buf[start:end], true
		}
		return nil, false
	}
	if !p.Skip() {
		return nil, false
	}
	return p.Buf[start:p.I], true
}

// matchBrackets returns the end of the object or array at b[i].
func matchBrackets(b []byte, i int) (int, bool) {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			// Find the closing quote: one not escaped by an odd run of backslashes.
			for {
				j := bytes.IndexByte(b[i+1:], '"')
				if j < 0 {
					return 0, false
				}
				i += 1 + j
				k := i - 1
				for b[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '{', '[':
			if depth++; depth > MaxDepth {
				return 0, false
			}
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1, true
			}
		}
		i++
	}
	return 0, false
}

// Int reads an integer value.
func (p *Scanner) Int(dst *int64) bool {
	p.WS()
	start := p.I
	if p.I >= len(p.Buf) || !p.Number() {
		return false
	}
	var n int64
	neg := false
	for i, c := range p.Buf[start:p.I] {
		switch {
		case c == '-' && i == 0:
			neg = true
		case c >= '0' && c <= '9':
			if n > (1<<62)/10 {
				return false
			}
			n = n*10 + int64(c-'0')
		default:
			return false // fractions and exponents go the slow way
		}
	}
	if neg {
		n = -n
	}
	*dst = n
	return true
}

// Bool reads true or false.
func (p *Scanner) Bool(dst *bool) bool {
	switch {
	case p.Lit("true"):
		*dst = true
	case p.Lit("false"):
		*dst = false
	default:
		return false
	}
	return true
}

// Done reports whether only whitespace is left.
func (p *Scanner) Done() bool {
	p.WS()
	return p.I == len(p.Buf)
}
