package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"

	"github.com/usher-authz/usher/decision"
)

// strictReader reads request bodies the way a gateway that validates them
// does: keys match exactly (encoding/json would also take "Tenant_Id" or
// "ſeat" for tenant_id and seat; here they are unknown keys, skipped) and a
// key repeated in one object is an error, so no two readers of one body
// can see different requests. It is the cold path behind the zero-alloc
// scanner and words every error with the field's name.
type strictReader struct {
	dec    *json.Decoder
	prefix string // names the body in errors (e.g. "checks[3].")
}

// newStrictReader reads body; when it is empty, the first read says so.
// emptyBody is the error of a body with nothing in it, or nil.
func emptyBody(body []byte, prefix string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return &RequestError{whole(prefix), "must be a JSON object, got nothing"}
	}
	return nil
}

// body reads the whole body as one JSON object, handing each key to
// member (which reports whether it took the key); null and anything after
// the object are errors.
func (r *strictReader) body(member func(key, field string) (bool, error)) error {
	present, err := r.object("", member)
	if err == nil && !present {
		err = &RequestError{whole(r.prefix), "must be a JSON object, got JSON null"}
	}
	if err == nil {
		err = r.end()
	}
	return err
}

func newStrictReader(body []byte, prefix string) *strictReader {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return &strictReader{dec: dec, prefix: prefix}
}

// object reads an object (or null: present false) whose members are
// handed to member one key at a time; member must read the value or
// return false to have it skipped.
func (r *strictReader) object(field string, member func(key, field string) (bool, error)) (present bool, err error) {
	tok, err := r.dec.Token()
	if err != nil {
		return false, r.syntax(field, err)
	}
	if tok == nil {
		return false, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return false, r.typeError(field, tok, "an object")
	}
	seen := map[string]bool{}
	for r.dec.More() {
		tok, err := r.dec.Token()
		if err != nil {
			return false, r.syntax(field, err)
		}
		key := tok.(string)
		sub := r.prefix + key
		if field != "" {
			sub = field + "." + key
		}
		if seen[key] {
			return false, &RequestError{sub, "appears twice in one object; a key may appear once"}
		}
		seen[key] = true
		read, err := member(key, sub)
		if err != nil {
			return false, err
		}
		if !read {
			var skip json.RawMessage
			if err := r.dec.Decode(&skip); err != nil {
				return false, r.syntax(sub, err)
			}
		}
	}
	if _, err := r.dec.Token(); err != nil { // the closing brace
		return false, r.syntax(field, err)
	}
	return true, nil
}

// str reads a string (null leaves dst as it is, as encoding/json does).
func (r *strictReader) str(field string, dst *string) error {
	tok, err := r.dec.Token()
	if err != nil {
		return r.syntax(field, err)
	}
	switch v := tok.(type) {
	case string:
		*dst = v
		return nil
	case nil:
		return nil
	}
	return r.typeError(field, tok, "a string")
}

// array reads an array (or null: present false) of raw elements.
func (r *strictReader) array(field string, elem func(raw json.RawMessage)) (present bool, err error) {
	tok, err := r.dec.Token()
	if err != nil {
		return false, r.syntax(field, err)
	}
	if tok == nil {
		return false, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return false, r.typeError(field, tok, "an array")
	}
	for r.dec.More() {
		var raw json.RawMessage
		if err := r.dec.Decode(&raw); err != nil {
			return false, r.syntax(field, err)
		}
		elem(raw)
	}
	if _, err := r.dec.Token(); err != nil {
		return false, r.syntax(field, err)
	}
	return true, nil
}

// end checks that nothing but white space follows the value.
func (r *strictReader) end() error {
	if _, err := r.dec.Token(); err != io.EOF {
		return &RequestError{whole(r.prefix), "not valid JSON: data after the top-level value"}
	}
	return nil
}

// typeError skips the rest of a value of the wrong type and names it.
func (r *strictReader) typeError(field string, tok json.Token, want string) error {
	got := "string"
	switch v := tok.(type) {
	case json.Number:
		got = "number"
	case bool:
		got = "bool"
	case json.Delim:
		got = map[json.Delim]string{'{': "object", '[': "array"}[v]
		for depth := 1; depth > 0; {
			t, err := r.dec.Token()
			if err != nil {
				return r.syntax(field, err)
			}
			if d, ok := t.(json.Delim); ok {
				if d == '{' || d == '[' {
					depth++
				} else {
					depth--
				}
			}
		}
	}
	if field == "" {
		return &RequestError{whole(r.prefix), "must be a JSON object, got JSON " + got}
	}
	return &RequestError{field, "must be " + want + ", got JSON " + got}
}

// syntax names the whole body (or batch slot): a syntax error is the
// document's, not a field's.
func (r *strictReader) syntax(_ string, err error) error {
	if errors.Is(err, io.EOF) {
		return &RequestError{whole(r.prefix), "not valid JSON: unexpected end of JSON input"}
	}
	return &RequestError{whole(r.prefix), "not valid JSON: " + err.Error()}
}

// integer reads a whole number (or null, which leaves dst as it is).
func (r *strictReader) integer(field string, dst *int64) error {
	tok, err := r.dec.Token()
	if err != nil {
		return r.syntax(field, err)
	}
	switch v := tok.(type) {
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return &RequestError{field, "must be a whole number, got " + decision.Short(string(v))}
		}
		*dst = n
		return nil
	case nil:
		return nil
	}
	return r.typeError(field, tok, "a whole number")
}
