package grpcfront_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/extauthz/grpcfront"
	"github.com/usher-authz/usher/internal/semtest"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/jwtauth"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
)

const routesYAML = `
routes:
  - {method: GET, path: "/docs/{asset_id}", entitlement: read_only}
  - {method: PUT, path: "/docs/{asset_id}/settings", entitlement: admin}
  - {path: "/editor/*", seat: editor}
  - {method: POST, path: "/apps/run", seat: appseat}
  - {method: GET, path: "/seat/{license}", seat: "{license}"}
  - {method: GET, path: "/ent/{type}/{asset_id}", entitlement: "{type}"}
  - {method: GET, path: "/files", entitlement: read_only, asset: {from_header: X-Doc}}
`

type fixture struct {
	key       testjwt.Key
	grpc      authv3.AuthorizationClient
	health    healthpb.HealthClient
	http      string
	authz     *extauthz.Authorizer
	engine    *decision.Engine
	verifier  *jwtauth.Verifier
	semantics string
	reg       *prometheus.Registry
}

func setup(t testing.TB) *fixture {
	t.Helper()
	e, reg := semtest.Engine(t, 1)
	p := e.Policy().(*policy.Compiled)
	routes, err := extauthz.ParseRoutes([]byte(routesYAML))
	if err != nil {
		t.Fatal(err)
	}
	key := testjwt.RSA(t, "k1")
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwks, testjwt.JWKS(key, testjwt.EC(t, "k2")), 0o644)
	v, err := jwtauth.NewVerifier(context.Background(), jwtauth.Config{JWKS: jwks, Issuer: testjwt.Issuer, Audience: testjwt.Audience})
	if err != nil {
		t.Fatal(err)
	}
	a, err := extauthz.New(extauthz.Config{Engine: e, Policy: func() *policy.Compiled { return p }, Routes: routes, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gs := grpcfront.NewServer(ctx, a, e.Ready, 20*time.Millisecond, grpcfront.DefaultStreamWorkers)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hs, err := server.New(server.Config{Engine: e, Authorizer: a, Verifier: v, EvaluateAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Shutdown(context.Background()) })
	return &fixture{key: key, grpc: authv3.NewAuthorizationClient(conn), health: healthpb.NewHealthClient(conn),
		http: "http://" + hl.Addr().String(), authz: a, engine: e, verifier: v, reg: reg}
}

type answer struct {
	allowed bool
	status  int    // HTTP status Envoy would return (200 allow)
	reason  string // decision reason, or "unauthenticated"
	headers map[string]string
	meta    map[string]string // gRPC: the dynamic metadata
	body    string            // of a refusal
}

func (f *fixture) viaGRPC(t *testing.T, method, path, authorization string, extra ...map[string]string) answer {
	t.Helper()
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: map[string]string{}}}}}
	if authorization != "" {
		req.Attributes.Request.Http.Headers["authorization"] = authorization
	}
	for _, hs := range extra {
		for k, v := range hs {
			req.Attributes.Request.Http.Headers[k] = v
		}
	}
	resp, err := f.grpc.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{headers: map[string]string{}, meta: map[string]string{}}
	for k, v := range resp.GetDynamicMetadata().GetFields() {
		a.meta[k] = v.GetStringValue()
	}
	switch codes.Code(resp.GetStatus().GetCode()) {
	case codes.OK:
		a.allowed, a.status = true, 200
		for _, h := range resp.GetOkResponse().GetHeaders() {
			a.headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		a.reason = "allowed"
	default:
		d := resp.GetDeniedResponse()
		a.status = int(d.GetStatus().GetCode())
		for _, h := range d.GetHeaders() {
			a.headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		var body struct {
			Reason string                `json:"reason"`
			Error  struct{ Code string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
			t.Fatalf("denied body %q: %v", d.GetBody(), err)
		}
		a.reason = body.Reason + body.Error.Code
		if want := map[codes.Code]int{codes.PermissionDenied: 403, codes.Unauthenticated: 401, codes.InvalidArgument: 400}[codes.Code(resp.GetStatus().GetCode())]; want != a.status {
			t.Errorf("gRPC code %v with HTTP status %d", codes.Code(resp.GetStatus().GetCode()), a.status)
		}
	}
	return a
}

// viaHTTP sends the request line as written (no client cleans or
// escapes the path), as Envoy's HTTP ext_authz service does.
func (f *fixture) viaHTTP(t *testing.T, method, path, authorization string, extra ...map[string]string) answer {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.http, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := method + " /ext_authz" + path + " HTTP/1.1\r\nHost: usher\r\nConnection: close\r\n"
	if authorization != "" {
		head += "Authorization: " + authorization + "\r\n"
	}
	for _, hs := range extra {
		for k, v := range hs {
			head += k + ": " + v + "\r\n"
		}
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, headers: map[string]string{}, body: string(b)}
	for k := range resp.Header {
		a.headers[strings.ToLower(k)] = resp.Header.Get(k)
	}
	if resp.StatusCode == 200 {
		a.allowed, a.reason = true, "allowed"
		return a
	}
	var body struct {
		Reason string                `json:"reason"`
		Error  struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("denied body %q: %v", b, err)
	}
	a.reason = body.Reason + body.Error.Code
	return a
}

func TestChecks(t *testing.T) {
	f := setup(t)
	tok := func(claims map[string]any) string { return "Bearer " + testjwt.Sign(t, f.key, claims) }
	u := func(sub string) string { return tok(map[string]any{"sub": sub}) }
	for _, tc := range []struct {
		name, method, path, auth string
		status                   int
		reason                   string
	}{
		{"entitlement via implication", "GET", "/docs/doc1", u("u1"), 200, "allowed"},
		{"entitlement via group", "GET", "/docs/doc1?x=1", u("u2"), 200, "allowed"},
		{"pending approval", "GET", "/docs/doc1", u("u4"), 403, "entitlement_pending_approval"},
		{"not admin", "PUT", "/docs/doc1/settings", u("u2"), 403, "not_entitled"},
		{"seat any method", "DELETE", "/editor/a/b", u("u1"), 200, "allowed"},
		{"seat denied", "POST", "/editor/x", u("u5"), 403, "assignment_denied"},
		{"seat expired", "GET", "/editor", u("u6"), 403, "assignment_expired"},
		{"no route", "GET", "/nowhere", u("u1"), 403, "no_route"},
		{"no route for method", "DELETE", "/docs/doc1", u("u1"), 403, "no_route"},
		{"other tenant cannot see acme", "GET", "/docs/doc1", tok(map[string]any{"tenant_id": "globex"}), 403, "not_entitled"},
		{"other tenant's own seat", "GET", "/editor/", tok(map[string]any{"tenant_id": "globex"}), 200, "allowed"},
		{"app scope in its app", "POST", "/apps/run", tok(map[string]any{"app_id": "app1"}), 200, "allowed"},
		{"app scope of another app", "POST", "/apps/run", tok(map[string]any{"app_id": "app2"}), 403, "license_not_found"},
		{"missing token", "GET", "/docs/doc1", "", 401, "unauthenticated"},
		{"not bearer", "GET", "/docs/doc1", "Basic dTE6cA==", 401, "unauthenticated"},
		{"expired", "GET", "/docs/doc1", tok(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), 401, "unauthenticated"},
		{"not yet valid", "GET", "/docs/doc1", tok(map[string]any{"nbf": time.Now().Add(time.Hour).Unix()}), 401, "unauthenticated"},
		{"wrong issuer", "GET", "/docs/doc1", tok(map[string]any{"iss": "https://evil.test"}), 401, "unauthenticated"},
		{"wrong audience", "GET", "/docs/doc1", tok(map[string]any{"aud": "other"}), 401, "unauthenticated"},
		{"bad signature", "GET", "/docs/doc1", "Bearer " + testjwt.Sign(t, testjwt.RSA(t, "k1"), nil), 401, "unauthenticated"},
		{"unknown kid", "GET", "/docs/doc1", "Bearer " + testjwt.Sign(t, testjwt.RSA(t, "k9"), nil), 401, "unauthenticated"},
		{"alg none", "GET", "/docs/doc1", "Bearer " + testjwt.AlgNone(), 401, "unauthenticated"},
		{"hmac confusion", "GET", "/docs/doc1", "Bearer " + testjwt.HMACWithPublicKey(), 401, "unauthenticated"},
		{"garbage", "GET", "/docs/doc1", "Bearer garbage", 401, "unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for front, a := range map[string]answer{
				"grpc": f.viaGRPC(t, tc.method, tc.path, tc.auth),
				"http": f.viaHTTP(t, tc.method, tc.path, tc.auth),
			} {
				if a.status != tc.status || a.reason != tc.reason {
					t.Errorf("%s %s %s = %d %s, want %d %s", front, tc.method, tc.path, a.status, a.reason, tc.status, tc.reason)
				}
				if tc.status != 401 && len(a.headers["x-usher-decision-id"]) != 32 {
					t.Errorf("%s: x-usher-decision-id = %q, want a decision id", front, a.headers["x-usher-decision-id"])
				}
				if tc.status == 200 && (a.headers["x-usher-tenant"] == "" || a.headers["x-usher-subject"] == "") {
					t.Errorf("%s: allowed without the policy's headers: %v", front, a.headers)
				}
				// The reason rides along on every answer: the decision's when
				// allowed (not the word "allowed"), else the refusal's.
				if why := a.headers["x-usher-reason"]; why == "" || why == "allowed" || tc.status != 200 && why != tc.reason {
					t.Errorf("%s: x-usher-reason = %q (%d %s)", front, why, a.status, a.reason)
				}
				if front == "grpc" {
					want := map[string]string{"reason": a.headers["x-usher-reason"], "decision_id": a.headers["x-usher-decision-id"]}
					if tc.status != 401 {
						want["tenant_id"], want["subject"] = claimsOf(t, tc.auth)
					}
					for k, v := range want {
						if a.meta[k] != v || v == "" && tc.status != 401 {
							t.Errorf("grpc: dynamic metadata %s = %q, want %q (%v)", k, a.meta[k], v, a.meta)
						}
					}
				}
				if tc.status == 401 && !strings.HasPrefix(a.headers["www-authenticate"], "Bearer") {
					t.Errorf("%s: 401 without WWW-Authenticate: %v", front, a.headers)
				}
			}
		})
	}
	hr, err := f.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health = %v, %v; want SERVING", hr.GetStatus(), err)
	}
}

