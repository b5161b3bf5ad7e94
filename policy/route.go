package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	oparego "github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/usher-authz/usher/decision"
)

// RouteQuery is the route policy's decision for an ext_authz request.
const RouteQuery = "data.usher.route.decision"

// Checker runs seat and entitlement checks for the route policy's
// built-ins, as the verified caller (its tenant and app scope); the policy
// cannot reach another tenant.
type Checker interface {
	Seat(subject decision.Principal, license string) (decision.Decision, error)
	Entitled(subject decision.Principal, asset, typ string) (decision.Decision, error)
}

type checkerKey struct{}

// WithChecker returns a context whose route evaluations use c.
func WithChecker(ctx context.Context, c Checker) context.Context {
	return context.WithValue(ctx, checkerKey{}, c)
}

var resultType = types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))

// Builtins declares usher.seat(subject, license) and
// usher.entitled(subject, asset_id, type). subject is an id string or
// {"id", "type"}. Each returns {"allowed", "reason", "decision_id", "grant"}.
var Builtins = map[string]*ast.Builtin{
	"usher.seat": {Name: "usher.seat", Decl: types.NewFunction(types.Args(types.A, types.S), resultType), Nondeterministic: true},
	"usher.entitled": {Name: "usher.entitled", Decl: types.NewFunction(types.Args(types.A, types.S, types.S), resultType),
		Nondeterministic: true},
}

func subjectOf(t *ast.Term) (decision.Principal, error) {
	switch v := t.Value.(type) {
	case ast.String:
		return decision.Principal{ID: string(v)}, nil
	case ast.Object:
		var p decision.Principal
		if id, ok := v.Get(ast.StringTerm("id")).Value.(ast.String); ok {
			p.ID = string(id)
		}
		if tt := v.Get(ast.StringTerm("type")); tt != nil {
			s, _ := tt.Value.(ast.String)
			pt, ok := decision.ParsePrincipalType(string(s))
			if !ok {
				return p, fmt.Errorf("subject.type must be person or group, got %v", tt)
			}
			p.Type = pt
		}
		if p.ID == "" {
			return p, errors.New("subject.id is required")
		}
		return p, nil
	}
	return decision.Principal{}, fmt.Errorf("subject must be an id or {\"id\", \"type\"}, got %v", t)
}

func checkerFrom(bctx oparego.BuiltinContext) (Checker, error) {
	c, ok := bctx.Context.Value(checkerKey{}).(Checker)
	if !ok {
		return nil, errors.New("usher built-ins are only available to ext_authz route evaluations")
	}
	return c, nil
}

// caller returns the checker of the evaluation and the subject a built-in
// was called with.
func caller(bctx oparego.BuiltinContext, subj *ast.Term) (Checker, decision.Principal, error) {
	c, err := checkerFrom(bctx)
	if err != nil {
		return nil, decision.Principal{}, err
	}
	p, err := subjectOf(subj)
	return c, p, err
}

func resultTerm(d decision.Decision) *ast.Term {
	obj := ast.NewObject(
		ast.Item(ast.StringTerm("allowed"), ast.BooleanTerm(d.Allowed)),
		ast.Item(ast.StringTerm("reason"), ast.StringTerm(d.Reason.String())),
		ast.Item(ast.StringTerm("decision_id"), ast.StringTerm(d.ID.String())),
	)
	if d.Allowed {
		g := ast.NewObject(ast.Item(ast.StringTerm("id"), ast.StringTerm(d.Grant.ID)))
		if d.Grant.ViaGroup != "" {
			g.Insert(ast.StringTerm("via_group"), ast.StringTerm(d.Grant.ViaGroup))
		}
		obj.Insert(ast.StringTerm("grant"), ast.NewTerm(g))
	}
	return ast.NewTerm(obj)
}

// RouteFunctions implements Builtins for a rego.Rego; the Checker comes
// from the evaluation's context.
func RouteFunctions() []func(*oparego.Rego) {
	seat := oparego.Function2(&oparego.Function{Name: "usher.seat", Decl: Builtins["usher.seat"].Decl, Nondeterministic: true},
		func(bctx oparego.BuiltinContext, subj, lic *ast.Term) (*ast.Term, error) {
			c, p, err := caller(bctx, subj)
			if err != nil {
				return nil, err
			}
			l, ok := lic.Value.(ast.String)
			if !ok || l == "" {
				return nil, fmt.Errorf("usher.seat: license must be a non-empty string, got %v", lic)
			}
			d, err := c.Seat(p, string(l))
			if err != nil {
				return nil, err
			}
			return resultTerm(d), nil
		})
	ent := oparego.Function3(&oparego.Function{Name: "usher.entitled", Decl: Builtins["usher.entitled"].Decl, Nondeterministic: true},
		func(bctx oparego.BuiltinContext, subj, asset, typ *ast.Term) (*ast.Term, error) {
			c, p, err := caller(bctx, subj)
			if err != nil {
				return nil, err
			}
			a, okA := asset.Value.(ast.String)
			t, okT := typ.Value.(ast.String)
			if !okA || !okT || a == "" || t == "" {
				return nil, fmt.Errorf("usher.entitled: asset and type must be non-empty strings, got %v, %v", asset, typ)
			}
			d, err := c.Entitled(p, string(a), string(t))
			if err != nil {
				return nil, err
			}
			return resultTerm(d), nil
		})
	return []func(*oparego.Rego){seat, ent}
}

// RouteOutcome is the route policy's answer.
type RouteOutcome struct {
	Allowed    bool
	Reason     decision.Reason
	DecisionID string // from the check the policy made; "" when it made none
	Headers    map[string]string
}

// Route evaluates the route policy for input (see rego/route.rego); ctx
// must carry a Checker (WithChecker).
func (c *Compiled) Route(ctx context.Context, input ast.Value) (RouteOutcome, error) {
	if !c.hasRoute {
		return RouteOutcome{}, fmt.Errorf("%w: the policy defines no %s", ErrCompile, RouteQuery)
	}
	rs, err := c.route.Eval(ctx, oparego.EvalParsedInput(input))
	if err != nil {
		return RouteOutcome{}, fmt.Errorf("route policy: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return RouteOutcome{}, fmt.Errorf("route policy: %s is undefined", RouteQuery)
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	allowed, okA := obj["allowed"].(bool)
	name, okR := obj["reason"].(string)
	if !ok || !okA || !okR {
		return RouteOutcome{}, fmt.Errorf("route policy: %s must be {\"allowed\": bool, \"reason\": string, …}, got %v", RouteQuery, rs[0].Expressions[0].Value)
	}
	r, ok := decision.ParseReason(name)
	if !ok {
		return RouteOutcome{}, fmt.Errorf("route policy: unknown reason %q", name)
	}
	out := RouteOutcome{Allowed: allowed, Reason: r}
	out.DecisionID, _ = obj["decision_id"].(string)
	if hs, ok := obj["headers"].(map[string]any); ok {
		out.Headers = make(map[string]string, len(hs))
		for k, v := range hs {
			s, ok := v.(string)
			if !ok {
				return RouteOutcome{}, fmt.Errorf("route policy: header %q must be a string, got %v", k, v)
			}
			out.Headers[k] = s
		}
	}
	return out, nil
}
