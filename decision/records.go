package decision

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/usher-authz/usher/internal/jsonw"
)

// MaxIDLen bounds every id and reference, in the state and in requests,
// so keys stay small in Redis and in the decision cache.
const MaxIDLen = 256

type licenseWire struct {
	ID             string  `json:"id"`
	TenantID       string  `json:"tenant_id"`
	Name           string  `json:"name"`
	Description    string  `json:"description"`
	AssetID        string  `json:"asset_id"`
	SeatLimit      *int64  `json:"seat_limit"`
	SeatOverage    int64   `json:"seat_overage"`
	Type           string  `json:"type"`
	Status         string  `json:"status"`
	ValidFrom      *string `json:"valid_from"`
	ExpiresAt      *string `json:"expires_at"`
	LeaseDurationS int64   `json:"lease_duration_s"`
	AppID          string  `json:"app_id"`
	CreatedAt      *string `json:"created_at"`
	UpdatedAt      *string `json:"updated_at"`
	IsDeleted      bool    `json:"is_deleted"`

	times [4]string // what the time pointers of the fast path point at
}

type assignmentWire struct {
	ID           string  `json:"id"`
	TenantID     string  `json:"tenant_id"`
	LicenseID    string  `json:"license_id"`
	AssigneeID   string  `json:"assignee_id"`
	AssigneeType string  `json:"assignee_type"`
	AssetID      string  `json:"asset_id"`
	Reservation  string  `json:"reservation"`
	Status       string  `json:"status"`
	AssignedAt   *string `json:"assigned_at"`
	ValidFrom    *string `json:"valid_from"`
	ExpiresAt    *string `json:"expires_at"`
	IsDeleted    bool    `json:"is_deleted"`
	AppID        string  `json:"app_id"`
	LastUsedAt   *string `json:"last_used_at"`

	times [4]string
}

type entitlementWire struct {
	ID              string  `json:"id"`
	TenantID        string  `json:"tenant_id"`
	AssetID         string  `json:"asset_id"`
	PrincipalID     string  `json:"principal_id"`
	PrincipalType   string  `json:"principal_type"`
	EntitlementType string  `json:"entitlement_type"`
	GrantSource     string  `json:"grant_source"`
	Status          string  `json:"status"`
	GrantedAt       *string `json:"granted_at"`
	ValidFrom       *string `json:"valid_from"`
	ExpiresAt       *string `json:"expires_at"`
	IsDeleted       bool    `json:"is_deleted"`
	AppID           string  `json:"app_id"`

	times [3]string
}

type memberWire struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

type groupWire struct {
	ID       string       `json:"id"`
	TenantID string       `json:"tenant_id"`
	Members  []memberWire `json:"members"`
}

// owned gives a decoded record its own strings.
func owned[R interface{ own() }](r R, err error) (R, error) {
	if err != nil {
		return r, err
	}
	r.own()
	return r, nil
}

// own gives the strings a copy of their own, in one allocation, so that
// the record does not keep the buffer it was decoded from.
func own(fields ...*string) {
	n := 0
	for _, f := range fields {
		n += len(*f)
	}
	if n == 0 {
		return
	}
	b := make([]byte, 0, n)
	for _, f := range fields {
		b = append(b, *f...)
	}
	all := unsafe.String(&b[0], n)
	off := 0
	for _, f := range fields {
		*f = all[off : off+len(*f)]
		off += len(*f)
	}
}

func (l *License) own() { own(&l.ID, &l.TenantID, &l.Name, &l.Description, &l.AssetID, &l.AppID) }
func (a *Assignment) own() {
	own(&a.ID, &a.TenantID, &a.LicenseID, &a.AssigneeID, &a.AssetID, &a.AppID)
}
func (e *Entitlement) own() { own(&e.ID, &e.TenantID, &e.AssetID, &e.PrincipalID, &e.Type, &e.AppID) }
func (g *Group) own() {
	fields := []*string{&g.ID, &g.TenantID}
	for i := range g.Members {
		fields = append(fields, &g.Members[i].ID)
	}
	own(fields...)
}

