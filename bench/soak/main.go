// Command soak runs `usher serve` against a redis-server of its own
// through a loop of faults while a writer flips seats and readers
// evaluate, and reports for each fault: failed evaluates, how long until
// the sidecar's decisions equal what Redis holds (with no write after the
// fault), what is still different after -converge, the full reloads and
// why, and, where no reload happened, events applied versus added (a gap
// is a change lost, a surplus one applied twice). Only loopback addresses
// are used; it runs for -duration (at least one round of every fault).
//
//	go run ./bench/soak -duration 2m
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-authz/usher/bench/internal/benchutil"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/redisproc"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
	statesync "github.com/usher-authz/usher/sync"
)

func main() {
	duration := flag.Duration("duration", 90*time.Second, "how long to keep cycling faults (every fault runs at least once)")
	converge := flag.Duration("converge", 5*time.Second, "how soon after a fault the sidecar must equal Redis")
	subjects := flag.Int("subjects", 100, "persons holding a seat the writer flips")
	readers := flag.Int("readers", 4, "concurrent evaluate clients")
	rate := flag.Int("rate", 100, "writes per second between faults")
	flag.Parse()
	s := &soak{subjects: *subjects, converge: *converge}
	if err := s.run(*duration, *readers, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if s.failedTotal > 0 || s.divergedTotal > 0 {
		os.Exit(1)
	}
}

const ns = "soak"

type soak struct {
	subjects int
	converge time.Duration
	dir      string
	redis    *redisproc.Server
	client   redis.UniversalClient
	w        *statesync.Writer
	usher    *exec.Cmd
	base     string
	http     *http.Client
	engine   *decision.Engine

	writing atomic.Bool
	// inFlight is held by the writer while a write is on its way, so
	// stopWriting can wait for it.
	inFlight    sync.Mutex
	failed      atomic.Int64 // evaluates that did not answer 200
	answered    atomic.Int64
	writeErrs   atomic.Int64
	failedTotal int64
	// divergedTotal counts decisions still wrong -converge after a fault.
	divergedTotal int
}

func (s *soak) run(duration time.Duration, readers, rate int) error {
	var err error
	if s.dir, err = os.MkdirTemp("", "usher-soak"); err != nil {
		return err
	}
	defer os.RemoveAll(s.dir)
	if s.redis, err = redisproc.Start(redisproc.Options{AOF: true, Dir: s.dir}); err != nil {
		return err
	}
	defer s.redis.Stop()
	if s.client, err = statesync.NewClient(s.redis.URL(), "usher-soak"); err != nil {
		return err
	}
	defer s.client.Close()
	if s.w, err = statesync.NewWriter(statesync.WriterConfig{Client: s.client, Namespace: ns, StreamMaxLen: 1000}); err != nil {
		return err
	}
	if err := s.loadBase(); err != nil {
		return err
	}
	if err := s.startUsher(); err != nil {
		return err
	}
	defer func() { s.usher.Process.Signal(syscall.SIGCONT); s.usher.Process.Signal(os.Interrupt); s.usher.Wait() }()
	if s.engine, err = decision.NewEngine(decision.Config{CacheEntries: -1}); err != nil {
		return err
	}
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		return err
	}
	s.engine.SetPolicy(p)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() { s.read(ctx) })
	}
	wg.Go(func() { s.write(ctx, rate) })
	defer func() { stop(); wg.Wait() }()

	fmt.Printf("usher serve following a redis-server of its own (AOF on), %d seats flipped at %d/s, %d readers; converge within %v\n\n",
		s.subjects, rate, readers, s.converge)
	fmt.Printf("%-18s %8s %9s %10s %9s %-22s %s\n", "fault", "failed", "answered", "converged", "diverged", "reloads", "events applied/added")
	start := time.Now()
	for round := 0; round == 0 || time.Since(start) < duration; round++ {
		for _, f := range s.faults() {
			if err := s.runFault(f); err != nil {
				return fmt.Errorf("%s: %w", f.name, err)
			}
		}
	}
	fmt.Printf("\nin all: %d failed evaluates, %d decisions still diverged %v after a fault, %d writes refused during faults (expected)\n",
		s.failedTotal, s.divergedTotal, s.converge, s.writeErrs.Load())
	return nil
}

