package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	oparego "github.com/open-policy-agent/opa/v1/rego"

	"github.com/usher-authz/usher/decision"
)

// Queries the shipped policies answer; a --policy-dir must define them.
const (
	SeatQuery     = "data.usher.seat.decision"
	EntQuery      = "data.usher.entitlement.decision"
	ImpliesQuery  = "data.usher.entitlement.implies"
	testFileSufix = "_test.rego"
)

// ErrCompile marks a policy that does not compile or does not answer its
// queries with valid decisions.
var ErrCompile = errors.New("policy")

// Compiled is one revision of the policy: the modules compiled and
// prepared with OPA, and their answers over every possible fact vector.
// It is immutable and safe for concurrent use.
type Compiled struct {
	rev      uint64
	digest   string
	files    []string
	seat     [decision.NumSeatFacts]decision.Outcome
	ent      [decision.NumEntFacts]decision.Outcome
	implying map[string][]string
	route    oparego.PreparedEvalQuery
	hasRoute bool
	// nondet names a nondeterministic built-in the modules call (other
	// than usher.seat and usher.entitled); "" when there is none.
	nondet string
}

var _ decision.Policy = (*Compiled)(nil)

// Revision returns the revision this policy was compiled as.
func (c *Compiled) Revision() uint64 { return c.rev }

// Digest is a SHA-256 over the module sources, to tell revisions apart.
func (c *Compiled) Digest() string { return c.digest }

// Files lists the compiled module files.
func (c *Compiled) Files() []string { return c.files }

// Seat returns the memoized seat decision for the facts.
func (c *Compiled) Seat(f decision.SeatFacts) decision.Outcome { return c.seat[f] }

// Entitlement returns the memoized entitlement decision for the facts.
func (c *Compiled) Entitlement(f decision.EntFacts) decision.Outcome { return c.ent[f] }

// Implying returns the types whose holders also hold typ, typ excluded.
func (c *Compiled) Implying(typ string) []string { return c.implying[typ] }

// Implied lists, sorted, every type some other type implies.
func (c *Compiled) Implied() []string {
	out := make([]string, 0, len(c.implying))
	for t := range c.implying {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Sources reads every .rego module (tests excluded unless withTests) of
// fsys, keyed by path.
func Sources(fsys fs.FS, withTests bool) (map[string]string, error) {
	out := make(map[string]string)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && strings.HasPrefix(d.Name(), ".") {
			return fs.SkipDir // e.g. a Kubernetes ConfigMap volume's ..data timestamped copies
		}
		if d.IsDir() || path.Ext(p) != ".rego" || (!withTests && strings.HasSuffix(p, testFileSufix)) {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		out[p] = string(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no .rego files found", ErrCompile)
	}
	return out, nil
}

// Compile parses, compiles and prepares the policy modules of fsys as
// revision rev, then evaluates them over every fact vector. A policy that
// fails any step is rejected whole.
func Compile(ctx context.Context, fsys fs.FS, rev uint64) (*Compiled, error) {
	srcs, err := Sources(fsys, false)
	if err != nil {
		return nil, err
	}
	return compile(ctx, srcs, digestOf(srcs), rev)
}

func compile(ctx context.Context, srcs map[string]string, digest string, rev uint64) (*Compiled, error) {
	c := &Compiled{rev: rev, digest: digest}
	modules := make(map[string]*ast.Module, len(srcs))
	for name, src := range srcs {
		c.files = append(c.files, name)
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCompile, err)
		}
		modules[name] = m
	}
	sort.Strings(c.files)
	compiler := ast.NewCompiler().WithBuiltins(Builtins)
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("%w: %v", ErrCompile, compiler.Errors)
	}
	seat, err := prepare(ctx, compiler, SeatQuery)
	if err != nil {
		return nil, err
	}
	ent, err := prepare(ctx, compiler, EntQuery)
	if err != nil {
		return nil, err
	}
	for f := range decision.NumSeatFacts {
		facts := decision.SeatFacts(f)
		if !facts.Possible() {
			continue
		}
		o, err := evalOutcome(ctx, seat, SeatQuery, seatInput(facts))
		if err == nil && !o.Reason.Seat() {
			err = fmt.Errorf("%w: %s gave reason %q, not a seat reason", ErrCompile, SeatQuery, o.Reason)
		}
		if err != nil {
			return nil, err
		}
		c.seat[facts] = o
	}
	for f := range decision.NumEntFacts {
		facts := decision.EntFacts(f)
		o, err := evalOutcome(ctx, ent, EntQuery, entInput(facts))
		if err == nil && !o.Reason.Entitlement() {
			err = fmt.Errorf("%w: %s gave reason %q, not an entitlement reason", ErrCompile, EntQuery, o.Reason)
		}
		if err != nil {
			return nil, err
		}
		c.ent[facts] = o
	}
	if c.implying, err = implications(ctx, compiler); err != nil {
		return nil, err
	}
	if len(compiler.GetRules(ast.MustParseRef(RouteQuery))) > 0 {
		if c.route, err = prepare(ctx, compiler, RouteQuery, RouteFunctions()...); err != nil {
			return nil, err
		}
		c.hasRoute = true
		c.nondet = nondeterministic(compiler)
	}
	return c, nil
}

