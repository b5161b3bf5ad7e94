package decision

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/usher-authz/usher/internal/jsonscan"
)

// Instant is a point in time: microseconds since 0001-01-01T00:00:00Z,
// plus one. Every RFC 3339 time of the years 0001 to 9999 fits and orders
// correctly (Unix nanoseconds would wrap outside 1678–2262); digits finer
// than a microsecond are dropped. The zero Instant is no time at all (a
// request without "at" asks about now), so it cannot be mistaken for a
// real one, not even the Unix epoch. NoTime stands for a JSON null: no bound.
type Instant int64

// NoTime is the null Instant.
const NoTime Instant = math.MinInt64

// unixYear1 is 0001-01-01T00:00:00Z in Unix seconds.
const unixYear1 = -62135596800

// Set reports whether t is a real time rather than null.
func (t Instant) Set() bool { return t != NoTime }

// InstantOf converts a time.Time of year 0001 or later.
func InstantOf(t time.Time) Instant {
	return Instant((t.Unix()-unixYear1)*1e6 + int64(t.Nanosecond()/1e3) + 1)
}

// Time converts t back; t must be set and not zero.
func (t Instant) Time() time.Time {
	us := int64(t) - 1
	return time.Unix(us/1e6+unixYear1, us%1e6*1e3).UTC()
}

// AppendJSON appends t as an RFC 3339 JSON string, or null.
func (t Instant) AppendJSON(b []byte) []byte {
	if !t.Set() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.Time().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// Quote quotes a value for an error message, cut to its first 64 bytes
// (with the full length said): a message never echoes a huge input.
func Quote(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:64]), len(s))
}

// ParseInstant parses an RFC 3339 time ("T" and "Z" in either case, as
// RFC 3339 allows). A leap second (:60) is refused: Go's clock, and so
// Usher's, has none; write 23:59:59.999999 instead.
func ParseInstant(s string) (Instant, error) {
	v := s
	if strings.ContainsAny(v, "tz") {
		v = strings.NewReplacer("t", "T", "z", "Z").Replace(v)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		if len(v) >= 19 && v[10] == 'T' && v[17:19] == "60" {
			return NoTime, fmt.Errorf("must be an RFC 3339 time without a leap second (use 23:59:59.999999), got %s", Quote(s))
		}
		return NoTime, fmt.Errorf("must be an RFC 3339 time, got %s", Quote(s))
	}
	if t.UTC().Year() < 1 {
		return NoTime, fmt.Errorf("must be an RFC 3339 time in the years 0001 to 9999, got %s", Quote(s))
	}
	return InstantOf(t), nil
}

// Kind names a record kind of the state document.
type Kind uint8

const (
	KindLicense Kind = iota
	KindAssignment
	KindEntitlement
	KindGroup
)

var kindNames = [...]string{"license", "assignment", "entitlement", "group"}

func (k Kind) String() string { return kindNames[k] }