// Routes that take the license or type from the path, or the asset from
// a header, answer alike on both fronts; a request without the header is
// refused 400, naming the route and the header.
func TestRouteSourcesOnBothFronts(t *testing.T) {
	f := setup(t)
	u := func(sub string) string { return "Bearer " + testjwt.Sign(t, f.key, map[string]any{"sub": sub}) }
	for _, tc := range []struct {
		name, path, auth string
		headers          map[string]string
		status           int
		reason           string
	}{
		{"license from the path", "/seat/editor", u("u1"), nil, 200, "seat_assigned"},
		{"license from the path, denied", "/seat/editor", u("u5"), nil, 403, "assignment_denied"},
		{"an unknown license from the path", "/seat/nope", u("u1"), nil, 403, "license_not_found"},
		{"type from the path", "/ent/read_only/doc1", u("u1"), nil, 200, "entitled"},
		{"type from the path, not held", "/ent/admin/doc1", u("u2"), nil, 403, "not_entitled"},
		{"asset from a header", "/files", u("u2"), map[string]string{"x-doc": "doc1"}, 200, "entitled_via_group"},
		{"asset from a header, another asset", "/files", u("u2"), map[string]string{"x-doc": "doc9"}, 403, "not_entitled"},
		{"asset header missing", "/files", u("u2"), nil, 400, "invalid_request"},
	} {
		for front, a := range map[string]answer{
			"grpc": f.viaGRPC(t, "GET", tc.path, tc.auth, tc.headers),
			"http": f.viaHTTP(t, "GET", tc.path, tc.auth, tc.headers),
		} {
			why := a.headers["x-usher-reason"]
			if a.status != tc.status || why != tc.reason && !(tc.status == 200 && strings.HasPrefix(why, "entitled") && strings.HasPrefix(tc.reason, "entitled")) {
				t.Errorf("%s, %s: %d %s (x-usher-reason %s), want %d %s", tc.name, front, a.status, a.reason, why, tc.status, tc.reason)
			}
		}
	}
	// The refusal names the route and the header.
	a := f.viaHTTP(t, "GET", "/files", u("u2"))
	if !strings.Contains(a.body, "routes[6] (/files): asset {from_header: x-doc}: the request holds no value for it") {
		t.Errorf("a request without the route's header: %s", a.body)
	}
}

