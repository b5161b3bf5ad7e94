package extauthz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/usher-authz/usher/internal/errlines"
)

// Route says what a request needs: a seat of a license, or an entitlement
// on an asset (by default the asset named by the path's {asset_id}).
type Route struct {
	Method      string `json:"method,omitempty"` // "" matches any method
	Path        string `json:"path"`             // segments, {param}s and a final *
	Seat        string `json:"seat,omitempty"`
	Entitlement string `json:"entitlement,omitempty"`
	// Asset names the entitlement's asset: a literal id or "{param}";
	// default "{asset_id}".
	Asset string `json:"asset,omitempty"`
	// Checkout, on a seat route of a floating license, checks out (or
	// renews) the caller's lease before the seat is decided.
	Checkout bool `json:"checkout,omitempty"`

	segs []segment
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
			errs = append(errs, fmt.Errorf("routes[%d]: %v (fields: method, path, seat, entitlement, asset, checkout)", i, err))
			continue
		}
		if err := r.compile(); err != nil {
			errs = append(errs, fmt.Errorf("routes[%d]: %w", i, err))
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
	if (r.Seat == "") == (r.Entitlement == "") {
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
	if r.Entitlement != "" {
		if r.Asset == "" {
			r.Asset = "{asset_id}"
		}
		if name, ok := strings.CutPrefix(r.Asset, "{"); ok {
			name = strings.TrimSuffix(name, "}")
			if !params[name] {
				errs = append(errs, fmt.Errorf("asset: the path has no {%s} to name the entitlement's asset; add it or set asset", name))
			}
		}
	} else if r.Asset != "" {
		errs = append(errs, errors.New("asset: only applies to entitlement routes"))
	}
	if r.Checkout && r.Seat == "" {
		errs = append(errs, errors.New("checkout: only applies to seat routes (a floating license's seat)"))
	}
	return errors.Join(errs...)
}

// Match is a matched route with its path parameters.
type Match struct {
	Index  int
	Route  *Route
	Params map[string]string
	Asset  string // the entitlement's asset
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
// SplitPath returned, or false.
func (r *Routes) Match(method string, segs []string) (Match, bool) {
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
			if rt.Entitlement != "" {
				m.Asset = rt.Asset
				if name, ok := strings.CutPrefix(rt.Asset, "{"); ok {
					m.Asset = params[strings.TrimSuffix(name, "}")]
				}
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
