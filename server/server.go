package server

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/usher-authz/usher/auth"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonscan"
	"github.com/usher-authz/usher/internal/jsonw"
)

// Defaults of Config.
const (
	DefaultAddr           = "127.0.0.1:8700"
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxHeaderBytes = 32 << 10
	MaxBatchChecks        = 1000
)

// Info is what the process knows beyond the engine, for /v1/status.
type Info struct {
	Source       string // "demo", "file" or "redis"
	SyncState    string // e.g. "following", "disconnected"
	SyncLag      time.Duration
	SyncError    string
	SyncSince    time.Time // when the current sync outage began (zero if none)
	SyncPosition string    // last applied change stream id (Redis)
	SyncEpoch    string    // the Redis namespace's epoch
	PolicyDigest string
	PolicyError  string
}

// Config configures the HTTP front.
type Config struct {
	// Addr is the listen address; default 127.0.0.1:8700.
	Addr string
	// MaxBodyBytes bounds request bodies; default 1 MiB. Larger bodies get 413.
	MaxBodyBytes int
	// ReadTimeout bounds reading one request; default 30s. A request that
	// does not arrive in time gets 408.
	ReadTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers together; default
	// 32 KiB (tokens with group claims are often 4–8 KB). Larger get 431.
	MaxHeaderBytes int
	// Engine answers the checks. Required.
	Engine *decision.Engine
	// Gatherer serves /metrics; nil serves 404 there.
	Gatherer prometheus.Gatherer
	// Info reports sync and policy details for /v1/status; nil reports none.
	Info func() Info
	// Logger reports server errors; nil discards.
	Logger *slog.Logger
	// Authorizer answers Envoy's HTTP ext_authz checks under /ext_authz/;
	// nil answers 404 there.
	Authorizer *authz.Authorizer
	// Verifier checks bearer tokens for EvaluateAuth.
	Verifier *auth.Verifier
	// EvaluateAuth makes /v1/evaluate, batch and the compat endpoint
	// require a verified bearer token, whose tenant and app scope they use.
	EvaluateAuth bool
	// MaxStaleness, when positive, is how old the state may get (since it
	// was last known current) before checks answer 503 state_stale and
	// readiness fails. Zero keeps serving the last state however old.
	MaxStaleness time.Duration
}

// Validate reports every problem of the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Engine == nil {
		errs = append(errs, errors.New("server: Engine is required"))
	}
	if c.EvaluateAuth && c.Verifier == nil {
		errs = append(errs, errors.New("evaluate-auth: needs a key set to verify tokens (--jwks)"))
	}
	if c.MaxStaleness < 0 {
		errs = append(errs, errors.New("max-staleness: must not be negative"))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("max-body-bytes: must not be negative"))
	}
	if c.MaxHeaderBytes < 0 || c.MaxHeaderBytes > 0 && c.MaxHeaderBytes < 4096 {
		errs = append(errs, fmt.Errorf("max-header-bytes: must be at least 4096, got %d", c.MaxHeaderBytes))
	}
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("http-addr: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Server is the fasthttp front: evaluate, batch, the DataRobot-compatible
// seat evaluate, health, status and metrics.
type Server struct {
	cfg      Config
	srv      *fasthttp.Server
	metrics  fasthttp.RequestHandler
	draining atomic.Bool
}

// New validates cfg and builds a server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	if cfg.Gatherer != nil {
		s.metrics = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	s.srv = &fasthttp.Server{
		Handler:                      s.Handle,
		Name:                         "usher",
		MaxRequestBodySize:           cfg.MaxBodyBytes,
		ReadBufferSize:               cfg.MaxHeaderBytes,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 30 * time.Second,
		IdleTimeout:                  2 * time.Minute,
		NoDefaultDate:                true,
		NoDefaultContentType:         true,
		ErrorHandler:                 s.transportError,
		Logger:                       fasthttpLogger{cfg.Logger},
		DisablePreParseMultipartForm: true,
	}
	return s, nil
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// Addr returns the configured listen address.
func (s *Server) Addr() string { return s.cfg.Addr }

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.srv.Serve(ln) }

// Drain turns readiness false so load balancers stop sending traffic.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	return s.srv.ShutdownWithContext(ctx)
}

// Handle routes one request and counts its answer. It must not retain ctx.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	api := s.route(ctx)
	s.cfg.Engine.Metrics().Request(api, ctx.Response.StatusCode())
}

