// Command usher is the Usher policy-decision sidecar: one binary whose
// subcommands serve decisions (serve), answer one check offline (eval),
// write and read the state in Redis (load, put, delete, export), sign
// tokens to try the mesh fronts (token) and print the version.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/extauthz/grpcfront"
	"github.com/usher-authz/usher/internal/errlines"
	"github.com/usher-authz/usher/jwtauth"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	statesync "github.com/usher-authz/usher/sync"
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

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("log-level: must be debug, info, warn or error, got %q", level)
	}
	// Durations as "1.5s", not as nanosecond integers (JSON's default).
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("log-format: must be text or json, got %q", format)
}

type serveFlags struct {
	state, policyDir, httpAddr, logLevel, logFormat string
	redisURL, namespace, snapshotFile               string
	grpcAddr, routes, jwks, issuer, audience        string
	subClaim, tenantClaim, appClaim                 string
	leeway, jwksRefresh, shutdownDelay              time.Duration
	evaluateAuth                                    bool
	decisionLog, debugAddr                          string
	decisionLogSample                               float64
	maxBody, maxHeader                              int
	cacheEntries, cacheMaxBytes                     int64
	drain, maxStaleness, snapshotInterval           time.Duration
	syncVerify                                      time.Duration
}

// validate runs every check across serve's settings, before anything
// starts, and reports every problem, each named.
func (f *serveFlags) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if f.cacheEntries == 0 {
		bad("cache-entries: must be positive, or -1 to disable the cache")
	}
	if f.cacheMaxBytes <= 0 {
		bad("cache-max-bytes: must be positive")
	}
	if f.decisionLog == "" && f.decisionLogSample != 1 {
		bad("decision-log-sample: only applies with --decision-log")
	}
	if f.jwks == "" && (f.routes != "" || f.evaluateAuth) {
		bad("jwks: --routes and --evaluate-auth verify bearer tokens and need a key set (--jwks FILE|URL)")
	}
	if f.state != "" && f.redisURL != "" {
		bad("state and redis-url: give one source of state, not both")
	}
	if f.snapshotFile != "" && f.redisURL == "" {
		bad("snapshot-file: only applies with --redis-url")
	}
	if f.redisURL == "" && f.syncVerify != time.Second {
		bad("sync-verify-interval: only applies with --redis-url")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"max-staleness", f.maxStaleness}, {"shutdown-timeout", f.drain}, {"shutdown-delay", f.shutdownDelay},
		{"snapshot-interval", f.snapshotInterval}, {"sync-verify-interval", f.syncVerify}, {"jwt-leeway", f.leeway}, {"jwks-refresh", f.jwksRefresh}} {
		if d.v < 0 {
			bad("%s: must not be negative, got %s", d.name, d.v)
		}
	}
	return errors.Join(errs...)
}

