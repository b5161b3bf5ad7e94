package server

// Envoy's HTTP ext_authz service under /ext_authz/: a thin adapter over
// authz, reading the proxied path raw (see policy.SplitPath).

import (
	"bytes"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
)

func isExtAuthz(path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/ext_authz"))
	return ok && (len(rest) == 0 || rest[0] == '/' || rest[0] == '?')
}

// extAuthz answers Envoy's HTTP ext_authz service: the proxied request
// arrives as METHOD /ext_authz/<original path> with its headers.
func (s *Server) extAuthz(ctx *fasthttp.RequestCtx) {
	// The raw request target, not ctx.Path(): fasthttp has already decoded
	// and normalized that, and the gRPC front sees Envoy's raw :path.
	orig, ok := strings.CutPrefix(string(ctx.Request.Header.RequestURI()), "/ext_authz")
	switch {
	case !ok || orig != "" && orig[0] != '/' && orig[0] != '?':
		orig = "" // a target that only normalizes to /ext_authz/…: refused below
	case orig == "" || orig[0] == '?':
		orig = "/" + orig
	}
	res := s.cfg.Authorizer.Check(ctx, decision.APIExtAuthzHTTP, authz.Request{
		Method: string(ctx.Method()), Path: orig, Authorization: string(ctx.Request.Header.Peek("Authorization")),
	})
	switch res.Status {
	case authz.Allowed:
		ctx.Response.Header.Set("x-usher-decision-id", res.DecisionID)
		for k, v := range res.Headers {
			ctx.Response.Header.Set(k, v)
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case authz.Denied:
		ctx.Response.Header.Set("x-usher-decision-id", res.DecisionID)
		b := []byte(`{"allowed":false,"reason":`)
		b = jsonw.String(b, res.Reason)
		b = append(b, `,"decision_id":`...)
		b = jsonw.String(b, res.DecisionID)
		writeJSON(ctx, fasthttp.StatusForbidden, append(b, '}'))
	case authz.Unauthenticated:
		s.cfg.Engine.Metrics().AuthFailure(decision.FrontHTTP, res.AuthFailure)
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="usher"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "unauthenticated", res.Message)
	case authz.Invalid:
		writeError(ctx, fasthttp.StatusBadRequest, res.Reason, res.Message)
	default:
		writeError(ctx, fasthttp.StatusServiceUnavailable, "unavailable", res.Message)
	}
}
