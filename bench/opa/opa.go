// Package opa holds the peer Usher is measured against: the same decision
// semantics written all in Rego (peer.rego) over the state held in OPA's
// store, the state converted to OPA data, and requests converted to OPA
// input. It serves the engine benchmarks, the answer-equality test and the
// whole-process comparison against `opa run --server`.
package opa

import (
	_ "embed"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/policy"
)

// Policy is the all-Rego peer policy; its decision is
// data.usher.peer.decision.
//
//go:embed peer.rego
var Policy string

// Query is the peer's decision.
const Query = "data.usher.peer.decision"

func key(t decision.PrincipalType, id string) string { return t.String() + ":" + id }

// seconds is i in Unix seconds, rounded down so boundaries keep their order.
func seconds(i decision.Instant) int64 { return i.Time().Unix() }

func times(m map[string]any, from, until decision.Instant) {
	if from.Set() {
		m["valid_from"] = seconds(from)
	}
	if until.Set() {
		m["expires_at"] = seconds(until)
	}
}

func app(m map[string]any, a string) {
	if a != "" {
		m["app_id"] = a
	}
}

// Data converts a snapshot's state into the peer's OPA data document,
// with the indexes the peer policy reads. implies is the implication table
// (type -> types it implies).
func Data(s *decision.Snapshot, implies map[string][]string) map[string]any {
	tenants := map[string]any{}
	for _, tid := range s.TenantIDs() {
		ts := s.Tenant(tid)
		t := ts.Records()
		licenses := map[string]any{}
		byName := map[string][]any{}
		for _, l := range t.Licenses {
			if l.Deleted {
				continue
			}
			m := map[string]any{"status": l.Status.String(), "name": l.Name, "floating": l.Type == decision.Floating}
			times(m, l.ValidFrom, l.ExpiresAt)
			app(m, l.AppID)
			licenses[l.ID] = m
			byName[l.Name] = append(byName[l.Name], l.ID)
		}
		seats := map[string]map[string][]any{}
		for _, a := range t.Assignments {
			if a.Deleted {
				continue
			}
			m := map[string]any{"id": a.ID, "status": a.Status.String(), "reservation": a.Reservation.String()}
			times(m, a.ValidFrom, a.ExpiresAt)
			app(m, a.AppID)
			if seats[a.LicenseID] == nil {
				seats[a.LicenseID] = map[string][]any{}
			}
			k := key(a.AssigneeType, a.AssigneeID)
			seats[a.LicenseID][k] = append(seats[a.LicenseID][k], m)
		}
		ents := map[string]map[string][]any{}
		for _, e := range t.Entitlements {
			if e.Deleted {
				continue
			}
			m := map[string]any{"id": e.ID, "status": e.Status.String(), "entitlement_type": e.Type}
			times(m, e.ValidFrom, e.ExpiresAt)
			app(m, e.AppID)
			if ents[e.AssetID] == nil {
				ents[e.AssetID] = map[string][]any{}
			}
			k := key(e.PrincipalType, e.PrincipalID)
			ents[e.AssetID][k] = append(ents[e.AssetID][k], m)
		}
		groupsOf := map[string]any{}
		for p, gs := range ts.Memberships() {
			list := make([]any, len(gs))
			for i, g := range gs {
				list[i] = g
			}
			groupsOf[key(p.Type, p.ID)] = list
		}
		tenants[tid] = map[string]any{
			"licenses": licenses, "license_ids_by_name": toAny(byName), "seats": nested(seats),
			"ents": nested(ents), "groups_of": groupsOf,
		}
	}
	return map[string]any{"tenants": tenants, "satisfied_by": satisfiedBy(implies)}
}

func toAny(m map[string][]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func nested(m map[string]map[string][]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = toAny(v)
	}
	return out
}

// satisfiedBy inverts the transitive implication table.
func satisfiedBy(implies map[string][]string) map[string]any {
	out := map[string]any{}
	for t, from := range policy.InvertImplies(implies) {
		list := make([]any, len(from))
		for i, f := range from {
			list[i] = f
		}
		out[t] = list
	}
	return out
}

// Input converts a request into the peer's input document.
func Input(r *decision.Request) map[string]any {
	in := map[string]any{
		"tenant_id": r.TenantID,
		"subject":   map[string]any{"id": r.Subject.ID, "type": r.Subject.Type.String()},
		"check":     r.Check.String(),
		"at":        seconds(r.At),
	}
	if r.AppID != "" {
		in["app_id"] = r.AppID
	}
	if r.Check == decision.CheckSeat {
		in["license"] = r.License
	} else {
		in["asset_id"], in["type"] = r.AssetID, r.Type
	}
	return in
}

// DefaultImplies is the shipped implication table (rego/implies.rego).
func DefaultImplies() map[string][]string {
	return map[string][]string{"owner": {"admin"}, "admin": {"contributor"}, "contributor": {"read_only"}}
}
