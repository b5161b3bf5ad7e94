package statesync_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/semtest"
	statesync "github.com/usher-authz/usher/sync"
)

func semanticsState(t *testing.T) string {
	t.Helper()
	return string(semtest.State(t))
}

func TestLoadExportRoundTrip(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	doc := parse(t, semanticsState(t))
	res, err := w.Load(ctx, doc, false)
	if err != nil {
		t.Fatal(err)
	}
	tenants := len(doc.ByTenant())
	if res.Tenants != tenants || res.Records != doc.Len() {
		t.Errorf("Load = %+v, want %d tenants and %d records", res, tenants, doc.Len())
	}
	got, err := w.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(render(t, doc), render(t, got)); diff != "" {
		t.Errorf("export differs from the loaded document (-loaded +exported):\n%s", diff)
	}
	k := w.Keys()
	if n := c.HLen(ctx, k.Records("acme", decision.KindAssignment)).Val(); n != 24 {
		t.Errorf("HLEN acme assignments = %d, want 24", n)
	}
	if m := c.SMembers(ctx, k.Tenants()).Val(); len(m) != tenants {
		t.Errorf("tenants = %v, want the document's %d", m, tenants)
	}
	events := c.XRange(ctx, k.Changes(), "-", "+").Val()
	if len(events) != tenants || events[0].Values["op"] != "tenant" {
		t.Errorf("stream after load = %v, want one tenant event per tenant", events)
	}
	// The load's revision names its last event in the namespace's epoch.
	epoch := c.Get(ctx, k.Epoch()).Val()
	if want, _ := decision.RedisToken(ns, epoch, events[len(events)-1].ID); epoch == "" || res.Revision != want {
		t.Errorf("Load's revision %s, want %s (epoch %q, last event %s)", res.Revision, want, epoch, events[len(events)-1].ID)
	}
	rev, err := w.Put(ctx, decision.KindGroup, []byte(`{"id": "g_new", "tenant_id": "acme", "members": []}`))
	last := c.XRevRangeN(ctx, k.Changes(), "+", "-", 1).Val()
	if want, _ := decision.RedisToken(ns, epoch, last[0].ID); err != nil || rev != want {
		t.Errorf("Put's revision %s, %v; want %s", rev, err, want)
	}
	if now, err := w.Revision(ctx); err != nil || now != rev {
		t.Errorf("Revision() = %s, %v; want the last write's %s", now, err, rev)
	}
	if _, err := w.Delete(ctx, decision.KindGroup, "acme", "g_new"); err != nil {
		t.Fatal(err)
	}
	if keys := c.Keys(ctx, "{"+ns+"}:stage:*").Val(); len(keys) != 0 {
		t.Errorf("staging keys left behind: %v", keys)
	}
}

func TestLoadMergeAndReplace(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	base := `{"licenses": [{"id": "l1", "tenant_id": "a", "name": "editor"}, {"id": "l1", "tenant_id": "b", "name": "editor"}],
	  "assignments": [{"id": "s1", "tenant_id": "a", "license_id": "l1", "assignee_id": "u1"}]}`
	if _, err := w.Load(ctx, parse(t, base), false); err != nil {
		t.Fatal(err)
	}
	// A partial document merges: it may name a license already in Redis.
	more := `{"assignments": [{"id": "s2", "tenant_id": "a", "license_id": "l1", "assignee_id": "u2"},
	  {"id": "s1", "tenant_id": "a", "license_id": "l1", "assignee_id": "u1", "status": "suspended"}]}`
	if _, err := w.Load(ctx, parse(t, more), false); err != nil {
		t.Fatal(err)
	}
	got, err := w.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Assignments) != 2 || got.Assignments[0].Status != decision.StatusSuspended || len(got.Licenses) != 2 {
		t.Errorf("after merge: %d assignments (s1 %v), %d licenses; want s1 suspended, s2 added, both licenses kept",
			len(got.Assignments), got.Assignments[0].Status, len(got.Licenses))
	}
	// --replace: Redis holds exactly the file; tenant b disappears.
	only := `{"licenses": [{"id": "l9", "tenant_id": "a", "name": "viewer"}]}`
	if _, err := w.Load(ctx, parse(t, only), true); err != nil {
		t.Fatal(err)
	}
	got, err = w.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(render(t, parse(t, only)), render(t, got)); diff != "" {
		t.Errorf("after replace (-file +redis):\n%s", diff)
	}
	if m := c.SMembers(ctx, w.Keys().Tenants()).Val(); len(m) != 1 || m[0] != "a" {
		t.Errorf("tenants after replace = %v, want [a]", m)
	}
	if n := c.Exists(ctx, w.Keys().Records("b", decision.KindLicense), w.Keys().Records("a", decision.KindAssignment)).Val(); n != 0 {
		t.Errorf("%d emptied hashes remain after replace", n)
	}
}

