package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/testredis"
	statesync "github.com/usher-authz/usher/sync"
)

// redisNamespace is a namespace of the test's own on the test Redis and a
// writer of it; the namespace is removed afterwards.
func redisNamespace(t *testing.T, maxLen int64) (string, string, *statesync.Writer) {
	t.Helper()
	url := testredis.URL(t)
	c, err := statesync.NewClient(url, "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("cmdtest-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, _ := c.Keys(ctx, "{"+ns+"}*").Result(); len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		c.Close()
	})
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: c, Namespace: ns, StreamMaxLen: maxLen})
	if err != nil {
		t.Fatal(err)
	}
	return url, ns, w
}

// tenSeats is a license and ten persons holding a seat each.
func tenSeats(t *testing.T, w *statesync.Writer) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "lic_1", "tenant_id": "t1", "name": "editor"}], "assignments": [`)
	for i := range 10 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": "a%d", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s%d"}`, i, i)
	}
	b.WriteString(`]}`)
	doc, err := decision.DecodeDocument(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Load(context.Background(), doc, false); err != nil {
		t.Fatal(err)
	}
}

func seatOf(i int) string {
	return fmt.Sprintf(`{"tenant_id": "t1", "subject": {"id": "s%d"}, "seat": {"license": "editor"}}`, i)
}