// nondeterministic returns the first built-in the modules call whose
// answer is not a function of its arguments (time.now_ns, http.send,
// rand.intn, …), or "".
func nondeterministic(compiler *ast.Compiler) string {
	var found []string
	for _, m := range compiler.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if !e.IsCall() {
				return false
			}
			name := e.Operator().String()
			if b, ok := ast.BuiltinMap[name]; ok && b.Nondeterministic {
				found = append(found, name)
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
				name := call[0].String()
				if b, ok := ast.BuiltinMap[name]; ok && b.Nondeterministic {
					found = append(found, name)
				}
			}
			return false
		})
	}
	slices.Sort(found)
	if len(found) == 0 {
		return ""
	}
	return found[0]
}

// RouteDeterministic reports whether the route policy's answer is a
// function of its input and the answers of its usher.seat and
// usher.entitled calls, so that an answer can be reused while those
// calls answer the same; otherwise it names the built-in that is not.
func (c *Compiled) RouteDeterministic() (bool, string) { return c.nondet == "", c.nondet }

// HasRoute reports whether the policy defines the ext_authz route decision.
func (c *Compiled) HasRoute() bool { return c.hasRoute }

func prepare(ctx context.Context, compiler *ast.Compiler, query string, opts ...func(*oparego.Rego)) (oparego.PreparedEvalQuery, error) {
	pq, err := oparego.New(append(opts, oparego.Query(query), oparego.Compiler(compiler))...).PrepareForEval(ctx)
	if err != nil {
		return pq, fmt.Errorf("%w: prepare %s: %v", ErrCompile, query, err)
	}
	return pq, nil
}