// base is the state the soak starts from and reloads after Redis lost it.
func (s *soak) baseState() *decision.Document {
	var b strings.Builder
	b.WriteString(`{"licenses": [{"id": "lic_1", "tenant_id": "t1", "name": "editor"}], "assignments": [`)
	for i := range s.subjects {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id": "a%d", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s%d"}`, i, i)
	}
	b.WriteString(`]}`)
	doc, _ := decision.DecodeDocument(strings.NewReader(b.String()))
	return doc
}

func (s *soak) loadBase() error {
	_, err := s.w.Load(context.Background(), s.baseState(), true)
	return err
}

func (s *soak) startUsher() error {
	bin := filepath.Join(s.dir, "usher")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/usher").CombinedOutput(); err != nil {
		return fmt.Errorf("build usher: %v\n%s", err, out)
	}
	addr, err := benchutil.FreeAddr()
	if err != nil {
		return err
	}
	s.usher = exec.Command(bin, "serve", "--redis-url", s.redis.URL(), "--namespace", ns, "--http-addr", addr,
		"--log-level", "warn", "--snapshot-file", filepath.Join(s.dir, "snapshot.json"))
	s.usher.Stderr = os.Stderr
	if err := s.usher.Start(); err != nil {
		return err
	}
	s.base = "http://" + addr
	s.http = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for deadline := time.Now().Add(time.Minute); ; {
		if resp, err := s.http.Get(s.base + "/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return errors.New("usher serve did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *soak) seat(i int) string {
	return fmt.Sprintf(`{"tenant_id": "t1", "subject": {"id": "s%d"}, "seat": {"license": "editor"}}`, i)
}

// read evaluates random seats until ctx ends; anything but a 200 fails.
func (s *soak) read(ctx context.Context) {
	for ctx.Err() == nil {
		resp, err := s.http.Post(s.base+"/v1/evaluate", "application/json", strings.NewReader(s.seat(rand.IntN(s.subjects))))
		if err != nil {
			if ctx.Err() == nil {
				s.failed.Add(1)
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			s.failed.Add(1)
			continue
		}
		s.answered.Add(1)
	}
}

// write flips random seats between active and suspended while writing is on.
func (s *soak) write(ctx context.Context, rate int) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.inFlight.Lock()
		if s.writing.Load() {
			if err := s.flip(ctx, s.w, rand.IntN(s.subjects)); err != nil {
				s.writeErrs.Add(1)
			}
		}
		s.inFlight.Unlock()
	}
}

// stopWriting turns the writer off and waits for a write on its way.
func (s *soak) stopWriting() {
	s.writing.Store(false)
	s.inFlight.Lock()
	s.inFlight.Unlock()
}

func (s *soak) flip(ctx context.Context, w *statesync.Writer, i int) error {
	status := [...]string{"active", "suspended"}[rand.IntN(2)]
	rec := fmt.Sprintf(`{"id": "a%d", "tenant_id": "t1", "license_id": "lic_1", "assignee_id": "s%d", "status": %q}`, i, i, status)
	_, err := w.Put(ctx, decision.KindAssignment, []byte(rec))
	return err
}

type fault struct {
	name string
	// do injects the fault; the writer runs during it unless quiet.
	do func() error
	// lost says the fault throws away stream history: a reload is expected
	// and events are not compared.
	lost bool
}

func (s *soak) faults() []fault {
	return []fault{
		{name: "client-kill", do: func() error {
			for range 5 {
				killClients(s.client, "usher-sidecar")
				time.Sleep(100 * time.Millisecond)
			}
			return nil
		}},
		{name: "sigstop-redis", do: func() error {
			s.redis.Pause()
			time.Sleep(3 * time.Second)
			s.redis.Resume()
			return nil
		}},
		{name: "debug-sleep", do: func() error {
			c := redis.NewClient(&redis.Options{Addr: s.redis.Addr, ReadTimeout: -1})
			defer c.Close()
			return c.Do(context.Background(), "DEBUG", "SLEEP", "3").Err()
		}},
		{name: "restart-aof", do: func() error {
			s.redis.Stop()
			return s.redis.Start()
		}},
		{name: "restart-empty", lost: true, do: func() error {
			s.stopWriting()
			s.redis.Stop()
			s.redis.AOF = false
			if err := os.RemoveAll(filepath.Join(s.redis.Dir(), "appendonlydir")); err != nil {
				return err
			}
			if err := s.redis.Start(); err != nil {
				return err
			}
			s.redis.AOF = true
			// The sidecar must first show the empty Redis; then an operator
			// loads the state again.
			took, worst, err := s.settle()
			if err != nil {
				return err
			}
			fmt.Printf("%-18s %8s %9s %10v %9d\n", "  (Redis empty)", "", "", took, worst)
			if err := s.client.ConfigSet(context.Background(), "appendonly", "yes").Err(); err != nil {
				return err
			}
			return s.loadBase()
		}},
		{name: "restore-older-aof", lost: true, do: func() error {
			s.redis.Stop()
			saved := filepath.Join(s.dir, "saved")
			os.RemoveAll(saved)
			if err := s.redis.SaveFiles(saved); err != nil {
				return err
			}
			if err := s.redis.Start(); err != nil {
				return err
			}
			time.Sleep(2 * time.Second) // writes the restore will lose
			s.redis.Stop()
			if err := s.redis.RestoreFiles(saved); err != nil {
				return err
			}
			return s.redis.Start()
		}},
		{name: "trim-while-paused", do: func() error {
			s.stopWriting()
			short, err := statesync.NewWriter(statesync.WriterConfig{Client: s.client, Namespace: ns, StreamMaxLen: 50})
			if err != nil {
				return err
			}
			s.usher.Process.Signal(syscall.SIGSTOP)
			defer s.usher.Process.Signal(syscall.SIGCONT)
			for i := range 300 {
				if err := s.flip(context.Background(), short, i%s.subjects); err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

// runFault runs one fault between two quiet moments and prints its line.
func (s *soak) runFault(f fault) error {
	s.writing.Store(true)
	time.Sleep(time.Second) // steady load before the fault
	s.stopWriting()
	if err := s.caughtUp(); err != nil {
		return err
	}
	before := s.counters()
	s.writing.Store(true)
	failed0, answered0 := s.failed.Load(), s.answered.Load()
	if err := f.do(); err != nil {
		return err
	}
	s.stopWriting() // no write after the fault: the sidecar must converge on its own
	took, worst, err := s.settle()
	if err != nil {
		return err
	}
	if err := s.caughtUp(); err != nil {
		return err
	}
	after := s.counters()
	failed, answered := s.failed.Load()-failed0, s.answered.Load()-answered0
	s.failedTotal += failed
	var reloads []string
	for _, r := range statesync.ReloadReasons {
		if d := after.reloads[r] - before.reloads[r]; d > 0 {
			reloads = append(reloads, fmt.Sprintf("%s×%d", r, d))
		}
	}
	events := "—"
	if len(reloads) == 0 && !f.lost {
		ev, added := after.events-before.events, after.added-before.added
		events = fmt.Sprintf("%d/%d", ev, added)
		if ev != added {
			events += fmt.Sprintf(" (%+d)", ev-added)
			s.divergedTotal++ // a change lost or applied twice
		}
	}
	if len(reloads) == 0 {
		reloads = []string{"none"}
	}
	fmt.Printf("%-18s %8d %9d %10v %9d %-22s %s\n", f.name, failed, answered, took, worst, strings.Join(reloads, " "), events)
	return nil
}

// settle waits until the sidecar's decisions equal Redis's and says how
// long it took and how many were still wrong -converge after the fault
// (counted as diverged).
func (s *soak) settle() (time.Duration, int, error) {
	start := time.Now()
	worst := 0
	for {
		diff, err := s.diff()
		if err == nil && diff == 0 {
			break
		}
		if time.Since(start) > s.converge && worst == 0 {
			worst = max(diff, 1)
		}
		if time.Since(start) > 60*time.Second {
			return 0, 0, fmt.Errorf("never converged: %d decisions differ (%v)", diff, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.divergedTotal += worst
	return time.Since(start).Round(time.Millisecond), worst, nil
}

// diff counts the seats on which the sidecar answers otherwise than
// Usher's engine over what Redis holds now.
func (s *soak) diff() (int, error) {
	doc, err := s.w.Export(context.Background())
	if err != nil {
		return -1, err
	}
	s.engine.SetSnapshot(decision.NewSnapshot(doc, 1))
	var body bytes.Buffer
	body.WriteString(`{"checks": [`)
	want := make([]string, s.subjects)
	for i := range s.subjects {
		if i > 0 {
			body.WriteByte(',')
		}
		body.WriteString(s.seat(i))
		req := decision.Request{TenantID: "t1", Subject: decision.Principal{ID: "s" + strconv.Itoa(i), Type: decision.Person},
			Check: decision.CheckSeat, License: "editor"}
		d, err := s.engine.Decide(decision.APIEvaluate, &req)
		if err != nil {
			return -1, err
		}
		want[i] = d.Reason.String()
	}
	body.WriteString(`]}`)
	resp, err := s.http.Post(s.base+"/v1/evaluate/batch", "application/json", &body)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	var got struct {
		Results []struct {
			Reason string `json:"reason"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got.Results) != s.subjects {
		return -1, fmt.Errorf("batch answered %d: %v", resp.StatusCode, err)
	}
	n := 0
	for i := range want {
		if got.Results[i].Reason != want[i] {
			n++
		}
	}
	return n, nil
}

