// Command leases races many clients of several `usher serve` sidecars for
// the floating seats of one license, against a redis-server of its own,
// and checks that no more leases ever exist than seats: by Redis's own
// count, watched throughout, and by replaying the change stream. Faults
// (CLIENT KILL of every connection, a Redis restart) happen mid-race. It
// then measures how soon after its expiry every sidecar stops granting a
// lease nobody renewed, and checkout and heartbeat latency at a fixed rate
// (with every sidecar following, then with only the answering one), and
// prints the figures. Only loopback addresses are used.
//
//	go run ./bench/leases -sidecars 8 -clients 64 -seconds 15
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/bench/internal/benchutil"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/redisproc"
	statesync "github.com/usher-authz/usher/sync"
)

const ns = "leases"

func main() {
	sidecars := flag.Int("sidecars", 8, "usher serve processes following one Redis")
	clients := flag.Int("clients", 64, "concurrent clients per sidecar")
	seconds := flag.Int("seconds", 15, "race duration per seat count")
	rate := flag.Int("rate", 2000, "checkout+heartbeat operations per second for the latency phase")
	flag.Parse()
	if err := run(*sidecars, *clients, time.Duration(*seconds)*time.Second, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "leases:", err)
		os.Exit(1)
	}
}

type bench struct {
	redis  *redisproc.Server
	client redis.UniversalClient
	w      *statesync.Writer
	bases  []string
	http   *http.Client
}

func run(sidecars, clients int, dur time.Duration, rate int) error {
	dir, err := os.MkdirTemp("", "usher-leases")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}}
	if b.redis, err = redisproc.Start(redisproc.Options{AOF: true, Dir: dir}); err != nil {
		return err
	}
	defer b.redis.Stop()
	if b.client, err = statesync.NewClient(b.redis.URL(), "usher-bench"); err != nil {
		return err
	}
	defer b.client.Close()
	if b.w, err = statesync.NewWriter(statesync.WriterConfig{Client: b.client, Namespace: ns}); err != nil {
		return err
	}
	// One tenant per seat count; every subject has a dynamic assignment
	// through one group.
	var doc strings.Builder
	doc.WriteString(`{"licenses": [`)
	ks := []int{1, 5, 50}
	for i, k := range ks {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `{"id": "fl", "tenant_id": "k%d", "name": "cad", "type": "floating", "seat_limit": %d, "lease_duration_s": 3}`, k, k)
	}
	doc.WriteString(`], "groups": [`)
	for i, k := range ks {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `{"id": "everyone", "tenant_id": "k%d", "members": [`, k)
		for s := range 2000 {
			if s > 0 {
				doc.WriteByte(',')
			}
			fmt.Fprintf(&doc, `{"id": "s%d", "type": "person"}`, s)
		}
		doc.WriteString(`]}`)
	}
	doc.WriteString(`], "assignments": [`)
	for i, k := range ks {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `{"id": "dyn", "tenant_id": "k%d", "license_id": "fl", "assignee_id": "everyone", "assignee_type": "group", "reservation": "dynamic"}`, k)
	}
	doc.WriteString(`]}`)
	d, err := decision.DecodeDocument(strings.NewReader(doc.String()))
	if err != nil {
		return err
	}
	if _, err := b.w.Load(context.Background(), d, true); err != nil {
		return err
	}
	bin := filepath.Join(dir, "usher")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/usher").CombinedOutput(); err != nil {
		return fmt.Errorf("build usher: %v\n%s", err, out)
	}
	var stops []func()
	for range sidecars {
		addr, err := benchutil.FreeAddr()
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, "serve", "--redis-url", b.redis.URL(), "--namespace", ns, "--http-addr", addr, "--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		stop := sync.OnceFunc(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
		defer stop()
		stops = append(stops, stop)
		b.bases = append(b.bases, "http://"+addr)
	}
	for _, base := range b.bases {
		if err := b.ready(base); err != nil {
			return err
		}
	}
	fmt.Printf("%d usher serve sidecars following a redis-server of its own (AOF on), %d clients each\n\n", sidecars, clients)
	fmt.Printf("%6s %10s %9s %9s %10s %12s %s\n", "seats", "attempts", "granted", "released", "refused", "over-grants", "faults")
	var total int64
	for _, k := range ks {
		n, err := b.race(k, clients, dur)
		if err != nil {
			return err
		}
		total += n
	}
	fmt.Printf("\n%d checkout attempts in all\n\n", total)
	if err := b.expiry(); err != nil {
		return err
	}
	fmt.Printf("\nwith all %d sidecars following (every lease event applied %d times on these 2 cores):\n", sidecars, sidecars)
	if err := b.latency(rate, false); err != nil {
		return err
	}
	if err := b.latency(rate, true); err != nil {
		return err
	}
	if sidecars == 1 {
		return nil
	}
	// A lease operation's own cost: the sidecar answering and its Redis,
	// without the other followers' load on the same cores.
	for _, stop := range stops[1:] {
		stop()
	}
	fmt.Printf("\nwith only the answering sidecar following:\n")
	if err := b.latency(rate, false); err != nil {
		return err
	}
	return b.latency(rate, true)
}