func evalOutcome(ctx context.Context, pq oparego.PreparedEvalQuery, query string, input ast.Value) (decision.Outcome, error) {
	rs, err := pq.Eval(ctx, oparego.EvalParsedInput(input))
	if err != nil {
		return decision.Outcome{}, fmt.Errorf("%w: %s with input %v: %v", ErrCompile, query, input, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return decision.Outcome{}, fmt.Errorf("%w: %s is undefined for input %v", ErrCompile, query, input)
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	allowed, okA := obj["allowed"].(bool)
	name, okR := obj["reason"].(string)
	if !ok || !okA || !okR {
		return decision.Outcome{}, fmt.Errorf("%w: %s must be {\"allowed\": bool, \"reason\": string}, got %v for input %v",
			ErrCompile, query, rs[0].Expressions[0].Value, input)
	}
	r, ok := decision.ParseReason(name)
	if !ok {
		return decision.Outcome{}, fmt.Errorf("%w: %s gave unknown reason %q for input %v", ErrCompile, query, name, input)
	}
	return decision.Outcome{Allowed: allowed, Reason: r}, nil
}

var (
	licenseStates = [...]string{"", "active", "suspended", "revoked"}
	validities    = [...]string{"in_effect", "not_yet_valid", "expired"}
)

// SeatInput is the input document the seat policy sees for facts.
func SeatInput(f decision.SeatFacts) map[string]any {
	lic := map[string]any{"found": f.LicenseState() != decision.LicStateAbsent}
	if f.LicenseState() != decision.LicStateAbsent {
		lic["status"] = licenseStates[f.LicenseState()]
		lic["validity"] = validities[f.Validity()]
		lic["type"] = "named"
		if f.Has(decision.SeatFloating) {
			lic["type"] = "floating"
		}
	}
	return map[string]any{
		"license": lic,
		"assignments": map[string]any{
			"denied":        f.Has(decision.SeatDenied),
			"direct":        f.Has(decision.SeatDirect),
			"via_group":     f.Has(decision.SeatViaGroup),
			"expired":       f.Has(decision.SeatExpired),
			"not_yet_valid": f.Has(decision.SeatNotYetValid),
			"inactive":      f.Has(decision.SeatInactive),
			"may_check_out": f.Has(decision.SeatMayCheckOut),
		},
		"seats": map[string]any{
			"over_limit":   f.Has(decision.SeatOverLimit),
			"beyond_limit": f.Has(decision.SeatBeyondLimit),
			"leased":       f.Has(decision.SeatHasLease),
		},
	}
}

// EntInput is the input document the entitlement policy sees for facts.
func EntInput(f decision.EntFacts) map[string]any {
	return map[string]any{"entitlements": map[string]any{
		"direct":           f.Has(decision.EntDirect),
		"via_group":        f.Has(decision.EntViaGroup),
		"pending_approval": f.Has(decision.EntPending),
		"expired":          f.Has(decision.EntExpired),
		"inactive":         f.Has(decision.EntInactive),
	}}
}

func seatInput(f decision.SeatFacts) ast.Value { return ast.MustInterfaceToValue(SeatInput(f)) }
func entInput(f decision.EntFacts) ast.Value   { return ast.MustInterfaceToValue(EntInput(f)) }

// InvertImplies turns an implication table (type -> types it implies)
// into its transitive inverse: for each type, every other type whose
// holders also hold it, sorted. Cycles are harmless.
func InvertImplies(direct map[string][]string) map[string][]string {
	implying := map[string][]string{}
	for from := range direct {
		seen := map[string]bool{from: true}
		queue := append([]string(nil), direct[from]...)
		for len(queue) > 0 {
			to := queue[0]
			queue = queue[1:]
			if seen[to] {
				continue
			}
			seen[to] = true
			implying[to] = append(implying[to], from)
			queue = append(queue, direct[to]...)
		}
	}
	for t := range implying {
		sort.Strings(implying[t])
	}
	return implying
}

// implications reads the implication table and inverts its transitive
// closure: for each type, every other type that implies it.
func implications(ctx context.Context, compiler *ast.Compiler) (map[string][]string, error) {
	pq, err := prepare(ctx, compiler, ImpliesQuery)
	if err != nil {
		return nil, err
	}
	rs, err := pq.Eval(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCompile, ImpliesQuery, err)
	}
	direct := map[string][]string{}
	if len(rs) == 1 && len(rs[0].Expressions) == 1 {
		obj, ok := rs[0].Expressions[0].Value.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: %s must be an object of type -> [types], got %v", ErrCompile, ImpliesQuery, rs[0].Expressions[0].Value)
		}
		for from, v := range obj {
			list, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("%w: %s[%q] must be an array of types, got %v", ErrCompile, ImpliesQuery, from, v)
			}
			for _, x := range list {
				to, ok := x.(string)
				if !ok {
					return nil, fmt.Errorf("%w: %s[%q] must hold strings, got %v", ErrCompile, ImpliesQuery, from, x)
				}
				direct[from] = append(direct[from], to)
			}
		}
	}
	implying := InvertImplies(direct)
	return implying, nil
}
