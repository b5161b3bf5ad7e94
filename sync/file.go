package statesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/errlines"
)

// FileConfig configures a FileFollower.
type FileConfig struct {
	// Path is the state document to follow. Required.
	Path string
	// Interval is how often the file is checked for changes; default 250ms.
	Interval time.Duration
	// Publish receives each new snapshot. Required.
	Publish func(*decision.Snapshot)
	// Fresh is told whenever the file was checked and the snapshot is
	// current; nil ignores.
	Fresh func(time.Time)
	// Logger reports reloads; nil discards.
	Logger *slog.Logger
	// Registerer receives usher_state_reloads_total; nil registers none.
	Registerer prometheus.Registerer
}

// Validate reports every problem of the configuration.
func (c FileConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("state: a file path is required"))
	}
	if c.Publish == nil {
		errs = append(errs, errors.New("state follower: Publish is required"))
	}
	if c.Interval < 0 {
		errs = append(errs, errors.New("state follower: Interval must not be negative"))
	}
	return errors.Join(errs...)
}

// FileFollower loads a state document and reloads it when it changes. A
// document that fails validation is reported and the last good snapshot
// keeps serving.
type FileFollower struct {
	cfg     FileConfig
	rev     uint64
	seen    fileStamp
	records int // in the last state loaded
	lastErr atomic.Pointer[string]

	loaded, rejected prometheus.Counter
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

// NewFileFollower validates cfg.
func NewFileFollower(cfg FileConfig) (*FileFollower, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Fresh == nil {
		cfg.Fresh = func(time.Time) {}
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_state_reloads_total",
		Help: "Loads of the state file, by result (a rejected edit keeps the last good state)."}, []string{"result"})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(reloads)
	}
	return &FileFollower{cfg: cfg, loaded: reloads.WithLabelValues("success"), rejected: reloads.WithLabelValues("failure")}, nil
}

// LastError returns the error of the last rejected reload since the last
// good one, or "".
func (f *FileFollower) LastError() string {
	if p := f.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Load reads, validates and publishes the document now.
func (f *FileFollower) Load() error {
	start := time.Now()
	st, err := stat(f.cfg.Path)
	if err != nil {
		return f.fail(err)
	}
	f.seen = st
	b, err := os.ReadFile(f.cfg.Path)
	if err != nil {
		return f.fail(fmt.Errorf("read state %s: %w", f.cfg.Path, err))
	}
	doc, err := decision.ParseDocumentBytes(b)
	if err != nil {
		return f.fail(errlines.Prefix("state "+f.cfg.Path+": ", err))
	}
	f.rev++
	snap := decision.NewSnapshot(doc, f.rev)
	f.cfg.Fresh(time.Now())
	f.cfg.Publish(snap)
	f.loaded.Inc()
	f.lastErr.Store(nil)
	f.cfg.Logger.Info("state loaded", "path", f.cfg.Path, "revision", f.rev, "records", doc.Len(),
		"took", time.Since(start).Round(time.Millisecond))
	if f.records > 0 && doc.Len() == 0 {
		f.cfg.Logger.Warn("the state file now holds no records; every check denies", "path", f.cfg.Path, "before", f.records, "now", 0)
	}
	f.records = doc.Len()
	// The raw file and the decoded copies are garbage several times the
	// snapshot's size; return that memory now rather than hold it as RSS
	// (in the background: the new state is already serving).
	go debug.FreeOSMemory()
	return nil
}

func (f *FileFollower) fail(err error) error {
	f.rejected.Inc()
	s := err.Error()
	f.lastErr.Store(&s)
	return err
}

// Run checks the file every Interval until ctx ends, reloading it when its
// size, modification time or inode change.
func (f *FileFollower) Run(ctx context.Context) {
	tick := time.NewTicker(f.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := stat(f.cfg.Path)
		if err != nil {
			if f.LastError() != err.Error() {
				f.fail(err)
				f.cfg.Logger.Error("state file unreadable; the last good state keeps serving", "error", err)
			}
			continue
		}
		if st == f.seen {
			if f.LastError() == "" {
				f.cfg.Fresh(time.Now())
			}
			continue
		}
		if err := f.Load(); err != nil {
			f.cfg.Logger.Error("state reload rejected; the last good state keeps serving", "error", err)
		}
	}
}

func stat(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, fmt.Errorf("state: %w", err)
	}
	return fileStamp{size: fi.Size(), mtime: fi.ModTime(), ino: inode(fi)}, nil
}