// checker collects the rule violations of one record.
type checker struct {
	kind Kind
	id   string
	errs []error
}

func (c *checker) fail(field, rule string) {
	c.errs = append(c.errs, &RecordError{Kind: c.kind, Index: -1, ID: c.id, Field: field, Rule: rule})
}

func (c *checker) err() error { return errors.Join(c.errs...) }

// plainID reports whether a required id passes id_ without a complaint.
func plainID(v string) bool {
	if v == "" || len(v) > MaxIDLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

func (c *checker) id_(field, v string, required bool) {
	switch {
	case v == "" && required:
		c.fail(field, "is required")
	case len(v) > MaxIDLen:
		c.fail(field, fmt.Sprintf("must be at most %d bytes", MaxIDLen))
	default:
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] == 0x7f {
				c.fail(field, "must not contain control characters")
				return
			}
		}
	}
}

func (c *checker) time(field string, v *string) Instant {
	if v == nil {
		return NoTime
	}
	t, err := ParseInstant(*v)
	if err != nil {
		c.fail(field, err.Error())
	}
	return t
}

func (c *checker) window(from, until Instant) {
	if from.Set() && until.Set() && until <= from {
		c.fail("expires_at", "must be after valid_from")
	}
}

func (c *checker) status(v string, allowed ...Status) Status {
	if v == "" {
		return StatusActive
	}
	for _, s := range allowed {
		if s.String() == v {
			return s
		}
	}
	names := ""
	for i, s := range allowed {
		if i > 0 {
			names += "|"
		}
		names += s.String()
	}
	c.fail("status", fmt.Sprintf("must be one of %s, got %s", names, Quote(v)))
	return StatusActive
}

func (c *checker) principal(field, v string) PrincipalType {
	p, ok := ParsePrincipalType(v)
	if !ok {
		c.fail(field, fmt.Sprintf("must be person or group (user means person), got %s", Quote(v)))
	}
	return p
}

// decode unmarshals one record, turning JSON type errors into record errors.
func decode(kind Kind, m []byte, v any) error {
	err := json.Unmarshal(m, v)
	if err == nil {
		return nil
	}
	var probe struct {
		ID any `json:"id"`
	}
	_ = json.Unmarshal(m, &probe)
	id, _ := probe.ID.(string)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &RecordError{Kind: kind, Index: -1, ID: id, Field: te.Field, Rule: "must be " + typeName(te.Type.Kind().String()) + ", got JSON " + te.Value}
	}
	return &RecordError{Kind: kind, Index: -1, ID: id, Rule: "must be a JSON object: " + err.Error()}
}

func typeName(k string) string {
	switch k {
	case "int64":
		return "an integer"
	case "string", "ptr":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct":
		return "an object"
	}
	return "a " + k
}

// DecodeLicense parses and validates one license record.
func DecodeLicense(m []byte) (*License, error) { return owned(decodeLicense(m)) }

// decodeLicense is DecodeLicense with the record's strings aliasing m.
func decodeLicense(m []byte) (*License, error) {
	var w licenseWire // stays on the stack: the fallback decodes into its own
	if fastLicense(m, &w) {
		return w.record()
	}
	slow := new(licenseWire)
	if err := decode(KindLicense, m, slow); err != nil {
		return nil, err
	}
	return slow.record()
}