func serve(args []string, stderr io.Writer) error {
	fs := newFlagSet("serve", "", stderr)
	var f serveFlags
	fs.StringVar(&f.state, "state", "", "state document to follow, reloaded on change (default: the embedded demo state)")
	fs.StringVar(&f.redisURL, "redis-url", "", "follow the state in this Redis (redis://, rediss://, redis+cluster://, redis+sentinel://)")
	fs.StringVar(&f.namespace, "namespace", statesync.DefaultNamespace, "Redis key namespace")
	fs.StringVar(&f.snapshotFile, "snapshot-file", "", "with --redis-url: keep the last applied state in this file, and serve it at start while Redis is down")
	fs.DurationVar(&f.snapshotInterval, "snapshot-interval", 10*time.Second, "with --snapshot-file: rewrite the file at most this often")
	fs.DurationVar(&f.syncVerify, "sync-verify-interval", time.Second, "with --redis-url: prove at least this often that the change stream still continues from the applied position (else reload in full); a Redis that does not answer within this plus 1s is an outage")
	fs.DurationVar(&f.maxStaleness, "max-staleness", 0, "answer 503 state_stale and fail readiness once the state was last known current longer ago than this (0: off)")
	fs.StringVar(&f.grpcAddr, "grpc-addr", grpcfront.DefaultAddr, "gRPC listen address of the Envoy ext_authz service (started with --jwks)")
	fs.StringVar(&f.routes, "routes", "", "route data (YAML or JSON) for the ext_authz fronts: which route needs which seat or entitlement")
	fs.StringVar(&f.jwks, "jwks", "", "JSON Web Key Set (file or http(s) URL) that verifies bearer tokens; turns on the ext_authz fronts")
	fs.StringVar(&f.issuer, "jwt-issuer", "", "required iss of tokens (empty: not checked)")
	fs.StringVar(&f.audience, "jwt-audience", "", "required aud of tokens (empty: not checked)")
	fs.StringVar(&f.subClaim, "jwt-subject-claim", "sub", "claim naming the subject")
	fs.StringVar(&f.tenantClaim, "jwt-tenant-claim", "tenant_id", "claim naming the tenant")
	fs.StringVar(&f.appClaim, "jwt-app-claim", "app_id", "claim naming the app scope")
	fs.DurationVar(&f.leeway, "jwt-leeway", 30*time.Second, "clock skew allowed on exp and nbf")
	fs.DurationVar(&f.jwksRefresh, "jwks-refresh", 5*time.Minute, "how often the key set is reread (an unknown kid rereads it at once, at most once a second)")
	fs.BoolVar(&f.evaluateAuth, "evaluate-auth", false, "require the bearer token on /v1/evaluate, batch and the compat endpoint, and take tenant and app scope from it")
	fs.StringVar(&f.policyDir, "policy-dir", "", "directory of .rego policies, hot-reloaded (default: the embedded rego/)")
	fs.StringVar(&f.httpAddr, "http-addr", server.DefaultAddr, "HTTP listen address")
	fs.IntVar(&f.maxBody, "max-body-bytes", server.DefaultMaxBodyBytes, "largest accepted request body, in bytes")
	fs.IntVar(&f.maxHeader, "max-header-bytes", server.DefaultMaxHeaderBytes, "largest accepted request line and headers, in bytes (431 beyond)")
	fs.Int64Var(&f.cacheEntries, "cache-entries", 1_000_000, "decision cache entries to size for; -1 disables the cache")
	fs.Int64Var(&f.cacheMaxBytes, "cache-max-bytes", decision.DefaultCacheMaxBytes, "most memory the decision cache's entries hold, in bytes")
	fs.DurationVar(&f.drain, "shutdown-timeout", 10*time.Second, "how long in-flight requests may take to finish after SIGTERM")
	fs.DurationVar(&f.shutdownDelay, "shutdown-delay", 0, "after SIGTERM, keep serving (not ready, closing connections) this long before the listeners close, so load balancers notice")
	fs.StringVar(&f.decisionLog, "decision-log", "", "write a JSON line per sampled decision to this file (- for stdout); never blocks a decision")
	fs.Float64Var(&f.decisionLogSample, "decision-log-sample", 1, "fraction of decisions the decision log keeps, in (0, 1]")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve Go's pprof profiles under /debug/pprof/ on this address (off when empty; keep it on loopback)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("serve takes no arguments, got %q", fs.Args())
	}
	if err := f.validate(); err != nil {
		return usageError{err}
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	redis.SetLogger(redisLog{log})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "usher_build_info",
		Help: "1, labelled with the version, the Go version and the source revision of this binary."}, []string{"version", "goversion", "revision"})
	buildInfo.WithLabelValues(version, runtime.Version(), vcsRevision()).Set(1)
	reg.MustRegister(buildInfo)
	sig, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Every goroutine started below is joined before serve returns: the
	// followers finish what they promised (the last snapshot file write).
	ctx, cancel := context.WithCancel(sig)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var dlog *decision.Logger
	if f.decisionLog != "" {
		w := io.Writer(os.Stdout)
		if f.decisionLog != "-" {
			file, err := os.OpenFile(f.decisionLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
			if err != nil {
				return usagef("decision-log: %v", err)
			}
			defer file.Close()
			w = file
		}
		if dlog, err = decision.NewLogger(decision.LogConfig{W: w, Sample: f.decisionLogSample, Registerer: reg}); err != nil {
			return usageError{err}
		}
		logCtx, stopLog := context.WithCancel(context.Background())
		go dlog.Run(logCtx)
		defer func() { stopLog(); dlog.Wait() }() // the last entries are written before exit
	}
	var engine *decision.Engine
	metrics := decision.NewMetrics(reg, func() time.Time { return engine.FreshAt() })
	engine, err = decision.NewEngine(decision.Config{CacheEntries: f.cacheEntries, CacheMaxBytes: f.cacheMaxBytes, Metrics: metrics, Log: dlog})
	if err != nil {
		return err
	}
	defer engine.Close()

	reloader, err := policy.NewReloader(policy.ReloaderConfig{
		Dir: f.policyDir, Apply: func(c *policy.Compiled) { engine.SetPolicy(c) }, Logger: log, Registerer: reg,
	})
	if err != nil {
		return usagef("%v", err)
	}
	if err := reloader.Load(ctx); err != nil {
		return err
	}
	wg.Go(func() { reloader.Run(ctx) })

	var verifier *jwtauth.Verifier
	var routes *extauthz.Routes
	if f.jwks != "" {
		verifier, err = jwtauth.NewVerifier(ctx, jwtauth.Config{JWKS: f.jwks, Issuer: f.issuer, Audience: f.audience,
			SubjectClaim: f.subClaim, TenantClaim: f.tenantClaim, AppClaim: f.appClaim, Leeway: f.leeway, Refresh: f.jwksRefresh, Logger: log})
		if err != nil {
			return usageError{err}
		}
		wg.Go(func() { verifier.Run(ctx) })
		if f.routes != "" {
			if routes, err = extauthz.LoadRoutes(f.routes); err != nil {
				return usageError{err}
			}
		} else {
			log.Warn("no --routes: every ext_authz request is denied no_route")
		}
	}
	source := "demo"
	var follower *statesync.FileFollower
	var redisFollower *statesync.RedisFollower
	switch {
	case f.redisURL != "":
		source = "redis"
		client, err := statesync.NewClient(f.redisURL, "usher-sidecar")
		if err != nil {
			return usageError{err}
		}
		redisFollower, err = statesync.NewRedisFollower(statesync.RedisConfig{
			Client: client, Namespace: f.namespace, Publish: engine.SetSnapshot, Fresh: engine.MarkFresh,
			Logger: log, Registerer: reg, SnapshotFile: f.snapshotFile, SnapshotInterval: f.snapshotInterval, VerifyInterval: f.syncVerify,
		})
		if err != nil {
			client.Close()
			return usageError{err}
		}
		wg.Go(func() { redisFollower.Run(ctx); client.Close() })
	case f.state != "":
		source = "file"
		follower, err = statesync.NewFileFollower(statesync.FileConfig{
			Path: f.state, Publish: engine.SetSnapshot, Fresh: engine.MarkFresh, Logger: log, Registerer: reg,
		})
		if err != nil {
			return usagef("%v", err)
		}
		// Loaded once the listeners are up (see below): a large file takes
		// seconds, during which liveness must answer.
	default:
		snap, err := demoSnapshot()
		if err != nil {
			return err
		}
		engine.SetSnapshot(snap)
		log.Info("serving the embedded demo state; use --state FILE for your own", "records", snap.Len())
	}

	var authorizer *extauthz.Authorizer
	if verifier != nil {
		if authorizer, err = extauthz.New(extauthz.Config{Engine: engine, Policy: reloader.Current, Routes: routes, Verifier: verifier, Logger: log}); err != nil {
			return usageError{err}
		}
	}
	srv, err := server.New(server.Config{
		Addr: f.httpAddr, MaxBodyBytes: f.maxBody, MaxHeaderBytes: f.maxHeader, Engine: engine, Gatherer: reg, Logger: log, MaxStaleness: f.maxStaleness,
		Authorizer: authorizer, Verifier: verifier, EvaluateAuth: f.evaluateAuth,
		Info: func() server.Info {
			info := server.Info{Source: source, SyncState: "static"}
			if follower != nil {
				info.SyncState = "following"
				info.SyncError = follower.LastError()
			}
			if redisFollower != nil {
				st := redisFollower.Status()
				info.SyncState, info.SyncLag, info.SyncError, info.SyncPosition = st.State, st.Lag, st.LastError, st.Position
				info.SyncSince, info.SyncEpoch = st.ErrorSince, st.Epoch
			}
			if c := reloader.Current(); c != nil {
				info.PolicyDigest = c.Digest()
			}
			info.PolicyError = reloader.LastError()
			return info
		},
	})
	if err != nil {
		return usagef("%v", err)
	}
	// Listeners are bound here, so a taken port fails before anything
	// says "serving", and closing them ends their servers on every path.
	httpLn, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	defer httpLn.Close()
	var debugLn net.Listener
	if f.debugAddr != "" {
		if debugLn, err = net.Listen("tcp", f.debugAddr); err != nil {
			return fmt.Errorf("debug listen: %w", err)
		}
		defer debugLn.Close()
	}
	var grpcLn net.Listener
	if authorizer != nil {
		if grpcLn, err = net.Listen("tcp", f.grpcAddr); err != nil {
			return fmt.Errorf("grpc listen: %w", err)
		}
		defer grpcLn.Close()
	}
	errc := make(chan error, 4)
	wg.Go(func() { errc <- srv.Serve(httpLn) })
	if follower != nil {
		wg.Go(func() {
			if err := follower.Load(); err != nil {
				errc <- err // a state file that cannot be served at start stops the process
				return
			}
			follower.Run(ctx)
		})
	}
	if debugLn != nil {
		wg.Go(func() { errc <- debugServe(debugLn) })
		log.Info("pprof serving", "debug", f.debugAddr+"/debug/pprof/")
	}
	var grpcSrv *grpc.Server
	if authorizer != nil {
		grpcSrv = grpcfront.NewServer(sig, authorizer, engine.Ready, 500*time.Millisecond)
		wg.Go(func() { errc <- grpcSrv.Serve(grpcLn) })
		log.Info("ext_authz serving", "grpc", f.grpcAddr, "http", f.httpAddr+"/ext_authz/", "routes", routes.Len())
	}
	policyDir := f.policyDir
	if policyDir == "" {
		policyDir = "embedded"
	}
	log.Info("usher serving", "http", httpLn.Addr().String(), "version", version, "policy_dir", policyDir, "state", source)
	var runErr error
	select {
	case runErr = <-errc:
		log.Error("shutting down", "error", runErr)
	case <-sig.Done():
		log.Info("shutting down: readiness off, draining in-flight requests", "delay", f.shutdownDelay, "timeout", f.drain)
		srv.Drain()
		time.Sleep(f.shutdownDelay)
	}
	sctx, cancelDrain := context.WithTimeout(context.Background(), f.drain)
	defer cancelDrain()
	if debugLn != nil {
		debugLn.Close()
	}
	if grpcSrv != nil {
		done := make(chan struct{})
		go func() { grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-sctx.Done():
			grpcSrv.Stop()
			<-done
		}
	}
	if err := srv.Shutdown(sctx); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutdown: %w", err)
	}
	httpLn.Close() // in case Serve had not yet taken the listener when Shutdown ran
	cancel()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// writeFileAtomic writes doc to a temporary file beside path and renames