// route answers one request and says which api (decision.RequestAPIs) it was.
func (s *Server) route(ctx *fasthttp.RequestCtx) int {
	if s.draining.Load() {
		ctx.SetConnectionClose() // let clients move to another instance
	}
	path := ctx.Path()
	switch string(path) {
	case "/v1/evaluate":
		if s.method(ctx, fasthttp.MethodPost) {
			s.evaluate(ctx)
		}
		return decision.ReqEvaluate
	case "/v1/evaluate/batch":
		if s.method(ctx, fasthttp.MethodPost) {
			s.batch(ctx)
		}
		return decision.ReqBatch
	case "/api/v2/seatLicenseAllocations/evaluate/", "/api/v2/seatLicenseAllocations/evaluate":
		if s.method(ctx, fasthttp.MethodPost) {
			s.compat(ctx)
		}
		return decision.ReqCompat
	case "/health/live":
		if s.method(ctx, fasthttp.MethodGet) {
			writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ok"}`))
		}
		return decision.ReqHealth
	case "/health/ready":
		if s.method(ctx, fasthttp.MethodGet) {
			s.ready(ctx)
		}
		return decision.ReqHealth
	case "/v1/status":
		if s.method(ctx, fasthttp.MethodGet) {
			s.status(ctx)
		}
		return decision.ReqStatus
	case "/metrics":
		if s.metrics != nil && s.method(ctx, fasthttp.MethodGet) {
			s.metrics(ctx)
		} else if s.metrics == nil {
			writeError(ctx, fasthttp.StatusNotFound, "not_found", "no metrics registry configured")
		}
		return decision.ReqMetrics
	default:
		// Either the normalized or the raw path may name the ext_authz
		// front; extAuthz reads the raw one and refuses what only one names.
		if s.cfg.Authorizer != nil && (isExtAuthz(path) || isExtAuthz(ctx.Request.Header.RequestURI())) {
			s.extAuthz(ctx)
			return decision.ReqExtAuthzHTTP
		}
		shown := string(path)
		if len(shown) > 64 {
			shown = fmt.Sprintf("%s… (%d bytes)", shown[:64], len(shown))
		}
		writeError(ctx, fasthttp.StatusNotFound, "not_found", "no such path: "+shown)
	}
	return decision.ReqOther
}

// identify verifies the caller's token when EvaluateAuth is on; it writes
// 401 and reports false when the token does not verify.
func (s *Server) identify(ctx *fasthttp.RequestCtx) (auth.Identity, bool) {
	if !s.cfg.EvaluateAuth {
		return auth.Identity{}, true
	}
	tok, err := auth.BearerToken(string(ctx.Request.Header.Peek("Authorization")))
	var id auth.Identity
	if err == nil {
		id, err = s.cfg.Verifier.Verify(ctx, tok)
	}
	if err != nil {
		s.cfg.Engine.Metrics().AuthFailure(decision.FrontEvaluate, auth.FailureReason(err))
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="usher"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "unauthenticated", strings.TrimPrefix(err.Error(), "unauthenticated: "))
		return id, false
	}
	return id, true
}

// scope holds a request to the verified caller's tenant and app scope.
func scope(id auth.Identity, r *decision.Request, prefix string) error {
	if id.Tenant == "" {
		return nil
	}
	if r.TenantID != id.Tenant {
		return &RequestError{prefix + "tenant_id", fmt.Sprintf("%q is outside the token's tenant %q", r.TenantID, id.Tenant)}
	}
	if r.AppID != "" && r.AppID != id.App {
		return &RequestError{prefix + "app_id", fmt.Sprintf("%q is outside the token's app scope %q", r.AppID, id.App)}
	}
	r.AppID = id.App
	return nil
}

func isExtAuthz(path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/ext_authz"))
	return ok && (len(rest) == 0 || rest[0] == '/' || rest[0] == '?')
}