// record checks the decoded fields and builds the record.
func (w *licenseWire) record() (*License, error) {
	c := checker{kind: KindLicense, id: w.ID}
	c.id_("id", w.ID, true)
	c.id_("tenant_id", w.TenantID, true)
	c.id_("name", w.Name, true)
	c.id_("asset_id", w.AssetID, false)
	c.id_("app_id", w.AppID, false)
	l := &License{ID: w.ID, TenantID: w.TenantID, Name: w.Name, Description: w.Description,
		AssetID: w.AssetID, AppID: w.AppID, SeatLimit: -1, Deleted: w.IsDeleted, LeaseDurationS: w.LeaseDurationS}
	if w.SeatLimit != nil {
		if *w.SeatLimit < 0 {
			c.fail("seat_limit", "must be a non-negative integer or null, got "+strconv.FormatInt(*w.SeatLimit, 10))
		}
		l.SeatLimit = *w.SeatLimit
	}
	if w.SeatOverage < 0 {
		c.fail("seat_overage", "must be a non-negative integer, got "+strconv.FormatInt(w.SeatOverage, 10))
	}
	l.SeatOverage = w.SeatOverage
	switch w.Type {
	case "", "named":
	case "floating":
		l.Type = Floating
	default:
		c.fail("type", fmt.Sprintf("must be one of named|floating, got %s", Quote(w.Type)))
	}
	l.Status = c.status(w.Status, StatusActive, StatusSuspended, StatusRevoked)
	if w.LeaseDurationS < 0 {
		c.fail("lease_duration_s", "must be a non-negative integer")
	}
	l.ValidFrom = c.time("valid_from", w.ValidFrom)
	l.ExpiresAt = c.time("expires_at", w.ExpiresAt)
	c.window(l.ValidFrom, l.ExpiresAt)
	l.CreatedAt = c.time("created_at", w.CreatedAt)
	l.UpdatedAt = c.time("updated_at", w.UpdatedAt)
	if err := c.err(); err != nil {
		return nil, err
	}
	return l, nil
}

// DecodeAssignment parses and validates one assignment record.
func DecodeAssignment(m []byte) (*Assignment, error) { return owned(decodeAssignment(m)) }

// decodeAssignment is DecodeAssignment with the record's strings aliasing m.
func decodeAssignment(m []byte) (*Assignment, error) {
	var w assignmentWire // stays on the stack: the fallback decodes into its own
	if fastAssignment(m, &w) {
		return w.record()
	}
	slow := new(assignmentWire)
	if err := decode(KindAssignment, m, slow); err != nil {
		return nil, err
	}
	return slow.record()
}

// record checks the decoded fields and builds the record.
func (w *assignmentWire) record() (*Assignment, error) {
	c := checker{kind: KindAssignment, id: w.ID}
	c.id_("id", w.ID, true)
	c.id_("tenant_id", w.TenantID, true)
	c.id_("license_id", w.LicenseID, true)
	c.id_("assignee_id", w.AssigneeID, true)
	c.id_("asset_id", w.AssetID, false)
	c.id_("app_id", w.AppID, false)
	a := &Assignment{ID: w.ID, TenantID: w.TenantID, LicenseID: w.LicenseID, AssigneeID: w.AssigneeID,
		AssetID: w.AssetID, AppID: w.AppID, Deleted: w.IsDeleted}
	a.AssigneeType = c.principal("assignee_type", w.AssigneeType)
	switch w.Reservation {
	case "", "reserved":
	case "dynamic":
		a.Reservation = Dynamic
	case "denied":
		a.Reservation = Denied
	default:
		c.fail("reservation", fmt.Sprintf("must be one of reserved|dynamic|denied, got %s", Quote(w.Reservation)))
	}
	a.Status = c.status(w.Status, StatusActive, StatusSuspended, StatusRevoked)
	a.AssignedAt = c.time("assigned_at", w.AssignedAt)
	a.ValidFrom = c.time("valid_from", w.ValidFrom)
	a.ExpiresAt = c.time("expires_at", w.ExpiresAt)
	c.window(a.ValidFrom, a.ExpiresAt)
	a.LastUsedAt = c.time("last_used_at", w.LastUsedAt)
	if err := c.err(); err != nil {
		return nil, err
	}
	return a, nil
}

// DecodeEntitlement parses and validates one entitlement record.
func DecodeEntitlement(m []byte) (*Entitlement, error) { return owned(decodeEntitlement(m)) }

// decodeEntitlement is DecodeEntitlement with the record's strings aliasing m.
func decodeEntitlement(m []byte) (*Entitlement, error) {
	var w entitlementWire // stays on the stack: the fallback decodes into its own
	if fastEntitlement(m, &w) {
		return w.record()
	}
	slow := new(entitlementWire)
	if err := decode(KindEntitlement, m, slow); err != nil {
		return nil, err
	}
	return slow.record()
}

