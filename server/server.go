package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
	"github.com/usher-authz/usher/extauthz/httpfront"
	"github.com/usher-authz/usher/internal/jsonw"
	"github.com/usher-authz/usher/jwtauth"
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
	Authorizer *extauthz.Authorizer
	// Verifier checks bearer tokens for EvaluateAuth.
	Verifier *jwtauth.Verifier
	// EvaluateAuth makes /v1/evaluate, batch and the compat endpoint
	// require a verified bearer token, whose tenant and app scope they use.
	EvaluateAuth bool
	// MaxStaleness, when positive, is how old the state may get (since it
	// was last known current) before checks answer 503 state_stale and
	// readiness fails. Zero keeps serving the last state however old.
	MaxStaleness time.Duration
	// Leases takes floating seats in Redis (/v1/leases/…); nil answers
	// 503 redis_unavailable there (the sidecar follows no Redis).
	Leases LeaseStore
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
	case "/api/v2/seatLicenseAllocations/", "/api/v2/seatLicenseAllocations":
		if s.method(ctx, fasthttp.MethodGet) {
			s.allocations(ctx, "")
		}
		return decision.ReqCompat
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
	case "/v1/leases/checkout", "/v1/leases/heartbeat", "/v1/leases/release":
		if s.method(ctx, fasthttp.MethodPost) {
			s.leaseOp(ctx, strings.TrimPrefix(string(path), "/v1/leases/"))
		}
		return decision.ReqLeases
	case "/v1/explain":
		if s.method(ctx, fasthttp.MethodPost) {
			s.explain(ctx)
		}
		return decision.ReqExplain
	case "/v1/holdings", "/v1/holders":
		if s.method(ctx, fasthttp.MethodPost) {
			s.holdings(ctx, string(path) == "/v1/holders")
		}
		return decision.ReqHoldings
	case "/v1/leases":
		if s.method(ctx, fasthttp.MethodGet) {
			s.listLeases(ctx)
		}
		return decision.ReqLeases
	case "/metrics":
		if s.metrics != nil && s.method(ctx, fasthttp.MethodGet) {
			s.metrics(ctx)
		} else if s.metrics == nil {
			writeError(ctx, fasthttp.StatusNotFound, "not_found", "no metrics registry configured")
		}
		return decision.ReqMetrics
	default:
		if rest, ok := strings.CutPrefix(string(path), "/api/v2/seatLicenseAllocations/"); ok && rest != "" && !strings.Contains(strings.TrimSuffix(rest, "/"), "/") {
			if s.method(ctx, fasthttp.MethodGet) {
				s.allocations(ctx, strings.TrimSuffix(rest, "/"))
			}
			return decision.ReqCompat
		}
		// Either the normalized or the raw path may name the ext_authz
		// front; extAuthz reads the raw one and refuses what only one names.
		if s.cfg.Authorizer != nil && (httpfront.Is(path) || httpfront.Is(ctx.Request.Header.RequestURI())) {
			httpfront.Handle(ctx, s.cfg.Authorizer)
			return decision.ReqExtAuthzHTTP
		}
		writeError(ctx, fasthttp.StatusNotFound, "not_found", "no such path: "+decision.Short(string(path)))
	}
	return decision.ReqOther
}

// identify verifies the caller's token when EvaluateAuth is on; it writes
// 401 and reports false when the token does not verify.
func (s *Server) identify(ctx *fasthttp.RequestCtx) (jwtauth.Identity, bool) {
	if !s.cfg.EvaluateAuth {
		return jwtauth.Identity{}, true
	}
	tok, err := jwtauth.BearerToken(string(ctx.Request.Header.Peek("Authorization")))
	var id jwtauth.Identity
	if err == nil {
		id, err = s.cfg.Verifier.Verify(ctx, tok)
	}
	if err != nil {
		s.cfg.Engine.Metrics().AuthFailure(decision.FrontEvaluate, jwtauth.FailureReason(err))
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="usher"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "unauthenticated", strings.TrimPrefix(err.Error(), "unauthenticated: "))
		return id, false
	}
	return id, true
}

// scope holds a request to the verified caller's tenant and app scope.
func scope(id jwtauth.Identity, r *decision.Request, prefix string) error {
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

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentJSON)
	ctx.Response.SetBody(body) // copies: body may live on the caller's stack
}

var contentJSON = []byte("application/json")

func writeError(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	writeJSON(ctx, status, jsonw.Error(nil, code, msg))
}
