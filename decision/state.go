package decision

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// License is a software license of a tenant. Records are immutable once
// they are part of a snapshot.
type License struct {
	ID, TenantID, Name, Description, AssetID, AppID string
	SeatLimit                                       int64 // -1: unlimited (null)
	SeatOverage                                     int64 // seats allowed past SeatLimit, marked over_limit
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