// extAuthz answers Envoy's HTTP ext_authz service: the proxied request
// arrives as METHOD /ext_authz/<original path> with its headers.
func (s *Server) extAuthz(ctx *fasthttp.RequestCtx) {
	// The raw request target, not ctx.Path(): fasthttp has already decoded
	// and normalized that, and the gRPC front sees Envoy's raw :path.
	orig, ok := strings.CutPrefix(string(ctx.Request.Header.RequestURI()), "/ext_authz")
	switch {
	case !ok || orig != "" && orig[0] != '/' && orig[0] != '?':
		orig = "" // a target that only normalizes to /ext_authz/…: refused below
	case orig == "" || orig[0] == '?':
		orig = "/" + orig
	}
	res := s.cfg.Authorizer.Check(ctx, decision.APIExtAuthzHTTP, authz.Request{
		Method: string(ctx.Method()), Path: orig, Authorization: string(ctx.Request.Header.Peek("Authorization")),
	})
	switch res.Status {
	case authz.Allowed:
		ctx.Response.Header.Set("x-usher-decision-id", res.DecisionID)
		for k, v := range res.Headers {
			ctx.Response.Header.Set(k, v)
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case authz.Denied:
		ctx.Response.Header.Set("x-usher-decision-id", res.DecisionID)
		b := []byte(`{"allowed":false,"reason":`)
		b = jsonw.String(b, res.Reason)
		b = append(b, `,"decision_id":`...)
		b = jsonw.String(b, res.DecisionID)
		writeJSON(ctx, fasthttp.StatusForbidden, append(b, '}'))
	case authz.Unauthenticated:
		s.cfg.Engine.Metrics().AuthFailure(decision.FrontHTTP, res.AuthFailure)
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="usher"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "unauthenticated", res.Message)
	case authz.Invalid:
		writeError(ctx, fasthttp.StatusBadRequest, res.Reason, res.Message)
	default:
		writeError(ctx, fasthttp.StatusServiceUnavailable, "unavailable", res.Message)
	}
}

// method answers 405 unless the request uses want (HEAD goes with GET).
func (s *Server) method(ctx *fasthttp.RequestCtx, want string) bool {
	m := ctx.Method()
	if string(m) == want || (want == fasthttp.MethodGet && string(m) == fasthttp.MethodHead) {
		return true
	}
	ctx.Response.Header.Set("Allow", want)
	writeError(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "method "+string(m)+" not allowed; use "+want)
	return false
}

func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	defer func() { s.cfg.Engine.Metrics().Request(decision.ReqOther, ctx.Response.StatusCode()) }()
	// fasthttp's own messages quote the raw request (headers, tokens and
	// all): none of it is echoed.
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large",
			"request body exceeds the limit of "+strconv.Itoa(s.cfg.MaxBodyBytes)+" bytes")
	case errors.As(err, &small) || errors.Is(err, fasthttp.ErrSmallReadBuffer):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "headers_too_large",
			"request line and headers exceed the limit of "+strconv.Itoa(s.cfg.MaxHeaderBytes)+" bytes")
	case errors.As(err, &netErr) && netErr.Timeout():
		writeError(ctx, fasthttp.StatusRequestTimeout, "request_timeout", "the request did not arrive in time")
	default:
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", "malformed HTTP request")
	}
}

// tooOld reports the state's age and whether it is past MaxStaleness.
func (s *Server) tooOld() (time.Duration, bool) {
	if s.cfg.MaxStaleness <= 0 || s.cfg.Engine.Snapshot() == nil {
		return 0, false
	}
	age := time.Since(s.cfg.Engine.FreshAt())
	return age, age > s.cfg.MaxStaleness
}

// stale answers 503 when the state is older than MaxStaleness.
func (s *Server) stale(ctx *fasthttp.RequestCtx) bool {
	age, old := s.tooOld()
	if !old {
		return false
	}
	writeError(ctx, fasthttp.StatusServiceUnavailable, "state_stale",
		fmt.Sprintf("the state was last known current %s ago, over the %s max-staleness", age.Round(time.Millisecond), s.cfg.MaxStaleness))
	return true
}

func (s *Server) evaluate(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	var req decision.Request
	if err := parseEvaluateInto(ctx.PostBody(), "", id.Tenant, &req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
		return
	}
	if err := scope(id, &req, ""); err != nil {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", err.Error())
		return
	}
	d, err := s.cfg.Engine.Decide(decision.APIEvaluate, &req)
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	var scratch [384]byte
	writeJSON(ctx, fasthttp.StatusOK, AppendDecision(scratch[:0], &d))
}

func (s *Server) engineError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, decision.ErrNoState):
		writeError(ctx, fasthttp.StatusServiceUnavailable, "no_state", "no state snapshot loaded yet")
	case errors.Is(err, decision.ErrNoPolicy):
		writeError(ctx, fasthttp.StatusServiceUnavailable, "no_policy", "no policy compiled yet")
	default:
		s.cfg.Logger.Error("decision failed", "error", err)
		writeError(ctx, fasthttp.StatusInternalServerError, "internal", "decision failed")
	}
}

