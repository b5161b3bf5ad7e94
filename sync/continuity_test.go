package statesync

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestGap(t *testing.T) {
	at := position{ID: "100-0", Anchored: true, EntriesAdded: 50, MaxDeleted: "0-0", Epoch: "e1"}
	stream := func(first, last string, length, added int64, maxDeleted string) redis.XInfoStream {
		return redis.XInfoStream{FirstEntry: redis.XMessage{ID: first}, LastGeneratedID: last, Length: length, EntriesAdded: added, MaxDeletedEntryID: maxDeleted}
	}
	ok := streamView{epoch: "e1", exists: true, info: stream("10-0", "120-0", 40, 60, "0-0"), atPos: true}
	with := func(f func(*streamView)) streamView { v := ok; f(&v); return v }
	for _, c := range []struct {
		name string
		p    position
		v    streamView
		want string
	}{
		{"continuous", at, ok, ""},
		{"nothing new", at, with(func(v *streamView) { v.info = stream("10-0", "100-0", 30, 50, "0-0") }), ""},
		{"epoch changed", at, with(func(v *streamView) { v.epoch = "e2" }), ReloadEpochChanged},
		{"epoch gone", at, with(func(v *streamView) { v.epoch = "" }), ReloadLost},
		{"stream gone", at, with(func(v *streamView) { v.exists, v.info = false, redis.XInfoStream{} }), ReloadLost},
		{"trimmed past us", at, with(func(v *streamView) { v.atPos, v.info = false, stream("105-0", "300-0", 50, 250, "0-0") }), ReloadTrimmed},
		{"trimmed empty", at, with(func(v *streamView) { v.atPos, v.info = false, stream("", "300-0", 0, 250, "0-0") }), ReloadTrimmed},
		{"last write lost, one more written", at, with(func(v *streamView) { v.atPos, v.info = false, stream("10-0", "130-0", 30, 50, "0-0") }), ReloadRolledBack},
		{"restored older", at, with(func(v *streamView) { v.atPos, v.info = false, stream("10-0", "90-0", 25, 45, "0-0") }), ReloadRolledBack},
		{"fewer entries added", at, with(func(v *streamView) { v.info.EntriesAdded = 49 }), ReloadRolledBack},
		{"our entry deleted", at, with(func(v *streamView) { v.atPos, v.info.MaxDeletedEntryID = false, "100-0" }), ReloadDeleted},
		{"a later entry deleted", at, with(func(v *streamView) { v.info.MaxDeletedEntryID = "110-0" }), ReloadDeleted},
		{"an earlier entry deleted", at, with(func(v *streamView) { v.info.MaxDeletedEntryID = "50-0" }), ""},
		{"deleted before we loaded", position{ID: "100-0", Anchored: true, EntriesAdded: 50, MaxDeleted: "110-0", Epoch: "e1"},
			with(func(v *streamView) { v.info.MaxDeletedEntryID = "110-0" }), ""},
		{"no epoch yet, adopted", position{ID: "100-0", Anchored: true, EntriesAdded: 50, MaxDeleted: "0-0"}, ok, ""},
		{"never had events", position{ID: "0-0"}, streamView{}, ""},
		{"never had events, now some", position{ID: "0-0"}, streamView{exists: true, info: stream("5-0", "9-0", 3, 3, "0-0")}, ""},
		{"unanchored, trimmed", position{ID: "0-0"}, streamView{exists: true, info: stream("7-0", "9-0", 2, 3, "0-0")}, ReloadTrimmed},
		{"unanchored at an emptied stream", position{ID: "100-0", EntriesAdded: 50},
			streamView{exists: true, info: stream("110-0", "120-0", 10, 60, "0-0")}, ""},
	} {
		if got := c.p.gap(c.v); got != c.want {
			t.Errorf("%s: gap(%+v) = %q, want %q", c.name, c.v, got, c.want)
		}
	}
}