// record checks the decoded fields and builds the record.
func (w *entitlementWire) record() (*Entitlement, error) {
	c := checker{kind: KindEntitlement, id: w.ID}
	c.id_("id", w.ID, true)
	c.id_("tenant_id", w.TenantID, true)
	c.id_("asset_id", w.AssetID, true)
	c.id_("principal_id", w.PrincipalID, true)
	c.id_("entitlement_type", w.EntitlementType, true)
	c.id_("app_id", w.AppID, false)
	e := &Entitlement{ID: w.ID, TenantID: w.TenantID, AssetID: w.AssetID, PrincipalID: w.PrincipalID,
		Type: w.EntitlementType, AppID: w.AppID, Deleted: w.IsDeleted}
	e.PrincipalType = c.principal("principal_type", w.PrincipalType)
	switch w.GrantSource {
	case "", "direct":
	case "provisioned":
		e.GrantSource = SourceProvisioned
	case "inherited":
		e.GrantSource = SourceInherited
	default:
		c.fail("grant_source", fmt.Sprintf("must be one of provisioned|inherited|direct, got %s", Quote(w.GrantSource)))
	}
	e.Status = c.status(w.Status, StatusActive, StatusPendingApproval, StatusSuspended, StatusRevoked)
	e.GrantedAt = c.time("granted_at", w.GrantedAt)
	e.ValidFrom = c.time("valid_from", w.ValidFrom)
	e.ExpiresAt = c.time("expires_at", w.ExpiresAt)
	c.window(e.ValidFrom, e.ExpiresAt)
	if err := c.err(); err != nil {
		return nil, err
	}
	return e, nil
}

// DecodeGroup parses and validates one group record.
func DecodeGroup(m []byte) (*Group, error) { return owned(decodeGroup(m)) }

// decodeGroup is DecodeGroup with the record's strings aliasing m.
func decodeGroup(m []byte) (*Group, error) {
	var w groupWire // stays on the stack: the fallback decodes into its own
	if fastGroup(m, &w) {
		return w.record()
	}
	slow := new(groupWire)
	if err := decode(KindGroup, m, slow); err != nil {
		return nil, err
	}
	return slow.record()
}

// record checks the decoded fields and builds the record.
func (w *groupWire) record() (*Group, error) {
	c := checker{kind: KindGroup, id: w.ID}
	c.id_("id", w.ID, true)
	c.id_("tenant_id", w.TenantID, true)
	g := &Group{ID: w.ID, TenantID: w.TenantID, Members: make([]Member, 0, len(w.Members))}
	for i, m := range w.Members {
		t, ok := ParsePrincipalType(m.Type)
		if !ok || !plainID(m.ID) {
			// Field names are built only for errors: groups can be large.
			field := fmt.Sprintf("members[%d]", i)
			c.id_(field+".id", m.ID, true)
			t = c.principal(field+".type", m.Type)
		}
		g.Members = append(g.Members, Member{ID: m.ID, Type: t})
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return g, nil
}

// AppendJSON appends the license in the state format.
func (l *License) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = jsonw.String(b, l.ID)
	b = append(b, `,"tenant_id":`...)
	b = jsonw.String(b, l.TenantID)
	b = append(b, `,"name":`...)
	b = jsonw.String(b, l.Name)
	b = append(b, `,"description":`...)
	b = jsonw.String(b, l.Description)
	b = append(b, `,"asset_id":`...)
	b = jsonw.NullString(b, l.AssetID)
	b = append(b, `,"seat_limit":`...)
	if l.SeatLimit < 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, l.SeatLimit, 10)
	}
	b = append(b, `,"seat_overage":`...)
	b = strconv.AppendInt(b, l.SeatOverage, 10)
	b = append(b, `,"type":`...)
	b = jsonw.String(b, l.Type.String())
	b = append(b, `,"status":`...)
	b = jsonw.String(b, l.Status.String())
	b = append(b, `,"valid_from":`...)
	b = l.ValidFrom.AppendJSON(b)
	b = append(b, `,"expires_at":`...)
	b = l.ExpiresAt.AppendJSON(b)
	b = append(b, `,"lease_duration_s":`...)
	b = strconv.AppendInt(b, l.LeaseDurationS, 10)
	b = append(b, `,"app_id":`...)
	b = jsonw.NullString(b, l.AppID)
	b = append(b, `,"created_at":`...)
	b = l.CreatedAt.AppendJSON(b)
	b = append(b, `,"updated_at":`...)
	b = l.UpdatedAt.AppendJSON(b)
	b = append(b, `,"is_deleted":`...)
	b = jsonw.Bool(b, l.Deleted)
	return append(b, '}')
}