// caughtUp waits until the sidecar has applied the stream's last entry
// (with the writer off), so its event counter can be compared.
func (s *soak) caughtUp() error {
	for deadline := time.Now().Add(30 * time.Second); ; {
		info, err := s.client.XInfoStream(context.Background(), s.w.Keys().Changes()).Result()
		if err == nil && s.position() == info.LastEntry.ID {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sidecar stands at %s, the stream ends at %s (%v)", s.position(), info.LastEntry.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *soak) position() string {
	resp, err := s.http.Get(s.base + "/v1/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Sync struct {
			Position string `json:"position"`
		} `json:"sync"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.Sync.Position
}

type counters struct {
	events, added int64
	reloads       map[string]int64
}

var reloadLine = regexp.MustCompile(`^usher_sync_full_reloads_total\{reason="(\w+)"\} (\d+)`)

// counters reads the sidecar's event and reload counters and the stream's
// entries-added.
func (s *soak) counters() counters {
	c := counters{reloads: map[string]int64{}}
	if resp, err := s.http.Get(s.base + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "usher_sync_events_total "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				c.events = int64(f)
			}
			if m := reloadLine.FindStringSubmatch(l); m != nil {
				c.reloads[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
			}
		}
	}
	if info, err := s.client.XInfoStream(context.Background(), s.w.Keys().Changes()).Result(); err == nil {
		c.added = info.EntriesAdded
	}
	return c
}

// killClients kills the Redis connections named name.
func killClients(c redis.UniversalClient, name string) {
	ctx := context.Background()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return
	}
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") {
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					c.Do(ctx, "CLIENT", "KILL", "ID", id)
				}
			}
		}
	}
}
