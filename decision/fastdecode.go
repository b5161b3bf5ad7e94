package decision

import (
	"strings"

	"github.com/usher-authz/usher/internal/jsonscan"
)

// The fast decoders fill a record's wire struct exactly as json.Unmarshal
// would for the common shape of records; for anything else (escapes,
// non-ASCII, a key that differs from a known one only in case, a value of
// another type) they report false and the encoding/json path decodes the
// record and words its error.

// fastObjectAt reads one object at the scanner's position, handing each
// member to field, which reports (known, ok); unknown members are skipped
// unless they match a known key but for case.
func fastObjectAt(p *jsonscan.Scanner, keys []string, field func(key string) (bool, bool)) bool {
	if !p.Byte('{') {
		return false
	}
	return p.Object(func(key string) bool {
		if known, ok := field(key); known {
			return ok
		}
		for _, k := range keys {
			if strings.EqualFold(k, key) {
				return false
			}
		}
		return p.Skip()
	})
}

// str reads a string aliasing the buffer (Decode* give records their own
// copies; whole documents alias their bytes).
func str(p *jsonscan.Scanner, dst *string) bool {
	if p.Null() {
		return true
	}
	return p.RawString(dst)
}

// optTime reads an optional time into slot, a field of the wire, and
// points dst at it: the string aliases the buffer, as record() parses it
// and keeps only the Instant.
func optTime(p *jsonscan.Scanner, dst **string, slot *string) bool {
	if p.Null() {
		*dst = nil
		return true
	}
	if !p.RawString(slot) {
		return false
	}
	*dst = slot
	return true
}

func num(p *jsonscan.Scanner, dst *int64) bool { return p.Null() || p.Int(dst) }

func optNum(p *jsonscan.Scanner, dst **int64) bool {
	if p.Null() {
		*dst = nil
		return true
	}
	var n int64
	if !p.Int(&n) {
		return false
	}
	*dst = &n
	return true
}

func boolean(p *jsonscan.Scanner, dst *bool) bool { return p.Null() || p.Bool(dst) }

var licenseKeys = wireKeys[licenseWire]()

func fastLicense(b []byte, w *licenseWire) bool {
	p := &jsonscan.Scanner{Buf: b}
	return fastObjectAt(p, licenseKeys, func(key string) (bool, bool) {
		switch key {
		case "id":
			return true, str(p, &w.ID)
		case "tenant_id":
			return true, str(p, &w.TenantID)
		case "name":
			return true, str(p, &w.Name)
		case "description":
			return true, str(p, &w.Description)
		case "asset_id":
			return true, str(p, &w.AssetID)
		case "seat_limit":
			return true, optNum(p, &w.SeatLimit)
		case "seat_overage":
			return true, num(p, &w.SeatOverage)
		case "type":
			return true, str(p, &w.Type)
		case "status":
			return true, str(p, &w.Status)
		case "valid_from":
			return true, optTime(p, &w.ValidFrom, &w.times[0])
		case "expires_at":
			return true, optTime(p, &w.ExpiresAt, &w.times[1])
		case "lease_duration_s":
			return true, num(p, &w.LeaseDurationS)
		case "app_id":
			return true, str(p, &w.AppID)
		case "created_at":
			return true, optTime(p, &w.CreatedAt, &w.times[2])
		case "updated_at":
			return true, optTime(p, &w.UpdatedAt, &w.times[3])
		case "is_deleted":
			return true, boolean(p, &w.IsDeleted)
		}
		return false, false
	}) && p.Done()
}

var assignmentKeys = wireKeys[assignmentWire]()

func fastAssignment(b []byte, w *assignmentWire) bool {
	p := &jsonscan.Scanner{Buf: b}
	return fastObjectAt(p, assignmentKeys, func(key string) (bool, bool) {
		switch key {
		case "id":
			return true, str(p, &w.ID)
		case "tenant_id":
			return true, str(p, &w.TenantID)
		case "license_id":
			return true, str(p, &w.LicenseID)
		case "assignee_id":
			return true, str(p, &w.AssigneeID)
		case "assignee_type":
			return true, str(p, &w.AssigneeType)
		case "asset_id":
			return true, str(p, &w.AssetID)
		case "reservation":
			return true, str(p, &w.Reservation)
		case "status":
			return true, str(p, &w.Status)
		case "assigned_at":
			return true, optTime(p, &w.AssignedAt, &w.times[0])
		case "valid_from":
			return true, optTime(p, &w.ValidFrom, &w.times[1])
		case "expires_at":
			return true, optTime(p, &w.ExpiresAt, &w.times[2])
		case "is_deleted":
			return true, boolean(p, &w.IsDeleted)
		case "app_id":
			return true, str(p, &w.AppID)
		case "last_used_at":
			return true, optTime(p, &w.LastUsedAt, &w.times[3])
		}
		return false, false
	}) && p.Done()
}

var entitlementKeys = wireKeys[entitlementWire]()

func fastEntitlement(b []byte, w *entitlementWire) bool {
	p := &jsonscan.Scanner{Buf: b}
	return fastObjectAt(p, entitlementKeys, func(key string) (bool, bool) {
		switch key {
		case "id":
			return true, str(p, &w.ID)
		case "tenant_id":
			return true, str(p, &w.TenantID)
		case "asset_id":
			return true, str(p, &w.AssetID)
		case "principal_id":
			return true, str(p, &w.PrincipalID)
		case "principal_type":
			return true, str(p, &w.PrincipalType)
		case "entitlement_type":
			return true, str(p, &w.EntitlementType)
		case "grant_source":
			return true, str(p, &w.GrantSource)
		case "status":
			return true, str(p, &w.Status)
		case "granted_at":
			return true, optTime(p, &w.GrantedAt, &w.times[0])
		case "valid_from":
			return true, optTime(p, &w.ValidFrom, &w.times[1])
		case "expires_at":
			return true, optTime(p, &w.ExpiresAt, &w.times[2])
		case "is_deleted":
			return true, boolean(p, &w.IsDeleted)
		case "app_id":
			return true, str(p, &w.AppID)
		}
		return false, false
	}) && p.Done()
}

var groupKeys, memberKeys = wireKeys[groupWire](), wireKeys[memberWire]()

func fastGroup(b []byte, w *groupWire) bool {
	p := &jsonscan.Scanner{Buf: b}
	return fastObjectAt(p, groupKeys, func(key string) (bool, bool) {
		switch key {
		case "id":
			return true, str(p, &w.ID)
		case "tenant_id":
			return true, str(p, &w.TenantID)
		case "members":
			return true, members(p, w)
		}
		return false, false
	}) && p.Done()
}

func members(p *jsonscan.Scanner, w *groupWire) bool {
	if p.Null() {
		w.Members = nil
		return true
	}
	if !p.Byte('[') {
		return false
	}
	w.Members = []memberWire{}
	if p.Byte(']') {
		return true
	}
	for {
		var m memberWire
		if !fastObjectAt(p, memberKeys, func(key string) (bool, bool) {
			switch key {
			case "id":
				return true, str(p, &m.ID)
			case "type":
				return true, str(p, &m.Type)
			}
			return false, false
		}) {
			return false
		}
		w.Members = append(w.Members, m)
		if p.Byte(',') {
			continue
		}
		return p.Byte(']')
	}
}