// AppendJSON appends the assignment in the state format.
func (a *Assignment) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = jsonw.String(b, a.ID)
	b = append(b, `,"tenant_id":`...)
	b = jsonw.String(b, a.TenantID)
	b = append(b, `,"license_id":`...)
	b = jsonw.String(b, a.LicenseID)
	b = append(b, `,"assignee_id":`...)
	b = jsonw.String(b, a.AssigneeID)
	b = append(b, `,"assignee_type":`...)
	b = jsonw.String(b, a.AssigneeType.String())
	b = append(b, `,"asset_id":`...)
	b = jsonw.NullString(b, a.AssetID)
	b = append(b, `,"reservation":`...)
	b = jsonw.String(b, a.Reservation.String())
	b = append(b, `,"status":`...)
	b = jsonw.String(b, a.Status.String())
	b = append(b, `,"assigned_at":`...)
	b = a.AssignedAt.AppendJSON(b)
	b = append(b, `,"valid_from":`...)
	b = a.ValidFrom.AppendJSON(b)
	b = append(b, `,"expires_at":`...)
	b = a.ExpiresAt.AppendJSON(b)
	b = append(b, `,"is_deleted":`...)
	b = jsonw.Bool(b, a.Deleted)
	b = append(b, `,"app_id":`...)
	b = jsonw.NullString(b, a.AppID)
	b = append(b, `,"last_used_at":`...)
	b = a.LastUsedAt.AppendJSON(b)
	return append(b, '}')
}

// AppendJSON appends the entitlement in the state format.
func (e *Entitlement) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = jsonw.String(b, e.ID)
	b = append(b, `,"tenant_id":`...)
	b = jsonw.String(b, e.TenantID)
	b = append(b, `,"asset_id":`...)
	b = jsonw.String(b, e.AssetID)
	b = append(b, `,"principal_id":`...)
	b = jsonw.String(b, e.PrincipalID)
	b = append(b, `,"principal_type":`...)
	b = jsonw.String(b, e.PrincipalType.String())
	b = append(b, `,"entitlement_type":`...)
	b = jsonw.String(b, e.Type)
	b = append(b, `,"grant_source":`...)
	b = jsonw.String(b, e.GrantSource.String())
	b = append(b, `,"status":`...)
	b = jsonw.String(b, e.Status.String())
	b = append(b, `,"granted_at":`...)
	b = e.GrantedAt.AppendJSON(b)
	if e.ValidFrom.Set() {
		b = append(b, `,"valid_from":`...)
		b = e.ValidFrom.AppendJSON(b)
	}
	b = append(b, `,"expires_at":`...)
	b = e.ExpiresAt.AppendJSON(b)
	b = append(b, `,"is_deleted":`...)
	b = jsonw.Bool(b, e.Deleted)
	b = append(b, `,"app_id":`...)
	b = jsonw.NullString(b, e.AppID)
	return append(b, '}')
}

// AppendJSON appends the group in the state format.
func (g *Group) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = jsonw.String(b, g.ID)
	b = append(b, `,"tenant_id":`...)
	b = jsonw.String(b, g.TenantID)
	b = append(b, `,"members":[`...)
	for i, m := range g.Members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = jsonw.String(b, m.ID)
		b = append(b, `,"type":`...)
		b = jsonw.String(b, m.Type.String())
		b = append(b, '}')
	}
	return append(b, "]}"...)
}
