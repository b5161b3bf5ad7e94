package decision

// The closed value sets of the state format (docs/state.md).

import (
	"fmt"
)

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