// statusOf is the HTTP status of a GET of path, 0 when nothing answers.
func (p *proc) statusOf(path string) int {
	resp, err := http.Get(p.base + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (p *proc) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A sidecar paused (SIGSTOP) while a writer with a short stream suspends
// ten seats and writes 290 other changes must, once resumed and with no
// further write, apply all ten: the stream was trimmed past its position,
// so it reloads, and says why.
func TestServePausedWhileTheStreamIsTrimmed(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	c, err := statesync.NewClient(srv.URL(), "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	url, ns := srv.URL(), "paused"
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: c, Namespace: ns, StreamMaxLen: 50})
	if err != nil {
		t.Fatal(err)
	}
	tenSeats(t, w)
	p := startServe(t, []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns})
	for i := range 10 {
		if got := p.evaluate(t, seatOf(i)); got["reason"] != "seat_assigned" {
			t.Fatalf("s%d: %v, want seat_assigned", i, got)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 10 {
		rec := fmt.Sprintf(`{"id": "a%d", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s%d", "status": "suspended"}`, i, i)
		if _, err := w.Put(ctx, decision.KindAssignment, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 290 {
		rec := fmt.Sprintf(`{"id": "other%d", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "o%d"}`, i%40, i)
		if _, err := w.Put(ctx, decision.KindAssignment, []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 10; {
		if got := p.evaluate(t, seatOf(i)); got["reason"] == "assignment_inactive" {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after the pause s%d still holds a seat that Redis suspended", i)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := p.metricsText(t); !strings.Contains(m, `usher_sync_full_reloads_total{reason="trimmed"} 1`) {
		t.Errorf("metrics lack one reload for trimmed:\n%s", grepLines(m, "usher_sync_full_reloads_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// SIGTERM writes the last applied state to --snapshot-file, however long
// the snapshot interval; a sidecar started from it while Redis is down
// says in /v1/status why it is or is not ready.
func TestServeShutdownWritesTheSnapshotFile(t *testing.T) {
	url, ns, w := redisNamespace(t, 0)
	tenSeats(t, w)
	file := filepath.Join(t.TempDir(), "snapshot.json")
	p := startServe(t, []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns}, "--snapshot-file", file, "--snapshot-interval", "1h")
	eventually(t, "the first snapshot file", func() bool { _, err := os.Stat(file); return err == nil })
	if _, err := w.Put(context.Background(), decision.KindAssignment,
		[]byte(`{"id": "a3", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s3", "status": "revoked"}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change to apply", func() bool { return p.evaluate(t, seatOf(3))["reason"] == "assignment_inactive" })
	if b, _ := os.ReadFile(file); strings.Contains(string(b), `"revoked"`) {
		t.Fatal("the file holds the change before shutdown; the test means nothing with this interval")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("usher serve after SIGTERM: %v", err)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), `"revoked"`) {
		t.Errorf("after SIGTERM the snapshot file lacks the last change:\n%.600s", b)
	}
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Errorf("no stopped line in the log:\n%s", p.stderr)
	}

	deadURL := "redis://" + freeAddr(t) + "/0"
	env := []string{"USHER_NAMESPACE=" + ns}
	q := startServe(t, env, "--redis-url", deadURL, "--snapshot-file", file, "--max-staleness", "1h")
	if got := q.evaluate(t, seatOf(3)); got["reason"] != "assignment_inactive" {
		t.Errorf("evaluate from the snapshot file = %v", got)
	}
	eventually(t, "the outage in the readiness", func() bool {
		r, _ := q.status(t)["readiness"].(string)
		return strings.Contains(r, "serving the redis state, last confirmed current") && strings.Contains(r, "(max-staleness 1h0m0s); sync disconnected since")
	})
	r := startServeNotReady(t, env, "--redis-url", deadURL, "--snapshot-file", file, "--max-staleness", "1ms")
	eventually(t, "the reason it is not ready", func() bool {
		st := r.status(t)
		why, _ := st["readiness"].(string)
		return st["ready"] == false && strings.Contains(why, "over the 1ms max-staleness; sync disconnected since")
	})
}

// What an attacker or a careless client sends, against the demo state on
// a real server: times far from now, the Unix epoch, huge ids, the
// compatible allocation of a license whose group denial removes a holder.
func TestServeHostileInputs(t *testing.T) {
	p := startServe(t, nil)
	bob := func(at string) string {
		return `{"tenant_id": "acme", "subject": {"id": "bob"}, "seat": {"license": "editor"}, "at": "` + at + `"}`
	}
	for _, c := range []struct{ body, want string }{
		{bob("2300-01-01T00:00:00Z"), "assignment_expired"},
		{bob("9999-12-31T23:59:59Z"), "assignment_expired"},
		{bob("1970-01-01T00:00:00Z"), "seat_assigned"}, // the epoch is a time, not "now"
		{bob("0001-01-01T00:00:00Z"), "seat_assigned"},
		{`{"tenant_id": "acme", "subject": {"id": "bob"}, "seat": {"license": "editor"}}`, "assignment_expired"},
	} {
		if got := p.evaluate(t, c.body); got["reason"] != c.want {
			t.Errorf("evaluate %s = %v, want %s", c.body, got, c.want)
		}
	}
	post := func(path, body string) (int, string) {
		resp, err := http.Post(p.base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	huge := strings.Repeat("x", 1<<19)
	if status, b := post("/v1/evaluate", `{"tenant_id": "acme", "subject": {"id": "`+huge+`"}, "seat": {"license": "editor"}}`); status != 400 ||
		!strings.Contains(b, "subject.id: must be at most 256 bytes, got 524288") || len(b) > 1000 {
		t.Errorf("a 512 KB subject id = %d %.300s, want 400 naming subject.id, briefly", status, b)
	}
	if status, b := post("/v1/evaluate", bob("2016-12-31T23:59:60Z")); status != 400 || !strings.Contains(b, "at: must be an RFC 3339 time without a leap second") {
		t.Errorf("a leap second = %d %s, want 400", status, b)
	}
	status, b := post("/api/v2/seatLicenseAllocations/evaluate/", `{"orgId": "acme", "seatName": "editor", "subjectId": "frank", "subjectType": "user"}`)
	if status != 200 || !strings.Contains(b, `"allowed":false`) || strings.Contains(b, `"subjectId":"frank"`) {
		t.Errorf("compat for frank, whose group is denied = %d %s; want not allowed and not among the subjects", status, b)
	}
}

// With --state, the HTTP port answers before the state is loaded (a large
// file takes seconds): live 200, ready 503 not_ready until it is in. The
// state file is a named pipe here, so the load waits for the test.
func TestServeFileListensBeforeTheLoad(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "state.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	p := launchServe(t, nil, "--state", fifo)
	eventually(t, "liveness while the state loads", func() bool { return p.statusOf("/health/live") == 200 })
	resp, err := http.Get(p.base + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), `"status":"not_ready"`) || !strings.Contains(string(b), "no state snapshot loaded yet") {
		t.Errorf("ready during the load = %d %s, want 503 not_ready", resp.StatusCode, b)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString(stateV1)
	w.Close()
	eventually(t, "ready once loaded", func() bool { return p.statusOf("/health/ready") == 200 })
	if got := p.evaluate(t, u1Editor); got["reason"] != "seat_assigned" {
		t.Errorf("evaluate after the load = %v", got)
	}
}

// Export of a namespace with an invalid record exports what is valid and
// names what it left out; --strict refuses; -o never truncates a file on
// failure.
func TestExportLeavesOutInvalidRecords(t *testing.T) {
	url, ns, w := redisNamespace(t, 0)
	tenSeats(t, w)
	c, err := statesync.NewClient(url, "usher-test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.HSet(context.Background(), w.Keys().Records("t1", decision.KindAssignment), "bad",
		`{"id": "bad", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "x", "status": "paused"}`).Err(); err != nil {
		t.Fatal(err)
	}
	env := []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns}
	run := func(args ...string) (string, string, int) { t.Helper(); return runUsherEnv(t, env, args...) }
	out, stderr, code := run("export")
	if code != 0 || !strings.Contains(out, `"id":"a9"`) || strings.Contains(out, `"bad"`) ||
		!strings.Contains(stderr, `field "bad"`) || !strings.Contains(stderr, "status: must be one of") || !strings.Contains(stderr, "1 invalid records left out") {
		t.Errorf("usher export = exit %d, stdout %.200s…, stderr %q", code, out, stderr)
	}
	file := filepath.Join(t.TempDir(), "backup.json")
	os.WriteFile(file, []byte("the previous backup"), 0o644)
	if _, stderr, code := run("export", "--strict", "-o", file); code != 1 || !strings.Contains(stderr, "nothing written") {
		t.Errorf("usher export --strict = exit %d stderr %q, want 1", code, stderr)
	}
	if b, _ := os.ReadFile(file); string(b) != "the previous backup" {
		t.Errorf("a failed export changed the output file: %.100q", b)
	}
	if _, stderr, code := run("export", "-o", file); code != 0 {
		t.Errorf("usher export -o = exit %d stderr %q", code, stderr)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), `"id":"a9"`) {
		t.Errorf("usher export -o wrote %.100q", b)
	}
}
