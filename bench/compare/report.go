package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

func find(rs []result, system, scenario string) *result {
	for i := range rs {
		if rs[i].system == system && strings.HasPrefix(rs[i].scenario, scenario) {
			return &rs[i]
		}
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// table writes results as a Markdown table; unit names what is counted.
func table(b *strings.Builder, unit string, rs []result) {
	fmt.Fprintf(b, "| system | scenario | %ss/s | p50 µs | p99 µs | p99.9 µs | errors | mismatches | server CPU µs/%s | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n", unit, unit)
	for _, r := range rs {
		wrong := "–"
		if r.checked {
			wrong = fmt.Sprint(r.mismatches)
		}
		fmt.Fprintf(b, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %d | %s | %.1f | %.0f |\n", r.system, r.scenario, r.throughput(), r.q(50), r.q(99), r.q(99.9), r.errors, wrong, r.cpuPerDecision(), r.rss)
	}
}

// ratios starts the ratios table and returns its row writer.
func ratios(b *strings.Builder) func(name string, v float64, target string, ok bool) {
	b.WriteString("\n## Ratios and targets\n\n| measure | value | target | |\n|---|---|---|---|\n")
	return func(name string, v float64, target string, ok bool) {
		fmt.Fprintf(b, "| %s | %.2f | %s | %s |\n", name, v, target, verdict(ok))
	}
}

func report(c config, records int, us, op *server, mismatches int, rs []result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Usher vs the OPA server\n\n")
	fmt.Fprintf(&b, "Measured %s by `go run ./bench/compare -tenants %d -duration %v -concurrency %d -rate %d` on %d cores (%s, %s); "+
		"the load generator and the servers share the machine. Absolute numbers are noisy on a shared machine; the ratios, measured side by side in one run, are the result.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), c.tenants, c.duration, c.concurrency, c.rate, runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, runtime.Version())
	fmt.Fprintf(&b, "Data: %d records in %d tenants (bench/gen), the same for both. Usher serves `rego/` with its snapshot and cache; OPA (`opa run --server --skip-version-check`, built from the same OPA module version) serves `bench/opa/peer.rego`, the same semantics in Rego over indexed data in its store. ", records, c.tenants)
	if op != nil {
		fmt.Fprintf(&b, "Before timing, both answered the same 5,000 checks: **%d mismatches**.\n\n", mismatches)
	} else {
		b.WriteString("OPA was skipped in this run.\n\n")
	}
	fmt.Fprintf(&b, "| system | load time (start to ready) | RSS 3 s after ready |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| usher | %v | %.0f MiB |\n", us.load.Round(time.Millisecond), us.rss)
	if op != nil {
		fmt.Fprintf(&b, "| opa | %v | %.0f MiB |\n", op.load.Round(time.Millisecond), op.rss)
	}
	b.WriteString("\n")
	table(&b, "decision", rs)
	row := ratios(&b)
	uh, oh, ceil := find(rs, "usher", "cache-hot closed"), find(rs, "opa", "cache-hot closed"), find(rs, "noop", "ceiling")
	uc, oc := find(rs, "usher", "cache-cold closed"), find(rs, "opa", "cache-cold closed")
	if uh != nil && ceil != nil {
		row("cache-hot throughput, Usher / ceiling", uh.throughput()/ceil.throughput(), "≥ 0.75", uh.throughput() >= 0.75*ceil.throughput())
	}
	if uh != nil && oh != nil {
		row("cache-hot throughput, Usher / OPA", uh.throughput()/oh.throughput(), "≥ 5", uh.throughput() >= 5*oh.throughput())
		row("cache-hot p99, OPA / Usher", oh.q(99)/uh.q(99), "≥ 5", oh.q(99) >= 5*uh.q(99))
		row("cache-hot server CPU per decision, OPA / Usher", oh.cpuPerDecision()/uh.cpuPerDecision(), "≥ 6", oh.cpuPerDecision() >= 6*uh.cpuPerDecision())
	}
	if uc != nil && oc != nil {
		row("cache-cold throughput, Usher / OPA", uc.throughput()/oc.throughput(), "≥ 3", uc.throughput() >= 3*oc.throughput())
	}
	if op != nil {
		row("RSS after load, OPA / Usher", op.rss/us.rss, "≥ 4", op.rss >= 4*us.rss)
		row("load time, OPA / Usher", op.load.Seconds()/us.load.Seconds(), "≥ 1", op.load >= us.load)
	}
	quiet, busy := find(rs, "usher", "redis, read-only"), find(rs, "usher", "redis, ")
	for i := range rs {
		if rs[i].system == "usher" && strings.HasPrefix(rs[i].scenario, "redis, ") && !strings.HasSuffix(rs[i].scenario, "read-only") {
			busy = &rs[i]
		}
	}
	if quiet != nil && busy != nil && busy != quiet {
		row(fmt.Sprintf("throughput with %d changes/s, / read-only", c.changes), busy.throughput()/quiet.throughput(), "≥ 0.8", busy.throughput() >= 0.8*quiet.throughput())
	}
	svg := strings.TrimSuffix(c.out, filepath.Ext(c.out)) + "-latency.svg"
	fmt.Fprintf(&b, "\n![latency percentiles, cache-hot closed loop](%s)\n", filepath.Base(svg))
	b.WriteString("\nScenarios: *cache-hot* repeats 1,000 checks, the ceiling and the systems taking turns in 3 rounds (each phase after its warm-up); *cache-cold* draws from 600,000 distinct checks, so nearly every Usher answer is computed; " +
		"*open* sends at a fixed rate and measures latency from the scheduled send time; *batch* sends the hot checks 100 to a request; " +
		"*redis* is a second Usher following the same state in Redis, read-only and while changes to the hot tenants arrive, alternating in 3 rounds. " +
		"*Mismatches* counts answers, under load, whose reason differs from the one Usher's engine gives in the compare process (– where answers are not compared: the ceiling's fixed answer, batches, and the redis scenarios, whose answers change by design). " +
		"Server CPU is the process's user+system time from /proc over the measured interval.\n")
	if err := os.WriteFile(c.out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	var lines []*result
	for _, r := range []*result{uh, oh, ceil} {
		if r != nil {
			lines = append(lines, r)
		}
	}
	return os.WriteFile(svg, chart(lines), 0o644)
}

// chart draws latency by percentile (log-scaled nines against log latency).
func chart(rs []*result) []byte {
	const W, H, L, T, R, B = 720, 420, 70, 30, 150, 50
	ps := []float64{50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99}
	nines := func(p float64) float64 { return -math.Log10(1 - p/100) }
	maxN := nines(99.99)
	lo, hi := math.Inf(1), 0.0
	for _, r := range rs {
		for _, p := range ps {
			v := math.Max(1, r.q(p))
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	x := func(p float64) float64 { return L + (W-L-R)*nines(p)/maxN }
	y := func(v float64) float64 {
		return T + (H-T-B)*(1-(math.Log10(math.Max(v, lo))-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">Latency by percentile, cache-hot closed loop (log scales)</text>`+"\n", L)
	for v := lo; v <= hi*1.001; v *= 10 {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			L, W-R, y(v), y(v), L-6, y(v)+4, human(v))
	}
	for _, p := range ps {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle">p%g</text>`+"\n",
			x(p), x(p), T, H-B, x(p), H-B+16, p)
	}
	colors := map[string]string{"usher": "#1f77b4", "opa": "#d62728", "noop": "#7f7f7f"}
	for i, r := range rs {
		var pts []string
		for _, p := range ps {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p), y(math.Max(1, r.q(p)))))
		}
		name := r.system
		if name == "noop" {
			name = "no-op ceiling"
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[r.system], strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", W-R+10, T+20*i, colors[r.system], W-R+28, T+20*i+11, name)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">percentile</text>`+"\n", (W-R+L)/2, H-10)
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func human(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%gs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%gms", us/1e3)
	}
	return fmt.Sprintf("%gµs", us)
}
