package main

// usher eval: one evaluate body answered offline.

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/errlines"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
)

func eval(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval", "'JSON'", stderr)
	state := fs.String("state", "", "state document (default: the embedded demo state)")
	policyDir := fs.String("policy-dir", "", "directory of .rego policies (default: the embedded rego/)")
	explain := fs.Bool("explain", false, "print why: the rule that decided, every record considered with its verdict, the answer's window")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("eval takes one evaluate body as its argument, e.g. '{\"tenant_id\": \"acme\", \"subject\": {\"id\": \"alice\"}, \"seat\": {\"license\": \"editor\"}}'")
	}
	req, err := server.ParseEvaluate([]byte(fs.Arg(0)))
	if err != nil {
		return usagef("%v", err)
	}
	engine, err := decision.NewEngine(decision.Config{CacheEntries: -1})
	if err != nil {
		return err
	}
	defer engine.Close()
	reloader, err := policy.NewReloader(policy.ReloaderConfig{Dir: *policyDir, Apply: func(c *policy.Compiled) { engine.SetPolicy(c) }})
	if err != nil {
		return usagef("%v", err)
	}
	if err := reloader.Load(context.Background()); err != nil {
		return err
	}
	var snap *decision.Snapshot
	if *state == "" {
		snap, err = demoSnapshot()
	} else {
		var b []byte
		if b, err = os.ReadFile(*state); err == nil {
			var doc *decision.Document
			if doc, err = decision.ParseDocumentBytes(b); err == nil {
				snap = decision.NewSnapshot(doc, 1)
			}
		}
	}
	if err != nil {
		return errlines.Prefix("state: ", err)
	}
	engine.SetSnapshot(snap)
	if *explain {
		x, err := engine.Explain(snap, &req)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(server.AppendExplanation(nil, &x)))
		return err
	}
	d, err := engine.Decide(decision.APICLI, &req)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(server.AppendDecision(nil, &d)))
	return err
}
