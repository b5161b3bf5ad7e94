// Command compare measures Usher against the OPA server on the same data,
// policy semantics and requests, side by side in one run, with a no-op
// fasthttp server as the ceiling of the machine, and writes
// bench/RESULTS.md and a latency chart beside it.
//
//	go run ./bench/compare                      # 1,000 tenants, about 1,000,000 records
//	go run ./bench/compare -tenants 50 -duration 3s
//
// Every server listens on loopback; every load is bounded in time.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/bench/internal/benchutil"
	"github.com/usher-authz/usher/bench/opa"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
	statesync "github.com/usher-authz/usher/sync"
)

type config struct {
	tenants     int
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	rate        int
	batch       int
	changes     int
	redisURL    string
	out         string
	skipOPA     bool
	updatesOnly bool
	meshOnly    bool
	debugAddr   string
}

func main() {
	switch {
	case len(os.Args) > 2 && os.Args[1] == "noop":
		noop(os.Args[2])
		return
	case len(os.Args) > 2 && os.Args[1] == "noop-grpc":
		noopGRPC(os.Args[2])
		return
	case len(os.Args) > 4 && os.Args[1] == "opa-envoy":
		opaEnvoy(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	var c config
	flag.IntVar(&c.tenants, "tenants", 1000, "generated tenants (1000: about 1,000,000 records)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured time per system and scenario")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured load before each measurement")
	flag.IntVar(&c.concurrency, "concurrency", 64, "closed-loop clients")
	flag.IntVar(&c.rate, "rate", 5000, "open-loop request rate per second")
	flag.IntVar(&c.batch, "batch", 100, "checks per batch request")
	flag.IntVar(&c.changes, "changes", 100, "state changes per second in the update scenario")
	flag.StringVar(&c.redisURL, "redis-url", envOr("USHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis for the update scenario (loopback)")
	flag.StringVar(&c.out, "out", "bench/RESULTS.md", "results file; the chart is written beside it")
	flag.BoolVar(&c.skipOPA, "skip-opa", false, "measure Usher and the ceiling only")
	flag.BoolVar(&c.updatesOnly, "updates-only", false, "run only the update scenario and print it (no results file); for profiling")
	flag.StringVar(&c.debugAddr, "debug-addr", "", "--debug-addr of the mesh scenario's usher (pprof), for profiling")
	flag.BoolVar(&c.meshOnly, "mesh-only", false, "run only the mesh (ext_authz) scenario; it writes RESULTS-mesh.md beside -out")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// noop is the ceiling: a fasthttp server answering a fixed decision.
func noop(addr string) {
	body := []byte(`{"allowed":true,"reason":"seat_assigned"}`)
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	}}
	if err := s.ListenAndServe(addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// rounds is how many turns the alternating measurements take.
const rounds = 3

// expect returns the reason Usher's engine gives each check.
func expect(snap *decision.Snapshot, reqs []decision.Request) []decision.Reason {
	e, err := decision.NewEngine(decision.Config{CacheEntries: -1})
	if err != nil {
		return nil
	}
	defer e.Close()
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		return nil
	}
	e.SetPolicy(p)
	e.SetSnapshot(snap)
	out := make([]decision.Reason, len(reqs))
	for i := range reqs {
		d, err := e.Decide(decision.APIEvaluate, &reqs[i])
		if err != nil {
			return nil
		}
		out[i] = d.Reason
	}
	return out
}

// want turns expected reasons into the piece of s's answer that shows
// each: both servers answer with compact JSON holding "reason".
func (s *server) want(reasons []decision.Reason) [][]byte {
	if s.name == "noop" {
		return nil
	}
	marks := map[decision.Reason][]byte{}
	out := make([][]byte, len(reasons))
	for i, r := range reasons {
		if marks[r] == nil {
			marks[r] = []byte(`"reason":"` + r.String() + `"`)
		}
		out[i] = marks[r]
	}
	return out
}

// server is one system under test.
type server struct {
	name  string
	cmd   *exec.Cmd
	addr  string
	path  string // decision endpoint
	body  func(r *decision.Request) []byte
	parse func(b []byte) (bool, string, error)
	load  time.Duration
	rss   float64 // MiB after load
}

func freeAddr() string {
	addr, err := benchutil.FreeAddr()
	if err != nil {
		panic(err)
	}
	return addr
}

func start(name string, args []string, addr, readyPath string, timeout time.Duration) (*exec.Cmd, time.Duration, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	c := &fasthttp.Client{}
	for time.Since(t0) < timeout {
		status, _, err := c.Get(nil, "http://"+addr+readyPath)
		if err == nil && status == 200 {
			return cmd, time.Since(t0), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	return nil, 0, fmt.Errorf("%s did not become ready in %v", name, timeout)
}

func stop(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	}
}

func usherBody(r *decision.Request) []byte {
	at := r.At.Time().Format(time.RFC3339)
	if r.Check == decision.CheckSeat {
		return fmt.Appendf(nil, `{"tenant_id":%q,"subject":{"id":%q,"type":%q},"seat":{"license":%q},"at":%q}`,
			r.TenantID, r.Subject.ID, r.Subject.Type.String(), r.License, at)
	}
	return fmt.Appendf(nil, `{"tenant_id":%q,"subject":{"id":%q,"type":%q},"entitlement":{"asset_id":%q,"type":%q},"at":%q}`,
		r.TenantID, r.Subject.ID, r.Subject.Type.String(), r.AssetID, r.Type, at)
}

func opaBody(r *decision.Request) []byte {
	b, _ := json.Marshal(map[string]any{"input": opa.Input(r)})
	return b
}

func parseUsher(b []byte) (bool, string, error) {
	var d struct {
		Allowed bool   `json:"allowed"`
		Reason  string `json:"reason"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Reason == "" {
		return false, "", fmt.Errorf("bad answer %q", b)
	}
	return d.Allowed, d.Reason, nil
}

func parseOPA(b []byte) (bool, string, error) {
	var d struct {
		Result struct {
			Allowed bool   `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Result.Reason == "" {
		return false, "", fmt.Errorf("bad answer %q", b)
	}
	return d.Result.Allowed, d.Result.Reason, nil
}

// result is one measurement.
type result struct {
	system, scenario string
	requests         int64
	decisions        int64 // checks answered (a batch request holds many)
	errors           int64
	mismatches       int64 // answers unlike the expected one
	checked          bool  // whether answers were compared
	seconds          float64
	hist             *hdrhistogram.Histogram // microseconds
	cpu              time.Duration           // server CPU during the measurement
	rss              float64
}

// add merges another measurement of the same scenario into r.
func (r *result) add(o result) {
	if r.hist == nil {
		r.hist = hdrhistogram.New(1, 60_000_000, 3)
	}
	r.hist.Merge(o.hist)
	r.requests += o.requests
	r.decisions += o.decisions
	r.errors += o.errors
	r.mismatches += o.mismatches
	r.checked = r.checked || o.checked
	r.seconds += o.seconds
	r.cpu += o.cpu
	r.rss = max(r.rss, o.rss)
}

func (r result) throughput() float64 { return float64(r.decisions) / r.seconds }
func (r result) q(p float64) float64 { return float64(r.hist.ValueAtQuantile(p)) }
func (r result) cpuPerDecision() float64 {
	if r.decisions == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / float64(r.decisions)
}

// closedLoop runs conc clients back to back for d, after a warm-up.
// want, when not nil, holds for each body a piece the answer must contain.
func closedLoop(s *server, scenario string, bodies, want [][]byte, perReq int64, conc int, warmup, d time.Duration) result {
	client := &fasthttp.HostClient{Addr: s.addr, MaxConns: conc * 2, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	url := "http://" + s.addr + s.path
	var measuring atomic.Bool
	var next atomic.Int64
	var reqs, errs, wrong atomic.Int64
	hists := make([]*hdrhistogram.Histogram, conc)
	stopAt := time.Now().Add(warmup + d)
	var cpu0 time.Duration
	var wg sync.WaitGroup
	for w := range conc {
		hists[w] = hdrhistogram.New(1, 60_000_000, 3)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			req.Header.SetMethod("POST")
			req.Header.SetContentType("application/json")
			for time.Now().Before(stopAt) {
				i := int(next.Add(1)) % len(bodies)
				req.SetBodyRaw(bodies[i])
				t0 := time.Now()
				err := client.Do(req, resp)
				took := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err != nil || resp.StatusCode() != 200 {
					errs.Add(1)
					continue
				}
				if want != nil && !bytes.Contains(resp.Body(), want[i]) {
					wrong.Add(1)
				}
				reqs.Add(1)
				hists[w].RecordValue(max(1, took.Microseconds()))
			}
		}()
	}
	time.Sleep(warmup)
	_, cpu0 = benchutil.ProcStat(s.cmd.Process.Pid)
	t0 := time.Now()
	measuring.Store(true)
	wg.Wait()
	secs := time.Since(t0).Seconds()
	rss, cpu1 := benchutil.ProcStat(s.cmd.Process.Pid)
	h := hdrhistogram.New(1, 60_000_000, 3)
	for _, x := range hists {
		h.Merge(x)
	}
	n := reqs.Load()
	return result{system: s.name, scenario: scenario, requests: n, decisions: n * perReq, errors: errs.Load(), mismatches: wrong.Load(), checked: want != nil,
		seconds: secs, hist: h, cpu: cpu1 - cpu0, rss: rss}
}

// openLoop sends at a fixed rate for d; latency counts from the scheduled
// send time, so queueing is not hidden.
func openLoop(s *server, scenario string, bodies, want [][]byte, rate int, warmup, d time.Duration) result {
	client := &fasthttp.HostClient{Addr: s.addr, MaxConns: 1024, ReadTimeout: 10 * time.Second}
	url := "http://" + s.addr + s.path
	var mu sync.Mutex
	h := hdrhistogram.New(1, 60_000_000, 3)
	var reqs, errs, wrong atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	total := int((warmup + d).Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	measureFrom := begin.Add(warmup)
	var cpu0 time.Duration
	cpuTaken := false
	sem := make(chan struct{}, 4096)
	for i := range total {
		due := begin.Add(time.Duration(i) * interval)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		if !cpuTaken && !due.Before(measureFrom) {
			_, cpu0 = benchutil.ProcStat(s.cmd.Process.Pid)
			cpuTaken = true
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, due time.Time) {
			defer func() { <-sem; wg.Done() }()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			req.Header.SetMethod("POST")
			req.SetBodyRaw(bodies[i%len(bodies)])
			err := client.Do(req, resp)
			took := time.Since(due)
			if due.Before(measureFrom) {
				return
			}
			if err != nil || resp.StatusCode() != 200 {
				errs.Add(1)
				return
			}
			if want != nil && !bytes.Contains(resp.Body(), want[i%len(want)]) {
				wrong.Add(1)
			}
			reqs.Add(1)
			mu.Lock()
			h.RecordValue(max(1, took.Microseconds()))
			mu.Unlock()
		}(i, due)
	}
	wg.Wait()
	secs := time.Since(measureFrom).Seconds()
	rss, cpu1 := benchutil.ProcStat(s.cmd.Process.Pid)
	return result{system: s.name, scenario: scenario, requests: reqs.Load(), decisions: reqs.Load(), errors: errs.Load(), mismatches: wrong.Load(), checked: want != nil,
		seconds: secs, hist: h, cpu: cpu1 - cpu0, rss: rss}
}

// verify asks both systems the same checks and counts disagreements.
func verify(a, b *server, reqs []decision.Request) (int, error) {
	client := &fasthttp.Client{}
	mismatches := 0
	ask := func(s *server, r *decision.Request) (bool, string, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + s.addr + s.path)
		req.Header.SetMethod("POST")
		req.SetBody(s.body(r))
		if err := client.Do(req, resp); err != nil {
			return false, "", err
		}
		return s.parse(resp.Body())
	}
	for i := range reqs {
		aa, ar, err := ask(a, &reqs[i])
		if err != nil {
			return 0, fmt.Errorf("%s: %w", a.name, err)
		}
		ba, br, err := ask(b, &reqs[i])
		if err != nil {
			return 0, fmt.Errorf("%s: %w", b.name, err)
		}
		if aa != ba || ar != br {
			if mismatches < 5 {
				fmt.Fprintf(os.Stderr, "mismatch on %+v: %s says %v %s, %s says %v %s\n", reqs[i], a.name, aa, ar, b.name, ba, br)
			}
			mismatches++
		}
	}
	return mismatches, nil
}

// settle is how long after readiness RSS is read.
const settle = 3 * time.Second

func writeSynced(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sameOPA checks that bench/opaserver builds the OPA version Usher uses.
func sameOPA() error {
	version := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/open-policy-agent/opa" {
				return f[1]
			}
		}
		return ""
	}
	ours, theirs := version("go.mod"), version("bench/opaserver/go.mod")
	if ours == "" || ours != theirs {
		return fmt.Errorf("bench/opaserver/go.mod builds OPA %q, Usher uses %q: run `go get -tool github.com/open-policy-agent/opa@%s` there", theirs, ours, ours)
	}
	return nil
}

func build(dir string, withOPA bool) (usherBin, opaBin, self string, err error) {
	usherBin, opaBin = filepath.Join(dir, "usher"), filepath.Join(dir, "opa")
	builds := [][]string{{"-o", usherBin, "./cmd/usher"}}
	if withOPA {
		if err := sameOPA(); err != nil {
			return "", "", "", err
		}
		builds = append(builds, []string{"-C", "bench/opaserver", "-o", opaBin, "github.com/open-policy-agent/opa"})
	}
	for _, b := range builds {
		cmd := exec.Command("go", append([]string{"build"}, b...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", "", fmt.Errorf("go build %v: %v\n%s", b, err, out)
		}
	}
	self, err = os.Executable()
	return usherBin, opaBin, self, err
}

func run(c config) error {
	dir, err := os.MkdirTemp("", "usher-compare")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "building usher and opa (same OPA module version as Usher's)…")
	usherBin, opaBin, self, err := build(dir, !c.meshOnly && !c.skipOPA)
	if err != nil {
		return err
	}

	g := gen.Default()
	g.Tenants = c.tenants
	if c.updatesOnly {
		upd, err := updates(c, usherBin, g, gen.Checks(g, 1000, 1))
		for _, r := range upd {
			fmt.Fprintf(os.Stderr, "%-6s %-22s %9.0f decisions/s  p99 %7.0fµs  errors %d  cpu %.1fµs/decision\n",
				r.system, r.scenario, r.throughput(), r.q(99), r.errors, r.cpuPerDecision())
		}
		return err
	}
	doc := gen.Generate(g)
	records := doc.Len()
	statePath := filepath.Join(dir, "state.json")
	f, err := os.Create(statePath)
	if err != nil {
		return err
	}
	if _, err := doc.WriteTo(f); err != nil {
		return err
	}
	f.Sync() // both systems read their files from a settled page cache
	f.Close()
	snap := decision.NewSnapshot(doc, 1)
	dataPath, policyPath := filepath.Join(dir, "data.json"), filepath.Join(dir, "peer.rego")
	db, err := json.Marshal(opa.Data(snap, opa.DefaultImplies()))
	if err != nil {
		return err
	}
	if err := writeSynced(dataPath, db); err != nil {
		return err
	}
	if err := writeSynced(policyPath, []byte(opa.Policy)); err != nil {
		return err
	}
	meshKey, meshReqs, err := prepareMesh(snap, g)
	if err != nil {
		return err
	}
	if c.meshOnly {
		snap, doc, db = nil, nil, nil
		runtime.GC()
		debug.FreeOSMemory()
		return mesh(c, dir, usherBin, self, statePath, dataPath, meshKey, meshReqs, records)
	}
	// The answers every response must give, from the engine in this process.
	hot, cold := gen.Checks(g, 1000, 1), gen.Checks(g, 600_000, 2)
	wantHot, wantCold := expect(snap, hot), expect(snap, cold)
	if wantHot == nil || wantCold == nil {
		return errors.New("expected answers: the shipped policy did not compile")
	}
	snap, doc, db = nil, nil, nil
	// Free this process's gigabytes now, so the collector does not run
	// beside the servers as they load.
	runtime.GC()
	debug.FreeOSMemory()
	fmt.Fprintf(os.Stderr, "generated %d records in %d tenants\n", records, c.tenants)

	var servers []*server
	defer func() {
		for _, s := range servers {
			stop(s.cmd)
		}
	}()
	// Usher.
	ua := freeAddr()
	cmd, took, err := start("usher", []string{usherBin, "serve", "--state", statePath, "--http-addr", ua, "--log-level", "warn"}, ua, "/health/ready", 5*time.Minute)
	if err != nil {
		return err
	}
	us := &server{name: "usher", cmd: cmd, addr: ua, path: "/v1/evaluate", body: usherBody, parse: parseUsher, load: took}
	time.Sleep(settle) // RSS once the load's garbage is collected, for both systems
	us.rss, _ = benchutil.ProcStat(cmd.Process.Pid)
	servers = append(servers, us)
	fmt.Fprintf(os.Stderr, "usher ready in %v, RSS %.0f MiB\n", took.Round(time.Millisecond), us.rss)
	// OPA.
	var os_ *server
	if !c.skipOPA {
		oa := freeAddr()
		cmd, took, err = start("opa", []string{opaBin, "run", "--server", "--skip-version-check", "--addr", oa, "--log-level", "error",
			dataPath, policyPath}, oa, "/health", 10*time.Minute)
		if err != nil {
			return err
		}
		os_ = &server{name: "opa", cmd: cmd, addr: oa, path: "/v1/data/usher/peer/decision", body: opaBody, parse: parseOPA, load: took}
		time.Sleep(settle)
		os_.rss, _ = benchutil.ProcStat(cmd.Process.Pid)
		servers = append(servers, os_)
		fmt.Fprintf(os.Stderr, "opa ready in %v, RSS %.0f MiB\n", took.Round(time.Millisecond), os_.rss)
	}
	// Ceiling.
	na := freeAddr()
	cmd, _, err = start("noop", []string{self, "noop", na}, na, "/", 30*time.Second)
	if err != nil {
		return err
	}
	noopS := &server{name: "noop", cmd: cmd, addr: na, path: "/", body: usherBody, parse: parseUsher}
	servers = append(servers, noopS)

	// Same answers first.
	mismatches := 0
	if os_ != nil {
		if mismatches, err = verify(us, os_, gen.Checks(g, 5000, 99)); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "answers compared on 5000 checks: %d mismatches\n", mismatches)
	}

	bodies := func(s *server, rs []decision.Request) [][]byte {
		out := make([][]byte, len(rs))
		for i := range rs {
			out[i] = s.body(&rs[i])
		}
		return out
	}
	systems := []*server{us}
	if os_ != nil {
		systems = append(systems, os_)
	}
	var results []result
	measure := func(r result) {
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%-6s %-22s %9.0f decisions/s  p50 %6.0fµs  p99 %7.0fµs  p99.9 %7.0fµs  errors %d  mismatches %d  cpu %.1fµs/decision\n",
			r.system, r.scenario, r.throughput(), r.q(50), r.q(99), r.q(99.9), r.errors, r.mismatches, r.cpuPerDecision())
	}
	// Closed loop, cache-hot: the ceiling and the systems take turns in
	// rounds, each phase after its own warm-up, so the drift of a shared
	// machine falls on all alike.
	hotRes := make([]result, len(systems)+1)
	for range rounds {
		for i, s := range append([]*server{noopS}, systems...) {
			scenario := "cache-hot closed"
			if s == noopS {
				scenario = "ceiling"
			}
			hotRes[i].system, hotRes[i].scenario = s.name, scenario
			hotRes[i].add(closedLoop(s, scenario, bodies(s, hot), s.want(wantHot), 1, c.concurrency, c.warmup, c.duration/rounds))
		}
	}
	for _, r := range hotRes {
		measure(r)
	}
	// Cache-cold: one phase each, so no check is asked twice.
	for _, s := range systems {
		measure(closedLoop(s, "cache-cold closed", bodies(s, cold), s.want(wantCold), 1, c.concurrency, c.warmup, c.duration))
	}
	for _, s := range systems {
		measure(openLoop(s, fmt.Sprintf("cache-hot open %d/s", c.rate), bodies(s, hot), s.want(wantHot), c.rate, c.warmup, c.duration))
	}
	// Batch: Usher answers c.batch checks per request.
	var batches [][]byte
	for i := 0; i+c.batch <= len(hot); i += c.batch {
		var b bytes.Buffer
		b.WriteString(`{"checks":[`)
		for j := range c.batch {
			if j > 0 {
				b.WriteByte(',')
			}
			b.Write(usherBody(&hot[i+j]))
		}
		b.WriteString(`]}`)
		batches = append(batches, b.Bytes())
	}
	batchS := *us
	batchS.path = "/v1/evaluate/batch"
	measure(closedLoop(&batchS, fmt.Sprintf("batch of %d", c.batch), batches, nil, int64(c.batch), max(1, c.concurrency/8), c.warmup, c.duration))

	// Updates: Usher following Redis, read-only and with changes arriving.
	upd, err := updates(c, usherBin, g, hot)
	if err != nil {
		fmt.Fprintln(os.Stderr, "update scenario skipped:", err)
	}
	results = append(results, upd...)
	for _, r := range upd {
		fmt.Fprintf(os.Stderr, "%-6s %-22s %9.0f decisions/s  p99 %7.0fµs errors %d\n", r.system, r.scenario, r.throughput(), r.q(99), r.errors)
	}
	if err := report(c, records, us, os_, mismatches, results); err != nil {
		return err
	}
	for _, s := range servers {
		stop(s.cmd) // the mesh starts servers of its own
	}
	servers = nil
	return mesh(c, dir, usherBin, self, statePath, dataPath, meshKey, meshReqs, records)
}

// updates measures cache-hot throughput of an Usher following Redis,
// without and then with c.changes state changes per second.
func updates(c config, usherBin string, g gen.Config, hot []decision.Request) ([]result, error) {
	client, err := statesync.NewClient(c.redisURL, "usher-bench")
	if err != nil {
		return nil, err
	}
	defer client.Close()
	ctx := context.Background()
	if err := client.Ping(ctx).Err(); err != nil {
		return nil, err
	}
	ns := fmt.Sprintf("compare-%d", time.Now().UnixNano())
	defer benchutil.DropNamespace(ctx, client, ns)
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: client, Namespace: ns})
	if err != nil {
		return nil, err
	}
	if _, err := w.Load(ctx, gen.Generate(g), true); err != nil {
		return nil, err
	}
	addr := freeAddr()
	cmd, _, err := start("usher-redis", []string{usherBin, "serve", "--redis-url", c.redisURL, "--namespace", ns, "--http-addr", addr, "--log-level", "warn"},
		addr, "/health/ready", 5*time.Minute)
	if err != nil {
		return nil, err
	}
	defer stop(cmd)
	s := &server{name: "usher", cmd: cmd, addr: addr, path: "/v1/evaluate", body: usherBody, parse: parseUsher}
	bodies := make([][]byte, len(hot))
	for i := range hot {
		bodies[i] = usherBody(&hot[i])
	}
	// Read-only and busy phases alternate in rounds, as the hot phases do.
	phase := c.duration / rounds
	quiet := result{system: "usher", scenario: "redis, read-only"}
	busy := result{system: "usher", scenario: fmt.Sprintf("redis, %d changes/s", c.changes)}
	var written atomic.Int64
	for range rounds {
		quiet.add(closedLoop(s, quiet.scenario, bodies, nil, 1, c.concurrency, c.warmup, phase))
		// Changes go to the tenants the hot requests ask about, so they retire cached decisions.
		stopW := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(time.Second / time.Duration(c.changes))
			defer t.Stop()
			for {
				select {
				case <-stopW:
					return
				case <-t.C:
				}
				i := int(written.Load())
				r := hot[i%len(hot)]
				status := []string{"active", "suspended"}[i%2]
				rec := fmt.Sprintf(`{"id": "bench-chg-%d", "tenant_id": %q, "license_id": %q, "assignee_id": %q, "status": %q}`,
					i%50, r.TenantID, r.TenantID+"-lic00", r.Subject.ID, status)
				if _, err := w.Put(ctx, decision.KindAssignment, []byte(rec)); err == nil {
					written.Add(1)
				}
			}
		}()
		busy.add(closedLoop(s, busy.scenario, bodies, nil, 1, c.concurrency, c.warmup, phase))
		close(stopW)
		<-done
	}
	if written.Load() == 0 {
		return nil, errors.New("no change was written")
	}
	fmt.Fprintf(os.Stderr, "update scenario: %d changes written in %d rounds\n", written.Load(), rounds)
	return []result{quiet, busy}, nil
}
