package rego_test

import (
	"context"
	"io/fs"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

// TestRego runs the shipped policies' own Rego tests through OPA's tester,
// the same tests `opa test rego/` runs.
func TestRego(t *testing.T) {
	modules := map[string]*ast.Module{}
	err := fs.WalkDir(rego.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, err := fs.ReadFile(rego.FS, p)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(p, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return err
		}
		modules[p] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fns := policy.RouteFunctions()
	custom := []*tester.Builtin{
		{Decl: policy.Builtins["usher.seat"], Func: fns[0]},
		{Decl: policy.Builtins["usher.entitled"], Func: fns[1]},
	}
	ch, err := tester.NewRunner().SetModules(modules).AddCustomBuiltins(custom).RaiseBuiltinErrors(true).Run(context.Background(), modules)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range ch {
		n++
		if r.Error != nil || r.Fail {
			t.Errorf("%s.%s: fail=%v error=%v", r.Package, r.Name, r.Fail, r.Error)
		}
	}
	if n < 13 {
		t.Errorf("ran %d Rego tests, want at least 13", n)
	}
}
