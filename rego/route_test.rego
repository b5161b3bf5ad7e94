package usher.route_test

import data.usher.route

seat_ok(_, license) := {"allowed": true, "reason": "seat_assigned", "decision_id": concat("-", ["seat", license])}

ent_no(_, _, _) := {"allowed": false, "reason": "not_entitled", "decision_id": "e1"}

base := {"tenant_id": "acme", "subject": {"id": "u1", "type": "person"}, "method": "GET", "path": "/x"}

test_no_route_denies if {
	d := route.decision with input as base
	d == {"allowed": false, "reason": "no_route"}
}

test_seat_route if {
	d := route.decision with input as object.union(base, {"route": {"seat": "editor"}})
		with usher.seat as seat_ok
	d.allowed
	d.reason == "seat_assigned"
	d.decision_id == "seat-editor"
	d.headers == {"x-usher-tenant": "acme", "x-usher-subject": "u1"}
}

test_entitlement_route if {
	d := route.decision with input as object.union(base, {"route": {"entitlement": "read_only", "asset_id": "doc1"}})
		with usher.entitled as ent_no
	not d.allowed
	d.reason == "not_entitled"
}
