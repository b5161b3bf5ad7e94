package main

// usher serve: settings, wiring and lifecycle of the sidecar.

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/extauthz/grpcfront"
	"github.com/usher-authz/usher/jwtauth"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	statesync "github.com/usher-authz/usher/sync"
)

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
	subClaim, tenantClaim, appClaim, adminClaim     string
	leeway, jwksRefresh, shutdownDelay              time.Duration
	evaluateAuth                                    bool
	decisionLog, debugAddr                          string
	decisionLogSample                               float64
	maxBody, maxHeader, grpcWorkers                 int
	cacheEntries, cacheMaxBytes                     int64
	drain, maxStaleness, snapshotInterval           time.Duration
	syncVerify, consistencyWait                     time.Duration
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
	if f.grpcWorkers < 1 || f.grpcWorkers > 4096 {
		bad("grpc-stream-workers: must be from 1 to 4096, got %d", f.grpcWorkers)
	}
	if f.consistencyWait > time.Minute {
		bad("consistency-wait: at most 1m (a request holds its connection while it waits), got %s", f.consistencyWait)
	}
	if f.redisURL == "" && f.syncVerify != time.Second {
		bad("sync-verify-interval: only applies with --redis-url")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"max-staleness", f.maxStaleness}, {"shutdown-timeout", f.drain}, {"shutdown-delay", f.shutdownDelay},
		{"snapshot-interval", f.snapshotInterval}, {"sync-verify-interval", f.syncVerify}, {"jwt-leeway", f.leeway}, {"jwks-refresh", f.jwksRefresh},
		{"consistency-wait", f.consistencyWait}} {
		if d.v < 0 {
			bad("%s: must not be negative, got %s", d.name, d.v)
		}
	}
	return errors.Join(errs...)
}

func serve(args []string, stderr io.Writer) error {
	f, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	redis.SetLogger(redisLog{log})
	reg := newRegistry()
	sig, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Every goroutine started below is joined before serve returns: the
	// followers finish what they promised (the last snapshot file write).
	ctx, cancel := context.WithCancel(sig)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	dlog, closeLog, err := openDecisionLog(f, reg)
	if err != nil {
		return err
	}
	defer closeLog() // the last entries are written before exit
	var engine *decision.Engine
	metrics := decision.NewMetrics(reg, func() time.Time { return engine.FreshAt() }, jwtauth.FailureReasons...)
	wait := f.consistencyWait
	if wait == 0 {
		wait = -1 // the engine's "do not wait"
	}
	engine, err = decision.NewEngine(decision.Config{CacheEntries: f.cacheEntries, CacheMaxBytes: f.cacheMaxBytes, Metrics: metrics, Log: dlog, ConsistencyWait: wait})
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
	src, err := startSource(ctx, &wg, f, engine, log, reg)
	if err != nil {
		return err
	}
	var checkouts extauthz.Checkouts
	if src.leases != nil {
		checkouts = src.leases
	}
	verifier, authorizer, err := startMesh(ctx, &wg, f, engine, reloader, checkouts, log)
	if err != nil {
		return err
	}
	scfg := server.Config{
		Addr: f.httpAddr, MaxBodyBytes: f.maxBody, MaxHeaderBytes: f.maxHeader, Engine: engine, Gatherer: reg, Logger: log, MaxStaleness: f.maxStaleness,
		Authorizer: authorizer, Verifier: verifier, EvaluateAuth: f.evaluateAuth, Info: src.info(reloader),
	}
	if src.leases != nil {
		scfg.Leases = src.leases
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "usher_leases_active",
		Help: "Live leases of floating seats in the state served."}, func() float64 {
		if s := engine.Snapshot(); s != nil {
			return float64(s.LiveLeases(decision.InstantOf(time.Now())))
		}
		return 0
	}))
	srv, err := server.New(scfg)
	if err != nil {
		return usagef("%v", err)
	}
	ls, err := listen(f, authorizer != nil)
	if err != nil {
		return err
	}
	defer ls.close()

	errc := make(chan error, 4)
	wg.Go(func() { errc <- srv.Serve(ls.http) })
	if src.file != nil {
		wg.Go(func() {
			if err := src.file.Load(); err != nil {
				errc <- err // a state file that cannot be served at start stops the process
				return
			}
			src.file.Run(ctx)
		})
	}
	if ls.debug != nil {
		wg.Go(func() { errc <- debugServe(ls.debug) })
		log.Info("pprof serving", "debug", f.debugAddr+"/debug/pprof/")
	}
	var grpcSrv *grpc.Server
	if authorizer != nil {
		grpcSrv = grpcfront.NewServer(sig, authorizer, engine.Ready, 500*time.Millisecond, f.grpcWorkers)
		wg.Go(func() { errc <- grpcSrv.Serve(ls.grpc) })
		log.Info("ext_authz serving", "grpc", f.grpcAddr, "http", f.httpAddr+"/ext_authz/", "routes", authorizer.Routes().Len())
	}
	policyDir := f.policyDir
	if policyDir == "" {
		policyDir = "embedded"
	}
	log.Info("usher serving", "http", ls.http.Addr().String(), "version", version, "policy_dir", policyDir, "state", src.name)

	var runErr error
	select {
	case runErr = <-errc:
		log.Error("shutting down", "error", runErr)
	case <-sig.Done():
		log.Info("shutting down: readiness off, draining in-flight requests", "delay", f.shutdownDelay, "timeout", f.drain)
		srv.Drain()
		time.Sleep(f.shutdownDelay)
	}
	if err := shutdown(f.drain, srv, grpcSrv, ls); err != nil && runErr == nil {
		runErr = err
	}
	cancel()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// parseServeFlags defines serve's flags (defaults are the components'
