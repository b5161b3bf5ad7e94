package jsonw

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        `"plain"`,
		`q"b\s`:        `"q\"b\\s"`,
		"nl\n\t\r\x01": `"nl\n\t\r\u0001"`,
		"<a&b>":        `"\u003ca\u0026b\u003e"`,
		"é\u2028":      `"é\u2028"`,
		"bad\xffbyte":  `"bad\ufffdbyte"`,
		"":             `""`,
	} {
		if got := string(String(nil, in)); got != want {
			t.Errorf("String(%q) = %s, want %s", in, got, want)
		}
	}
	if got := string(NullString(nil, "")); got != "null" {
		t.Errorf("NullString(\"\") = %s, want null", got)
	}
}

func FuzzString(f *testing.F) {
	f.Add("a\"\\\n<é\u2029\xff")
	f.Fuzz(func(t *testing.T, s string) {
		var back string
		if err := json.Unmarshal(String(nil, s), &back); err != nil {
			t.Fatalf("String(%q) is not a JSON string: %v", s, err)
		}
		want := s
		if !utf8.ValidString(s) {
			// each invalid byte becomes its own U+FFFD
			want = ""
			for i := 0; i < len(s); {
				r, n := utf8.DecodeRuneInString(s[i:])
				want += string(r)
				i += n
			}
		}
		if back != want {
			t.Fatalf("String(%q) decodes to %q, want %q", s, back, want)
		}
	})
}