// it into place: a failure leaves path as it was.
func writeFileAtomic(path string, doc *decision.Document) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	if _, err := doc.WriteTo(w); err != nil {
		tmp.Close()
		return fmt.Errorf("export %s: nothing written: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("export %s: nothing written: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("export %s: nothing written: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

// debugServe serves the pprof handlers on their own listener, so profiles
// never share the decision port.
func debugServe(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	err := (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("debug server: %w", err)
}

// redisLog sends go-redis's own messages (dial retries and the like) to
// the debug log; the follower reports outages itself.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, args ...any) {
	r.l.DebugContext(ctx, "redis client", "msg", fmt.Sprintf(format, args...))
}

func demoSnapshot() (*decision.Snapshot, error) {
	doc, err := decision.ParseDocumentBytes(demoState)
	if err != nil {
		return nil, fmt.Errorf("embedded demo state: %w", err)
	}
	return decision.NewSnapshot(doc, 1), nil
}

func eval(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("eval", "'JSON'", stderr)
	state := fs.String("state", "", "state document (default: the embedded demo state)")
	policyDir := fs.String("policy-dir", "", "directory of .rego policies (default: the embedded rego/)")
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
	d, err := engine.Decide(decision.APICLI, &req)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(server.AppendDecision(nil, &d)))
	return err
}

// write runs the Redis writer subcommands.
func write(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(cmd, map[string]string{"load": "FILE", "put": "KIND JSON", "delete": "KIND TENANT ID", "export": ""}[cmd], stderr)
	redisURL := fs.String("redis-url", "", "Redis to write (required; redis://, rediss://, redis+cluster://, redis+sentinel://)")
	namespace := fs.String("namespace", statesync.DefaultNamespace, "Redis key namespace")
	maxLen := new(int64)
	if cmd != "export" {
		fs.Int64Var(maxLen, "stream-max-len", statesync.DefaultStreamMaxLen, "change events the stream keeps (approximately)")
	}
	replace, strict, output := false, false, ""
	switch cmd {
	case "load":
		fs.BoolVar(&replace, "replace", false, "make Redis hold exactly the file: tenants and records not in it are deleted")
	case "export":
		fs.BoolVar(&strict, "strict", false, "fail (exit 1, nothing written) when Redis holds a record that breaks the state rules, instead of leaving it out")
		fs.StringVar(&output, "o", "", "write the document to this file (atomically: a failed export leaves an existing file as it was) instead of stdout")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			return usagef("%s: flags go before the arguments, got %q after them", cmd, a)
		}
	}
	if *redisURL == "" {
		return usagef("redis-url: required (or USHER_REDIS_URL)")
	}
	want := map[string]int{"load": 1, "put": 2, "delete": 3, "export": 0}[cmd]
	if fs.NArg() != want {
		return usagef("%s takes %d arguments, got %d (see usher help %s)", cmd, want, fs.NArg(), cmd)
	}
	client, err := statesync.NewClient(*redisURL, "usher-writer")
	if err != nil {
		return usageError{err}
	}
	defer client.Close()
	wcfg := statesync.WriterConfig{Client: client, Namespace: *namespace, StreamMaxLen: *maxLen}
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && stderr == os.Stderr {
		start := time.Now()
		wcfg.Progress = func(done, total int, bytes int64) { // on a terminal only
			mb := float64(bytes) / (1 << 20)
			fmt.Fprintf(stderr, "\rstaged %d of %d records, %.0f MB, %.1f MB/s ", done, total, mb, mb/time.Since(start).Seconds())
			if done == total {
				fmt.Fprintln(stderr)
			}
		}
	}
	w, err := statesync.NewWriter(wcfg)
	if err != nil {
		return usageError{err}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "load":
		in, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer in.Close()
		doc, err := decision.DecodeDocument(in)
		if err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(0), err)
		}
		res, err := w.Load(ctx, doc, replace)
		if err != nil {
			return fmt.Errorf("load %s: nothing written: %w", fs.Arg(0), err)
		}
		fmt.Fprintf(stdout, "loaded %s: %d tenants now hold %d records\n", fs.Arg(0), res.Tenants, res.Records)
	case "put":
		kind, err := decision.ParseKind(fs.Arg(0))
		if err != nil {
			return usageError{err}
		}
		if err := w.Put(ctx, kind, []byte(fs.Arg(1))); err != nil {
			return fmt.Errorf("put: nothing written: %w", err)
		}
		fmt.Fprintf(stdout, "put %s: written with its change event\n", kind)
	case "delete":
		kind, err := decision.ParseKind(fs.Arg(0))
		if err != nil {
			return usageError{err}
		}
		if err := w.Delete(ctx, kind, fs.Arg(1), fs.Arg(2)); err != nil {
			return fmt.Errorf("delete: nothing written: %w", err)
		}
		fmt.Fprintf(stdout, "deleted %s %q of tenant %q, with its change event\n", kind, fs.Arg(2), fs.Arg(1))
	case "export":
		doc, bad, err := w.ExportValid(ctx)
		if err != nil {
			return err
		}
		if len(bad) > 0 {
			if strict {
				return fmt.Errorf("export: nothing written: Redis holds %d records that break the state rules: %w", len(bad), errors.Join(bad...))
			}
			for _, e := range bad {
				fmt.Fprintln(stderr, "usher: export: left out:", e)
			}
			fmt.Fprintf(stderr, "usher: export: %d invalid records left out (--strict makes this an error)\n", len(bad))
		}
		if output == "" {
			_, err := doc.WriteTo(stdout)
			return err
		}
		return writeFileAtomic(output, doc)
	}
	return nil
}