// own) and checks them all, every problem named.
func parseServeFlags(args []string, stderr io.Writer) (*serveFlags, error) {
	fs := newFlagSet("serve", "", stderr)
	var f serveFlags
	fs.StringVar(&f.state, "state", "", "state document to follow, reloaded on change (default: the embedded demo state)")
	fs.StringVar(&f.redisURL, "redis-url", "", "follow the state in this Redis (redis://, rediss://, redis+cluster://, redis+sentinel://)")
	fs.StringVar(&f.namespace, "namespace", statesync.DefaultNamespace, "Redis key namespace")
	fs.StringVar(&f.snapshotFile, "snapshot-file", "", "with --redis-url: keep the last applied state in this file, and serve it at start while Redis is down")
	fs.DurationVar(&f.snapshotInterval, "snapshot-interval", statesync.DefaultSnapshotInterval, "with --snapshot-file: rewrite the file at most this often")
	fs.DurationVar(&f.syncVerify, "sync-verify-interval", statesync.DefaultVerifyInterval, "with --redis-url: prove at least this often that the change stream still continues from the applied position (else reload in full); a Redis that does not answer within this plus 1s is an outage")
	fs.DurationVar(&f.maxStaleness, "max-staleness", 0, "answer 503 state_stale and fail readiness once the state was last known current longer ago than this (0: off)")
	fs.StringVar(&f.grpcAddr, "grpc-addr", grpcfront.DefaultAddr, "gRPC listen address of the Envoy ext_authz service (started with --jwks)")
	fs.IntVar(&f.grpcWorkers, "grpc-stream-workers", grpcfront.DefaultStreamWorkers, "gRPC ext_authz calls answered by reused goroutines at once (more run on new ones); size it to the checks Envoy has in flight")
	fs.StringVar(&f.routes, "routes", "", "route data (YAML or JSON) for the ext_authz fronts: which route needs which seat or entitlement")
	fs.StringVar(&f.jwks, "jwks", "", "JSON Web Key Set (file or http(s) URL) that verifies bearer tokens; turns on the ext_authz fronts")
	fs.StringVar(&f.issuer, "jwt-issuer", "", "required iss of tokens (empty: not checked)")
	fs.StringVar(&f.audience, "jwt-audience", "", "required aud of tokens (empty: not checked)")
	fs.StringVar(&f.subClaim, "jwt-subject-claim", jwtauth.DefaultSubjectClaim, "claim naming the subject")
	fs.StringVar(&f.tenantClaim, "jwt-tenant-claim", jwtauth.DefaultTenantClaim, "claim naming the tenant")
	fs.StringVar(&f.appClaim, "jwt-app-claim", jwtauth.DefaultAppClaim, "claim naming the app scope")
	fs.StringVar(&f.adminClaim, "admin-claim", jwtauth.DefaultAdminClaim, "boolean claim that lets a token use /v1/explain under --evaluate-auth")
	fs.DurationVar(&f.leeway, "jwt-leeway", jwtauth.DefaultLeeway, "clock skew allowed on exp and nbf")
	fs.DurationVar(&f.jwksRefresh, "jwks-refresh", jwtauth.DefaultRefresh, "how often the key set is reread (an unknown kid rereads it at once, at most once a second)")
	fs.BoolVar(&f.evaluateAuth, "evaluate-auth", false, "require the bearer token on /v1/evaluate, batch and the compat endpoint, and take tenant and app scope from it")
	fs.StringVar(&f.policyDir, "policy-dir", "", "directory of .rego policies, hot-reloaded (default: the embedded rego/)")
	fs.StringVar(&f.httpAddr, "http-addr", server.DefaultAddr, "HTTP listen address")
	fs.IntVar(&f.maxBody, "max-body-bytes", server.DefaultMaxBodyBytes, "largest accepted request body, in bytes")
	fs.IntVar(&f.maxHeader, "max-header-bytes", server.DefaultMaxHeaderBytes, "largest accepted request line and headers, in bytes (431 beyond)")
	fs.Int64Var(&f.cacheEntries, "cache-entries", decision.DefaultCacheEntries, "decision cache entries to size for; -1 disables the cache")
	fs.Int64Var(&f.cacheMaxBytes, "cache-max-bytes", decision.DefaultCacheMaxBytes, "most memory the decision cache's entries hold, in bytes")
	fs.DurationVar(&f.consistencyWait, "consistency-wait", decision.DefaultConsistencyWait, "how long a request with min_revision waits for the state to reach it before 503 state_behind (0: not at all)")
	fs.DurationVar(&f.drain, "shutdown-timeout", 10*time.Second, "how long in-flight requests may take to finish after SIGTERM")
	fs.DurationVar(&f.shutdownDelay, "shutdown-delay", 0, "after SIGTERM, keep serving (not ready, closing connections) this long before the listeners close, so load balancers notice")
	fs.StringVar(&f.decisionLog, "decision-log", "", "write a JSON line per sampled decision to this file (- for stdout); never blocks a decision")
	fs.Float64Var(&f.decisionLogSample, "decision-log-sample", 1, "fraction of decisions the decision log keeps, in (0, 1]")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve Go's pprof profiles under /debug/pprof/ on this address (off when empty; keep it on loopback)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usagef("serve takes no arguments, got %q", fs.Args())
	}
	if err := f.validate(); err != nil {
		return nil, usageError{err}
	}
	return &f, nil
}

