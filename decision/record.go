package decision

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Record is one record of the state: a *License, *Assignment, *Entitlement
// or *Group. What the state format says of a kind lives with its type; code
// that moves records of any kind (sync, edits) goes through Record.
type Record interface {
	Kind() Kind
	// Key is where the record lives: its tenant and its id (unique per
	// kind within the tenant).
	Key() (tenant, id string)
	// AppendJSON appends the record's canonical JSON (the state format).
	AppendJSON(b []byte) []byte
}

func (*License) Kind() Kind     { return KindLicense }
func (*Assignment) Kind() Kind  { return KindAssignment }
func (*Entitlement) Kind() Kind { return KindEntitlement }
func (*Group) Kind() Kind       { return KindGroup }

func (l *License) Key() (string, string)     { return l.TenantID, l.ID }
func (a *Assignment) Key() (string, string)  { return a.TenantID, a.ID }
func (e *Entitlement) Key() (string, string) { return e.TenantID, e.ID }
func (g *Group) Key() (string, string)       { return g.TenantID, g.ID }

// DecodeRecord validates one record of a kind (the state format of that
// kind); the record owns its strings.
func DecodeRecord(kind Kind, raw []byte) (Record, error) {
	switch kind {
	case KindLicense:
		return asRecord(DecodeLicense(raw))
	case KindAssignment:
		return asRecord(DecodeAssignment(raw))
	case KindEntitlement:
		return asRecord(DecodeEntitlement(raw))
	case KindGroup:
		return asRecord(DecodeGroup(raw))
	}
	return nil, fmt.Errorf("unknown kind %d", kind)
}

// asRecord keeps a failed decode's record a nil Record, not a nil pointer
// in one.
func asRecord[R Record](r R, err error) (Record, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Add appends rec to d's records of its kind.
func (d *Document) Add(rec Record) {
	switch r := rec.(type) {
	case *License:
		d.Licenses = append(d.Licenses, r)
	case *Assignment:
		d.Assignments = append(d.Assignments, r)
	case *Entitlement:
		d.Entitlements = append(d.Entitlements, r)
	case *Group:
		d.Groups = append(d.Groups, r)
	}
}

// RecordsOf returns d's records of a kind.
func (d *Document) RecordsOf(kind Kind) []Record {
	var out []Record
	switch kind {
	case KindLicense:
		out = appendRecords(out, d.Licenses)
	case KindAssignment:
		out = appendRecords(out, d.Assignments)
	case KindEntitlement:
		out = appendRecords(out, d.Entitlements)
	case KindGroup:
		out = appendRecords(out, d.Groups)
	}
	return out
}

func appendRecords[R Record](out []Record, recs []R) []Record {
	out = slices.Grow(out, len(recs))
	for _, r := range recs {
		out = append(out, r)
	}
	return out
}

// wireKeys lists the JSON keys of a wire struct, from its tags: the one
// source of a kind's field names for the fast decoders.
func wireKeys[W any]() []string {
	t := reflect.TypeFor[W]()
	var keys []string
	for i := range t.NumField() {
		if tag, ok := t.Field(i).Tag.Lookup("json"); ok {
			keys = append(keys, strings.Split(tag, ",")[0])
		}
	}
	return keys
}
