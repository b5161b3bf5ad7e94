package extauthz

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/usher-authz/usher/internal/errlines"
)

// Route says what a request needs: a seat of a license, or an entitlement
// on an asset (by default the asset named by the path's {asset_id}).
type Route struct {
	Method string `json:"method,omitempty"` // "" matches any method
	Path   string `json:"path"`             // segments, {param}s and a final *
	// Seat is the license (a name or id), Entitlement the type; either
	// may come from the path or a header (Source).
	Seat        Source `json:"seat,omitzero"`
	Entitlement Source `json:"entitlement,omitzero"`
	// Asset names the entitlement's asset; default "{asset_id}".
	Asset Source `json:"asset,omitzero"`
	// Checkout, on a seat route of a floating license, checks out (or
	// renews) the caller's lease before the seat is decided.
	Checkout bool `json:"checkout,omitempty"`

	segs []segment
}

// Source is where a route takes a license, type or asset from: written as
// a literal ("editor"), a path parameter ("{license}"), or a request
// header ({from_header: x-asset-id}).
type Source struct {
	Literal, Param, Header string
}

// IsZero reports an unset source.
func (s Source) IsZero() bool { return s == Source{} }

// String is the source as written in a route file.
func (s Source) String() string {
	switch {
	case s.Param != "":
		return "{" + s.Param + "}"
	case s.Header != "":
		return "{from_header: " + s.Header + "}"
	}
	return s.Literal
}

// UnmarshalJSON reads a string (literal or "{param}") or {"from_header": name}.
func (s *Source) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		if name, ok := strings.CutPrefix(str, "{"); ok && strings.HasSuffix(name, "}") && len(name) > 1 {
			*s = Source{Param: strings.TrimSuffix(name, "}")}
		} else {
			*s = Source{Literal: str}
		}
		return nil
	}
	var obj struct {
		FromHeader *string `json:"from_header"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&obj); err != nil || obj.FromHeader == nil {
		return fmt.Errorf(`must be a string ("name" or "{param}", quoted in YAML) or {from_header: header-name}, got %s`, b)
	}
	if *obj.FromHeader == "" {
		return errors.New("from_header: must name a header")
	}
	*s = Source{Header: strings.ToLower(*obj.FromHeader)}
	return nil
}

// resolve gives the source's value for a request: "" when its path
// parameter or header is absent or empty.
func (s *Source) resolve(params map[string]string, header func(string) string) string {
	switch {
	case s.Param != "":
		return params[s.Param]
	case s.Header != "":
		if header == nil {
			return ""
		}
		return header(s.Header)
	}
	return s.Literal
}

// headerName is what a header name may hold (RFC 9110 token characters).
func headerName(h string) bool {
	if h == "" {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

type segment struct {
	lit   string
	param string // set for {param}
	rest  bool   // the final *
}

// Routes is an ordered route table; the first match wins.
type Routes struct {
	list []Route
}

// Len returns the number of routes.
func (r *Routes) Len() int {
	if r == nil {
		return 0
	}
	return len(r.list)
}

// LoadRoutes reads a route file (YAML or JSON, {"routes": [...]}).
func LoadRoutes(path string) (*Routes, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	r, err := ParseRoutes(b)
	if err != nil {
		return nil, errlines.Prefix("routes "+path+": ", err)
	}
	return r, nil
}

// ParseRoutes parses and validates route data, reporting every problem.
func ParseRoutes(b []byte) (*Routes, error) {
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %w", err)
	}
	js, err := json.Marshal(jsonable(doc))
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	var file struct {
		Routes []json.RawMessage `json:"routes"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("must be an object with a routes list: %v", err)
	}
	if file.Routes == nil {
		return nil, errors.New("routes: is required (a list of {method, path, seat | entitlement})")
	}
	out := &Routes{}
	var errs []error
	for i, raw := range file.Routes {
		var r Route
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&r); err != nil {
			errs = append(errs, fmt.Errorf("routes[%d]: %v (fields: method, path, seat, entitlement, asset, checkout)", i, strings.TrimPrefix(err.Error(), "json: ")))
			continue
		}
		if err := r.compile(); err != nil {
			errs = append(errs, errlines.Prefix(fmt.Sprintf("routes[%d] (%s %s): ", i, cmp.Or(r.Method, "any method"), r.Path), err))
			continue
		}
		out.list = append(out.list, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// jsonable turns YAML's map[string]any trees into JSON-encodable ones.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
	}
	return v
}

