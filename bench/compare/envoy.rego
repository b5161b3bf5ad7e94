# The mesh peer: Envoy's ext_authz Check answered by OPA the way a competent
# OPA user writes it (opa-envoy-plugin style): the bearer token verified in
# Rego (io.jwt.decode_verify against the key set in data.jwks), the route
# read from the path, and the decision of bench/opa/peer.rego, the same
# semantics as Usher's.
#
# Routes, as Usher's bench routes file: GET /seat/{license} needs that
# seat; GET /ent/{type}/{asset_id} that entitlement.
package usher.envoy

http_request := input.attributes.request.http

token := t if {
	startswith(http_request.headers.authorization, "Bearer ")
	t := substring(http_request.headers.authorization, 7, -1)
}

verified := v if {
	v := io.jwt.decode_verify(token, {"cert": data.jwks, "iss": data.issuer, "aud": data.audience, "alg": "RS256"})
}

claims := verified[2] if verified[0]

parts := split(trim_prefix(http_request.path, "/"), "/")

now := floor(time.now_ns() / 1000000000)

check := {"tenant_id": claims.tenant_id, "subject": {"id": claims.sub, "type": "person"}, "check": "seat", "license": parts[1], "at": now} if {
	http_request.method == "GET"
	count(parts) == 2
	parts[0] == "seat"
}

check := {"tenant_id": claims.tenant_id, "subject": {"id": claims.sub, "type": "person"}, "check": "entitlement", "type": parts[1], "asset_id": parts[2], "at": now} if {
	http_request.method == "GET"
	count(parts) == 3
	parts[0] == "ent"
}

d := x if {
	x := data.usher.peer.decision with input as check
}

result := {"allowed": false, "http_status": 401, "reason": "unauthenticated"} if {
	not claims
} else := {"allowed": false, "http_status": 403, "reason": "no_route"} if {
	not check
} else := {"allowed": true, "http_status": 200, "reason": d.reason} if {
	d.allowed
} else := {"allowed": false, "http_status": 403, "reason": d.reason}
