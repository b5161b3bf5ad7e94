package decision

// Reading state documents: records found in place and decoded on every
// core, each problem named; the encoding/json path for anything unusual.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"github.com/usher-authz/usher/internal/jsonscan"
)

// ParseDocument reads and validates a state document. It reports every
// rule violation (joined), or returns a document in which every rule holds.
func ParseDocument(r io.Reader) (*Document, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return ParseDocumentBytes(b)
}

// ParseDocumentBytes is ParseDocument over a document in memory; the
// document's strings may alias b (see DecodeDocumentBytes).
func ParseDocumentBytes(b []byte) (*Document, error) {
	doc, errs, err := decodeDocument(b)
	if err != nil {
		return nil, err
	}
	if len(errs) == 0 {
		if err := doc.Validate(); err != nil {
			return nil, err
		}
		return doc, nil
	}
	// Report the rules across records too, over the records that decoded;
	// a reference to a record that is itself invalid is not a second error.
	failed := map[string]bool{}
	for _, e := range errs {
		var re *RecordError
		if errors.As(e, &re) && re.ID != "" {
			failed[re.Kind.String()+"\x00"+re.ID] = true
		}
	}
	var cross []error
	if v := doc.Validate(); v != nil {
		for _, e := range v.(interface{ Unwrap() []error }).Unwrap() {
			var re *RecordError
			if errors.As(e, &re) && re.ref != "" && failed[re.ref] {
				continue
			}
			cross = append(cross, e)
		}
	}
	return nil, errors.Join(append(errs, cross...)...)
}

// decodeDocument decodes every record it can: err is a document that
// cannot be read at all, errs the records that break a rule on their own.
func decodeDocument(b []byte) (*Document, []error, error) {
	doc, errs, ok := scanDocument(b)
	if !ok {
		var err error
		doc, errs, err = decodeDocumentSlow(bytes.NewReader(b))
		if err != nil {
			return nil, nil, syntaxAt(b, err)
		}
	}
	if len(errs) > 0 {
		if err := syntaxAt(b, nil); err != nil {
			return nil, nil, err
		}
	}
	return doc, errs, nil
}

// syntaxAt names the line and column of the document's first JSON syntax
// error, or returns err when it has none.
func syntaxAt(b []byte, err error) error {
	if json.Valid(b) {
		return err
	}
	var v any
	var se *json.SyntaxError
	if !errors.As(json.Unmarshal(b, &v), &se) {
		return err
	}
	line, col := 1, 1
	for _, c := range b[:min(max(int(se.Offset)-1, 0), len(b))] { // Offset counts the bad byte

		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	if err != nil {
		return fmt.Errorf("%w (line %d, column %d: %v)", err, line, col, se)
	}
	return fmt.Errorf("%w: not valid JSON at line %d, column %d: %v", ErrInvalid, line, col, se)
}

// DecodeDocument reads a state document and checks each record on its own,
// but not the rules that span records (see Validate): for merging a
// partial document into a larger state before validating the whole.
func DecodeDocument(r io.Reader) (*Document, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return DecodeDocumentBytes(b)
}

// DecodeDocumentBytes is DecodeDocument over a document in memory. Records
// are found in place (no copy of the document); each is decoded and
// checked on its own. Their strings may alias b, which must not change
// while the document is in use (a snapshot keeps copies of its own).
func DecodeDocumentBytes(b []byte) (*Document, error) {
	doc, errs, err := decodeDocument(b)
	switch {
	case err != nil:
		return nil, err
	case len(errs) > 0:
		return nil, errors.Join(errs...)
	}
	return doc, nil
}

// scanDocument finds the records of the document's arrays in place, then
// decodes them on every core; it reports false for anything unusual, which
// the encoding/json path then reads (and explains, when it is an error).
func scanDocument(b []byte) (*Document, []error, bool) {
	p := jsonscan.Scanner{Buf: b}
	if !p.Byte('{') {
		return nil, nil, false
	}
	// This goroutine finds record spans; workers decode them meanwhile, a
	// chunk at a time.
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *chunk, 4*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				c.decode()
			}
		}()
	}
	var chunks [4][]*chunk
	var cur *chunk
	var count [4]int
	flush := func() {
		if cur != nil && len(cur.spans) > 0 {
			chunks[cur.kind] = append(chunks[cur.kind], cur)
			jobs <- cur
		}
		cur = nil
	}
	seen := map[string]bool{}
	kinds := map[string]Kind{"licenses": KindLicense, "assignments": KindAssignment, "entitlements": KindEntitlement, "groups": KindGroup}
	ok := p.Object(func(key string) bool {
		kind, known := kinds[key]
		if !known {
			for k := range kinds {
				if strings.EqualFold(key, k) {
					return false // encoding/json matches keys without case
				}
			}
			return p.Skip()
		}
		if seen[key] {
			return false // a repeated key replaces the first in encoding/json
		}
		seen[key] = true
		if p.Null() {
			return true
		}
		if !p.Byte('[') {
			return false
		}
		if p.Byte(']') {
			return true
		}
		defer flush()
		for {
			m, ok := p.Span()
			if !ok {
				return false
			}
			if cur == nil {
				cur = &chunk{kind: kind, base: count[kind], spans: make([][]byte, 0, chunkSpans)}
			}
			cur.spans = append(cur.spans, m)
			count[kind]++
			if len(cur.spans) == chunkSpans {
				flush()
			}
			if p.Byte(',') {
				continue
			}
			return p.Byte(']')
		}
	})
	close(jobs)
	wg.Wait()
	if !ok || !p.Done() {
		return nil, nil, false
	}
	doc := &Document{
		Licenses:     make([]*License, 0, count[KindLicense]),
		Assignments:  make([]*Assignment, 0, count[KindAssignment]),
		Entitlements: make([]*Entitlement, 0, count[KindEntitlement]),
		Groups:       make([]*Group, 0, count[KindGroup]),
	}
	var errs []error
	for _, cs := range chunks {
		for _, c := range cs {
			doc.Licenses = append(doc.Licenses, c.lics...)
			doc.Assignments = append(doc.Assignments, c.asgs...)
			doc.Entitlements = append(doc.Entitlements, c.ents...)
			doc.Groups = append(doc.Groups, c.grps...)
			errs = append(errs, c.errs...)
		}
	}
	return doc, errs, true
}

