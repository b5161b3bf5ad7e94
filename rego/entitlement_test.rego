package usher.entitlement_test

import data.usher.entitlement

reason(flags) := v if {
	v := entitlement.decision.reason with input as {"entitlements": flags}
}

allowed(flags) := v if {
	v := entitlement.decision.allowed with input as {"entitlements": flags}
}

test_direct_before_group if {
	reason({"direct": true, "via_group": true}) == "entitled"
	allowed({"direct": true})
}

test_via_group if {
	reason({"via_group": true, "pending_approval": true}) == "entitled_via_group"
	allowed({"via_group": true})
}

test_pending_never_grants if {
	reason({"pending_approval": true, "expired": true, "inactive": true}) == "entitlement_pending_approval"
	not allowed({"pending_approval": true})
}

test_denial_preference if {
	reason({"expired": true, "inactive": true}) == "entitlement_expired"
	reason({"inactive": true}) == "entitlement_inactive"
	reason({}) == "not_entitled"
}

test_default_implication_chain if {
	entitlement.implies.owner == ["admin"]
	entitlement.implies.admin == ["contributor"]
	entitlement.implies.contributor == ["read_only"]
	not "read_only" in object.keys(entitlement.implies)
}
