package deploy

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"encoding/json"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/testjwt"
	"github.com/usher-authz/usher/internal/testredis"
	statesync "github.com/usher-authz/usher/sync"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "usher-deploy-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Built as the Dockerfile builds it: static, no cgo.
	binary = filepath.Join(dir, "usher")
	cmd := exec.Command("go", "build", "-trimpath", "-o", binary, "../cmd/usher")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build usher: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestStaticBinary(t *testing.T) {
	f, err := elf.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the image's binary needs a dynamic loader; the distroless static image has none")
		}
	}
}

func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, _ := exec.Command(binary, "serve", "-h").CombinedOutput()
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		names[m[1]] = true
	}
	if len(names) < 20 {
		t.Fatalf("usher serve -h lists %d flags:\n%s", len(names), out)
	}
	return names
}

func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var d map[string]any
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
	return docs
}

func TestKubernetes(t *testing.T) {
	flags := serveFlags(t)
	var policies, config map[string]any
	for _, d := range yamlDocs(t, "kubernetes/configmap.yaml") {
		switch d["metadata"].(map[string]any)["name"] {
		case "usher-policies":
			policies = d["data"].(map[string]any)
		case "usher-config":
			config = d["data"].(map[string]any)
		}
	}
	var settings map[string]any
	if err := yaml.Unmarshal([]byte(config["usher.yaml"].(string)), &settings); err != nil {
		t.Fatal(err)
	}
	for k := range settings {
		if !flags[k] {
			t.Errorf("configmap usher.yaml sets %q, which is not a usher serve setting", k)
		}
	}
	files, _ := filepath.Glob("../rego/*.rego")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		want, _ := os.ReadFile(f)
		if got, _ := policies[filepath.Base(f)].(string); got != string(want) {
			t.Errorf("configmap usher-policies %s differs from %s", filepath.Base(f), f)
		}
	}
	dep := yamlDocs(t, "kubernetes/deployment.yaml")[0]
	raw, _ := json.Marshal(dep)
	for _, want := range []string{`"path":"/health/ready"`, `"path":"/health/live"`, `"containerPort":8700`, `"containerPort":8701`, `"usher-redis"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("deployment lacks %s", want)
		}
	}
}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed; scripts/test.sh installs Debian's prometheus package")
		}
		t.Skip("SKIPPING: promtool is not installed (Debian's prometheus package)")
	}
	return p
}

func TestPrometheusRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Debian's promtool lacks Kubernetes service discovery, so the scrape
	// config is checked for shape here.
	cfg := yamlDocs(t, "prometheus/prometheus.yml")[0]
	if rf, _ := cfg["rule_files"].([]any); len(rf) != 1 || rf[0] != "alerts.yml" {
		t.Errorf("prometheus.yml rule_files = %v", cfg["rule_files"])
	}
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/usher.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Panels        []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.SchemaVersion < 30 || len(d.Panels) < 8 {
		t.Errorf("dashboard uid %q schemaVersion %d panels %d", d.UID, d.SchemaVersion, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

// metricNames returns every usher_* metric the deploy material names.
func metricNames(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`usher_[a-z_]+`)
	seen := map[string]bool{}
	for _, glob := range []string{"prometheus/*.yml", "grafana/*.json", "kubernetes/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, m := range re.FindAllString(string(b), -1) {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					m = strings.TrimSuffix(m, suf)
				}
				if strings.HasSuffix(m, "_total") || strings.HasSuffix(m, "_seconds") || strings.Contains(m, "usher_state_") || strings.Contains(m, "usher_sync_") {
					seen[m] = true
				}
			}
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// TestMetricsNamedInDeployAreExposed starts usher the way the deployment
// does (Redis, tokens, routes, decision log), exercises it, scrapes
// /metrics, and fails on any metric the dashboard or alerts name that
// usher does not expose.
func TestMetricsNamedInDeployAreExposed(t *testing.T) {
	url := testredis.URL(t)
	names := metricNames(t)
	if len(names) < 10 {
		t.Fatalf("found only %v in deploy/", names)
	}
	ns := fmt.Sprintf("deploytest-%d", time.Now().UnixNano())
	client, err := statesync.NewClient(url, "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	defer func() {
		keys, _ := client.Keys(context.Background(), "{"+ns+"}*").Result()
		if len(keys) > 0 {
			client.Del(context.Background(), keys...)
		}
	}()
	w, _ := statesync.NewWriter(statesync.WriterConfig{Client: client, Namespace: ns})
	doc, _ := decision.ParseDocument(strings.NewReader(`{"licenses": [{"id": "l1", "tenant_id": "acme", "name": "editor"}],
		"assignments": [{"id": "a1", "tenant_id": "acme", "license_id": "l1", "assignee_id": "u1"}]}`))
	if _, err := w.Load(context.Background(), doc, false); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key := testjwt.RSA(t, "k1")
	os.WriteFile(filepath.Join(dir, "jwks.json"), testjwt.JWKS(key), 0o644)
	os.WriteFile(filepath.Join(dir, "routes.yaml"), []byte("routes:\n  - {path: \"/editor/*\", seat: editor}\n"), 0o644)
	addr := freeAddr(t)
	cmd := exec.Command(binary, "serve", "--http-addr", addr, "--grpc-addr", freeAddr(t), "--redis-url", url, "--namespace", ns,
		"--jwks", filepath.Join(dir, "jwks.json"), "--routes", filepath.Join(dir, "routes.yaml"),
		"--decision-log", filepath.Join(dir, "decisions.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("usher did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 2 {
		resp, err := http.Post(base+"/v1/evaluate", "application/json", strings.NewReader(`{"tenant_id": "acme", "subject": {"id": "u1"}, "seat": {"license": "editor"}}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	req, _ := http.NewRequest("GET", base+"/ext_authz/editor/x", nil)
	req.Header.Set("Authorization", "Bearer "+testjwt.Sign(t, key, nil))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	if _, err := w.Put(context.Background(), decision.KindAssignment, []byte(`{"id": "a2", "tenant_id": "acme", "license_id": "l1", "assignee_id": "u2"}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			exposed[f[2]] = true
		}
	}
	resp.Body.Close()
	for _, n := range names {
		if !exposed[n] {
			t.Errorf("deploy/ names %s, which usher does not expose", n)
		}
	}
	t.Logf("checked %d metric names: %v", len(names), names)
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