// ParseKind accepts the singular or plural kind name.
func ParseKind(s string) (Kind, error) {
	for i, n := range kindNames {
		if s == n || s == n+"s" {
			return Kind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown kind %q (want license, assignment, entitlement or group)", s)
}

// Status is the lifecycle status shared by licenses, assignments and
// entitlements.
type Status uint8

const (
	StatusActive Status = iota
	StatusSuspended
	StatusRevoked
	StatusPendingApproval
)

var statusNames = [...]string{"active", "suspended", "revoked", "pending_approval"}

func (s Status) String() string { return statusNames[s] }

// PrincipalType says whether a principal is a person or a group.
type PrincipalType uint8

const (
	Person PrincipalType = iota
	GroupPrincipal
)

func (p PrincipalType) String() string {
	if p == GroupPrincipal {
		return "group"
	}
	return "person"
}

// ParsePrincipalType accepts person, group, and user as a synonym of person.
// The empty string means person.
func ParsePrincipalType(s string) (PrincipalType, bool) {
	switch s {
	case "", "person", "user":
		return Person, true
	case "group":
		return GroupPrincipal, true
	}
	return 0, false
}

// Reservation is how an assignment holds a seat.
type Reservation uint8

const (
	Reserved Reservation = iota
	Dynamic
	Denied
)

var reservationNames = [...]string{"reserved", "dynamic", "denied"}

func (r Reservation) String() string { return reservationNames[r] }

// LicenseType is named or floating.
type LicenseType uint8

const (
	Named LicenseType = iota
	Floating
)

func (t LicenseType) String() string {
	if t == Floating {
		return "floating"
	}
	return "named"
}

// GrantSource says where an entitlement came from.
type GrantSource uint8

const (
	SourceDirect GrantSource = iota
	SourceProvisioned
	SourceInherited
)

var grantSourceNames = [...]string{"direct", "provisioned", "inherited"}

func (g GrantSource) String() string { return grantSourceNames[g] }

// License is a software license of a tenant. Records are immutable once
// they are part of a snapshot.
type License struct {
	ID, TenantID, Name, Description, AssetID, AppID string
	SeatLimit                                       int64 // -1: unlimited (null)
	Type                                            LicenseType
	Status                                          Status
	Deleted                                         bool
	owned                                           bool // part of a snapshot, hence immutable and shareable
	ValidFrom, ExpiresAt, CreatedAt, UpdatedAt      Instant
	LeaseDurationS                                  int64
}

// Assignment gives (or, with reservation denied, refuses) a seat of a
// license to a person or a group.
type Assignment struct {
	ID, TenantID, LicenseID, AssigneeID, AssetID, AppID string
	AssigneeType                                        PrincipalType
	Reservation                                         Reservation
	Status                                              Status
	Deleted                                             bool
	AssignedAt, ValidFrom, ExpiresAt, LastUsedAt        Instant
}

// Entitlement gives a principal an entitlement type on an asset.
type Entitlement struct {
	ID, TenantID, AssetID, PrincipalID, Type, AppID string
	PrincipalType                                   PrincipalType
	GrantSource                                     GrantSource
	Status                                          Status
	Deleted                                         bool
	GrantedAt, ValidFrom, ExpiresAt                 Instant
}

// Member is one direct member of a group.
type Member struct {
	ID   string
	Type PrincipalType
}

// Group is a set of persons and groups; groups nest, and cycles are allowed.
type Group struct {
	ID, TenantID string
	Members      []Member

	owned bool
}

// Document is a whole state: the format of the embedded demo, state files,
// `usher load` and `usher export`.
type Document struct {
	Licenses     []*License
	Assignments  []*Assignment
	Entitlements []*Entitlement
	Groups       []*Group
}

// Append adds o's records to d.
func (d *Document) Append(o *Document) {
	d.Licenses = append(d.Licenses, o.Licenses...)
	d.Assignments = append(d.Assignments, o.Assignments...)
	d.Entitlements = append(d.Entitlements, o.Entitlements...)
	d.Groups = append(d.Groups, o.Groups...)
}

// ByTenant splits the document by tenant; the parts share its records.
func (d *Document) ByTenant() map[string]*Document {
	by := tenantParts[Document]{m: map[string]*Document{}}
	get := by.get
	for _, r := range d.Licenses {
		p := get(r.TenantID)
		p.Licenses = append(p.Licenses, r)
	}
	for _, r := range d.Assignments {
		p := get(r.TenantID)
		p.Assignments = append(p.Assignments, r)
	}
	for _, r := range d.Entitlements {
		p := get(r.TenantID)
		p.Entitlements = append(p.Entitlements, r)
	}
	for _, r := range d.Groups {
		p := get(r.TenantID)
		p.Groups = append(p.Groups, r)
	}
	return by.m
}

// tenantParts holds one V per tenant, made on first use.
type tenantParts[V any] struct {
	m    map[string]*V
	last string
	lv   *V
}

func (p *tenantParts[V]) get(tenant string) *V {
	if p.lv != nil && tenant == p.last {
		return p.lv // documents are mostly in tenant order
	}
	v := p.m[tenant]
	if v == nil {
		v = new(V)
		p.m[tenant] = v
	}
	p.last, p.lv = tenant, v
	return v
}

// Len returns the number of records of all kinds.
func (d *Document) Len() int {
	return len(d.Licenses) + len(d.Assignments) + len(d.Entitlements) + len(d.Groups)
}

// ErrInvalid marks a state document or record that breaks a rule of the
// state format.
var ErrInvalid = errors.New("invalid state")

// RecordError names the record, field and rule a document breaks.
type RecordError struct {
	Kind  Kind
	Index int // position in its array; -1 for a single record
	ID    string
	Field string
	Rule  string
	// ref is the record a broken reference names ("kind\x00id").
	ref string
}

func (e *RecordError) Error() string {
	where := e.Kind.String()
	if e.Index >= 0 {
		where = fmt.Sprintf("%ss[%d]", e.Kind, e.Index)
	}
	if e.ID != "" {
		where += fmt.Sprintf(" (id %q)", e.ID)
	}
	if e.Field == "" {
		return where + ": " + e.Rule
	}
	return where + ": " + e.Field + ": " + e.Rule
}

func (e *RecordError) Unwrap() error { return ErrInvalid }

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

// Validate checks the rules that span records: unique ids per kind within a
// tenant, and references that stay inside a tenant. Each record is already
// valid on its own (the Decode functions check that).
func (d *Document) Validate() error {
	// Rules hold per tenant: group the records' indexes by tenant and check
	// tenants on every core with small maps, then report the violations in
	// document order.
	type indexes struct{ lics, asgs, ents, grps []int32 }
	parts := tenantParts[indexes]{m: map[string]*indexes{}}
	get := parts.get
	for i, r := range d.Licenses {
		x := get(r.TenantID)
		x.lics = append(x.lics, int32(i))
	}
	for i, r := range d.Assignments {
		x := get(r.TenantID)
		x.asgs = append(x.asgs, int32(i))
	}
	for i, r := range d.Entitlements {
		x := get(r.TenantID)
		x.ents = append(x.ents, int32(i))
	}
	for i, r := range d.Groups {
		x := get(r.TenantID)
		x.grps = append(x.grps, int32(i))
	}
	type found struct {
		order [3]int // rule, record index, member
		err   error
	}
	check := func(tenant string, x *indexes, out []found) []found {
		q := strconv.Quote(tenant)
		lics := make(map[string]bool, len(x.lics))
		for _, i := range x.lics {
			l := d.Licenses[i]
			if lics[l.ID] {
				out = append(out, found{[3]int{0, int(i)}, &RecordError{Kind: KindLicense, Index: int(i), ID: l.ID, Field: "id", Rule: "must be unique among licenses of tenant " + q}})
			}
			lics[l.ID] = true
		}
		groups := make(map[string]bool, len(x.grps))
		for _, i := range x.grps {
			g := d.Groups[i]
			if groups[g.ID] {
				out = append(out, found{[3]int{1, int(i)}, &RecordError{Kind: KindGroup, Index: int(i), ID: g.ID, Field: "id", Rule: "must be unique among groups of tenant " + q}})
			}
			groups[g.ID] = true
		}
		seen := make(map[string]bool, len(x.asgs))
		for _, i := range x.asgs {
			a := d.Assignments[i]
			if seen[a.ID] {
				out = append(out, found{[3]int{2, int(i), 0}, &RecordError{Kind: KindAssignment, Index: int(i), ID: a.ID, Field: "id", Rule: "must be unique among assignments of tenant " + q}})
			}
			seen[a.ID] = true
			if !lics[a.LicenseID] {
				out = append(out, found{[3]int{2, int(i), 1}, &RecordError{Kind: KindAssignment, Index: int(i), ID: a.ID, Field: "license_id",
					Rule: fmt.Sprintf("must name a license of tenant %q, no license %q there", tenant, a.LicenseID), ref: "license\x00" + a.LicenseID}})
			}
		}
		clear(seen)
		for _, i := range x.ents {
			e := d.Entitlements[i]
			if seen[e.ID] {
				out = append(out, found{[3]int{3, int(i)}, &RecordError{Kind: KindEntitlement, Index: int(i), ID: e.ID, Field: "id", Rule: "must be unique among entitlements of tenant " + q}})
			}
			seen[e.ID] = true
		}
		for _, i := range x.grps {
			g := d.Groups[i]
			for j, m := range g.Members {
				if m.Type == GroupPrincipal && !groups[m.ID] {
					out = append(out, found{[3]int{4, int(i), j}, &RecordError{Kind: KindGroup, Index: int(i), ID: g.ID, Field: fmt.Sprintf("members[%d].id", j),
						Rule: fmt.Sprintf("must name a group of tenant %q, no group %q there", tenant, m.ID), ref: "group\x00" + m.ID}})
				}
			}
		}
		return out
	}
	tenants := make([]string, 0, len(parts.m))
	for t := range parts.m {
		tenants = append(tenants, t)
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, len(tenants)/8))
	results := make([][]found, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(tenants); i += workers {
				results[w] = check(tenants[i], parts.m[tenants[i]], results[w])
			}
		}()
	}
	wg.Wait()
	var all []found
	for _, r := range results {
		all = append(all, r...)
	}
	slices.SortFunc(all, func(a, b found) int { return slices.Compare(a.order[:], b.order[:]) })
	errs := make([]error, len(all))
	for i, f := range all {
		errs[i] = f.err
	}
	return errors.Join(errs...)
}

