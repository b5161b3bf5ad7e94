package main

// The mesh scenario: Envoy's ext_authz Check answered by Usher's gRPC and
// HTTP fronts, by a gRPC and an HTTP no-op (the ceilings), and by OPA
// serving Check (envoy.rego over bench/opa/peer.rego, the token verified
// in Rego), with RS256 tokens signed here, side by side in rounds.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	oparego "github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/valyala/fasthttp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/bench/internal/benchutil"
	"github.com/usher-authz/usher/bench/opa"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

//go:embed envoy.rego
var envoyPolicy string

const (
	opaEnvoyName = "opa-envoy (OPA Check, JWT in Rego)"
	meshIssuer   = "https://idp.bench.test"
	meshAudience = "usher-bench"
	meshRoutes   = `routes:
  - {method: GET, path: "/seat/{license}", seat: "{license}"}
  - {method: GET, path: "/ent/{type}/{asset_id}", entitlement: "{type}"}
`
)

// meshCheck is one proxied request and the answer it must get.
type meshCheck struct {
	path, auth string
	allowed    bool
	reason     string
	grpc       *authv3.CheckRequest
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func signRS256(key *rsa.PrivateKey, claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "k1"})
	p, _ := json.Marshal(claims)
	in := b64(h) + "." + b64(p)
	sum := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return in + "." + b64(sig)
}

func jwksOf(key *rsa.PrivateKey) []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	return b
}

// meshChecks turns checks into proxied requests with a token for each
// subject, and the answers Usher's engine gives them now.
func meshChecks(snap *decision.Snapshot, key *rsa.PrivateKey, reqs []decision.Request) ([]meshCheck, error) {
	e, err := decision.NewEngine(decision.Config{CacheEntries: -1})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		return nil, err
	}
	e.SetPolicy(p)
	e.SetSnapshot(snap)
	now := time.Now()
	tokens := map[string]string{}
	out := make([]meshCheck, len(reqs))
	for i, r := range reqs {
		who := r.TenantID + "\x00" + r.Subject.ID
		if tokens[who] == "" {
			tokens[who] = "Bearer " + signRS256(key, map[string]any{"sub": r.Subject.ID, "tenant_id": r.TenantID, "iss": meshIssuer,
				"aud": meshAudience, "iat": now.Unix(), "exp": now.Add(6 * time.Hour).Unix()})
		}
		r.At = decision.InstantOf(now)
		d, err := e.Decide(decision.APIEvaluate, &r)
		if err != nil {
			return nil, err
		}
		c := meshCheck{auth: tokens[who], allowed: d.Allowed, reason: d.Reason.String()}
		if r.Check == decision.CheckSeat {
			c.path = "/seat/" + r.License
		} else {
			c.path = "/ent/" + r.Type + "/" + r.AssetID
		}
		c.grpc = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: c.path, Host: "app", Protocol: "HTTP/1.1", Scheme: "http",
				Headers: map[string]string{":authority": "app", ":method": "GET", ":path": c.path, "authorization": c.auth,
					"user-agent": "bench", "x-request-id": fmt.Sprintf("%032x", i)}}}}}
		out[i] = c
	}
	return out, nil
}

// noopGRPC is the gRPC ceiling: a Check server that always allows.
func noopGRPC(addr string) {
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, noopCheck{})
	serveGRPC(srv, addr)
}

type noopCheck struct {
	authv3.UnimplementedAuthorizationServer
}

func (noopCheck) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

