package main

// Flags, the environment and the config file, for every subcommand.

import (
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// newFlagSet makes a subcommand's flag set whose -h lists every setting
// with its default and says how the environment and a config file set them.
func newFlagSet(cmd, args string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("usher "+cmd, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: usher %s [flags] %s\n\n%s\n\n"+
			"Flags go before the arguments. Every flag can also be set in the environment (named below\n"+
			"each flag) or in --config FILE; the command line wins over the environment, which wins over the file.\n\nFlags:\n",
			cmd, args, commandHelp[cmd])
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(fs.Output(), "  -%s\n    \t%s%s\n    \tenv %s\n", f.Name, f.Usage, def, envName(f.Name))
		})
	}
	return fs
}

// commandHelp says what each subcommand does, atop its -h.
var commandHelp = map[string]string{
	"serve":  "Serve decisions over HTTP (and Envoy ext_authz with --jwks) from a state document, Redis, or the embedded demo.",
	"eval":   "Answer one evaluate body offline, from a state document or the embedded demo, and print the decision.",
	"load":   "Validate a state document and write it into Redis in one transaction (--replace: Redis holds exactly FILE).",
	"put":    "Validate one record (KIND: license, assignment, entitlement or group) and write it into Redis with its change event.",
	"delete": "Delete one record from Redis with its change event.",
	"export": "Print the state Redis holds as a state document (to stdout, or atomically to -o FILE).",
	"token":  "Sign a bearer token for trying the ext_authz fronts locally; a --key file that does not exist is made (EC P-256), and --jwks-out writes the key set for usher serve --jwks.",
}

func envName(flag string) string {
	return "USHER_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command
// line from USHER_<FLAG> in the environment, and then from the config file
// (--config or USHER_CONFIG), whose keys are flag names. It reports every
// bad setting, each named.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var configPath string
	fs.StringVar(&configPath, "config", "", "optional config file (YAML or JSON) whose keys are these flags' names; flags and USHER_* variables win over it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return flagError{err}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			set[f.Name] = true
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, usagef("%s=%q: %v", env, v, err))
			}
		}
	})
	if configPath == "" {
		return errors.Join(errs...)
	}
	values, err := readConfig(configPath)
	if err != nil {
		return usageError{err}
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f := fs.Lookup(name)
		switch {
		case f == nil || name == "config":
			errs = append(errs, usagef("config %s: %q is not a setting of %s (see -h)", configPath, name, fs.Name()))
		case !set[name]:
			if err := f.Value.Set(values[name]); err != nil {
				errs = append(errs, usagef("config %s: %s: %q: %v", configPath, name, values[name], err))
			}
		}
	}
	return errors.Join(errs...)
}

// readConfig reads a flat YAML or JSON object of setting -> value.
func readConfig(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config %s: not a YAML or JSON object: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch x := v.(type) {
		case map[string]any, []any:
			return nil, fmt.Errorf("config %s: %s: must be a single value, got %v", path, k, x)
		case nil:
			out[k] = ""
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out, nil
}