// MarshalJSON writes the document in the state format.
func (d *Document) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	d.WriteTo(&b)
	return b.Bytes(), nil
}

// WriteTo writes the document in the state format, one record a line.
func (d *Document) WriteTo(w io.Writer) (int64, error) {
	var total int64
	buf := make([]byte, 0, 4096)
	flush := func() error {
		n, err := w.Write(buf)
		total += int64(n)
		buf = buf[:0]
		return err
	}
	section := func(name string, n int, rec func(b []byte, i int) []byte, last bool) error {
		buf = append(buf, "  \""...)
		buf = append(buf, name...)
		buf = append(buf, "\": ["...)
		for i := 0; i < n; i++ {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, "\n    "...)
			buf = rec(buf, i)
			if len(buf) > 64<<10 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if n > 0 {
			buf = append(buf, "\n  "...)
		}
		buf = append(buf, ']')
		if !last {
			buf = append(buf, ',')
		}
		buf = append(buf, '\n')
		return nil
	}
	buf = append(buf, "{\n"...)
	steps := []error{
		section("licenses", len(d.Licenses), func(b []byte, i int) []byte { return d.Licenses[i].AppendJSON(b) }, false),
		section("assignments", len(d.Assignments), func(b []byte, i int) []byte { return d.Assignments[i].AppendJSON(b) }, false),
		section("entitlements", len(d.Entitlements), func(b []byte, i int) []byte { return d.Entitlements[i].AppendJSON(b) }, false),
		section("groups", len(d.Groups), func(b []byte, i int) []byte { return d.Groups[i].AppendJSON(b) }, true),
	}
	if err := errors.Join(steps...); err != nil {
		return total, err
	}
	buf = append(buf, "}\n"...)
	return total, flush()
}
