// Package httpfront is Envoy's HTTP ext_authz service under /ext_authz/
// on the fasthttp server: a thin adapter over extauthz that reads the
// proxied path raw (see extauthz.SplitPath) and writes the Result's Reply.
package httpfront

import (
	"bytes"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
)

// Prefix is where the HTTP ext_authz service answers.
const Prefix = "/ext_authz"

// Is reports whether a request path (normalized or raw) names the service.
func Is(path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte(Prefix))
	return ok && (len(rest) == 0 || rest[0] == '/' || rest[0] == '?')
}

// Handle answers one proxied request: METHOD /ext_authz/<original path>
// with its headers. It must not retain ctx.
func Handle(ctx *fasthttp.RequestCtx, a *extauthz.Authorizer) {
	// The raw request target, not ctx.Path(): fasthttp has already decoded
	// and normalized that, and the gRPC front sees Envoy's raw :path.
	orig, ok := strings.CutPrefix(string(ctx.Request.Header.RequestURI()), Prefix)
	switch {
	case !ok || orig != "" && orig[0] != '/' && orig[0] != '?':
		orig = "" // a target that only normalizes to /ext_authz/…: refused
	case orig == "" || orig[0] == '?':
		orig = "/" + orig
	}
	res := a.Check(ctx, decision.APIExtAuthzHTTP, extauthz.Request{
		Method: string(ctx.Method()), Path: orig, Authorization: string(ctx.Request.Header.Peek("Authorization")),
		MinRevision: string(ctx.Request.Header.Peek(extauthz.MinRevisionHeader)),
		ClientID:    string(ctx.Request.Header.Peek(extauthz.ClientIDHeader)),
		Header:      func(name string) string { return string(ctx.Request.Header.Peek(name)) },
	})
	if res.Status == extauthz.Unauthenticated {
		a.Metrics().AuthFailure(decision.FrontHTTP, res.AuthFailure)
	}
	rep := res.Reply()
	ctx.SetStatusCode(rep.Status)
	for _, h := range rep.Headers {
		ctx.Response.Header.Set(h.Key, h.Value)
	}
	ctx.Response.SetBody(rep.Body)
}