func (r *Route) compile() error {
	var errs []error
	r.Method = strings.ToUpper(r.Method)
	if r.Seat.IsZero() == r.Entitlement.IsZero() {
		errs = append(errs, errors.New("exactly one of seat and entitlement is required"))
	}
	if !strings.HasPrefix(r.Path, "/") {
		errs = append(errs, fmt.Errorf("path: must start with /, got %q", r.Path))
	}
	params := map[string]bool{}
	parts := strings.Split(strings.TrimPrefix(r.Path, "/"), "/")
	for i, p := range parts {
		switch {
		case p == "*" && i == len(parts)-1:
			r.segs = append(r.segs, segment{rest: true})
		case strings.Contains(p, "*"):
			errs = append(errs, fmt.Errorf("path: * may only be the whole last segment, got %q", r.Path))
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") && len(p) > 2:
			name := p[1 : len(p)-1]
			if params[name] {
				errs = append(errs, fmt.Errorf("path: parameter {%s} appears twice", name))
			}
			params[name] = true
			r.segs = append(r.segs, segment{param: name})
		case strings.ContainsAny(p, "{}"):
			errs = append(errs, fmt.Errorf("path: a {param} must be a whole segment, got %q", p))
		default:
			r.segs = append(r.segs, segment{lit: p})
		}
	}
	if !r.Entitlement.IsZero() && r.Asset.IsZero() {
		r.Asset = Source{Param: "asset_id"}
	} else if !r.Asset.IsZero() && r.Entitlement.IsZero() {
		errs = append(errs, errors.New("asset: only applies to entitlement routes"))
	}
	for _, f := range []struct {
		name, what string
		src        Source
	}{{"seat", "license", r.Seat}, {"entitlement", "entitlement type", r.Entitlement}, {"asset", "entitlement's asset", r.Asset}} {
		switch {
		case f.src.IsZero():
		case f.src.Param != "" && !params[f.src.Param]:
			errs = append(errs, fmt.Errorf("%s: the path has no {%s} to name the %s; add it or set %s", f.name, f.src.Param, f.what, f.name))
		case f.src.Header == "" && f.src.Param == "" && f.src.Literal == "":
			errs = append(errs, fmt.Errorf("%s: must not be empty", f.name))
		case f.src.Header == "" && f.src.Param == "" && strings.ContainsAny(f.src.Literal, "{}"):
			errs = append(errs, fmt.Errorf("%s: %q is neither a name nor a whole {param}", f.name, f.src.Literal))
		case f.src.Header != "" && !headerName(f.src.Header):
			errs = append(errs, fmt.Errorf("%s: from_header: %q is not a header name", f.name, f.src.Header))
		case f.src.Header == "authorization" || f.src.Header == MinRevisionHeader || f.src.Header == ClientIDHeader:
			errs = append(errs, fmt.Errorf("%s: from_header: %s is not a header a route may read", f.name, f.src.Header))
		}
	}
	if r.Checkout && r.Seat.IsZero() {
		errs = append(errs, errors.New("checkout: only applies to seat routes (a floating license's seat)"))
	}
	return errors.Join(errs...)
}

// Headers lists the request headers the routes read (from_header), so a
// front can extract them, and an operator forward them.
func (r *Routes) Headers() []string {
	if r == nil {
		return nil
	}
	var hs []string
	for _, rt := range r.list {
		for _, s := range []Source{rt.Seat, rt.Entitlement, rt.Asset} {
			if s.Header != "" && !slices.Contains(hs, s.Header) {
				hs = append(hs, s.Header)
			}
		}
	}
	return hs
}

