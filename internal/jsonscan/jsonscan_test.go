package jsonscan

import "testing"

// Where Skip reads a valid value, Span's bracket matching must end at the
// same byte; strings with escaped quotes and brackets inside strings are
// the cases that matter.
func FuzzSpan(f *testing.F) {
	for _, s := range []string{
		`{"a": "x\"}", "b": [1, {"c": "]"}]} tail`,
		`["\\", "\\\"{"]`,
		`{"k": "v\\\\"}`,
		`{}`, `[]`, `[[[]]]`, `{"a": {"b": {}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		skip := Scanner{Buf: b}
		if !skip.Skip() {
			return
		}
		span := Scanner{Buf: b}
		got, ok := span.Span()
		if !ok || span.I != skip.I || len(got) != span.I-countWS(b) {
			t.Fatalf("Span of %q ends at %d (ok %v), Skip at %d", b, span.I, ok, skip.I)
		}
	})
}

func countWS(b []byte) int {
	n := 0
	for n < len(b) && (b[n] == ' ' || b[n] == '\t' || b[n] == '\n' || b[n] == '\r') {
		n++
	}
	return n
}

func TestRawString(t *testing.T) {
	for in, want := range map[string]bool{`"abc"`: true, `""`: true, `"a\"b"`: false, "\"a\x01\"": false, `"é"`: false, `"open`: false} {
		p := Scanner{Buf: []byte(in)}
		var s string
		if ok := p.RawString(&s); ok != want || (ok && `"`+s+`"` != in) {
			t.Errorf("RawString(%s) = %q, %v; want ok %v", in, s, ok, want)
		}
	}
}

// special never misses a byte that is not plain, in any position.
func TestSpecial(t *testing.T) {
	for c := range 256 {
		for pos := range 8 {
			b := []byte("abcdefgh")
			b[pos] = byte(c)
			w := uint64(0)
			for i := 7; i >= 0; i-- {
				w = w<<8 | uint64(b[i])
			}
			if !plain[c] && !special(w) {
				t.Errorf("special(%q) = false, byte %#x at %d is not plain", b, c, pos)
			}
		}
	}
	if special(0x6867666564636261) { // "abcdefgh"
		t.Errorf("special reports plain letters")
	}
}

// FuzzRawString holds RawString to a byte-by-byte reading.
func FuzzRawString(f *testing.F) {
	f.Add([]byte(`"0123456789abcdef\"x"`))
	f.Add([]byte("\"abcdefghijklmnop\x7f\xc3\xa9\""))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := Scanner{Buf: b}
		var got string
		ok := p.RawString(&got)
		// Reference: after optional whitespace, a quote, plain bytes, a quote.
		i := countWS(b)
		want, wantOK := "", false
		if i < len(b) && b[i] == '"' {
			j := i + 1
			for j < len(b) && plain[b[j]] {
				j++
			}
			if j < len(b) && b[j] == '"' {
				want, wantOK = string(b[i+1:j]), true
			}
		}
		if ok != wantOK || got != want {
			t.Fatalf("RawString(%q) = %q, %v; want %q, %v", b, got, ok, want, wantOK)
		}
	})
}
