package statesync

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Why a follower reloads in full: the closed label set of
// usher_sync_full_reloads_total.
const (
	// ReloadTrimmed: the stream was trimmed past our position (we fell
	// further behind than it reaches).
	ReloadTrimmed = "trimmed"
	// ReloadRolledBack: Redis holds an older stream than we applied (a
	// restart that lost its last writes, a restore of an older file).
	ReloadRolledBack = "rolled_back"
	// ReloadLost: the namespace's stream or epoch is gone (Redis lost its
	// data, or someone deleted the keys).
	ReloadLost = "lost"
	// ReloadEpochChanged: the namespace has another epoch than the one we
	// loaded (it was recreated, or a writer asked every sidecar to reload).
	ReloadEpochChanged = "epoch_changed"
	// ReloadDeleted: entries after our position were deleted (XDEL).
	ReloadDeleted = "deleted"
)

// ReloadReasons lists every reason, in documentation order.
var ReloadReasons = []string{ReloadTrimmed, ReloadRolledBack, ReloadLost, ReloadEpochChanged, ReloadDeleted}

// streamView is what Redis says of the namespace at one moment.
type streamView struct {
	epoch  string // "" when the namespace has none
	exists bool   // the stream key exists
	info   redis.XInfoStream
	atPos  bool // the entry at the position asked about still exists
}

// streamCmds are the queued commands that make a streamView.
type streamCmds struct {
	epoch *redis.StringCmd
	at    *redis.XMessageSliceCmd
	info  *redis.XInfoStreamCmd
}

// queue adds the commands to pipe; the entry at p is asked about only when
// p is anchored.
func (c *streamCmds) queue(ctx context.Context, pipe redis.Pipeliner, k Keys, p position) {
	c.epoch = pipe.Get(ctx, k.Epoch())
	if p.Anchored {
		c.at = pipe.XRangeN(ctx, k.Changes(), p.ID, p.ID, 1)
	}
	c.info = pipe.XInfoStream(ctx, k.Changes())
}

func (c *streamCmds) result() (streamView, error) {
	var v streamView
	epoch, err := c.epoch.Result()
	switch {
	case err == nil:
		v.epoch = epoch
	case !errors.Is(err, redis.Nil):
		return v, err
	}
	info, err := c.info.Result()
	switch {
	case err == nil:
		v.exists, v.info = true, *info
	case !isNoSuchKey(err):
		return v, err
	}
	if c.at != nil {
		got, err := c.at.Result()
		if err != nil {
			return v, err
		}
		v.atPos = len(got) > 0
	}
	return v, nil
}

func isNoSuchKey(err error) bool { return err != nil && strings.Contains(err.Error(), "no such key") }

// gap says why the stream, as v shows it, cannot be proven to continue from
// p without loss; "" when it can. v must have been taken after the read
// that p's events came from: trimming only ever removes the oldest
// entries, so while the entry at p exists, nothing after it was trimmed.
func (p position) gap(v streamView) string {
	// A namespace without an epoch gets one with the next write of Usher's
	// writer: adopted, when the stream shows it continuous.
	if v.epoch != p.Epoch && p.Epoch != "" {
		if v.epoch == "" {
			return ReloadLost
		}
		return ReloadEpochChanged
	}
	if !v.exists {
		if p.ID == "0-0" && p.EntriesAdded == 0 {
			return "" // a namespace that never had a change event
		}
		return ReloadLost
	}
	if v.info.EntriesAdded < p.EntriesAdded || streamLess(v.info.LastGeneratedID, p.ID) {
		return ReloadRolledBack
	}
	md := v.info.MaxDeletedEntryID
	// Unanchored, every entry in the stream came after p (ids only grow):
	// the stream must still hold each one added since.
	if !p.Anchored && v.info.Length < v.info.EntriesAdded-p.EntriesAdded {
		return ReloadTrimmed
	}
	if p.Anchored && !v.atPos {
		switch {
		case v.info.Length == 0 || streamLess(p.ID, v.info.FirstEntry.ID):
			return ReloadTrimmed
		case md != "" && !streamLess(md, p.ID):
			return ReloadDeleted
		}
		return ReloadRolledBack // a hole where our entry was: Redis lost it and wrote on
	}
	if md != p.MaxDeleted && md != "" && streamLess(p.ID, md) {
		return ReloadDeleted
	}
	return ""
}
