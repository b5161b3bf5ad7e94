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