func serveGRPC(srv *grpc.Server, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		err = srv.Serve(ln)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// opaEnvoy is the OPA peer: the data document and the key set in an
// in-memory store, envoy.rego and peer.rego prepared once, Check answered
// from the prepared query.
func opaEnvoy(addr, dataPath, jwksPath string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "opa-envoy:", err)
		os.Exit(1)
	}
	raw, err := os.ReadFile(dataPath)
	if err != nil {
		fail(err)
	}
	var data map[string]any
	if err := util.UnmarshalJSON(raw, &data); err != nil {
		fail(err)
	}
	raw = nil
	jwks, err := os.ReadFile(jwksPath)
	if err != nil {
		fail(err)
	}
	data["jwks"], data["issuer"], data["audience"] = string(jwks), meshIssuer, meshAudience
	pq, err := oparego.New(oparego.Query("data.usher.envoy.result"), oparego.Store(inmem.NewFromObject(data)),
		oparego.Module("peer.rego", opa.Policy), oparego.Module("envoy.rego", envoyPolicy)).PrepareForEval(context.Background())
	if err != nil {
		fail(err)
	}
	data = nil
	runtime.GC()
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, &opaCheck{pq: pq})
	serveGRPC(srv, addr)
}

type opaCheck struct {
	authv3.UnimplementedAuthorizationServer
	pq oparego.PreparedEvalQuery
}

func (o *opaCheck) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	headers := ast.NewObject()
	for k, v := range h.GetHeaders() {
		headers.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	input := ast.NewObject(ast.Item(ast.StringTerm("attributes"), ast.ObjectTerm(ast.Item(ast.StringTerm("request"), ast.ObjectTerm(
		ast.Item(ast.StringTerm("http"), ast.ObjectTerm(
			ast.Item(ast.StringTerm("method"), ast.StringTerm(h.GetMethod())),
			ast.Item(ast.StringTerm("path"), ast.StringTerm(h.GetPath())),
			ast.Item(ast.StringTerm("headers"), ast.NewTerm(headers)))))))))
	rs, err := o.pq.Eval(ctx, oparego.EvalParsedInput(input))
	if err != nil || len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, fmt.Errorf("policy: %v %v", err, rs)
	}
	res, _ := rs[0].Expressions[0].Value.(map[string]any)
	reason, _ := res["reason"].(string)
	hs := []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-usher-reason", Value: reason}}}
	if allowed, _ := res["allowed"].(bool); allowed {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: hs}}}, nil
	}
	code, _ := res["http_status"].(json.Number).Int64()
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(code)}, Headers: hs}}}, nil
}

// meshAnswer is what one Check got: allowed, the reason header.
type meshAnswer struct {
	allowed bool
	reason  string
}

// meshClient asks one system, over gRPC or HTTP.
type meshClient struct {
	conns []authv3.AuthorizationClient
	http  *fasthttp.HostClient
}

func dialMesh(kind, addr string, conc int) (*meshClient, func(), error) {
	if kind == "http" {
		return &meshClient{http: &fasthttp.HostClient{Addr: addr, MaxConns: conc * 2, ReadTimeout: 10 * time.Second}}, func() {}, nil
	}
	// Envoy keeps a connection per worker thread: one per core here.
	var mc meshClient
	var closers []func()
	for range runtime.NumCPU() {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, func() { cc.Close() })
		mc.conns = append(mc.conns, authv3.NewAuthorizationClient(cc))
	}
	return &mc, func() {
		for _, c := range closers {
			c()
		}
	}, nil
}

func (m *meshClient) ask(w int, c *meshCheck, req *fasthttp.Request, resp *fasthttp.Response) (meshAnswer, error) {
	if m.http == nil {
		r, err := m.conns[w%len(m.conns)].Check(context.Background(), c.grpc)
		if err != nil {
			return meshAnswer{}, err
		}
		a := meshAnswer{allowed: codes.Code(r.GetStatus().GetCode()) == codes.OK}
		hs := r.GetOkResponse().GetHeaders()
		if !a.allowed {
			hs = r.GetDeniedResponse().GetHeaders()
		}
		for _, h := range hs {
			if h.GetHeader().GetKey() == "x-usher-reason" {
				a.reason = h.GetHeader().GetValue()
			}
		}
		return a, nil
	}
	req.SetRequestURI("http://" + m.http.Addr + "/ext_authz" + c.path)
	req.Header.SetMethod("GET")
	req.Header.Set("Authorization", c.auth)
	if err := m.http.Do(req, resp); err != nil {
		return meshAnswer{}, err
	}
	return meshAnswer{allowed: resp.StatusCode() == 200, reason: string(resp.Header.Peek("x-usher-reason"))}, nil
}

