# Entitlement decisions (docs/semantics.md, entitlement rules 1–2).
#
# The engine gathers the candidate entitlements (on the asset, held by the
# subject or a group it belongs to, of the requested type or a type that
# implies it, see implies.rego) and passes what kinds it found. This policy
# must be a pure function of its input: the engine memoizes its answers per
# policy revision.
#
# input.entitlements: {"direct", "via_group" (active and in effect),
#                      "pending_approval", "expired", "inactive"} booleans
package usher.entitlement

allow(reason) := {"allowed": true, "reason": reason}

deny(reason) := {"allowed": false, "reason": reason}

default decision := {"allowed": false, "reason": "not_entitled"}

decision := allow("entitled") if {
	input.entitlements.direct
} else := allow("entitled_via_group") if {
	input.entitlements.via_group
} else := deny("entitlement_pending_approval") if {
	input.entitlements.pending_approval
} else := deny("entitlement_expired") if {
	input.entitlements.expired
} else := deny("entitlement_inactive") if {
	input.entitlements.inactive
} else := deny("not_entitled")
