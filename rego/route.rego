# ext_authz route decisions (docs/mesh.md).
#
# Usher matches the request against the route data (--routes; first match
# wins) and passes the match; this policy turns it into a decision, reaching
# the state through built-ins that run the seat and entitlement rules and share the
# decision cache, as the verified caller (its tenant and app scope):
#
#   usher.seat(subject, license)              -> {allowed, reason, decision_id, grant}
#   usher.entitled(subject, asset_id, type)   -> {allowed, reason, decision_id, grant}
#
# input: {method, path, tenant_id, app_id, subject: {id, type},
#         route: {index, method, path, seat | entitlement, asset_id, params}}
#         (no route when nothing matched)
# decision: {allowed, reason, decision_id?, headers?}: headers are added to
# the request Envoy forwards when allowed.
package usher.route

default decision := {"allowed": false, "reason": "no_route"}

decision := answer(usher.seat(input.subject, input.route.seat)) if input.route.seat

decision := answer(usher.entitled(input.subject, input.route.asset_id, input.route.entitlement)) if input.route.entitlement

answer(r) := {
	"allowed": r.allowed,
	"reason": r.reason,
	"decision_id": r.decision_id,
	"headers": {"x-usher-tenant": input.tenant_id, "x-usher-subject": input.subject.id},
}