func (b *bench) ready(base string) error {
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get(base + "/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
	}
	return fmt.Errorf("%s did not become ready", base)
}

type answer struct {
	Granted bool   `json:"granted"`
	Reason  string `json:"reason"`
	Lease   *struct {
		ID        string `json:"id"`
		ExpiresAt string `json:"expires_at"`
	} `json:"lease"`
	Released bool `json:"released"`
	Error    *struct{ Code, Message string }
}

func (b *bench) post(base, path string, body string) (answer, int, error) {
	resp, err := b.http.Post(base+path, "application/json", strings.NewReader(body))
	if err != nil {
		return answer{}, 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return a, resp.StatusCode, fmt.Errorf("%s answered %d %s", path, resp.StatusCode, raw)
	}
	return a, resp.StatusCode, nil
}

// race runs every sidecar's clients against the k-seat license for dur,
// with CLIENT KILL at a third and a Redis restart at two thirds.
func (b *bench) race(k, clients int, dur time.Duration) (int64, error) {
	tenant := "k" + strconv.Itoa(k)
	stop := time.Now().Add(dur)
	var attempts, granted, released, refused, unavailable, over atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	wg.Go(func() { // Redis's own count
		for time.Now().Before(stop) {
			now, err := b.client.Time(ctx).Result()
			if err != nil {
				continue // restarting
			}
			n, err := b.client.ZCount(ctx, b.w.Keys().LeaseExpiries(tenant, "fl"), "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf").Result()
			if err == nil && n > int64(k) {
				over.Add(1)
			}
		}
	})
	faults := []string{}
	var fmu sync.Mutex
	wg.Go(func() {
		time.Sleep(dur / 3)
		ids := []string{}
		for _, line := range strings.Split(b.client.ClientList(ctx).Val(), "\n") {
			if strings.Contains(line, "name=usher-sidecar") {
				for _, f := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(f, "id="); ok {
						ids = append(ids, v)
					}
				}
			}
		}
		for _, id := range ids {
			b.client.Do(ctx, "CLIENT", "KILL", "ID", id)
		}
		fmu.Lock()
		faults = append(faults, fmt.Sprintf("CLIENT KILL x%d", len(ids)))
		fmu.Unlock()
		time.Sleep(dur / 3)
		b.redis.Stop()
		if err := b.redis.Start(); err == nil {
			fmu.Lock()
			faults = append(faults, "redis restart")
			fmu.Unlock()
		}
	})
	for i, base := range b.bases {
		for c := range clients {
			wg.Go(func() {
				for j := 0; time.Now().Before(stop); j++ {
					attempts.Add(1)
					subject := fmt.Sprintf("s%d", ((i*clients+c)*7+j%7)%1900)
					a, code, err := b.post(base, "/v1/leases/checkout", fmt.Sprintf(`{"tenant_id": %q, "subject": {"id": %q}, "seat": {"license": "cad"}, "duration_s": %d}`, tenant, subject, 1+j%3))
					switch {
					case err != nil || code == 503:
						unavailable.Add(1)
						time.Sleep(10 * time.Millisecond)
						continue
					case code != 200:
						fmt.Fprintf(os.Stderr, "checkout answered %d %+v\n", code, a)
						continue
					case !a.Granted:
						refused.Add(1)
						continue
					}
					if a.Lease == nil {
						continue // a renewal by the same subject, or a reserved seat
					}
					granted.Add(1)
					if j%3 != 0 {
						if r, _, err := b.post(base, "/v1/leases/release", fmt.Sprintf(`{"tenant_id": %q, "lease_id": %q}`, tenant, a.Lease.ID)); err == nil && r.Released {
							released.Add(1)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	overLog := replay(b.client, b.w.Keys().Changes(), tenant, k)
	fmt.Printf("%6d %10d %9d %9d %10d %12s %s; %d answered 503 during faults\n", k, attempts.Load(), granted.Load(), released.Load(), refused.Load(),
		fmt.Sprintf("%d/%d", over.Load(), overLog), strings.Join(faults, ", "), unavailable.Load())
	if over.Load() > 0 || overLog > 0 {
		return attempts.Load(), fmt.Errorf("%d seats: over-granted (Redis's count %d times, the change stream %d times)", k, over.Load(), overLog)
	}
	return attempts.Load(), nil
}

// replay counts the lease events of a tenant after which more than k
// leases were live at the event's time.
func replay(c redis.UniversalClient, stream, tenant string, k int) int {
	live := map[string]int64{}
	over := 0
	for _, m := range c.XRange(context.Background(), stream, "-", "+").Val() {
		if m.Values["tenant"] != tenant {
			continue
		}
		at, _ := strconv.ParseInt(fmt.Sprint(m.Values["at"]), 10, 64)
		for id, exp := range live {
			if exp <= at {
				delete(live, id)
			}
		}
		switch m.Values["op"] {
		case "lease":
			l, err := statesync.ParseLease([]byte(fmt.Sprint(m.Values["lease"])))
			if err != nil {
				continue
			}
			live[l.ID] = l.ExpiresAt.UnixMilli()
			if len(live) > k {
				over++
			}
		case "lease_end":
			delete(live, fmt.Sprint(m.Values["id"]))
		}
	}
	return over
}

// latency paces checkouts and heartbeats at rate per second against one
// sidecar (direct: through the Go writer, no sidecar) and reports their
// latency.
func (b *bench) latency(rate int, direct bool) error {
	base := b.bases[0]
	const tenant = "k50"
	var mu sync.Mutex
	lat := map[string][]time.Duration{}
	leases := make(chan string, 1024)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	n := rate * 5
	for i := range n {
		<-tick.C
		wg.Go(func() {
			op, body := "checkout", fmt.Sprintf(`{"tenant_id": %q, "subject": {"id": "s%d"}, "seat": {"license": "cad"}}`, tenant, i%40)
			select {
			case id := <-leases:
				if i%2 == 1 {
					op, body = "heartbeat", fmt.Sprintf(`{"tenant_id": %q, "lease_id": %q}`, tenant, id)
				}
			default:
			}
			start := time.Now()
			var a answer
			var code int
			var err error
			if direct {
				a, code, err = b.direct(tenant, op, i, body)
			} else {
				a, code, err = b.post(base, "/v1/leases/"+op, body)
			}
			took := time.Since(start)
			if err != nil || code != 200 {
				return
			}
			mu.Lock()
			lat[op] = append(lat[op], took)
			mu.Unlock()
			if a.Lease != nil {
				select {
				case leases <- a.Lease.ID:
				default:
				}
			}
		})
	}
	wg.Wait()
	for _, op := range []string{"checkout", "heartbeat"} {
		l := lat[op]
		if len(l) == 0 {
			return fmt.Errorf("no %s answered", op)
		}
		slices.Sort(l)
		q := func(p float64) time.Duration { return l[min(len(l)-1, int(p*float64(len(l))))].Round(time.Microsecond) }
		via := "over HTTP to a sidecar"
		if direct {
			via = "Go writer to Redis"
		}
		fmt.Printf("%-9s %-22s at %d ops/s (both kinds): %6d answered, p50 %v  p99 %v  max %v\n", op, via, rate, len(l), q(0.5), q(0.99), l[len(l)-1].Round(time.Microsecond))
	}
	return nil
}

// expiry takes short leases nobody renews and times, on every sidecar,
// how long after expires_at its evaluate stops granting.
func (b *bench) expiry() error {
	const tenant = "k50"
	var lags []time.Duration
	for round := range 10 {
		subject := fmt.Sprintf("s%d", 1900+round) // a member of the group, not raced for
		a, code, err := b.post(b.bases[0], "/v1/leases/checkout", fmt.Sprintf(`{"tenant_id": %q, "subject": {"id": %q}, "seat": {"license": "cad"}, "duration_s": 1}`, tenant, subject))
		if err != nil || code != 200 || a.Lease == nil {
			return fmt.Errorf("expiry checkout: %d %+v %v", code, a, err)
		}
		exp, _ := time.Parse(time.RFC3339Nano, a.Lease.ExpiresAt)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, base := range b.bases {
			wg.Go(func() {
				body := fmt.Sprintf(`{"tenant_id": %q, "subject": {"id": %q}, "seat": {"license": "cad"}}`, tenant, subject)
				for time.Since(exp) < 10*time.Second {
					resp, err := b.http.Post(base+"/v1/evaluate", "application/json", strings.NewReader(body))
					if err == nil {
						raw, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if bytes.Contains(raw, []byte(`"allowed":false`)) && time.Now().After(exp.Add(-50*time.Millisecond)) {
							mu.Lock()
							lags = append(lags, max(0, time.Since(exp)))
							mu.Unlock()
							return
						}
					}
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
		wg.Wait()
	}
	slices.Sort(lags)
	q := func(p float64) time.Duration {
		return lags[min(len(lags)-1, int(p*float64(len(lags))))].Round(time.Microsecond)
	}
	fmt.Printf("expiry, a 1 s lease nobody renews, from expires_at to a denial on each of %d sidecars (%d samples): p50 %v  p99 %v  max %v\n",
		len(b.bases), len(lags), q(0.5), q(0.99), lags[len(lags)-1].Round(time.Microsecond))
	return nil
}

// direct runs one latency-phase operation through the Go writer.
func (b *bench) direct(tenant, op string, i int, body string) (answer, int, error) {
	ctx := context.Background()
	var res statesync.LeaseResult
	var err error
	if op == "checkout" {
		res, err = b.w.Checkout(ctx, tenant, "fl", fmt.Sprintf("s%d", i%40), "", 0)
	} else {
		var req struct {
			LeaseID string `json:"lease_id"`
		}
		json.Unmarshal([]byte(body), &req)
		res, err = b.w.Heartbeat(ctx, tenant, req.LeaseID)
	}
	if err != nil {
		return answer{}, 0, err
	}
	a := answer{Granted: res.Lease != nil}
	if res.Lease != nil {
		a.Lease = &struct {
			ID        string `json:"id"`
			ExpiresAt string `json:"expires_at"`
		}{ID: res.Lease.ID}
	}
	return a, 200, nil
}