// Every answer of both fronts is counted by status, and every refused
// token by front and reason.
func TestRequestAndAuthFailureMetrics(t *testing.T) {
	f := setup(t)
	expired := "Bearer " + testjwt.Sign(t, f.key, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	good := "Bearer " + testjwt.Sign(t, f.key, nil)
	f.viaGRPC(t, "GET", "/docs/doc1", expired)
	f.viaGRPC(t, "GET", "/docs/doc1", "")
	f.viaGRPC(t, "GET", "/docs/doc1", good)
	f.viaGRPC(t, "GET", "/nowhere", good)
	f.viaHTTP(t, "GET", "/docs/doc1", "Bearer garbage")
	f.viaHTTP(t, "GET", "/docs/../x", good)
	for _, c := range []struct {
		metric string
		labels []string
		want   float64
	}{
		{"usher_requests_total", []string{"ext_authz_grpc", "401"}, 2},
		{"usher_requests_total", []string{"ext_authz_grpc", "200"}, 1},
		{"usher_requests_total", []string{"ext_authz_grpc", "403"}, 1},
		{"usher_requests_total", []string{"ext_authz_http", "401"}, 1},
		{"usher_requests_total", []string{"ext_authz_http", "400"}, 1},
		{"usher_auth_failures_total", []string{"ext_authz_grpc", "expired"}, 1},
		{"usher_auth_failures_total", []string{"ext_authz_grpc", "missing"}, 1},
		{"usher_auth_failures_total", []string{"ext_authz_http", "malformed"}, 1},
	} {
		mfs, _ := f.reg.Gather()
		got := -1.0
		for _, mf := range mfs {
			if mf.GetName() != c.metric {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == c.labels[0] && m.GetLabel()[1].GetValue() == c.labels[1] { // labels sort by name
					got = m.GetCounter().GetValue()
				}
			}
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
}

// Both fronts read the path the same way: once decoded, refused (400
// invalid_path) when it is not canonical, so no dot segment, doubled
// slash, fragment or double encoding moves a request to another route or
// asset than the upstream will serve.
func TestPathsAlikeOnBothFronts(t *testing.T) {
	f := setup(t)
	u1 := "Bearer " + testjwt.Sign(t, f.key, nil) // an editor seat, admin on doc1, nothing on B
	for _, tc := range []struct {
		method, path string
		status       int
		reason       string
	}{
		{"PUT", "/editor/../docs/B/settings", 400, "invalid_path"},
		{"PUT", "/editor/%2e%2e/docs/B/settings", 400, "invalid_path"},
		{"PUT", "/editor/%2E%2E%2Fdocs/B/settings", 400, "invalid_path"},
		{"PUT", "/editor/..%2Fdocs/B/settings", 400, "invalid_path"},
		{"GET", "/docs/B/../doc1", 400, "invalid_path"},
		{"GET", "/editor/./x", 400, "invalid_path"},
		{"GET", "//editor/x", 400, "invalid_path"},
		{"GET", "/docs//doc1", 400, "invalid_path"},
		{"GET", "/docs/doc1#f", 400, "invalid_path"},
		{"GET", "/docs/doc%5C1", 400, "invalid_path"},
		{"GET", "/docs/%zz", 400, "invalid_path"},
		{"GET", "/docs/%2564oc1", 403, "not_entitled"}, // asset "%64oc1": decoded once, not twice
		{"GET", "/docs/%64oc1", 200, "allowed"},        // asset "doc1"
		{"GET", "/docs/doc1?next=/../x", 200, "allowed"},
		{"PUT", "/docs/B/settings", 403, "not_entitled"},
		{"GET", "/editor/x", 200, "allowed"},
	} {
		g, h := f.viaGRPC(t, tc.method, tc.path, u1), f.viaHTTP(t, tc.method, tc.path, u1)
		for front, a := range map[string]answer{"grpc": g, "http": h} {
			if a.status != tc.status || a.reason != tc.reason {
				t.Errorf("%s %s %s = %d %s, want %d %s", front, tc.method, tc.path, a.status, a.reason, tc.status, tc.reason)
			}
		}
	}
	// A target that only fasthttp's normalization makes an ext_authz one.
	for _, p := range []string{"/x/../ext_authz/editor/x", "/ext_authz/../ext_authz/editor/x"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(f.http, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "GET "+p+" HTTP/1.1\r\nHost: usher\r\nConnection: close\r\nAuthorization: "+u1+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 400 {
			t.Errorf("GET %s = %d, want 400", p, resp.StatusCode)
		}
		conn.Close()
	}
}

// FuzzFrontsAgree: for any path a request line can carry, the gRPC and the
// HTTP ext_authz fronts give the same status and reason.
func FuzzFrontsAgree(f *testing.F) {
	fx := setup(f)
	valid := "Bearer " + testjwt.Sign(f, fx.key, nil)
	for _, p := range []string{"/docs/doc1", "/editor/../docs/B", "/docs/%2541", "//editor/x", "/docs/doc1#f", "/editor/%2E%2E%2F", "/docs/doc1?a=b", "/"} {
		f.Add("GET", p)
	}
	hs, err := server.New(server.Config{Engine: fx.engine, Authorizer: fx.authz, Verifier: fx.verifier})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		if method == "" || !strings.HasPrefix(path, "/") || strings.ContainsFunc(method+path, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return // not something a request line carries
		}
		g := grpcfront.Response(fx.authz.Check(context.Background(), decision.APIExtAuthzGRPC, extauthz.Request{Method: method, Path: path, Authorization: valid}))
		var req fasthttp.Request
		req.Header.SetMethod(method)
		req.SetRequestURI("/ext_authz" + path)
		req.Header.Set("Authorization", valid)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, nil, nil)
		hs.Handle(&ctx)
		httpStatus := ctx.Response.StatusCode()
		grpcStatus := 200
		if d := g.GetDeniedResponse(); d != nil {
			grpcStatus = int(d.GetStatus().GetCode())
		}
		var body struct {
			Reason string                `json:"reason"`
			Error  struct{ Code string } `json:"error"`
		}
		json.Unmarshal(ctx.Response.Body(), &body)
		grpcReason, httpReason := g.GetStatus().GetMessage(), body.Reason+body.Error.Code
		if httpStatus != grpcStatus || grpcStatus != 200 && grpcReason != httpReason {
			t.Fatalf("%s %q: gRPC front %d %s, HTTP front %d %s", method, path, grpcStatus, grpcReason, httpStatus, ctx.Response.Body())
		}
	})
}

func TestEvaluateAuth(t *testing.T) {
	f := setup(t)
	post := func(path, body string, claims map[string]any) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", f.http+path, strings.NewReader(body))
		if claims != nil {
			req.Header.Set("Authorization", "Bearer "+testjwt.Sign(t, f.key, claims))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	acme := map[string]any{}
	for _, tc := range []struct {
		name, path, body string
		claims           map[string]any
		status           int
		want             string
	}{
		{"tenant from the token", "/v1/evaluate", `{"subject": {"id": "u1"}, "seat": {"license": "editor"}}`, acme, 200, `"reason":"seat_assigned"`},
		{"same tenant in the body", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, acme, 200, `"reason":"seat_assigned"`},
		{"another tenant", "/v1/evaluate", `{"tenant_id": "globex", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, acme, 403, `tenant_id: \"globex\" is outside the token's tenant \"acme\"`},
		{"no token", "/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`, nil, 401, `"code":"unauthenticated"`},
		{"app scope from the token", "/v1/evaluate", `{"subject": {"id": "u1"}, "seat": {"license": "appseat"}}`, map[string]any{"app_id": "app2"}, 200, `"reason":"license_not_found"`},
		{"body cannot widen the app scope", "/v1/evaluate", `{"app_id": "app1", "subject": {"id": "u1"}, "seat": {"license": "appseat"}}`, map[string]any{"app_id": "app2"}, 403, `app_id: \"app1\" is outside the token's app scope \"app2\"`},
		{"batch slot of another tenant", "/v1/evaluate/batch", `{"checks": [{"subject": {"id": "u1"}, "seat": {"license": "editor"}}, {"tenant_id": "globex", "subject": {"id": "u1"}, "seat": {"license": "editor"}}]}`, acme, 200, `{"error":{"code":"forbidden","message":"checks[1].tenant_id: \"globex\" is outside the token's tenant \"acme\""}}`},
		{"compat other org", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "globex", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`, acme, 403, `orgId: \"globex\" is outside the token's tenant \"acme\"`},
		{"compat own org", "/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "editor", "subjectId": "u1", "subjectType": "user"}`, acme, 200, `"allowed":true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(tc.path, tc.body, tc.claims)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("POST %s = %d %s, want %d containing %s", tc.path, status, body, tc.status, tc.want)
			}
		})
	}
}

// FuzzCheck sends arbitrary methods, paths and Authorization values through
// the authorizer and the Envoy conversion: no panic, and never an allow
// without a valid token.
func FuzzCheck(f *testing.F) {
	fx := setup(f)
	valid := "Bearer " + testjwt.Sign(f, fx.key, nil)
	f.Add("GET", "/docs/doc1", valid)
	f.Add("POST", "/editor/%zz/../x", "Bearer a.b.c")
	f.Add("", "", "")
	f.Add("GET", "/docs/%2F", valid)
	f.Fuzz(func(t *testing.T, method, path, authorization string) {
		res := fx.authz.Check(context.Background(), decision.APIExtAuthzGRPC, extauthz.Request{Method: method, Path: path, Authorization: authorization})
		if res.Status == extauthz.Allowed && authorization != valid {
			t.Fatalf("allowed %s %q with Authorization %q", method, path, authorization)
		}
		resp := grpcfront.Response(res)
		if (res.Status == extauthz.Allowed) != (codes.Code(resp.GetStatus().GetCode()) == codes.OK) {
			t.Fatalf("result %+v converted to %v", res, resp.GetStatus())
		}
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: map[string]string{"authorization": authorization}}}}}
		if got := grpcfront.Request(req); got.Method != method || got.Path != path || got.Authorization != authorization {
			t.Fatalf("Request(%v) = %+v", req, got)
		}
		_ = grpcfront.Request(&authv3.CheckRequest{})
	})
}