// newRegistry is the process's metrics registry: Go and process
// collectors and usher_build_info; components register the rest.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "usher_build_info",
		Help: "1, labelled with the version, the Go version and the source revision of this binary."}, []string{"version", "goversion", "revision"})
	buildInfo.WithLabelValues(version, runtime.Version(), vcsRevision()).Set(1)
	reg.MustRegister(buildInfo)
	return reg
}

// openDecisionLog starts the decision log when --decision-log asks for
// one; closeLog writes what is queued and closes the file.
func openDecisionLog(f *serveFlags, reg prometheus.Registerer) (dlog *decision.Logger, closeLog func(), err error) {
	closeLog = func() {}
	if f.decisionLog == "" {
		return nil, closeLog, nil
	}
	w := io.Writer(os.Stdout)
	var file *os.File
	if f.decisionLog != "-" {
		if file, err = os.OpenFile(f.decisionLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
			return nil, closeLog, usagef("decision-log: %v", err)
		}
		w = file
	}
	if dlog, err = decision.NewLogger(decision.LogConfig{W: w, Sample: f.decisionLogSample, Registerer: reg}); err != nil {
		if file != nil {
			file.Close()
		}
		return nil, closeLog, usageError{err}
	}
	ctx, stop := context.WithCancel(context.Background())
	go dlog.Run(ctx)
	return dlog, func() {
		stop()
		dlog.Wait()
		if file != nil {
			file.Close()
		}
	}, nil
}

// startMesh starts token verification and, with it, the ext_authz
// authorizer, when --jwks is given.
func startMesh(ctx context.Context, wg *sync.WaitGroup, f *serveFlags, engine *decision.Engine, reloader *policy.Reloader, checkouts extauthz.Checkouts, log *slog.Logger) (*jwtauth.Verifier, *extauthz.Authorizer, error) {
	if f.jwks == "" {
		return nil, nil, nil
	}
	verifier, err := jwtauth.NewVerifier(ctx, jwtauth.Config{JWKS: f.jwks, Issuer: f.issuer, Audience: f.audience,
		SubjectClaim: f.subClaim, TenantClaim: f.tenantClaim, AppClaim: f.appClaim, AdminClaim: f.adminClaim, Leeway: f.leeway, Refresh: f.jwksRefresh, Logger: log})
	if err != nil {
		return nil, nil, usageError{err}
	}
	wg.Go(func() { verifier.Run(ctx) })
	var routes *extauthz.Routes
	if f.routes != "" {
		if routes, err = extauthz.LoadRoutes(f.routes); err != nil {
			return nil, nil, usageError{err}
		}
		if hs := routes.Headers(); len(hs) > 0 {
			log.Info("routes read request headers; the HTTP front sees them only if Envoy forwards them (authorization_request.allowed_headers)", "headers", strings.Join(hs, ","))
		}
	} else {
		log.Warn("no --routes: every ext_authz request is denied no_route")
	}
	authorizer, err := extauthz.New(extauthz.Config{Engine: engine, Policy: reloader.Current, Routes: routes, Verifier: verifier, Logger: log, Leases: checkouts})
	if err != nil {
		return nil, nil, usageError{err}
	}
	return verifier, authorizer, nil
}

