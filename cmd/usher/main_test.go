package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/internal/testredis"
	"github.com/usher-authz/usher/rego"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "usher-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "usher")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build usher: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type proc struct {
	cmd    *exec.Cmd
	base   string
	stderr *syncBuffer
}

// syncBuffer collects a child's stderr while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// launchServe starts `usher serve` with args plus a free --http-addr; the
// process is killed at the end of the test unless it has exited.
func launchServe(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(binary, append([]string{"serve", "--http-addr", addr}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, base: "http://" + addr, stderr: &syncBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// startServe runs `usher serve` with args plus a free --http-addr and waits
// until it is ready.
func startServe(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := launchServe(t, env, args...)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.base + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("usher serve did not become ready; stderr:\n%s", p.stderr)
	return nil
}

func (p *proc) evaluate(t *testing.T, body string) map[string]any {
	t.Helper()
	resp, err := http.Post(p.base+"/v1/evaluate", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (p *proc) status(t *testing.T) map[string]any {
	t.Helper()
	resp, err := http.Get(p.base + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls f for up to 10 seconds (a bound for a loaded machine;
// a condition that holds returns at once).
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestServeDemo(t *testing.T) {
	debugAddr := freeAddr(t)
	p := startServe(t, nil, "--debug-addr", debugAddr)
	// Profiles answer on their own port only.
	if resp, err := http.Get("http://" + debugAddr + "/debug/pprof/goroutine?debug=1"); err != nil {
		t.Errorf("pprof on --debug-addr: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
			t.Errorf("pprof on --debug-addr = %d %.80q, want the goroutine profile", resp.StatusCode, b)
		}
	}
	if resp, err := http.Get(p.base + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("pprof on the decision port = %d, want 404", resp.StatusCode)
		}
	}
	for body, want := range map[string]string{
		`{"tenant_id": "acme", "subject": {"id": "alice"}, "seat": {"license": "editor"}}`:                              "seat_assigned",
		`{"tenant_id": "acme", "subject": {"id": "erin"}, "seat": {"license": "editor"}}`:                               "seat_assigned_via_group",
		`{"tenant_id": "acme", "subject": {"id": "frank"}, "seat": {"license": "editor"}}`:                              "assignment_denied",
		`{"tenant_id": "acme", "subject": {"id": "alice"}, "seat": {"license": "analytics"}}`:                           "license_suspended",
		`{"tenant_id": "acme", "subject": {"id": "erin"}, "entitlement": {"asset_id": "roadmap", "type": "read_only"}}`: "entitled_via_group",
		`{"tenant_id": "acme", "subject": {"id": "dave"}, "entitlement": {"asset_id": "roadmap", "type": "admin"}}`:     "entitlement_pending_approval",
	} {
		if got := p.evaluate(t, body); got["reason"] != want {
			t.Errorf("demo evaluate %s = %v, want reason %s", body, got, want)
		}
	}
	if s := p.status(t); s["state"].(map[string]any)["source"] != "demo" {
		t.Errorf("status = %v, want source demo", s)
	}
}

const stateV1 = `{"licenses": [{"id": "lic_1", "tenant_id": "t1", "name": "editor", "seat_limit": 5}],
 "assignments": [{"id": "a1", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "u1"}]}`

const stateV2 = `{"licenses": [{"id": "lic_1", "tenant_id": "t1", "name": "editor", "seat_limit": 5, "status": "suspended"}],
 "assignments": [{"id": "a1", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "u1"}]}`

const u1Editor = `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`

func TestServeFollowsStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.WriteFile(path, []byte(stateV1), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, []string{"USHER_STATE=" + path})
	if got := p.evaluate(t, u1Editor); got["reason"] != "seat_assigned" || !localRevision(got["revision"], 1) {
		t.Fatalf("evaluate = %v, want seat_assigned at revision 1", got)
	}
	// A good edit applies within a second.
	start := time.Now()
	if err := os.WriteFile(path, []byte(stateV2), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the edit to apply", func() bool { return p.evaluate(t, u1Editor)["reason"] == "license_suspended" })
	if took := time.Since(start); took > time.Second {
		t.Errorf("edit applied after %v, want within a second", took)
	}
	// A broken edit is rejected; the last good state keeps serving.
	broken := strings.Replace(stateV1, `"seat_limit": 5`, `"seat_limit": -5`, 1)
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the broken edit to be reported", func() bool {
		e, _ := p.status(t)["sync"].(map[string]any)["last_error"].(string)
		return strings.Contains(e, `licenses[0] (id "lic_1"): seat_limit: must be a non-negative integer or null, got -5`)
	})
	if got := p.evaluate(t, u1Editor); got["reason"] != "license_suspended" || !localRevision(got["revision"], 2) {
		t.Errorf("after a broken edit evaluate = %v, want license_suspended at revision 2", got)
	}
	if !strings.Contains(p.stderr.String(), "state reload rejected") {
		t.Errorf("stderr does not report the rejected reload:\n%s", p.stderr)
	}
	// Atomic replace (write elsewhere, rename) applies too.
	tmp := filepath.Join(dir, "next.json")
	if err := os.WriteFile(tmp, []byte(stateV1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replaced file to apply", func() bool { return p.evaluate(t, u1Editor)["reason"] == "seat_assigned" })

	// SIGTERM: exit 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("usher serve after SIGTERM: %v, want exit 0; stderr:\n%s", err, p.stderr)
	}
}

func TestServePolicyHotReload(t *testing.T) {
	dir := t.TempDir()
	err := fs.WalkDir(rego.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(rego.FS, path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, path), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	p := startServe(t, nil, "--policy-dir", dir)
	ask := `{"tenant_id": "acme", "subject": {"id": "alice"}, "entitlement": {"asset_id": "roadmap", "type": "billing"}}`
	if got := p.evaluate(t, ask); got["reason"] != "not_entitled" {
		t.Fatalf("evaluate = %v, want not_entitled before the table changes", got)
	}
	// A policy that does not compile is reported; the old one keeps serving.
	if err := os.WriteFile(filepath.Join(dir, "implies.rego"), []byte("package usher.entitlement\nimplies := {"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the broken policy to be reported", func() bool {
		e, _ := p.status(t)["policy"].(map[string]any)["last_error"].(string)
		return strings.Contains(e, "rego_parse_error")
	})
	if got := p.evaluate(t, ask); got["reason"] != "not_entitled" {
		t.Errorf("after a broken policy evaluate = %v, want not_entitled from the old policy", got)
	}
	// A good change to the implication table applies.
	table := "package usher.entitlement\nimplies := {\"owner\": [\"admin\", \"billing\"], \"admin\": [\"contributor\"], \"contributor\": [\"read_only\"]}\n"
	if err := os.WriteFile(filepath.Join(dir, "implies.rego"), []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new policy to apply", func() bool { return p.evaluate(t, ask)["reason"] == "entitled" })
	if pol := p.status(t)["policy"].(map[string]any); pol["revision"] != 2.0 || pol["last_error"] != nil {
		t.Errorf("policy status = %v, want revision 2 and no error", pol)
	}
}

func runUsher(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runUsherEnv(t, nil, args...)
}

// runUsherEnv runs usher with env added to the environment and returns its
// stdout, stderr and exit code.
func runUsherEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestEvalAndVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte(stateV1), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runUsher(t, "eval", "--state", path, u1Editor)
	var d map[string]any
	if err := json.Unmarshal([]byte(out), &d); err != nil || code != 0 || d["reason"] != "seat_assigned" {
		t.Errorf("usher eval = %q (stderr %q, exit %d), want seat_assigned", out, stderr, code)
	}
	out, _, _ = runUsher(t, "eval", u1Editor)
	if !strings.Contains(out, `"reason":"license_not_found"`) {
		t.Errorf("usher eval on the demo state = %q, want license_not_found for tenant t1", out)
	}
	_, stderr, code = runUsher(t, "eval", "--state", path, `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {}}`)
	if code != 2 || !strings.Contains(stderr, "seat.license: is required") {
		t.Errorf("usher eval with a bad body: exit %d stderr %q, want 2 naming seat.license", code, stderr)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"licenses": [{"id": "x", "tenant_id": "t", "name": "n", "type": "site"}]}`), 0o644)
	_, stderr, code = runUsher(t, "eval", "--state", bad, u1Editor)
	if code != 1 || !strings.Contains(stderr, `licenses[0] (id "x"): type: must be one of named|floating, got "site"`) {
		t.Errorf("usher eval with a bad state: exit %d stderr %q", code, stderr)
	}
	out, _, code = runUsher(t, "version")
	if code != 0 || !strings.HasPrefix(out, "usher ") || !strings.Contains(out, "OPA v1.") {
		t.Errorf("usher version = %q, exit %d", out, code)
	}
	_, stderr, code = runUsher(t, "serve", "--log-level", "loud")
	if code != 2 || !strings.Contains(stderr, "log-level") {
		t.Errorf("usher serve --log-level loud: exit %d stderr %q, want 2 naming log-level", code, stderr)
	}
	_, stderr, code = runUsher(t, "serve", "--state", "/nonexistent/state.json", "--http-addr", freeAddr(t))
	if code != 1 || !strings.Contains(stderr, "/nonexistent/state.json") {
		t.Errorf("usher serve with a missing state file: exit %d stderr %q", code, stderr)
	}
	cfg := filepath.Join(t.TempDir(), "usher.yaml")
	os.WriteFile(cfg, []byte("state: "+path+"\n"), 0o644)
	if out, stderr, code := runUsher(t, "eval", "--config", cfg, u1Editor); code != 0 || !strings.Contains(out, `"reason":"seat_assigned"`) {
		t.Errorf("usher eval --config (state from the file) = %q %q exit %d", out, stderr, code)
	}
	os.WriteFile(cfg, []byte("state: "+path+"\nstaet: x\n"), 0o644)
	if _, stderr, code := runUsher(t, "eval", "--config", cfg, u1Editor); code != 2 || !strings.Contains(stderr, `"staet" is not a setting of usher eval`) {
		t.Errorf("usher eval with a misspelt config key: exit %d stderr %q", code, stderr)
	}
	_, stderr, code = runUsher(t, "serve", "--routes", "routes.yaml")
	if code != 2 || !strings.Contains(stderr, "jwks:") {
		t.Errorf("usher serve --routes without --jwks: exit %d stderr %q, want 2 naming jwks", code, stderr)
	}
	_, _, code = runUsher(t, "frobnicate")
	if code != 2 {
		t.Errorf("unknown command exit = %d, want 2", code)
	}
	// A command line the flag package refuses: exit 2, the error said once.
	for _, args := range [][]string{{"serve", "--bogus"}, {"serve", "--cache-entries", "abc"}, {"serve", "--http-addr"}, {"export", "--bogus"}} {
		_, stderr, code := runUsher(t, args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 2 || strings.Count(stderr, first) != 1 || !strings.Contains(stderr, "Usage: usher") {
			t.Errorf("usher %v: exit %d stderr %q, want 2 with the error once and the usage", args, code, stderr)
		}
	}
	_, help, code := runUsher(t, "help", "serve")
	if _, direct, _ := runUsher(t, "serve", "-h"); code != 0 || help != direct || !strings.Contains(help, "-sync-verify-interval") {
		t.Errorf("usher help serve = %q (exit %d), want what usher serve -h prints", help, code)
	}
	// Every problem across serve's settings at once, before anything starts.
	_, stderr, code = runUsher(t, "serve", "--routes", "x.yaml", "--state", "a.json", "--redis-url", "redis://127.0.0.1:1",
		"--decision-log-sample", "0.5", "--shutdown-delay", "-1s", "--grpc-stream-workers", "0")
	for _, want := range []string{"usher: decision-log-sample: only applies with --decision-log", "usher: jwks: --routes",
		"usher: state and redis-url: give one source", "usher: shutdown-delay: must not be negative", "usher: grpc-stream-workers: must be from 1 to 4096, got 0"} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("usher serve with four bad settings: exit %d stderr %q, want 2 and %q", code, stderr, want)
		}
	}
	for _, v := range []string{"-v", "--version"} {
		if out, _, code := runUsher(t, v); code != 0 || !strings.HasPrefix(out, "usher ") {
			t.Errorf("usher %s = %q, exit %d", v, out, code)
		}
	}
}

func TestServeFollowsRedis(t *testing.T) {
	url := testredis.URL(t)
	ns := fmt.Sprintf("cmdtest-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		// Leave nothing behind: delete the namespace's records via the CLI's own writer.
		exec.Command(binary, "load", "--replace", "--redis-url", url, "--namespace", ns, emptyState(t)).Run()
		exec.Command("redis-cli", "-u", url, "DEL", "{"+ns+"}:changes", "{"+ns+"}:tenants", "{"+ns+"}:epoch").Run()
	})
	state := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(state, []byte(stateV1), 0o644)
	env := []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns}
	run := func(args ...string) (string, string, int) { t.Helper(); return runUsherEnv(t, env, args...) }
	if out, stderr, code := run("load", state); code != 0 || !strings.Contains(out, "1 tenants now hold 2 records") {
		t.Fatalf("usher load = %q %q exit %d", out, stderr, code)
	}
	file := filepath.Join(t.TempDir(), "snapshot.json")
	p := startServe(t, env, "--snapshot-file", file)
	if got := p.evaluate(t, u1Editor); got["reason"] != "seat_assigned" {
		t.Fatalf("evaluate = %v, want seat_assigned", got)
	}
	if _, stderr, code := run("put", "license", `{"id": "lic_1", "tenant_id": "t1", "name": "editor", "status": "revoked"}`); code != 0 {
		t.Fatalf("usher put: %s", stderr)
	}
	eventually(t, "the put to apply", func() bool { return p.evaluate(t, u1Editor)["reason"] == "license_revoked" })
	if _, stderr, code := run("put", "assignment", `{"id": "a2", "tenant_id": "t1", "license_id": "nope", "assignee_id": "u2"}`); code != 1 ||
		!strings.Contains(stderr, `put: nothing written: assignment (id "a2"): license_id: must name a license of tenant "t1", no license "nope" there`) {
		t.Errorf("usher put of a dangling assignment: exit %d stderr %q", code, stderr)
	}
	if _, stderr, code := run("delete", "assignment", "t1", "a1"); code != 0 {
		t.Fatalf("usher delete: %s", stderr)
	}
	eventually(t, "the delete to apply", func() bool {
		return p.evaluate(t, `{"tenant_id": "t1", "subject": {"id": "u1"}, "seat": {"license": "lic_1"}}`)["reason"] == "license_revoked" &&
			p.status(t)["state"].(map[string]any)["records"].(map[string]any)["assignments"] == 0.0
	})
	st := p.status(t)
	sync := st["sync"].(map[string]any)
	if st["state"].(map[string]any)["source"] != "redis" || sync["state"] != "following" || sync["position"] == nil {
		t.Errorf("status = %v, want source redis, following, with a position", st)
	}
	out, stderr, code := run("export")
	if code != 0 || !strings.Contains(out, `"status":"revoked"`) || strings.Contains(out, `"a1"`) {
		t.Errorf("usher export = %q (%s)", out, stderr)
	}
	if _, stderr, code := run("put", "widget", `{}`); code != 2 || !strings.Contains(stderr, `unknown kind "widget"`) {
		t.Errorf("usher put widget: exit %d stderr %q, want 2", code, stderr)
	}

	// The sidecar stops; later one starts while Redis is unreachable: it
	// serves the snapshot file, and --max-staleness refuses what is too old.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	deadURL := "redis://" + freeAddr(t) + "/0"
	q := startServe(t, []string{"USHER_NAMESPACE=" + ns}, "--redis-url", deadURL, "--snapshot-file", file)
	if got := q.evaluate(t, u1Editor); got["reason"] != "license_revoked" {
		t.Errorf("evaluate from the snapshot file = %v, want license_revoked", got)
	}
	eventually(t, "the outage to show in the status", func() bool {
		s := q.status(t)["sync"].(map[string]any)
		return s["state"] == "disconnected" && s["last_error"] != nil
	})
	time.Sleep(1100 * time.Millisecond)
	r := startServeNotReady(t, []string{"USHER_NAMESPACE=" + ns}, "--redis-url", deadURL, "--snapshot-file", file, "--max-staleness", "1s")
	resp, err := http.Post(r.base+"/v1/evaluate", "application/json", strings.NewReader(u1Editor))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), `"code":"state_stale"`) {
		t.Errorf("evaluate on a stale state = %d %s, want 503 state_stale", resp.StatusCode, body)
	}
}

func emptyState(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(p, []byte(`{}`), 0o644)
	return p
}

// startServeNotReady runs `usher serve` and waits only until it listens.
func startServeNotReady(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := launchServe(t, env, args...)
	eventually(t, "usher serve to listen", func() bool {
		resp, err := http.Get(p.base + "/health/live")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	resp, err := http.Get(p.base + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("ready with a stale state = %d, want 503", resp.StatusCode)
	}
	return p
}

// A route file that breaks the rules stops serve before it listens, with
// every problem named by route and field.
func TestServeRefusesBadRoutes(t *testing.T) {
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwks, testjwt.JWKS(testjwt.RSA(t, "k1")), 0o644)
	routes := filepath.Join(dir, "routes.yaml")
	os.WriteFile(routes, []byte(`routes:
  - {path: "/apps/{license}/*", seat: "{license}"}
  - {method: get, path: "/acl/{asset_id}", entitlement: "{kind}"}
  - {path: "/files/*", entitlement: read_only, asset: {from_header: "x file"}}
  - {path: "/cad/*", seat: {from_header: authorization}}
`), 0o644)
	_, stderr, code := runUsher(t, "serve", "--jwks", jwks, "--routes", routes, "--http-addr", freeAddr(t), "--grpc-addr", freeAddr(t))
	for _, want := range []string{
		"routes[1] (GET /acl/{asset_id}): entitlement: the path has no {kind} to name the entitlement type",
		`routes[2] (any method /files/*): asset: from_header: "x file" is not a header name`,
		"routes[3] (any method /cad/*): seat: from_header: authorization is not a header a route may read",
	} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("serve with a bad route file: exit %d, stderr %q; want 2 and %q", code, stderr, want)
		}
	}
	if strings.Contains(stderr, "routes[0]") {
		t.Errorf("a good route was reported: %s", stderr)
	}
}

func TestServeExtAuthz(t *testing.T) {
	dir := t.TempDir()
	key := testjwt.RSA(t, "k1")
	jwks := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwks, testjwt.JWKS(key), 0o644)
	routes := filepath.Join(dir, "routes.yaml")
	os.WriteFile(routes, []byte("routes:\n  - {method: GET, path: \"/roadmap/{asset_id}\", entitlement: read_only}\n  - {path: \"/studio/*\", seat: editor}\n"), 0o644)
	grpcAddr := freeAddr(t)
	p := startServe(t, nil, "--jwks", jwks, "--routes", routes, "--grpc-addr", grpcAddr,
		"--jwt-issuer", testjwt.Issuer, "--jwt-audience", testjwt.Audience, "--evaluate-auth")
	bearer := func(sub string) string {
		return "Bearer " + testjwt.Sign(t, key, map[string]any{"sub": sub, "tenant_id": "acme"})
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(method, path, authorization string) *authv3.CheckResponse {
		resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: method, Path: path, Headers: map[string]string{"authorization": authorization}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := check("GET", "/studio/x", bearer("erin")); r.GetStatus().GetCode() != 0 {
		t.Errorf("gRPC Check erin /studio = %v, want OK", r.GetStatus())
	}
	if r := check("GET", "/studio/x", bearer("frank")); r.GetStatus().GetCode() != 7 || !strings.Contains(r.GetDeniedResponse().GetBody(), "assignment_denied") {
		t.Errorf("gRPC Check frank /studio = %v %s, want PERMISSION_DENIED assignment_denied", r.GetStatus(), r.GetDeniedResponse().GetBody())
	}
	if r := check("GET", "/roadmap/roadmap", "Bearer nope"); r.GetStatus().GetCode() != 16 {
		t.Errorf("gRPC Check with a bad token = %v, want UNAUTHENTICATED", r.GetStatus())
	}
	if code, hs, _ := p.send(t, "GET", "/ext_authz/roadmap/roadmap", "", "Authorization", bearer("dave")); code != 200 || hs.Get("x-usher-decision-id") == "" {
		t.Errorf("HTTP ext_authz dave /roadmap = %d %v, want 200 with a decision id (read_only via his group)", code, hs)
	}
	// --evaluate-auth: the token's tenant, and 401 without one.
	if code, _, _ := p.send(t, "POST", "/v1/evaluate", `{"subject": {"id": "alice"}, "seat": {"license": "editor"}}`, "Authorization", bearer("svc")); code != 200 {
		t.Errorf("evaluate with a token = %d, want 200", code)
	}
	if got := p.evaluate(t, `{"tenant_id": "acme", "subject": {"id": "alice"}, "seat": {"license": "editor"}}`); got["error"] == nil {
		t.Errorf("evaluate without a token = %v, want an error", got)
	}
	// Explain shows other principals' records: only for an admin token.
	explain := func(token string) (int, string) {
		code, _, body := p.send(t, "POST", "/v1/explain", `{"subject": {"id": "frank"}, "seat": {"license": "editor"}}`, "Authorization", token)
		return code, body
	}
	if code, body := explain(bearer("svc")); code != 403 || !strings.Contains(body, "needs the admin claim") {
		t.Errorf("explain without the admin claim = %d %s, want 403", code, body)
	}
	admin := "Bearer " + testjwt.Sign(t, key, map[string]any{"sub": "ops", "tenant_id": "acme", "usher_admin": true})
	if code, body := explain(admin); code != 200 || !strings.Contains(body, `"reason":"assignment_denied","rule":"seat rule 4`) || !strings.Contains(body, `"id":"asg_contractors_denied"`) {
		t.Errorf("explain with the admin claim = %d %s", code, body)
	}
}

// TestSIGTERMDrains sends SIGTERM while clients are mid-request: readiness
// turns false, every request sent gets its full answer, and usher exits 0.
func TestSIGTERMDrains(t *testing.T) {
	p := startServe(t, nil, "--shutdown-delay", "400ms")
	var batch strings.Builder
	batch.WriteString(`{"checks": [`)
	for i := range 500 {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"tenant_id": "acme", "subject": {"id": "u%d"}, "seat": {"license": "editor"}}`, i)
	}
	batch.WriteString(`]}`)
	body := batch.String()
	type tally struct{ ok, failed, draining int }
	results := make(chan tally, 8)
	start := make(chan struct{})
	for range 8 {
		go func() {
			var tl tally
			c := &http.Client{Timeout: 10 * time.Second}
			<-start
			for {
				resp, err := c.Post(p.base+"/v1/evaluate/batch", "application/json", strings.NewReader(body))
				if err != nil {
					tl.failed++
					break
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.HasSuffix(b, []byte("]}")) {
					tl.failed++
					break
				}
				tl.ok++
				if resp.Close { // the server is draining: a well-behaved client goes elsewhere
					tl.draining++
					break
				}
			}
			results <- tl
		}()
	}
	close(start)
	time.Sleep(300 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "readiness to turn false", func() bool {
		resp, err := http.Get(p.base + "/health/ready")
		if err != nil {
			return true
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	var total tally
	for range 8 {
		tl := <-results
		total.ok += tl.ok
		total.failed += tl.failed
		total.draining += tl.draining
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("usher serve after SIGTERM: %v, want exit 0", err)
	}
	if total.failed != 0 || total.ok < 8 || total.draining != 8 {
		t.Errorf("during the drain: %d requests answered, %d dropped, %d clients told to go; want none dropped and all 8 told", total.ok, total.failed, total.draining)
	}
	t.Logf("%d batches answered across the shutdown, none dropped", total.ok)
}

// The local recipe of docs/mesh.md: usher token makes a key, its key set
// and a token; usher serve --jwks takes them; both fronts answer; gRPC
// reflection lists the services (what grpcurl needs).
func TestTokenRecipe(t *testing.T) {
	dir := t.TempDir()
	key, jwks := filepath.Join(dir, "key.pem"), filepath.Join(dir, "jwks.json")
	tok, stderr, code := runUsher(t, "token", "--key", key, "--jwks-out", jwks, "--sub", "erin", "--tenant", "acme")
	if code != 0 || strings.Count(tok, ".") != 2 || !strings.Contains(stderr, "made a new EC P-256 key") {
		t.Fatalf("usher token = %q (stderr %q, exit %d)", tok, stderr, code)
	}
	frank, _, _ := runUsher(t, "token", "--key", key, "--sub", "frank", "--tenant", "acme") // the same key, reused
	routes := filepath.Join(dir, "routes.yaml")
	os.WriteFile(routes, []byte("routes:\n  - {path: \"/editor/*\", seat: editor}\n"), 0o644)
	grpcAddr := freeAddr(t)
	p := startServe(t, nil, "--jwks", jwks, "--routes", routes, "--grpc-addr", grpcAddr)
	for who, want := range map[string]int{strings.TrimSpace(tok): 200, strings.TrimSpace(frank): 403} {
		if code, _, _ := p.send(t, "GET", "/ext_authz/editor/doc", "", "Authorization", "Bearer "+who); code != want {
			t.Errorf("HTTP ext_authz with a token of usher token = %d, want %d", code, want)
		}
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "envoy.service.auth.v3.Authorization") {
		t.Errorf("gRPC reflection lists %v, want the Authorization service", names)
	}
}

// localRevision reports whether v is the local revision token of snapshot
// revision n ("l.<process>.<n>").
func localRevision(v any, n int) bool {
	s, _ := v.(string)
	return regexp.MustCompile(`^l\.[0-9a-f]{8}\.` + strconv.Itoa(n) + `$`).MatchString(s)
}
