// Command usher is the Usher policy-decision sidecar: one binary whose
// subcommands serve decisions (serve), answer one check offline (eval),
// write and read the state in Redis (load, put, delete, export), list
// and end floating-seat leases (leases), sign tokens to try the mesh
// fronts (token) and print the version.
package main

import (
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/usher-authz/usher/internal/errlines"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

//go:embed demo.json
var demoState []byte

const usage = `usher — policy-decision sidecar for seat and entitlement checks

Usage:
  usher serve [flags]          serve decisions over HTTP (no --state or --redis-url: the embedded demo state)
  usher eval [flags] 'JSON'    answer one evaluate body offline and print the decision
  usher load [flags] FILE      write a state document into Redis (--replace: Redis holds exactly FILE)
  usher put [flags] KIND JSON  write one record (license, assignment, entitlement, group) into Redis
  usher delete [flags] KIND TENANT ID
                               delete one record from Redis
  usher export [flags]         print Redis's state as a state document
  usher leases list|release    list a floating license's live leases, or end one (operators)
  usher token [flags]          sign a bearer token (and make a key and key set) to try the ext_authz fronts locally
  usher version                print the version

Every flag can also be set as USHER_<FLAG> in the environment
(--policy-dir is USHER_POLICY_DIR); a flag on the command line wins.
Run 'usher COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "eval":
		err = eval(args[1:], stdout, stderr)
	case "load", "put", "delete", "export":
		err = write(args[0], args[1:], stdout, stderr)
	case "token":
		err = token(args[1:], stdout, stderr)
	case "leases":
		err = leases(args[1:], stdout, stderr)
	case "version", "--version", "-version", "-v":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] != "help" { // usher help serve = usher serve -h
			return run([]string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "usher: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(flagError)):
		return 2 // the flag package has printed it, with the usage
	case errors.As(err, new(usageError)):
		fmt.Fprintln(stderr, errlines.Prefix("usher: ", err))
		return 2
	default:
		fmt.Fprintln(stderr, errlines.Prefix("usher: ", err))
		return 1
	}
}

// usageError is a mistake in the command line or configuration: exit 2.
type usageError struct{ error }

// flagError is a command line the flag package refused and reported.
type flagError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func versionString() string {
	opa := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/open-policy-agent/opa" {
				opa = d.Version
			}
		}
	}
	return fmt.Sprintf("usher %s (%s, OPA %s)", version, runtime.Version(), opa)
}

// vcsRevision is the source revision the binary was built from, if Go
// recorded it.
func vcsRevision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
