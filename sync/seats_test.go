package statesync_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/usher-authz/usher/decision"
	statesync "github.com/usher-authz/usher/sync"
)

// The writer refuses an assignment that would grant a seat past
// seat_limit + seat_overage, changing nothing, and two writers racing for
// the last seat cannot both take it.
func TestWriterRefusesSeatsPastTheLimit(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	doc := parse(t, `{"licenses": [{"id": "lic", "tenant_id": "t", "name": "two", "seat_limit": 2, "seat_overage": 1},
		{"id": "open", "tenant_id": "t", "name": "open"}],
		"groups": [{"id": "g", "tenant_id": "t", "members": [{"id": "p1", "type": "person"}, {"id": "p2", "type": "person"}]}]}`)
	if _, err := w.Load(ctx, doc, false); err != nil {
		t.Fatal(err)
	}
	put := func(id, assignee, typ string, extra string) error {
		_, err := w.Put(ctx, decision.KindAssignment, []byte(fmt.Sprintf(
			`{"id": %q, "tenant_id": "t", "license_id": "lic", "assignee_id": %q, "assignee_type": %q%s}`, id, assignee, typ, extra)))
		return err
	}
	for _, a := range [][2]string{{"a1", "g"}, {"a2", "p1"}, {"a3", "p3"}} { // p1 counts once
		typ := "person"
		if a[1] == "g" {
			typ = "group"
		}
		if err := put(a[0], a[1], typ, ""); err != nil {
			t.Fatalf("put %s (within limit and overage): %v", a[0], err)
		}
	}
	before := c.HGetAll(ctx, w.Keys().Records("t", decision.KindAssignment)).Val()
	events := c.XLen(ctx, w.Keys().Changes()).Val()
	err := put("a4", "p4", "person", "")
	if !errors.Is(err, statesync.ErrSeatLimitExceeded) || !strings.Contains(err.Error(),
		`assignment "a4" would grant 4 seats of license "lic" of tenant "t", which has 3 (seat_limit 2 + seat_overage 1) and 3 in use`) {
		t.Fatalf("a fourth seat: %v", err)
	}
	if after := c.HGetAll(ctx, w.Keys().Records("t", decision.KindAssignment)).Val(); len(after) != len(before) || c.XLen(ctx, w.Keys().Changes()).Val() != events {
		t.Errorf("a refused put changed Redis: %d assignments (was %d), stream %d (was %d)", len(after), len(before), c.XLen(ctx, w.Keys().Changes()).Val(), events)
	}
	// What grants no new seat is written: a denial, an inactive
	// assignment, another assignment of a person already counted.
	for _, a := range []struct{ id, who, extra string }{
		{"d1", "p4", `, "reservation": "denied"`}, {"s1", "p5", `, "status": "suspended"`}, {"again", "p3", ""},
	} {
		if err := put(a.id, a.who, "person", a.extra); err != nil {
			t.Errorf("put %s: %v", a.id, err)
		}
	}

	// Racing writers for one free seat of another license: exactly one wins.
	lic := `{"id": "race", "tenant_id": "t", "name": "race", "seat_limit": 1}`
	if _, err := w.Put(ctx, decision.KindLicense, []byte(lic)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, refused := 0, 0
	for i := range 8 {
		wg.Go(func() {
			ww := newWriter(t, c, ns)
			_, err := ww.Put(ctx, decision.KindAssignment, []byte(fmt.Sprintf(
				`{"id": "r%d", "tenant_id": "t", "license_id": "race", "assignee_id": "racer%d"}`, i, i)))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, statesync.ErrSeatLimitExceeded), errors.Is(err, statesync.ErrConflict):
				refused++
			default:
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if won != 1 || refused != 7 {
		t.Errorf("8 writers racing for 1 seat: %d won, %d refused; want 1 and 7", won, refused)
	}
}