// BenchmarkCheckGRPC is a Check round trip over loopback: a verified token,
// a matched route, the route policy and a cached seat decision.
func BenchmarkCheckGRPC(b *testing.B) {
	f := setup(b)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/editor/doc", Headers: map[string]string{
			"authorization": "Bearer " + testjwt.Sign(b, f.key, nil)}}}}}
	ctx := context.Background()
	if resp, err := f.grpc.Check(ctx, req); err != nil || resp.GetStatus().GetCode() != 0 {
		b.Fatalf("Check = %v, %v", resp, err)
	}
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if _, err := f.grpc.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkCheckService is the server side of a Check without the
// transport: the CheckRequest converted, the token verified (cached), the
// route matched, the route policy, the seat decision (cached) and the
// CheckResponse built.
func BenchmarkCheckService(b *testing.B) {
	f := setup(b)
	svc := grpcfront.NewService(f.authz)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/editor/doc", Headers: map[string]string{
			"authorization": "Bearer " + testjwt.Sign(b, f.key, nil)}}}}}
	ctx := context.Background()
	if resp, err := svc.Check(ctx, req); err != nil || resp.GetStatus().GetCode() != 0 {
		b.Fatalf("Check = %v, %v", resp, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		svc.Check(ctx, req)
	}
}

// claimsOf reads the tenant and subject of a bearer token, unverified.
func claimsOf(t *testing.T, auth string) (tenant, subject string) {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(auth, "Bearer "), ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Tenant  string `json:"tenant_id"`
		Subject string `json:"sub"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Tenant, c.Subject
}