func TestInvalidWritesNothing(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := semanticsWriter(t, c, ns)
	ctx := context.Background()
	before := dump(t, c, ns)
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"put bad field", func() error {
			return errOf(w.Put(ctx, decision.KindLicense, []byte(`{"id": "l", "tenant_id": "acme", "name": "x", "seat_limit": -3}`)))
		}, `license (id "l"): seat_limit: must be a non-negative integer or null, got -3`},
		{"put not json", func() error { return errOf(w.Put(ctx, decision.KindGroup, []byte(`{"id": `))) }, "must be a JSON object"},
		{"put dangling license", func() error {
			return errOf(w.Put(ctx, decision.KindAssignment, []byte(`{"id": "a99", "tenant_id": "acme", "license_id": "lic_g", "assignee_id": "u1"}`)))
		}, `assignment (id "a99"): license_id: must name a license of tenant "acme", no license "lic_g" there`},
		{"put dangling group member", func() error {
			return errOf(w.Put(ctx, decision.KindGroup, []byte(`{"id": "g9", "tenant_id": "acme", "members": [{"id": "g_nope", "type": "group"}]}`)))
		}, `group (id "g9"): members[0].id: must name a group of tenant "acme", no group "g_nope" there`},
		{"delete missing", func() error { return errOf(w.Delete(ctx, decision.KindEntitlement, "acme", "e404")) }, `no entitlement "e404" in tenant "acme"`},
		{"delete used license", func() error { return errOf(w.Delete(ctx, decision.KindLicense, "acme", "lic_viewer")) }, `license "lic_viewer" of tenant "acme" is still named by assignment a19`},
		{"delete nested group", func() error { return errOf(w.Delete(ctx, decision.KindGroup, "acme", "g_team")) }, `group "g_team" of tenant "acme" is still named by group g_eng`},
		{"load breaking a rule", func() error {
			_, err := w.Load(ctx, parse(t, `{"assignments": [{"id": "a50", "tenant_id": "acme", "license_id": "lic_missing", "assignee_id": "u1"}]}`), false)
			return err
		}, `license_id: must name a license of tenant "acme", no license "lic_missing" there`},
		{"load duplicating an id", func() error {
			_, err := w.Load(ctx, parse(t, `{"licenses": [{"id": "x", "tenant_id": "new", "name": "a"}, {"id": "x", "tenant_id": "new", "name": "b"}]}`), false)
			return err
		}, `id: must be unique among licenses of tenant "new"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			if diff := cmp.Diff(before, dump(t, c, ns)); diff != "" {
				t.Errorf("a refused write changed Redis (-before +after):\n%s", diff)
			}
		})
	}
	if _, err := w.Delete(ctx, decision.KindEntitlement, "acme", "e404"); !errors.Is(err, statesync.ErrNotFound) {
		t.Errorf("Delete of a missing record: %v, want ErrNotFound", err)
	}
}

func TestPutDeleteEvents(t *testing.T) {
	c, ns, _ := testRedis(t)
	w := newWriter(t, c, ns)
	ctx := context.Background()
	if _, err := w.Put(ctx, decision.KindLicense, []byte(`{"id": "l1", "tenant_id": "t1", "name": "editor", "extra": true}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, decision.KindAssignment, []byte(`{"id": "a1", "tenant_id": "t1", "license_id": "l1", "assignee_id": "u1", "assignee_type": "user"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Delete(ctx, decision.KindAssignment, "t1", "a1"); err != nil {
		t.Fatal(err)
	}
	k := w.Keys()
	stored := c.HGet(ctx, k.Records("t1", decision.KindLicense), "l1").Val()
	if !strings.Contains(stored, `"seat_limit":null`) || strings.Contains(stored, "extra") {
		t.Errorf("stored license = %s, want the canonical form without unknown fields", stored)
	}
	events := c.XRange(ctx, k.Changes(), "-", "+").Val()
	var got []string
	for _, e := range events {
		got = append(got, e.Values["op"].(string)+" "+e.Values["kind"].(string)+" "+e.Values["tenant"].(string)+"/"+e.Values["id"].(string))
		if e.Values["at"] == nil {
			t.Errorf("event %s has no at", e.ID)
		}
	}
	want := []string{"put license t1/l1", "put assignment t1/a1", "delete assignment t1/a1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if rec, _ := events[1].Values["record"].(string); !strings.Contains(rec, `"assignee_type":"person"`) {
		t.Errorf("put event record = %s, want the canonical record", rec)
	}
}

// errOf drops a write's revision token.
func errOf(_ decision.Token, err error) error { return err }