// meshSystem is one Check server under test.
type meshSystem struct {
	name, kind, addr string
	pid              int
	checked          bool // answers compared with the expected ones
	client           *meshClient
}

// meshLoop runs conc clients back to back for d after a warm-up.
func meshLoop(s *meshSystem, scenario string, checks []meshCheck, conc int, warmup, d time.Duration) result {
	var measuring atomic.Bool
	var next, reqs, errs, wrong atomic.Int64
	hists := make([]*hdrhistogram.Histogram, conc)
	stopAt := time.Now().Add(warmup + d)
	var wg sync.WaitGroup
	for w := range conc {
		hists[w] = hdrhistogram.New(1, 60_000_000, 3)
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for time.Now().Before(stopAt) {
				c := &checks[int(next.Add(1))%len(checks)]
				t0 := time.Now()
				a, err := s.client.ask(w, c, req, resp)
				took := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				if s.checked && (a.allowed != c.allowed || a.reason != c.reason) {
					wrong.Add(1)
				}
				reqs.Add(1)
				hists[w].RecordValue(max(1, took.Microseconds()))
			}
		})
	}
	time.Sleep(warmup)
	_, cpu0 := benchutil.ProcStat(s.pid)
	t0 := time.Now()
	measuring.Store(true)
	wg.Wait()
	secs := time.Since(t0).Seconds()
	rss, cpu1 := benchutil.ProcStat(s.pid)
	h := hdrhistogram.New(1, 60_000_000, 3)
	for _, x := range hists {
		h.Merge(x)
	}
	n := reqs.Load()
	return result{system: s.name, scenario: scenario, requests: n, decisions: n, errors: errs.Load(), mismatches: wrong.Load(), checked: s.checked,
		seconds: secs, hist: h, cpu: cpu1 - cpu0, rss: rss}
}

