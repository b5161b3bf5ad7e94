package statesync

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/usher-authz/usher/decision"
)

// snapshotHeader is the first line of a snapshot file; the rest is a state
// document, so `usher serve --state FILE` can read the file too.
type snapshotHeader struct {
	Namespace    string `json:"namespace"`
	Position     string `json:"position"`
	Anchored     bool   `json:"anchored"`
	EntriesAdded int64  `json:"entries_added"`
	MaxDeleted   string `json:"max_deleted,omitempty"`
	Epoch        string `json:"epoch"`
	WrittenAt    string `json:"written_at"`
	// ConfirmedAt is when Redis last confirmed this state current. It is
	// rewritten in place (fixed width) while the state stays current, so a
	// restart knows the state's true age, not the time it last changed.
	ConfirmedAt string `json:"confirmed_at"`
}

// stampLayout formats ConfirmedAt at a fixed width, so it can be
// overwritten in place.
const stampLayout = "2006-01-02T15:04:05.000000000Z"

func stamp(t time.Time) string { return t.UTC().Format(stampLayout) }

func (h snapshotHeader) position() position {
	return position{ID: h.Position, Anchored: h.Anchored, EntriesAdded: h.EntriesAdded, MaxDeleted: h.MaxDeleted, Epoch: h.Epoch}
}

// snapshotFile keeps the follower's last state on disk: rewritten at most
// once per interval when the state changes, its confirmation stamp
// refreshed in place while it stays current.
type snapshotFile struct {
	path, ns string
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}
	pending  atomic.Pointer[pendingFile]

	// Owned by run.
	written  string // position of the state the file holds
	stampOff int64  // offset of its confirmed_at value
	stamped  time.Time
}

type pendingFile struct {
	snap *decision.Snapshot
	at   position
}

// offer hands the current state to the writer, which keeps only the newest.
func (s *snapshotFile) offer(snap *decision.Snapshot, at position) {
	if s.path == "" {
		return
	}
	s.pending.Store(&pendingFile{snap: snap, at: at})
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run writes offered states until ctx ends, then writes the last one and
// its confirmation.
func (s *snapshotFile) run(ctx context.Context, confirmed func() *confirmation) {
	tick := time.NewTicker(max(min(s.interval, time.Second), 10*time.Millisecond))
	defer tick.Stop()
	var next time.Time // no rewrite before this
	flush := func(force bool) {
		if p := s.pending.Load(); p != nil && (force || !time.Now().Before(next)) {
			s.pending.CompareAndSwap(p, nil)
			if err := s.write(p, confirmed()); err != nil {
				s.log.Error("snapshot file not written", "path", s.path, "error", err)
			}
			next = time.Now().Add(s.interval)
		}
		if c := confirmed(); c != nil && c.id == s.written && c.at.After(s.stamped) {
			if err := s.confirm(c.at); err != nil {
				s.log.Error("snapshot file not confirmed", "path", s.path, "error", err)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush(true)
			return
		case <-s.kick:
		case <-tick.C:
		}
		flush(false)
	}
}

// write replaces the file atomically (a temporary file renamed into place).
func (s *snapshotFile) write(p *pendingFile, c *confirmation) error {
	h := snapshotHeader{Namespace: s.ns, Position: p.at.ID, Anchored: p.at.Anchored, EntriesAdded: p.at.EntriesAdded,
		MaxDeleted: p.at.MaxDeleted, Epoch: p.at.Epoch, WrittenAt: stamp(time.Now())}
	confirmedAt := time.Now()
	if c != nil && c.id == p.at.ID {
		confirmedAt = c.at
	}
	h.ConfirmedAt = stamp(confirmedAt)
	tmp, err := os.CreateTemp(filepath.Dir(s.path), filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	hb, _ := json.Marshal(h)
	prefix := []byte("{\"usher_snapshot\": ")
	w.Write(prefix)
	w.Write(hb)
	w.WriteString(",\n")
	var body bytes.Buffer
	if _, err := p.snap.Document().WriteTo(&body); err != nil {
		return err
	}
	w.Write(body.Bytes()[1:]) // the document without its opening brace
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return err
	}
	s.written, s.stamped = p.at.ID, confirmedAt
	s.stampOff = int64(len(prefix) + bytes.Index(hb, []byte(`"confirmed_at":"`)) + len(`"confirmed_at":"`))
	return nil
}

// confirm overwrites the file's confirmed_at in place: a few bytes within
// its first block, so a reader sees the old or the new stamp.
func (s *snapshotFile) confirm(t time.Time) error {
	file, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := file.WriteAt([]byte(stamp(t)), s.stampOff); err != nil {
		file.Close()
		return err
	}
	s.stamped = t
	return file.Close()
}

// readSnapshotFile reads a snapshot file of namespace ns, and takes it as
// the file s holds.
func (s *snapshotFile) read(path, ns string) (*decision.Document, snapshotHeader, time.Time, error) {
	var h snapshotHeader
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, h, time.Time{}, err
	}
	var head struct {
		H *snapshotHeader `json:"usher_snapshot"`
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	header := append(bytes.Clone(bytes.TrimSuffix(line, []byte(","))), '}') // b must stay intact
	if err := json.Unmarshal(header, &head); err != nil || head.H == nil {
		return nil, h, time.Time{}, fmt.Errorf("snapshot file %s: no usher_snapshot header", path)
	}
	h = *head.H
	if h.Namespace != ns {
		return nil, h, time.Time{}, fmt.Errorf("snapshot file %s is of namespace %q, not %q", path, h.Namespace, ns)
	}
	at := h.ConfirmedAt
	if at == "" {
		at = h.WrittenAt // a file from before confirmations
	}
	confirmed, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return nil, h, time.Time{}, fmt.Errorf("snapshot file %s: usher_snapshot.confirmed_at: %w", path, err)
	}
	doc, err := decision.DecodeDocumentBytes(b)
	if err != nil {
		return nil, h, time.Time{}, fmt.Errorf("snapshot file %s: %w", path, err)
	}
	const key = `"confirmed_at":"`
	if i := bytes.Index(line, []byte(key)); i >= 0 && len(h.ConfirmedAt) == len(stampLayout) {
		s.written, s.stampOff, s.stamped = h.Position, int64(i+len(key)), confirmed
	}
	return doc, h, confirmed, nil
}

// loadSnapshotFile publishes the state kept on disk, positioned where it
// was written and as old as its last confirmation.
func (f *RedisFollower) loadSnapshotFile() error {
	doc, h, confirmed, err := f.file.read(f.cfg.SnapshotFile, f.k.Namespace())
	if err != nil {
		return err
	}
	f.rev++
	snap := decision.NewSnapshot(doc, f.rev)
	f.cur, f.at = snap, h.position()
	f.cfg.Fresh(confirmed)
	at := f.at
	f.stamp(snap, at)
	f.view.Store(&at)
	f.cfg.Publish(snap)
	f.log.Info("serving the snapshot file until redis answers", "path", f.cfg.SnapshotFile, "records", doc.Len(),
		"position", f.at.ID, "confirmed_at", h.ConfirmedAt, "age", time.Since(confirmed).Round(time.Millisecond).String())
	return nil
}
