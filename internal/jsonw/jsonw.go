// Package jsonw appends JSON values to byte slices without reflection, for
// responses on the hot path and for exporting large state documents.
package jsonw

import "unicode/utf8"

const hex = "0123456789abcdef"

// String appends s as a quoted JSON string. Invalid UTF-8 becomes U+FFFD.
func String(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// NullString appends s as a JSON string, or null when s is empty.
func NullString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return String(b, s)
}

// Bool appends true or false.
func Bool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// Error appends Usher's error object, {"error":{"code":…,"message":…}}:
// the one encoding every front answers errors with.
func Error(b []byte, code, msg string) []byte {
	b = append(b, `{"error":{"code":`...)
	b = String(b, code)
	b = append(b, `,"message":`...)
	b = String(b, msg)
	return append(b, "}}"...)
}