// exited reports whether process pid has ended (a zombie not yet waited for).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// waitGRPC waits until a Check server (process pid) answers.
func waitGRPC(name, addr string, pid int, timeout time.Duration) (time.Duration, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	c := authv3.NewAuthorizationClient(cc)
	t0 := time.Now()
	for time.Since(t0) < timeout {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Check(ctx, &authv3.CheckRequest{})
		cancel()
		if err == nil {
			return time.Since(t0), nil
		}
		if exited(pid) {
			return 0, fmt.Errorf("%s exited", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s did not answer Check in %v", name, timeout)
}

// prepareMesh makes the signing key and the requests, with their answers
// from the state.
func prepareMesh(snap *decision.Snapshot, g gen.Config) (*rsa.PrivateKey, []meshCheck, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	checks, err := meshChecks(snap, key, gen.Checks(g, 10_000, 3))
	return key, checks, err
}

// mesh runs the scenario and writes its results file.
func mesh(c config, dir, usherBin, self, statePath, dataPath string, key *rsa.PrivateKey, checks []meshCheck, records int) error {
	jwksPath, routesPath := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "routes.yaml")
	if err := writeSynced(jwksPath, jwksOf(key)); err != nil {
		return err
	}
	if err := writeSynced(routesPath, []byte(meshRoutes)); err != nil {
		return err
	}
	var cmds []*server
	defer func() {
		for _, s := range cmds {
			stop(s.cmd)
		}
	}()
	var systems []*meshSystem
	// Usher, both fronts in one process.
	ua, ga := freeAddr(), freeAddr()
	args := []string{usherBin, "serve", "--state", statePath, "--http-addr", ua, "--grpc-addr", ga, "--jwks", jwksPath,
		"--jwt-issuer", meshIssuer, "--jwt-audience", meshAudience, "--routes", routesPath, "--log-level", "warn"}
	if c.debugAddr != "" {
		args = append(args, "--debug-addr", c.debugAddr)
	}
	cmd, took, err := start("usher", args, ua, "/health/ready", 5*time.Minute)
	if err != nil {
		return err
	}
	cmds = append(cmds, &server{cmd: cmd})
	fmt.Fprintf(os.Stderr, "mesh: usher ready in %v\n", took.Round(time.Millisecond))
	systems = append(systems, &meshSystem{name: "usher ext_authz gRPC", kind: "grpc", addr: ga, pid: cmd.Process.Pid, checked: true},
		&meshSystem{name: "usher ext_authz HTTP", kind: "http", addr: ua, pid: cmd.Process.Pid, checked: true})
	// The ceilings.
	na := freeAddr()
	if cmd, _, err = start("noop", []string{self, "noop", na}, na, "/", 30*time.Second); err != nil {
		return err
	}
	cmds = append(cmds, &server{cmd: cmd})
	systems = append(systems, &meshSystem{name: "HTTP no-op", kind: "http", addr: na, pid: cmd.Process.Pid})
	ng := freeAddr()
	cmd = startCmd(self, "noop-grpc", ng)
	cmds = append(cmds, &server{cmd: cmd})
	if _, err := waitGRPC("gRPC no-op", ng, cmd.Process.Pid, 30*time.Second); err != nil {
		return err
	}
	systems = append(systems, &meshSystem{name: "gRPC no-op", kind: "grpc", addr: ng, pid: cmd.Process.Pid})
	// The OPA peer.
	if !c.skipOPA {
		oa := freeAddr()
		cmd = startCmd(self, "opa-envoy", oa, dataPath, jwksPath)
		cmds = append(cmds, &server{cmd: cmd})
		took, err := waitGRPC("opa-envoy", oa, cmd.Process.Pid, 10*time.Minute)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "mesh: opa-envoy ready in %v\n", took.Round(time.Millisecond))
		systems = append(systems, &meshSystem{name: opaEnvoyName, kind: "grpc", addr: oa, pid: cmd.Process.Pid, checked: true})
	}
	for _, s := range systems {
		cl, closeFn, err := dialMesh(s.kind, s.addr, 64)
		if err != nil {
			return err
		}
		defer closeFn()
		s.client = cl
	}
	// Same answers first, sequentially.
	compared := min(len(checks), 2000)
	verified := map[string]int{}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	for _, s := range systems {
		if !s.checked {
			continue
		}
		for i := range checks[:compared] {
			a, err := s.client.ask(0, &checks[i], req, resp)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if a.allowed != checks[i].allowed || a.reason != checks[i].reason {
				if verified[s.name] < 3 {
					fmt.Fprintf(os.Stderr, "mesh: %s answers %s %v %s, want %v %s\n", s.name, checks[i].path, a.allowed, a.reason, checks[i].allowed, checks[i].reason)
				}
				verified[s.name]++
			}
		}
		fmt.Fprintf(os.Stderr, "mesh: %s: %d mismatches in %d checks\n", s.name, verified[s.name], compared)
	}
	fasthttp.ReleaseRequest(req)
	fasthttp.ReleaseResponse(resp)
	var results []result
	for _, conc := range []int{16, 64} {
		byName := map[string]*result{}
		for range rounds {
			for _, s := range systems {
				scenario := fmt.Sprintf("closed, concurrency %d", conc)
				r := meshLoop(s, scenario, checks, conc, c.warmup, c.duration/rounds)
				if byName[s.name] == nil {
					byName[s.name] = &result{system: s.name, scenario: scenario}
				}
				byName[s.name].add(r)
			}
		}
		for _, s := range systems {
			r := *byName[s.name]
			results = append(results, r)
			fmt.Fprintf(os.Stderr, "%-36s %-24s %9.0f checks/s  p50 %6.0fµs  p99 %7.0fµs  p99.9 %7.0fµs  errors %d  mismatches %d  cpu %.1fµs/check  rss %.0f MiB\n",
				r.system, r.scenario, r.throughput(), r.q(50), r.q(99), r.q(99.9), r.errors, r.mismatches, r.cpuPerDecision(), r.rss)
		}
	}
	return meshReport(c, records, compared, verified, results)
}

func startCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	return cmd
}

