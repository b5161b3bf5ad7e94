// Command propagate measures how fast a change written to Redis reaches
// Usher's decisions, and what a full load costs: it writes a generated
// state into a fresh namespace, starts `usher serve --redis-url` on it,
// times the load and reads the sidecar's RSS, then makes --changes writes
// that each flip one decision and times each from the write to the first
// changed answer over HTTP. With -rounds, a second sidecar follows the
// same namespace and each round writes (through the Go writer, no sidecar)
// and reads the write back from that sidecar with the write's revision as
// min_revision: stale answers are counted (and, for comparison, those of
// an immediate read without it), and the read's latency from the write is
// set beside the propagation time measured by polling in the same run.
// Only loopback addresses are used; the namespace is deleted afterwards.
//
//	go run ./bench/propagate -tenants 1000 -changes 300 -rounds 10000
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/bench/internal/benchutil"
	"github.com/usher-authz/usher/decision"
	statesync "github.com/usher-authz/usher/sync"
)

func main() {
	redisURL := flag.String("redis-url", envOr("USHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis to use (loopback)")
	tenants := flag.Int("tenants", 1000, "generated tenants (1000 = about 1,000,000 records)")
	changes := flag.Int("changes", 300, "changes to time")
	rounds := flag.Int("rounds", 0, "read-your-writes rounds against a second sidecar (0: none)")
	flag.Parse()
	if err := run(*redisURL, *tenants, *changes, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "propagate:", err)
		os.Exit(1)
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func run(redisURL string, tenants, changes, rounds int) error {
	ctx := context.Background()
	ns := fmt.Sprintf("propagate-%d", time.Now().UnixNano())
	client, err := statesync.NewClient(redisURL, "usher-bench")
	if err != nil {
		return err
	}
	defer client.Close()
	defer benchutil.DropNamespace(ctx, client, ns)
	w, err := statesync.NewWriter(statesync.WriterConfig{Client: client, Namespace: ns})
	if err != nil {
		return err
	}
	cfg := gen.Default()
	cfg.Tenants = tenants
	doc := gen.Generate(cfg)
	t0 := time.Now()
	if _, err := w.Load(ctx, doc, true); err != nil {
		return err
	}
	fmt.Printf("wrote %d records in %d tenants to Redis in %v\n", doc.Len(), tenants, time.Since(t0).Round(time.Millisecond))

	dir, err := os.MkdirTemp("", "propagate")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "usher")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/usher").CombinedOutput(); err != nil {
		return fmt.Errorf("build usher: %v\n%s", err, out)
	}
	addr, err := benchutil.FreeAddr()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", "--redis-url", redisURL, "--namespace", ns, "--http-addr", addr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	base := "http://" + addr
	for {
		if resp, err := http.Get(base + "/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("usher did not become ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	loadTook := time.Since(start)
	rss := rssOf(cmd.Process.Pid)
	fmt.Printf("usher serve: ready (full load from Redis) %v after start; RSS %.0f MiB\n", loadTook.Round(time.Millisecond), rss)

	// Each change flips one person's direct assignment between active and
	// suspended, so the seat decision flips between seat_assigned and a denial.
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var lat []time.Duration
	for i := range changes {
		t := i % tenants
		tid, person := gen.TenantID(t), "bench-user"
		if i < tenants {
			// First touch of this tenant: the license the bench assigns.
			lic := fmt.Sprintf(`{"id": "bench-lic", "tenant_id": %q, "name": "bench-seat"}`, tid)
			if _, err := w.Put(ctx, decision.KindLicense, []byte(lic)); err != nil {
				return err
			}
		}
		body := fmt.Sprintf(`{"tenant_id": %q, "subject": {"id": %q}, "seat": {"license": "bench-seat"}}`, tid, person)
		before, err := reason(httpc, base, body)
		for err == nil && before == "license_not_found" { // the license write is still on its way
			before, err = reason(httpc, base, body)
		}
		if err != nil {
			return err
		}
		status := "active"
		if before == "seat_assigned" {
			status = "suspended"
		}
		rec := fmt.Sprintf(`{"id": "bench-asg", "tenant_id": %q, "license_id": "bench-lic", "assignee_id": %q, "status": %q}`, tid, person, status)
		t0 := time.Now()
		if _, err := w.Put(ctx, decision.KindAssignment, []byte(rec)); err != nil {
			return err
		}
		for {
			r, err := reason(httpc, base, body)
			if err != nil {
				return err
			}
			if r != before {
				lat = append(lat, time.Since(t0))
				break
			}
			if time.Since(t0) > 10*time.Second {
				return fmt.Errorf("change %d never showed (reason stays %s)", i, r)
			}
		}
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("propagation, write to first changed decision, over %d changes: p50 %v  p90 %v  p99 %v  max %v\n",
		len(lat), q(0.50).Round(time.Microsecond), q(0.90).Round(time.Microsecond), q(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	fmt.Printf("usher serve RSS after the changes: %.0f MiB\n", rssOf(cmd.Process.Pid))
	if rounds == 0 {
		return nil
	}
	addr2, err := benchutil.FreeAddr()
	if err != nil {
		return err
	}
	cmd2 := exec.Command(bin, "serve", "--redis-url", redisURL, "--namespace", ns, "--http-addr", addr2, "--log-level", "warn")
	cmd2.Stderr = os.Stderr
	if err := cmd2.Start(); err != nil {
		return err
	}
	defer func() { cmd2.Process.Signal(os.Interrupt); cmd2.Wait() }()
	return readYourWrites(ctx, w, httpc, "http://"+addr2, tenants, changes, rounds)
}

// readYourWrites runs the rounds against the sidecar at base: each flips
// one person's seat, then reads it with min_revision; every tenth round
// also times the plain propagation (polling until the answer changes).
func readYourWrites(ctx context.Context, w *statesync.Writer, c *http.Client, base string, tenants, changes, rounds int) error {
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if resp, err := c.Get(base + "/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("the second sidecar did not become ready")
		}
	}
	want := map[string]string{"active": "seat_assigned", "suspended": "assignment_inactive"}
	put := func(t int, status string) (string, error) {
		rec := fmt.Sprintf(`{"id": "bench-asg", "tenant_id": %q, "license_id": "bench-lic", "assignee_id": "bench-user", "status": %q}`, gen.TenantID(t), status)
		rev, err := w.Put(ctx, decision.KindAssignment, []byte(rec))
		return rev.String(), err
	}
	body := func(t int, min string) string {
		b := fmt.Sprintf(`{"tenant_id": %q, "subject": {"id": "bench-user"}, "seat": {"license": "bench-seat"}`, gen.TenantID(t))
		if min != "" {
			b += fmt.Sprintf(`, "min_revision": %q`, min)
		}
		return b + "}"
	}
	var withMin, polled []time.Duration
	stale, staleWithout, behind := 0, 0, 0
	status := map[int]string{}
	flip := func(t int) string {
		s := "active"
		if status[t] != "suspended" {
			s = "suspended"
		}
		status[t] = s
		return s
	}
	for i := range rounds {
		t := i % min(tenants, changes, 100)
		s := flip(t)
		t0 := time.Now()
		rev, err := put(t, s)
		if err != nil {
			return err
		}
		r, err := reason(c, base, body(t, rev))
		switch {
		case err != nil && strings.Contains(err.Error(), "state_behind"):
			behind++
		case err != nil:
			return err
		case r != want[s]:
			stale++
		}
		withMin = append(withMin, time.Since(t0))

		// The same write-then-read without the token.
		s = flip(t)
		if _, err := put(t, s); err != nil {
			return err
		}
		if r, err := reason(c, base, body(t, "")); err != nil {
			return err
		} else if r != want[s] {
			staleWithout++
		}
		if i%10 == 0 { // propagation by polling, beside the waiting reads
			s = flip(t)
			t0 := time.Now()
			if _, err := put(t, s); err != nil {
				return err
			}
			for {
				r, err := reason(c, base, body(t, ""))
				if err != nil {
					return err
				}
				if r == want[s] {
					polled = append(polled, time.Since(t0))
					break
				}
				if time.Since(t0) > 10*time.Second {
					return fmt.Errorf("round %d: the change never showed", i)
				}
			}
		}
	}
	q := func(lat []time.Duration, p float64) time.Duration {
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Microsecond)
	}
	slices.Sort(withMin)
	slices.Sort(polled)
	fmt.Printf("read-your-writes, %d rounds on a second sidecar: %d stale answers with min_revision (%d state_behind); without it %d of %d reads right after the write were stale (%.1f%%)\n",
		rounds, stale, behind, staleWithout, rounds, 100*float64(staleWithout)/float64(rounds))
	fmt.Printf("write to answer with min_revision: p50 %v  p99 %v  max %v\n", q(withMin, 0.5), q(withMin, 0.99), withMin[len(withMin)-1].Round(time.Microsecond))
	fmt.Printf("write to first changed answer by polling (%d, same run): p50 %v  p99 %v  max %v\n", len(polled), q(polled, 0.5), q(polled, 0.99), polled[len(polled)-1].Round(time.Microsecond))
	if stale > 0 {
		return fmt.Errorf("%d stale answers with min_revision", stale)
	}
	return nil
}

func reason(c *http.Client, base, body string) (string, error) {
	resp, err := c.Post(base+"/v1/evaluate", "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	_, rest, ok := bytes.Cut(b, []byte(`"reason":"`))
	if !ok {
		return "", fmt.Errorf("evaluate answered %d %s", resp.StatusCode, b)
	}
	r, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(r), nil
}

func rssOf(pid int) float64 {
	r, _ := benchutil.ProcStat(pid)
	return r
}
