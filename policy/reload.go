package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-authz/usher/rego"
)

// ReloaderConfig configures a Reloader.
type ReloaderConfig struct {
	// Dir is the policy directory; empty means the embedded rego/ files,
	// which never change.
	Dir string
	// Interval is how often Dir is checked for changes; default 1s.
	Interval time.Duration
	// Apply receives each newly compiled revision.
	Apply func(*Compiled)
	// Logger reports reloads; nil discards.
	Logger *slog.Logger
	// Registerer receives usher_policy_reloads_total; nil registers nothing.
	Registerer prometheus.Registerer
}

// Validate reports every problem of the configuration.
func (c ReloaderConfig) Validate() error {
	var errs []error
	if c.Apply == nil {
		errs = append(errs, errors.New("policy reloader: Apply is required"))
	}
	if c.Interval < 0 {
		errs = append(errs, errors.New("policy reloader: Interval must not be negative"))
	}
	if c.Dir != "" {
		if st, err := os.Stat(c.Dir); err != nil {
			errs = append(errs, errors.New("policy-dir: "+err.Error()))
		} else if !st.IsDir() {
			errs = append(errs, errors.New("policy-dir: "+c.Dir+" is not a directory"))
		}
	}
	return errors.Join(errs...)
}

// Reloader compiles the policy directory and recompiles it when it changes.
type Reloader struct {
	cfg     ReloaderConfig
	fsys    fs.FS
	rev     uint64
	digest  string
	current atomic.Pointer[Compiled]
	ok, bad prometheus.Counter
	lastErr atomic.Pointer[string]
}

// NewReloader validates cfg.
func NewReloader(cfg ReloaderConfig) (*Reloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{cfg: cfg, fsys: rego.FS}
	if cfg.Dir != "" {
		r.fsys = os.DirFS(cfg.Dir)
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_policy_reloads_total", Help: "Policy compilations, by result.",
	}, []string{"result"})
	r.ok, r.bad = reloads.WithLabelValues("success"), reloads.WithLabelValues("failure")
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(reloads)
	}
	return r, nil
}

// Current returns the revision being served, or nil before Load.
func (r *Reloader) Current() *Compiled { return r.current.Load() }

// LastError returns the error of the last failed reload since the last
// good one, or "".
func (r *Reloader) LastError() string {
	if p := r.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Load compiles the policy now. On failure the previous revision (if any)
// stays in force.
func (r *Reloader) Load(ctx context.Context) error {
	srcs, err := Sources(r.fsys, false)
	if err != nil {
		return r.fail(err)
	}
	return r.load(ctx, srcs, digestOf(srcs))
}

// load compiles srcs (whose digest is d) unless they are what serves.
func (r *Reloader) load(ctx context.Context, srcs map[string]string, d string) error {
	if d == r.digest {
		r.lastErr.Store(nil)
		return nil
	}
	c, err := compile(ctx, srcs, d, r.rev+1)
	if err != nil {
		return r.fail(err)
	}
	r.rev, r.digest = c.rev, c.digest
	r.current.Store(c)
	r.lastErr.Store(nil)
	r.ok.Inc()
	r.cfg.Apply(c)
	r.cfg.Logger.Info("policy compiled", "revision", c.rev, "files", len(c.files), "digest", c.digest[:12])
	return nil
}

func (r *Reloader) fail(err error) error {
	r.bad.Inc()
	s := err.Error()
	r.lastErr.Store(&s)
	return err
}

// Run rechecks the directory every Interval until ctx ends. A policy that
// fails to compile is logged and the last good one keeps serving.
func (r *Reloader) Run(ctx context.Context) {
	if r.cfg.Dir == "" {
		return
	}
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	var lastFailed string
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		srcs, err := Sources(r.fsys, false)
		if err != nil {
			r.fail(err)
		} else {
			d := digestOf(srcs)
			if d == lastFailed {
				continue // the same broken edit: reported once
			}
			if err = r.load(ctx, srcs, d); err != nil {
				lastFailed = d
			}
		}
		if err != nil {
			r.cfg.Logger.Error("policy reload rejected; the previous revision keeps serving", "dir", r.cfg.Dir, "error", err)
		}
	}
}

func digestOf(srcs map[string]string) string {
	names := make([]string, 0, len(srcs))
	for n := range srcs {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(srcs[n]))
	}
	return hex.EncodeToString(h.Sum(nil))
}