// stateSource is where the state comes from: Redis, a file, or the demo.
type stateSource struct {
	name   string // redis, file or demo
	file   *statesync.FileFollower
	redis  *statesync.RedisFollower
	leases *statesync.LeaseService // Redis only
}

// startSource starts following Redis, prepares the file follower (loaded
// once the listeners are up: a large file takes seconds, during which
// liveness must answer), or serves the embedded demo.
func startSource(ctx context.Context, wg *sync.WaitGroup, f *serveFlags, engine *decision.Engine, log *slog.Logger, reg prometheus.Registerer) (*stateSource, error) {
	switch {
	case f.redisURL != "":
		client, err := statesync.NewClient(f.redisURL, "usher-sidecar")
		if err != nil {
			return nil, usageError{err}
		}
		rf, err := statesync.NewRedisFollower(statesync.RedisConfig{
			Client: client, Namespace: f.namespace, Publish: engine.SetSnapshot, Fresh: engine.MarkFresh,
			Logger: log, Registerer: reg, SnapshotFile: f.snapshotFile, SnapshotInterval: f.snapshotInterval, VerifyInterval: f.syncVerify,
		})
		if err != nil {
			client.Close()
			return nil, usageError{err}
		}
		w, err := statesync.NewWriter(statesync.WriterConfig{Client: client, Namespace: f.namespace})
		if err != nil {
			client.Close()
			return nil, usageError{err}
		}
		leases := statesync.NewLeaseService(w, reg)
		done := make(chan struct{})
		wg.Go(func() { leases.RunReaper(ctx, engine.Snapshot, 5*time.Second); close(done) })
		wg.Go(func() { rf.Run(ctx); <-done; client.Close() })
		return &stateSource{name: "redis", redis: rf, leases: leases}, nil
	case f.state != "":
		ff, err := statesync.NewFileFollower(statesync.FileConfig{
			Path: f.state, Publish: engine.SetSnapshot, Fresh: engine.MarkFresh, Logger: log, Registerer: reg,
		})
		if err != nil {
			return nil, usagef("%v", err)
		}
		return &stateSource{name: "file", file: ff}, nil
	}
	snap, err := demoSnapshot()
	if err != nil {
		return nil, err
	}
	engine.SetSnapshot(snap)
	log.Info("serving the embedded demo state; use --state FILE for your own", "records", snap.Len())
	return &stateSource{name: "demo"}, nil
}

// info is what /v1/status and readiness say of the source and the policy.
func (s *stateSource) info(reloader *policy.Reloader) func() server.Info {
	return func() server.Info {
		info := server.Info{Source: s.name, SyncState: "static"}
		if s.file != nil {
			info.SyncState = "following"
			info.SyncError = s.file.LastError()
		}
		if s.redis != nil {
			st := s.redis.Status()
			info.SyncState, info.SyncLag, info.SyncError, info.SyncPosition = st.State, st.Lag, st.LastError, st.Position
			info.SyncSince, info.SyncEpoch = st.ErrorSince, st.Epoch
		}
		if c := reloader.Current(); c != nil {
			info.PolicyDigest = c.Digest()
		}
		info.PolicyError = reloader.LastError()
		return info
	}
}

// listeners are bound before anything serves, so a taken port fails
// before anything says "serving", and closing them ends their servers on
// every path.
type listeners struct{ http, grpc, debug net.Listener }

func listen(f *serveFlags, mesh bool) (*listeners, error) {
	ls := &listeners{}
	var err error
	if ls.http, err = net.Listen("tcp", f.httpAddr); err != nil {
		return nil, fmt.Errorf("http listen: %w", err)
	}
	if f.debugAddr != "" {
		if ls.debug, err = net.Listen("tcp", f.debugAddr); err != nil {
			ls.close()
			return nil, fmt.Errorf("debug listen: %w", err)
		}
	}
	if mesh {
		if ls.grpc, err = net.Listen("tcp", f.grpcAddr); err != nil {
			ls.close()
			return nil, fmt.Errorf("grpc listen: %w", err)
		}
	}
	return ls, nil
}

func (ls *listeners) close() {
	for _, l := range []net.Listener{ls.http, ls.grpc, ls.debug} {
		if l != nil {
			l.Close()
		}
	}
}

// shutdown stops the servers, giving in-flight requests up to drain.
func shutdown(drain time.Duration, srv *server.Server, grpcSrv *grpc.Server, ls *listeners) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if ls.debug != nil {
		ls.debug.Close()
	}
	if grpcSrv != nil {
		done := make(chan struct{})
		go func() { grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			grpcSrv.Stop()
			<-done
		}
	}
	err := srv.Shutdown(ctx)
	ls.http.Close() // in case Serve had not yet taken the listener when Shutdown ran
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
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
