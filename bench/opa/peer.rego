# The same seat and entitlement semantics (docs/semantics.md) written all in Rego,
# over the state held in OPA's store, the way a competent OPA user would:
# indexed lookups (license by id and name, assignments by license and
# principal, entitlements by asset and principal, group closure and the
# implication table precomputed), no scans. It is the peer Usher is
# measured against; its answers must equal Usher's.
#
# data.tenants[t] = {licenses, license_ids_by_name, seats, ents, groups_of}
# data.satisfied_by[type] = types whose holders hold type (type included)
# input = {tenant_id, app_id?, subject: {id, type}, check, license | asset_id + type, at (unix s)}
package usher.peer

tenant := data.tenants[input.tenant_id]

subject_key := concat(":", [input.subject.type, input.subject.id])

principal_keys contains subject_key

principal_keys contains concat(":", ["group", g]) if some g in tenant.groups_of[subject_key]

scope_ok(rec) if not input.app_id

scope_ok(rec) if rec.app_id == input.app_id

started(rec) if not rec.valid_from

started(rec) if rec.valid_from <= input.at

not_ended(rec) if not rec.expires_at

not_ended(rec) if rec.expires_at > input.at

live(rec) if {
	rec.status == "active"
	started(rec)
	not_ended(rec)
}

expired(rec) if rec.expires_at <= input.at

not_yet_valid(rec) if rec.valid_from > input.at

inactive(rec) if rec.status != "active"

deny(reason) := {"allowed": false, "reason": reason}

allow(reason) := {"allowed": true, "reason": reason}

# Seat.

visible_license(lid) if {
	lic := tenant.licenses[lid]
	scope_ok(lic)
}

candidates := {input.license} if visible_license(input.license)

else := {lid | some lid in tenant.license_ids_by_name[input.license]; visible_license(lid)}

# Partial rules, not functions: OPA evaluates each once per query.
denials[lid] := v if {
	some lid in candidates
	v := [a |
		some k in principal_keys
		some a in tenant.seats[lid][k]
		scope_ok(a)
		a.reservation == "denied"
	]
}

grants[lid] := v if {
	some lid in candidates
	v := [x |
		some k in principal_keys
		some a in tenant.seats[lid][k]
		scope_ok(a)
		a.reservation != "denied"
		x := {"a": a, "direct": k == subject_key}
	]
}

seat_for(lid) := deny("license_suspended") if {
	tenant.licenses[lid].status == "suspended"
} else := deny("license_revoked") if {
	tenant.licenses[lid].status == "revoked"
} else := deny("license_not_yet_valid") if {
	not_yet_valid(tenant.licenses[lid])
} else := deny("license_expired") if {
	expired(tenant.licenses[lid])
} else := deny("assignment_denied") if {
	some a in denials[lid]
	live(a)
} else := allow("seat_assigned") if {
	some x in grants[lid]
	x.direct
	live(x.a)
	holds_seat(lid, x.a)
} else := allow("seat_assigned_via_group") if {
	some x in grants[lid]
	live(x.a)
	holds_seat(lid, x.a)
} else := deny("not_checked_out") if {
	tenant.licenses[lid].floating
	some x in grants[lid]
	live(x.a)
	x.a.reservation == "dynamic"
} else := deny("assignment_expired") if {
	some x in grants[lid]
	expired(x.a)
} else := deny("assignment_not_yet_valid") if {
	some x in grants[lid]
	not_yet_valid(x.a)
} else := deny("assignment_inactive") if {
	some x in grants[lid]
	inactive(x.a)
} else := deny("no_assignment")

rank := {r: i | some i, r in [
	"license_not_found", "license_suspended", "license_revoked", "license_not_yet_valid",
	"license_expired", "assignment_denied", "seat_assigned", "seat_assigned_via_group",
	"assignment_expired", "assignment_not_yet_valid", "assignment_inactive", "no_assignment",
	"seat_limit_exceeded", "seat_leased", "not_checked_out",
]}

# On a floating license a seat is held by a reserved assignment (or a
# lease, which the peer's data has none of); a dynamic one may check out.
holds_seat(lid, _) if not tenant.licenses[lid].floating

holds_seat(_, a) if a.reservation == "reserved"

seat_decisions := [seat_for(lid) | some lid in candidates]

seat := deny("license_not_found") if {
	count(seat_decisions) == 0
} else := seat_decisions[0] if {
	count(seat_decisions) == 1
} else := d if {
	some d in seat_decisions
	d.allowed
} else := d if {
	best := max([rank[x.reason] | some x in seat_decisions])
	some d in seat_decisions
	rank[d.reason] == best
}

# Entitlement.

satisfied(t) if t == input.type

satisfied(t) if t in data.satisfied_by[input.type]

ent_cands := [x |
	some k in principal_keys
	some e in tenant.ents[input.asset_id][k]
	scope_ok(e)
	satisfied(e.entitlement_type)
	x := {"e": e, "direct": k == subject_key}
]

entitlement := allow("entitled") if {
	some x in ent_cands
	x.direct
	live(x.e)
} else := allow("entitled_via_group") if {
	some x in ent_cands
	live(x.e)
} else := deny("entitlement_pending_approval") if {
	some x in ent_cands
	x.e.status == "pending_approval"
} else := deny("entitlement_expired") if {
	some x in ent_cands
	expired(x.e)
} else := deny("entitlement_inactive") if {
	some x in ent_cands
	x.e.status in {"suspended", "revoked"}
} else := deny("not_entitled")

decision := seat if input.check == "seat"

else := entitlement