func (s *Server) batch(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	checks, ok := batchChecks(ctx.PostBody())
	if !ok {
		var err error
		if checks, err = readBatch(ctx.PostBody()); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
			return
		}
	}
	if len(checks) > MaxBatchChecks {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request",
			fmt.Sprintf("checks: at most %d checks per batch, got %d", MaxBatchChecks, len(checks)))
		return
	}
	if !s.cfg.Engine.Ready() {
		s.engineError(ctx, readinessError(s.cfg.Engine))
		return
	}
	bp := batchBufs.Get().(*[]byte)
	out := append((*bp)[:0], `{"results":[`...)
	for i, raw := range checks {
		if i > 0 {
			out = append(out, ',')
		}
		var req decision.Request
		// Errors name the check; the prefix is built only for them.
		if parseEvaluateInto(raw, "", id.Tenant, &req) != nil {
			out = appendErrorObject(out, "invalid_request", message(parseEvaluateInto(raw, checkPrefix(i), id.Tenant, &req)))
			continue
		}
		if scope(id, &req, "") != nil {
			out = appendErrorObject(out, "forbidden", scope(id, &req, checkPrefix(i)).Error())
			continue
		}
		d, err := s.cfg.Engine.Decide(decision.APIBatch, &req)
		if err != nil {
			out = appendErrorObject(out, "unavailable", err.Error())
			continue
		}
		out = AppendDecision(out, &d)
	}
	out = append(out, "]}"...)
	writeJSON(ctx, fasthttp.StatusOK, out)
	if cap(out) <= 1<<20 { // a rare huge batch does not stay pooled
		*bp = out
		batchBufs.Put(bp)
	}
}

func checkPrefix(i int) string { return "checks[" + strconv.Itoa(i) + "]." }

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// batchChecks finds the checks of a batch body in place: an object whose
// one key is "checks", holding an array. Anything else (and anything the
// scanner does not read) goes to encoding/json, which also words errors.
func batchChecks(body []byte) ([][]byte, bool) {
	p := jsonscan.Scanner{Buf: body}
	if !p.Byte('{') {
		return nil, false
	}
	var checks [][]byte
	seen := false
	var keys keySet
	ok := p.Object(func(key string) bool {
		if !keys.add(key) {
			return false
		}
		if key != "checks" {
			return p.Skip()
		}
		if !p.Byte('[') {
			return false
		}
		seen, checks = true, [][]byte{}
		if p.Byte(']') {
			return true
		}
		for {
			p.WS()
			start := p.I
			if !p.Skip() { // a full read: the body is valid JSON
				return false
			}
			checks = append(checks, body[start:p.I])
			if p.Byte(',') {
				continue
			}
			return p.Byte(']')
		}
	})
	if !ok || !seen || !p.Done() {
		return nil, false
	}
	return checks, true
}

func readinessError(e *decision.Engine) error {
	if e.Snapshot() == nil {
		return decision.ErrNoState
	}
	return decision.ErrNoPolicy
}

func (s *Server) ready(ctx *fasthttp.RequestCtx) {
	ok, status, why := s.readiness()
	code := fasthttp.StatusOK
	if !ok {
		code = fasthttp.StatusServiceUnavailable
	}
	b := append([]byte(`{"status":`), jsonw.String(nil, status)...)
	if !ok {
		b = append(b, `,"reason":`...)
		b = jsonw.String(b, why)
	}
	writeJSON(ctx, code, append(b, '}'))
}

// readiness says whether the sidecar is ready, its status word, and why,
// in words an operator can act on.
func (s *Server) readiness() (bool, string, string) {
	e := s.cfg.Engine
	var info Info
	if s.cfg.Info != nil {
		info = s.cfg.Info()
	}
	syncNote := ""
	if info.SyncError != "" {
		syncNote = "; sync " + info.SyncState
		if !info.SyncSince.IsZero() {
			syncNote += " since " + info.SyncSince.UTC().Format(time.RFC3339)
		}
		syncNote += ": " + info.SyncError
	}
	switch {
	case s.draining.Load():
		return false, "draining", "shutting down"
	case e.Snapshot() == nil:
		return false, "not_ready", "no state snapshot loaded yet" + syncNote
	case e.Policy() == nil:
		return false, "not_ready", "no policy compiled yet"
	}
	age := time.Since(e.FreshAt()).Round(time.Millisecond)
	if age, old := s.tooOld(); old {
		return false, "not_ready", fmt.Sprintf("the state was last confirmed current %s ago, over the %s max-staleness%s",
			age.Round(time.Millisecond), s.cfg.MaxStaleness, syncNote)
	}
	why := fmt.Sprintf("serving the %s state, last confirmed current %s ago", info.Source, age)
	if s.cfg.MaxStaleness > 0 {
		why += fmt.Sprintf(" (max-staleness %s)", s.cfg.MaxStaleness)
	}
	return true, "ready", why + syncNote
}

