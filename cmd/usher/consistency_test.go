package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/usher-authz/usher/decision"
)

// post sends body to path and returns the status, the Retry-After header
// and the decoded answer.
func (p *proc) post(t *testing.T, path, body string) (int, string, map[string]any) {
	t.Helper()
	resp, err := http.Post(p.base+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), out
}

// send makes a request with headers (name, value, …) and returns the
// status, the response headers and the body.
func (p *proc) send(t *testing.T, method, path, body string, headers ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func seatAt(i int, rev string) string {
	return fmt.Sprintf(`{"tenant_id": "t1", "subject": {"id": "s%d"}, "seat": {"license": "editor"}, "min_revision": %q}`, i, rev)
}

// A write's revision token, passed as min_revision to another sidecar of
// the namespace, reads the write back every time; tokens it cannot reach,
// of another namespace, or malformed are refused as the API says.
func TestReadYourWrites(t *testing.T) {
	url, ns, w := redisNamespace(t, 0)
	tenSeats(t, w)
	env := []string{"USHER_REDIS_URL=" + url, "USHER_NAMESPACE=" + ns}
	file := filepath.Join(t.TempDir(), "snapshot.json")
	a := startServe(t, env)
	b := startServe(t, env, "--snapshot-file", file, "--consistency-wait", "5s") // generous: the suite may share the CPU
	ctx := context.Background()
	write := func(i int, status string) string {
		t.Helper()
		rev, err := w.Put(ctx, decision.KindAssignment,
			[]byte(fmt.Sprintf(`{"id": "a%d", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s%d", "status": %q}`, i, i, status)))
		if err != nil {
			t.Fatal(err)
		}
		return rev.String()
	}
	want := map[string]string{"active": "seat_assigned", "suspended": "assignment_inactive"}
	stale, staleWithout := 0, 0
	const rounds = 200
	var rev string
	for r := range rounds {
		i, status := r%10, []string{"suspended", "active"}[r/10%2]
		rev = write(i, status)
		code, _, got := b.post(t, "/v1/evaluate", seatAt(i, rev))
		if code != 200 || got["reason"] != want[status] {
			stale++
			t.Errorf("round %d: after writing %s at %s, evaluate with min_revision = %d %v", r, status, rev, code, got)
		}
		if r%2 == 0 {
			status = []string{"active", "suspended"}[r/10%2]
			write(i, status)
			if a.evaluate(t, seatOf(i))["reason"] != want[status] {
				staleWithout++
			}
		}
	}
	t.Logf("%d rounds: %d stale answers with min_revision, %d of %d without", rounds, stale, staleWithout, rounds/2)

	tok, err := decision.ParseToken(rev)
	if err != nil {
		t.Fatalf("a write's revision %q does not parse: %v", rev, err)
	}
	ahead := tok
	ahead.Ms += 60_000
	other, _ := decision.RedisToken("another-namespace", "e", "1-0")
	for _, tc := range []struct {
		name, rev  string
		code       int
		errCode    string
		msg, retry string
	}{
		{"ahead of Redis", ahead.String(), 503, "state_behind", "has not reached min_revision within the consistency wait (250ms)", "1"},
		{"another namespace", other.String(), 400, "invalid_request", "min_revision: a revision token of another state source or Redis namespace", ""},
		{"malformed", "abc", 400, "invalid_request", "min_revision: not a revision token", ""},
	} {
		code, retry, got := a.post(t, "/v1/evaluate", seatAt(1, tc.rev))
		e, _ := got["error"].(map[string]any)
		if msg, _ := e["message"].(string); code != tc.code || e["code"] != tc.errCode || !strings.Contains(msg, tc.msg) || retry != tc.retry {
			t.Errorf("%s: %d (Retry-After %q) %v; want %d %s containing %q", tc.name, code, retry, got, tc.code, tc.errCode, tc.msg)
		}
	}
	// In a batch, each check waits for its own token.
	code, _, got := a.post(t, "/v1/evaluate/batch", `{"checks": [`+seatAt(1, rev)+`,`+seatAt(2, ahead.String())+`]}`)
	res, _ := got["results"].([]any)
	if code != 200 || len(res) != 2 || res[0].(map[string]any)["reason"] == nil ||
		res[1].(map[string]any)["error"].(map[string]any)["code"] != "state_behind" {
		t.Errorf("batch with a reached and an unreachable token = %d %v", code, got)
	}

	// The CLI prints the token of its write, and it reads back the same.
	out, stderr, exit := runUsherEnv(t, env, "put", "--json", "assignment",
		`{"id": "a4", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s4", "status": "revoked"}`)
	var printed struct{ Revision string }
	if exit != 0 || json.Unmarshal([]byte(out), &printed) != nil || printed.Revision == "" {
		t.Fatalf("usher put --json = %q, %q, exit %d", out, stderr, exit)
	}
	if _, _, got := b.post(t, "/v1/evaluate", seatAt(4, printed.Revision)); got["reason"] != "assignment_inactive" {
		t.Errorf("evaluate at the CLI's revision = %v", got)
	}

	// A restart from the snapshot file, Redis out of reach, still holds
	// the tokens the file's state reached.
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Wait(); err != nil {
		t.Fatalf("usher serve after SIGTERM: %v", err)
	}
	c := startServe(t, []string{"USHER_NAMESPACE=" + ns}, "--redis-url", "redis://"+freeAddr(t)+"/0", "--snapshot-file", file)
	if code, _, got := c.post(t, "/v1/evaluate", seatAt(4, printed.Revision)); code != 200 || got["reason"] != "assignment_inactive" || got["revision"] != printed.Revision {
		t.Errorf("after a restart from the snapshot file, evaluate at %s = %d %v", printed.Revision, code, got)
	}
}
