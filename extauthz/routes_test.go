package extauthz

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoutesMatch(t *testing.T) {
	r, err := ParseRoutes([]byte(`
routes:
  - {method: get, path: "/docs/{asset_id}", entitlement: read_only}
  - {method: PUT, path: "/orgs/{org}/docs/{doc}", entitlement: admin, asset: "{doc}"}
  - {path: "/reports/*", entitlement: read_only, asset: reports}
  - {path: "/editor/*", seat: editor}
  - {path: "/", seat: viewer}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		ok           bool
		index        int
		asset        string
	}{
		{"GET", "/docs/a1", true, 0, "a1"},
		{"GET", "/docs/a%2F1?x=y", true, 0, "a/1"},
		{"POST", "/docs/a1", false, 0, ""},
		{"GET", "/docs/a1/more", false, 0, ""},
		{"GET", "/docs/", false, 0, ""},
		{"PUT", "/orgs/o1/docs/d9", true, 1, "d9"},
		{"GET", "/reports/q3/summary", true, 2, "reports"},
		{"DELETE", "/editor", true, 3, ""},
		{"GET", "/editor/a/b/c", true, 3, ""},
		{"GET", "/", true, 4, ""},
		{"GET", "/editorial", false, 0, ""},
	} {
		m, ok := match(r, tc.method, tc.path)
		if ok != tc.ok || (ok && (m.Index != tc.index || m.Asset != tc.asset)) {
			t.Errorf("Match(%s %s) = %v %+v, want %v index %d asset %q", tc.method, tc.path, ok, m, tc.ok, tc.index, tc.asset)
		}
	}
	m, _ := match(r, "PUT", "/orgs/o1/docs/d9")
	if diff := cmp.Diff(map[string]string{"org": "o1", "doc": "d9"}, m.Params); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	json, err := ParseRoutes([]byte(`{"routes": [{"path": "/x/{asset_id}", "entitlement": "admin"}]}`))
	if err != nil || json.Len() != 1 {
		t.Errorf("JSON routes: %v, %d", err, json.Len())
	}
}

// Licenses, types and assets from the path or from a header.
func TestRouteSources(t *testing.T) {
	r, err := ParseRoutes([]byte(`
routes:
  - {path: "/apps/{license}/*", seat: "{license}"}
  - {method: GET, path: "/docs/{type}/{asset_id}", entitlement: "{type}"}
  - {path: "/files/*", entitlement: read_only, asset: {from_header: X-File-Id}}
  - {path: "/any/*", seat: {from_header: x-license}}
  - {path: "/typed/{doc}", entitlement: {from_header: x-permission}, asset: "{doc}"}
`))
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{"x-file-id": "f9", "x-license": "cad", "x-permission": "admin"}
	for _, tc := range []struct {
		method, path        string
		headers             map[string]string
		index               int
		license, typ, asset string
		missing             string
	}{
		{"GET", "/apps/editor/open", nil, 0, "editor", "", "", ""},
		{"GET", "/docs/admin/d1", nil, 1, "", "admin", "d1", ""},
		{"GET", "/files/a/b", headers, 2, "", "read_only", "f9", ""},
		{"GET", "/files/a/b", nil, 2, "", "read_only", "", "asset {from_header: x-file-id}"},
		{"POST", "/any/x", headers, 3, "cad", "", "", ""},
		{"POST", "/any/x", map[string]string{"x-license": ""}, 3, "", "", "", "seat {from_header: x-license}"},
		{"PUT", "/typed/d2", headers, 4, "", "admin", "d2", ""},
	} {
		segs, err := SplitPath(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var h func(string) string
		if tc.headers != nil {
			h = func(n string) string { return tc.headers[n] }
		}
		m, ok := r.Match(tc.method, segs, h)
		if !ok || m.Index != tc.index || m.License != tc.license || m.Type != tc.typ || m.Asset != tc.asset || m.Missing != tc.missing {
			t.Errorf("Match(%s %s, %v) = %v %+v", tc.method, tc.path, tc.headers, ok, m)
		}
	}
	if diff := cmp.Diff([]string{"x-file-id", "x-license", "x-permission"}, r.Headers()); diff != "" {
		t.Errorf("Headers (-want +got):\n%s", diff)
	}
}

func TestRoutesRejects(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`routes: [{path: "/a", seat: s, entitlement: e}]`, "routes[0] (any method /a): exactly one of seat and entitlement is required"},
		{`routes: [{path: "/a"}]`, "routes[0] (any method /a): exactly one of seat and entitlement is required"},
		{`routes: [{path: "a", seat: s}]`, `routes[0] (any method a): path: must start with /, got "a"`},
		{`routes: [{path: "/a", seat: "{license}"}]`, "routes[0] (any method /a): seat: the path has no {license} to name the license"},
		{`routes: [{method: get, path: "/a/{asset_id}", entitlement: "{kind}"}]`, "routes[0] (GET /a/{asset_id}): entitlement: the path has no {kind}"},
		{`routes: [{path: "/a", seat: {from_header: "bad header"}}]`, `seat: from_header: "bad header" is not a header name`},
		{`routes: [{path: "/a", seat: {from_header: authorization}}]`, "seat: from_header: authorization is not a header a route may read"},
		{`routes: [{path: "/a", seat: {from_headers: x}}]`, "must be a string"},
		{`routes: [{path: "/a/{license}", seat: {license}}]`, `quoted in YAML) or {from_header: header-name}, got {"license":null}`},
		{`routes: [{path: "/a", seat: ""}]`, "exactly one of seat and entitlement"},
		{`routes: [{path: "/a/{x}", seat: "a{x}"}]`, `seat: "a{x}" is neither a name nor a whole {param}`},
		{`routes: [{path: "/a/{asset_id}", entitlement: {from_header: ""}}]`, `routes[0]: from_header: must name a header`},
		{`routes: [{path: "/a/*/b", seat: s}]`, "* may only be the whole last segment"},
		{`routes: [{path: "/a/{x}/{x}", seat: s}]`, "parameter {x} appears twice"},
		{`routes: [{path: "/a/b{x}", seat: s}]`, "a {param} must be a whole segment"},
		{`routes: [{path: "/docs", entitlement: admin}]`, "asset: the path has no {asset_id}"},
		{`routes: [{path: "/docs", entitlement: admin, asset: {from_header: x-doc}}, {path: "/b", seat: "{s}"}]`, "routes[1] (any method /b): seat: the path has no {s}"},
		{`routes: [{path: "/docs", seat: s, asset: a}]`, "asset: only applies to entitlement routes"},
		{`routes: [{path: "/a", seat: s, seats: 2}]`, `routes[0]: unknown field "seats"`},
		{`{}`, "routes: is required"},
		{`routes: [`, "not YAML or JSON"},
	} {
		_, err := ParseRoutes([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRoutes(%s) = %v, want an error containing %q", tc.src, err, tc.want)
		}
	}
}

func match(r *Routes, method, path string) (Match, bool) {
	segs, err := SplitPath(path)
	if err != nil {
		return Match{}, false
	}
	return r.Match(method, segs, nil)
}

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want []string // nil: refused
	}{
		{"/", []string{""}},
		{"/docs/A", []string{"docs", "A"}},
		{"/docs/A?x=1&y=/../", []string{"docs", "A"}},
		{"/docs/", []string{"docs", ""}},
		{"/docs/%2541", []string{"docs", "%41"}}, // decoded exactly once
		{"/docs/my%20doc", []string{"docs", "my doc"}},
		{"/%64ocs/A", []string{"docs", "A"}},
		{"/docs/%E2%82%AC", []string{"docs", "€"}},
		{"/editor/../docs/B", nil},
		{"/editor/./x", nil},
		{"/editor/%2e%2e/docs/B", nil},
		{"/editor/%2E%2E%2Fdocs/B", nil},
		{"/editor/..%2Fdocs", nil},
		{"/docs/B/..", nil},
		{"//editor/x", nil},
		{"/docs//A", nil},
		{"/docs/A#f", nil},
		{"/docs/a%2Fb", []string{"docs", "a/b"}},
		{"/docs/a%2F%2Fb", nil},
		{"/docs/%2Fb", nil},
		{"/docs/a%2F", nil},
		{"/docs/a%5Cb", nil},
		{"/docs/a%00b", nil},
		{"/docs/%zz", nil},
		{"docs/A", nil},
		{"", nil},
	} {
		got, err := SplitPath(tc.path)
		if tc.want == nil {
			if err == nil || !errors.Is(err, ErrPath) {
				t.Errorf("SplitPath(%q) = %q, %v; want refused", tc.path, got, err)
			}
			continue
		}
		if err != nil || !cmp.Equal(got, tc.want) {
			t.Errorf("SplitPath(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
}