// chunkSpans is how many records a decoding job holds.
const chunkSpans = 2048

// chunk is a run of records of one kind, decoded by one worker.
type chunk struct {
	kind  Kind
	base  int // array index of the first record
	spans [][]byte
	lics  []*License
	asgs  []*Assignment
	ents  []*Entitlement
	grps  []*Group
	errs  []error
}

func (c *chunk) decode() {
	switch c.kind {
	case KindLicense:
		c.lics = decodeSpans(c, decodeLicense)
	case KindAssignment:
		c.asgs = decodeSpans(c, decodeAssignment)
	case KindEntitlement:
		c.ents = decodeSpans(c, decodeEntitlement)
	case KindGroup:
		c.grps = decodeSpans(c, decodeGroup)
	}
}

// decodeSpans decodes a chunk's records, reporting errors with their
// array index.
func decodeSpans[R any](c *chunk, decode func([]byte) (R, error)) []R {
	out := make([]R, 0, len(c.spans))
	for i, m := range c.spans {
		r, err := decode(m)
		if err != nil {
			c.errs = append(c.errs, at(err, c.base+i))
			continue
		}
		out = append(out, r)
	}
	return out
}

func decodeDocumentSlow(r io.Reader) (*Document, []error, error) {
	var raw struct {
		Licenses     []json.RawMessage `json:"licenses"`
		Assignments  []json.RawMessage `json:"assignments"`
		Entitlements []json.RawMessage `json:"entitlements"`
		Groups       []json.RawMessage `json:"groups"`
	}
	dec := json.NewDecoder(r)
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("%w: document is not a JSON object of record arrays: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("%w: unexpected data after the document", ErrInvalid)
	}
	doc := &Document{}
	var errs []error
	for i, m := range raw.Licenses {
		l, err := DecodeLicense(m)
		if err != nil {
			errs = append(errs, at(err, i))
			continue
		}
		doc.Licenses = append(doc.Licenses, l)
	}
	for i, m := range raw.Assignments {
		a, err := DecodeAssignment(m)
		if err != nil {
			errs = append(errs, at(err, i))
			continue
		}
		doc.Assignments = append(doc.Assignments, a)
	}
	for i, m := range raw.Entitlements {
		e, err := DecodeEntitlement(m)
		if err != nil {
			errs = append(errs, at(err, i))
			continue
		}
		doc.Entitlements = append(doc.Entitlements, e)
	}
	for i, m := range raw.Groups {
		g, err := DecodeGroup(m)
		if err != nil {
			errs = append(errs, at(err, i))
			continue
		}
		doc.Groups = append(doc.Groups, g)
	}
	return doc, errs, nil
}

// at stamps the array index on the record errors in err.
func at(err error, i int) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			at(e, i)
		}
		return err
	}
	var re *RecordError
	if errors.As(err, &re) {
		re.Index = i
	}
	return err
}
