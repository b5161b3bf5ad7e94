package usher.seat_test

import data.usher.seat

active := {"found": true, "status": "active", "validity": "in_effect"}

facts(license, flags) := {"license": license, "assignments": flags}

reason(license, flags) := v if {
	v := seat.decision.reason with input as facts(license, flags)
}

allowed(license, flags) := v if {
	v := seat.decision.allowed with input as facts(license, flags)
}

test_license_not_found if {
	reason({"found": false}, {"direct": true}) == "license_not_found"
	not allowed({"found": false}, {"direct": true})
}

test_license_suspended_before_revoked_or_time if {
	reason(object.union(active, {"status": "suspended", "validity": "expired"}), {"direct": true}) == "license_suspended"
}

test_license_revoked if {
	reason(object.union(active, {"status": "revoked"}), {"direct": true}) == "license_revoked"
}

test_license_not_yet_valid if {
	reason(object.union(active, {"validity": "not_yet_valid"}), {"direct": true}) == "license_not_yet_valid"
}

test_license_expired if {
	reason(object.union(active, {"validity": "expired"}), {"direct": true}) == "license_expired"
}

test_denial_overrides_every_grant if {
	reason(active, {"denied": true, "direct": true, "via_group": true}) == "assignment_denied"
	not allowed(active, {"denied": true, "direct": true})
}

test_direct_before_group if {
	reason(active, {"direct": true, "via_group": true}) == "seat_assigned"
	allowed(active, {"direct": true})
}

test_via_group if {
	reason(active, {"via_group": true, "expired": true}) == "seat_assigned_via_group"
	allowed(active, {"via_group": true})
}

test_most_specific_denial if {
	reason(active, {"expired": true, "not_yet_valid": true, "inactive": true}) == "assignment_expired"
	reason(active, {"not_yet_valid": true, "inactive": true}) == "assignment_not_yet_valid"
	reason(active, {"inactive": true}) == "assignment_inactive"
	reason(active, {}) == "no_assignment"
}

test_seat_limit_exceeded_after_denial_before_grants if {
	v := seat.decision with input as {"license": active, "assignments": {"direct": true}, "seats": {"beyond_limit": true}}
	v == {"allowed": false, "reason": "seat_limit_exceeded"}
	w := seat.decision with input as {"license": active, "assignments": {"denied": true, "via_group": true}, "seats": {"beyond_limit": true}}
	w.reason == "assignment_denied"
}

test_overage_still_grants if {
	v := seat.decision with input as {"license": active, "assignments": {"via_group": true}, "seats": {"over_limit": true}}
	v == {"allowed": true, "reason": "seat_assigned_via_group"}
}

test_beyond_limit_without_a_grant_says_why_not if {
	reason(active, {"expired": true}) == "assignment_expired"
	v := seat.decision with input as {"license": active, "assignments": {"expired": true}, "seats": {"beyond_limit": true}}
	v.reason == "assignment_expired"
}