func meshReport(c config, records, compared int, mismatches map[string]int, rs []result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# The mesh path: ext_authz Check\n\n")
	fmt.Fprintf(&b, "Measured %s by `go run ./bench/compare -mesh-only -tenants %d -duration %v` on %d cores (%s, %s); the load generator and every server share the machine. "+
		"The ratios, measured side by side in one run (systems taking turns in %d rounds, each phase after its warm-up), are the result.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), c.tenants, c.duration, runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, runtime.Version(), rounds)
	fmt.Fprintf(&b, "Data: %d records in %d tenants (bench/gen). Requests: 10,000 checks of bench/gen (half seats `GET /seat/{license}`, half entitlements `GET /ent/{type}/{asset_id}`), "+
		"each with an RS256 token of its subject and tenant; Usher routes them with `seat: \"{license}\"` and `entitlement: \"{type}\"`. "+
		"*opa-envoy* is OPA (the same module version) serving Envoy's Check from a prepared query over the same data: `bench/compare/envoy.rego` verifies the token with `io.jwt.decode_verify` and asks `bench/opa/peer.rego`. "+
		"The no-ops answer OK to everything (gRPC) and 200 to everything (HTTP, fasthttp).\n\n", records, c.tenants)
	fmt.Fprintf(&b, "Before timing, each system answered the first %d checks once; answers unlike Usher's engine's:", compared)
	names := slices.Sorted(maps.Keys(mismatches))
	for _, name := range names {
		fmt.Fprintf(&b, " %s **%d**;", name, mismatches[name])
	}
	b.WriteString(" every other system 0.\n\n")
	table(&b, "check", rs)
	row := ratios(&b)
	report := func(name string, v float64) { fmt.Fprintf(&b, "| %s | %.2f | (reported) | |\n", name, v) }
	for _, conc := range []string{"16", "64"} {
		sc := "closed, concurrency " + conc
		ug, uh, ng, nh, op := find(rs, "usher ext_authz gRPC", sc), find(rs, "usher ext_authz HTTP", sc), find(rs, "gRPC no-op", sc), find(rs, "HTTP no-op", sc), find(rs, opaEnvoyName, sc)
		if ug != nil && ng != nil {
			row("gRPC: server CPU per check, Usher / no-op, c="+conc, ug.cpuPerDecision()/ng.cpuPerDecision(), "≤ 1.5", ug.cpuPerDecision() <= 1.5*ng.cpuPerDecision())
			row("gRPC: throughput, Usher / no-op, c="+conc, ug.throughput()/ng.throughput(), "≥ 0.75", ug.throughput() >= 0.75*ng.throughput())
		}
		if uh != nil && nh != nil {
			report("HTTP: server CPU per check, Usher / no-op, c="+conc, uh.cpuPerDecision()/nh.cpuPerDecision())
			report("HTTP: throughput, Usher / no-op, c="+conc, uh.throughput()/nh.throughput())
		}
		if ug != nil && op != nil {
			report("throughput, Usher gRPC / opa-envoy, c="+conc, ug.throughput()/op.throughput())
			report("server CPU per check, opa-envoy / Usher gRPC, c="+conc, op.cpuPerDecision()/ug.cpuPerDecision())
			report("p99, opa-envoy / Usher gRPC, c="+conc, op.q(99)/ug.q(99))
		}
	}
	out := strings.TrimSuffix(c.out, filepath.Ext(c.out)) + "-mesh.md"
	return os.WriteFile(out, []byte(b.String()), 0o644)
}
