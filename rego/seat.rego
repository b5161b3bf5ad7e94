# Seat decisions (docs/semantics.md, seat rules 1–6).
#
# The engine resolves the facts from its state snapshot and passes them as
# input; this policy orders them into a decision. It must be a pure function
# of its input: the engine memoizes its answers per policy revision.
#
# input.license:     {"found": bool, "status": "active"|"suspended"|"revoked",
#                     "validity": "in_effect"|"not_yet_valid"|"expired",
#                     "type": "named"|"floating"}
# input.assignments: which assignments of the license the subject and its
#                    groups hold: {"denied", "direct", "via_group" (active and
#                    in effect), "expired", "not_yet_valid", "inactive",
#                    "may_check_out"} booleans; on a floating license direct
#                    and via_group are reserved assignments, and a live
#                    dynamic one sets may_check_out
# input.seats:       where the subject ranks among the persons a license with a
#                    seat limit would grant: {"over_limit" (within the overage),
#                    "beyond_limit" (past it)} booleans; both false when the
#                    license is unlimited or the subject holds a seat;
#                    "leased": the subject holds a live lease (floating)
package usher.seat

allow(reason) := {"allowed": true, "reason": reason}

deny(reason) := {"allowed": false, "reason": reason}

default decision := {"allowed": false, "reason": "no_assignment"}

granting if input.assignments.direct

granting if input.assignments.via_group

decision := deny("license_not_found") if {
	not input.license.found
} else := deny("license_suspended") if {
	input.license.status == "suspended"
} else := deny("license_revoked") if {
	input.license.status == "revoked"
} else := deny("license_not_yet_valid") if {
	input.license.validity == "not_yet_valid"
} else := deny("license_expired") if {
	input.license.validity == "expired"
} else := deny("assignment_denied") if {
	input.assignments.denied
} else := deny("seat_limit_exceeded") if {
	input.seats.beyond_limit
	granting
} else := allow("seat_leased") if {
	input.license.type == "floating"
	input.seats.leased
} else := allow("seat_assigned") if {
	input.assignments.direct
} else := allow("seat_assigned_via_group") if {
	input.assignments.via_group
} else := deny("not_checked_out") if {
	input.license.type == "floating"
	input.assignments.may_check_out
} else := deny("assignment_expired") if {
	input.assignments.expired
} else := deny("assignment_not_yet_valid") if {
	input.assignments.not_yet_valid
} else := deny("assignment_inactive") if {
	input.assignments.inactive
} else := deny("no_assignment")