func (s *Server) status(ctx *fasthttp.RequestCtx) {
	var info Info
	if s.cfg.Info != nil {
		info = s.cfg.Info()
	}
	e := s.cfg.Engine
	ready, _, why := s.readiness()
	b := []byte(`{"ready":`)
	b = jsonw.Bool(b, ready)
	b = append(b, `,"readiness":`...)
	b = jsonw.String(b, why)
	b = append(b, `,"state":`...)
	if snap := e.Snapshot(); snap != nil {
		b = append(b, `{"revision":`...)
		b = strconv.AppendUint(b, snap.Revision, 10)
		b = append(b, `,"source":`...)
		b = jsonw.String(b, info.Source)
		b = append(b, `,"built_at":`...)
		b = decision.InstantOf(snap.Built).AppendJSON(b)
		b = append(b, `,"age_seconds":`...)
		b = strconv.AppendFloat(b, time.Since(e.FreshAt()).Seconds(), 'f', 3, 64)
		b = append(b, `,"tenants":`...)
		b = strconv.AppendInt(b, int64(len(snap.TenantIDs())), 10)
		b = append(b, `,"records":{`...)
		for k := decision.KindLicense; k <= decision.KindGroup; k++ {
			if k > 0 {
				b = append(b, ',')
			}
			b = jsonw.String(b, k.String()+"s")
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(snap.Count(k)), 10)
		}
		b = append(b, "}}"...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"sync":{"state":`...)
	b = jsonw.String(b, info.SyncState)
	b = append(b, `,"lag_seconds":`...)
	b = strconv.AppendFloat(b, info.SyncLag.Seconds(), 'g', 6, 64)
	b = append(b, `,"last_error":`...)
	b = jsonw.NullString(b, info.SyncError)
	if !info.SyncSince.IsZero() {
		b = append(b, `,"error_since":`...)
		b = decision.InstantOf(info.SyncSince).AppendJSON(b)
	}
	if info.SyncPosition != "" {
		b = append(b, `,"position":`...)
		b = jsonw.String(b, info.SyncPosition)
		b = append(b, `,"epoch":`...)
		b = jsonw.NullString(b, info.SyncEpoch)
	}
	b = append(b, `},"policy":`...)
	if p := e.Policy(); p != nil {
		b = append(b, `{"revision":`...)
		b = strconv.AppendUint(b, p.Revision(), 10)
		b = append(b, `,"digest":`...)
		b = jsonw.String(b, info.PolicyDigest)
		b = append(b, `,"last_error":`...)
		b = jsonw.NullString(b, info.PolicyError)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, '}')
	writeJSON(ctx, fasthttp.StatusOK, b)
}

func (s *Server) compat(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	req, err := ParseCompat(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
		return
	}
	if id.Tenant != "" && req.TenantID != id.Tenant {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", fmt.Sprintf("orgId: %q is outside the token's tenant %q", req.TenantID, id.Tenant))
		return
	}
	req.AppID = id.App
	snap := s.cfg.Engine.Snapshot()
	d, err := s.cfg.Engine.Decide(decision.APICompat, &req)
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	var lic *decision.License
	var t *decision.Tenant
	if d.LicenseID != "" {
		if t = snap.Tenant(req.TenantID); t != nil {
			lic = t.License(d.LicenseID)
		}
	}
	if d.Reason == decision.LicenseNotFound || lic == nil {
		writeError(ctx, fasthttp.StatusNotFound, "license_not_found",
			fmt.Sprintf("no seat license %q in org %q", req.License, req.TenantID))
		return
	}
	// The allocation's subjects are the assigned persons the seat rules
	// allow now (not those denied through a group, say).
	holds := func(person string) bool {
		o, err := s.cfg.Engine.Evaluate(snap, &decision.Request{TenantID: req.TenantID, AppID: req.AppID,
			Subject: decision.Principal{Type: decision.Person, ID: person}, Check: decision.CheckSeat, License: lic.ID})
		return err == nil && o.Allowed
	}
	writeJSON(ctx, fasthttp.StatusOK, appendAllocation(nil, d.Allowed, t, lic, time.Now(), holds))
}

// AllocationID derives the stable allocation id of a tenant's license as a
// name-based (version 5 style) UUID.
func AllocationID(tenant, license string) string {
	h := sha1.Sum([]byte("usher-seat-allocation\x00" + tenant + "\x00" + license))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	const hex = "0123456789abcdef"
	var out [36]byte
	j := 0
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hex[h[i]>>4], hex[h[i]&0xf]
		j += 2
	}
	return string(out[:])
}

// appendAllocation builds the DataRobot seat license allocation from the
// license and its person assignments in effect at now whose person holds
// a seat (holds).
func appendAllocation(b []byte, allowed bool, t *decision.Tenant, l *decision.License, now time.Time, holds func(person string) bool) []byte {
	at := decision.InstantOf(now)
	var holders []*decision.Assignment
	seen := map[string]bool{}
	for _, a := range t.LicenseAssignments(l.ID) {
		if a.AssigneeType == decision.Person && a.Reservation != decision.Denied && a.Status == decision.StatusActive &&
			(!a.ValidFrom.Set() || a.ValidFrom <= at) && (!a.ExpiresAt.Set() || at < a.ExpiresAt) &&
			!seen[a.AssigneeID] && holds(a.AssigneeID) {
			seen[a.AssigneeID] = true
			holders = append(holders, a)
		}
	}
	limit := l.SeatLimit // -1: unlimited
	created, updated := l.CreatedAt, l.UpdatedAt
	if !created.Set() {
		created = 0
	}
	if !updated.Set() {
		updated = created
	}
	b = append(b, `{"allowed":`...)
	b = jsonw.Bool(b, allowed)
	b = append(b, `,"seatLicenseAllocation":{"id":`...)
	b = jsonw.String(b, AllocationID(t.ID, l.ID))
	b = append(b, `,"orgId":`...)
	b = jsonw.String(b, t.ID)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, `,"currentAllocation":`...)
	b = strconv.AppendInt(b, int64(len(holders)), 10)
	b = append(b, `,"seatLicense":{"id":`...)
	b = jsonw.String(b, l.ID)
	b = append(b, `,"name":`...)
	b = jsonw.String(b, l.Name)
	b = append(b, `,"description":`...)
	b = jsonw.String(b, l.Description)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, `,"currentAllocation":`...)
	b = strconv.AppendInt(b, int64(len(holders)), 10)
	b = append(b, `,"createdAt":`...)
	b = created.AppendJSON(b)
	b = append(b, `},"subjects":[`...)
	for i, a := range holders {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"subjectId":`...)
		b = jsonw.String(b, a.AssigneeID)
		b = append(b, `,"subjectType":"user","createdAt":`...)
		ts := a.AssignedAt
		if !ts.Set() {
			ts = created
		}
		b = ts.AppendJSON(b)
		b = append(b, '}')
	}
	b = append(b, `],"createdAt":`...)
	b = created.AppendJSON(b)
	b = append(b, `,"updatedAt":`...)
	b = updated.AppendJSON(b)
	return append(b, "}}"...)
}

// AppendDecision appends the JSON answer to an evaluate request.
func AppendDecision(b []byte, d *decision.Decision) []byte {
	b = append(b, `{"allowed":`...)
	b = jsonw.Bool(b, d.Allowed)
	b = append(b, `,"reason":"`...)
	b = append(b, d.Reason.String()...)
	b = append(b, `","decision_id":"`...)
	b = d.ID.AppendText(b)
	b = append(b, `","revision":`...)
	b = strconv.AppendUint(b, d.Revision, 10)
	if d.Allowed {
		b = append(b, `,"grant":{"id":`...)
		b = jsonw.String(b, d.Grant.ID)
		b = append(b, `,"via_group":`...)
		b = jsonw.NullString(b, d.Grant.ViaGroup)
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendErrorObject(b []byte, code, msg string) []byte {
	b = append(b, `{"error":{"code":`...)
	b = jsonw.String(b, code)
	b = append(b, `,"message":`...)
	b = jsonw.String(b, msg)
	return append(b, "}}"...)
}

// message flattens joined errors into one line.
func message(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentJSON)
	ctx.Response.SetBody(body) // copies: body may live on the caller's stack
}

var contentJSON = []byte("application/json")

func writeError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	writeJSON(ctx, status, appendErrorObject(nil, code, msg))
}