// Match is a matched route with its path parameters and what it needs:
// the license of a seat route, or the type and asset of an entitlement
// route, resolved for the request.
type Match struct {
	Index   int
	Route   *Route
	Params  map[string]string
	License string // seat routes
	Type    string // entitlement routes
	Asset   string // the entitlement's asset
	// Missing names the source that resolved to nothing (a header the
	// request lacks), "" when none did.
	Missing string
}

// ErrPath marks a request path that is not in canonical form.
var ErrPath = errors.New("invalid path")

// SplitPath checks that a request path (as sent on the wire, percent-
// encoded, possibly with a query) is canonical and returns its segments,
// each percent-decoded exactly once. Canonical means: it starts with "/";
// it holds no fragment, no empty segment ("//"), no "." or ".." segment,
// plain or encoded (%2e); no segment decodes to a "/" or "\" (%2F, %5C)
// or a control character; every escape is valid. Anything else is
// refused rather than rewritten: a path the proxy and the upstream could
// read differently must not be authorized as one of them. The query is
// ignored. A proxy that normalizes paths (Envoy's normalize_path and
// merge_slashes) only ever sends canonical ones.
func SplitPath(raw string) ([]string, error) {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if !strings.HasPrefix(raw, "/") {
		return nil, fmt.Errorf("%w: must start with /", ErrPath)
	}
	if strings.IndexByte(raw, '#') >= 0 {
		return nil, fmt.Errorf("%w: must not hold a fragment (#)", ErrPath)
	}
	parts := strings.Split(raw[1:], "/")
	for i, p := range parts {
		if p == "" && i < len(parts)-1 {
			return nil, fmt.Errorf("%w: must not hold an empty segment (//)", ErrPath)
		}
		v, err := url.PathUnescape(p)
		if err != nil {
			return nil, fmt.Errorf("%w: segment %d: bad percent-encoding", ErrPath, i+1)
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r == '\\' || r < 0x20 || r == 0x7f }) {
			return nil, fmt.Errorf("%w: segment %d: must not decode to a backslash or control character", ErrPath, i+1)
		}
		// An encoded slash is data ("a%2F1" is the id "a/1"), but what an
		// upstream that decodes it would see must hold no dot or empty
		// segment either.
		encodedSlash := strings.Contains(v, "/")
		for sub := range strings.SplitSeq(v, "/") {
			if sub == "." || sub == ".." {
				return nil, fmt.Errorf("%w: must not hold a dot segment (. or .., also encoded)", ErrPath)
			}
			if sub == "" && encodedSlash {
				return nil, fmt.Errorf("%w: must not hold an empty segment (//, also encoded)", ErrPath)
			}
		}
		parts[i] = v
	}
	return parts, nil
}

// Match returns the first route matching method and the path segments
// SplitPath returned, or false; header looks up the request's headers
// (lower-case names) for from_header sources and may be nil.
func (r *Routes) Match(method string, segs []string, header func(string) string) (Match, bool) {
	if r == nil {
		return Match{}, false
	}
	for i := range r.list {
		rt := &r.list[i]
		if rt.Method != "" && rt.Method != method {
			continue
		}
		if params, ok := rt.match(segs); ok {
			m := Match{Index: i, Route: rt, Params: params}
			get := func(name string, s *Source) string {
				v := s.resolve(params, header)
				if v == "" && m.Missing == "" {
					m.Missing = name + " " + s.String()
				}
				return v
			}
			if !rt.Seat.IsZero() {
				m.License = get("seat", &rt.Seat)
			} else {
				m.Type = get("entitlement", &rt.Entitlement)
				m.Asset = get("asset", &rt.Asset)
			}
			return m, true
		}
	}
	return Match{}, false
}

func (rt *Route) match(parts []string) (map[string]string, bool) {
	var params map[string]string
	for i, s := range rt.segs {
		if s.rest {
			return params, true
		}
		if i >= len(parts) {
			return nil, false
		}
		switch {
		case s.param != "":
			if parts[i] == "" {
				return nil, false
			}
			if params == nil {
				params = map[string]string{}
			}
			params[s.param] = parts[i]
		case s.lit != parts[i]:
			return nil, false
		}
	}
	return params, len(parts) == len(rt.segs)
}
