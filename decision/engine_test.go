package decision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/semtest"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

type semanticsCase struct {
	Name     string `json:"name"`
	TenantID string `json:"tenant_id"`
	AppID    string `json:"app_id"`
	Subject  struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"subject"`
	Seat *struct {
		License string `json:"license"`
	} `json:"seat"`
	Entitlement *struct {
		AssetID string `json:"asset_id"`
		Type    string `json:"type"`
	} `json:"entitlement"`
	At    string         `json:"at"`
	Want  string         `json:"want"`
	Grant decision.Grant `json:"grant"`
}

func (c semanticsCase) request(t testing.TB, defaultAt string) *decision.Request {
	t.Helper()
	pt, ok := decision.ParsePrincipalType(c.Subject.Type)
	if !ok {
		t.Fatalf("%s: bad subject type %q", c.Name, c.Subject.Type)
	}
	r := &decision.Request{TenantID: c.TenantID, AppID: c.AppID, Subject: decision.Principal{Type: pt, ID: c.Subject.ID}}
	if c.Seat != nil {
		r.Check, r.License = decision.CheckSeat, c.Seat.License
	} else {
		r.Check, r.AssetID, r.Type = decision.CheckEntitlement, c.Entitlement.AssetID, c.Entitlement.Type
	}
	at := c.At
	if at == "" {
		at = defaultAt
	}
	r.At = mustInstant(t, at)
	return r
}

func mustInstant(t testing.TB, s string) decision.Instant {
	t.Helper()
	i, err := decision.ParseInstant(s)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

type semantics struct {
	State json.RawMessage `json:"state"`
	At    string          `json:"at"`
	Cases []semanticsCase `json:"cases"`
}

func loadSemantics(t testing.TB) semantics {
	t.Helper()
	var s semantics
	if err := json.Unmarshal(semtest.Raw(t), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func mustDocument(t testing.TB, raw []byte) *decision.Document {
	t.Helper()
	doc, err := decision.ParseDocument(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func shippedPolicy(t testing.TB) *policy.Compiled {
	t.Helper()
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newEngine(t testing.TB, cfg decision.Config, doc *decision.Document) *decision.Engine {
	t.Helper()
	e, err := decision.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.SetPolicy(shippedPolicy(t))
	e.SetSnapshot(decision.NewSnapshot(doc, 1))
	return e
}

// TestSemantics runs every case of testdata/semantics.json twice: once
// computed (cache miss) and once from the cache.
func TestSemantics(t *testing.T) {
	s := loadSemantics(t)
	e := newEngine(t, decision.Config{}, mustDocument(t, s.State))
	for _, c := range s.Cases {
		t.Run(c.Name, func(t *testing.T) {
			req := c.request(t, s.At)
			for _, wantCached := range []bool{false, true} {
				d, err := e.Decide(decision.APIEvaluate, req)
				if err != nil {
					t.Fatal(err)
				}
				wantAllowed := c.Want == "seat_assigned" || c.Want == "seat_assigned_via_group" || c.Want == "entitled" || c.Want == "entitled_via_group"
				if d.Reason.String() != c.Want || d.Allowed != wantAllowed || d.Grant != c.Grant || d.Cached != wantCached {
					t.Errorf("Decide(%+v) = {allowed %v, reason %s, grant %+v, cached %v}, want {%v, %s, %+v, %v}",
						*req, d.Allowed, d.Reason, d.Grant, d.Cached, wantAllowed, c.Want, c.Grant, wantCached)
				}
				e.WaitCache()
			}
		})
	}
}

// TestCacheNeverStale checks that a cached decision dies at the first
// validity boundary of the records behind it and with its tenant's revision.
func TestCacheNeverStale(t *testing.T) {
	s := loadSemantics(t)
	var clock time.Time
	e := newEngine(t, decision.Config{Now: func() time.Time { return clock }}, mustDocument(t, s.State))
	ask := func(subject, license string) decision.Decision {
		t.Helper()
		d, err := e.Decide(decision.APIEvaluate, &decision.Request{TenantID: "acme",
			Subject: decision.Principal{ID: subject}, Check: decision.CheckSeat, License: license})
		if err != nil {
			t.Fatal(err)
		}
		e.WaitCache()
		return d
	}
	f := func(now, subject, license string, wantReason decision.Reason, wantCached bool) {
		t.Helper()
		clock = time.Time(mustTime(t, now))
		d := ask(subject, license)
		if d.Reason != wantReason || d.Cached != wantCached {
			t.Errorf("at %s Decide(%s, %s) = %s cached=%v, want %s cached=%v", now, subject, license, d.Reason, d.Cached, wantReason, wantCached)
		}
	}
	// a19 is in effect over [2026-05-01, 2026-07-01).
	f("2026-04-30T00:00:00Z", "u2", "viewer", decision.AssignmentNotYetValid, false)
	f("2026-04-30T23:59:59Z", "u2", "viewer", decision.AssignmentNotYetValid, true)
	f("2026-05-01T00:00:00Z", "u2", "viewer", decision.SeatAssigned, false)
	f("2026-06-30T12:00:00Z", "u2", "viewer", decision.SeatAssigned, true)
	f("2026-05-02T00:00:00Z", "u2", "viewer", decision.SeatAssigned, true)
	f("2026-07-01T00:00:00Z", "u2", "viewer", decision.AssignmentExpired, false)
	f("2030-01-01T00:00:00Z", "u2", "viewer", decision.AssignmentExpired, true)
	// The key holds one window at a time: the newer one replaced [05-01, 07-01).
	f("2026-05-02T00:00:00Z", "u2", "viewer", decision.SeatAssigned, false)

	// A new revision of the tenant retires its entries; other tenants keep theirs.
	f("2026-06-01T00:00:00Z", "u1", "editor", decision.SeatAssigned, false)
	d, err := e.Decide(decision.APIEvaluate, &decision.Request{TenantID: "globex", Subject: decision.Principal{ID: "u1"}, Check: decision.CheckSeat, License: "editor"})
	if err != nil || d.Reason != decision.SeatAssigned {
		t.Fatalf("globex Decide = %v, %v", d.Reason, err)
	}
	e.WaitCache()
	acme := e.Snapshot().Tenant("acme").TenantDocument()
	var kept []*decision.Assignment
	for _, a := range acme.Assignments {
		if a.ID != "a01" {
			kept = append(kept, a)
		}
	}
	acme.Assignments = kept
	e.SetSnapshot(e.Snapshot().WithTenants(2, map[string]*decision.Document{"acme": acme}))
	f("2026-06-01T00:00:00Z", "u1", "editor", decision.NoAssignment, false)
	d, err = e.Decide(decision.APIEvaluate, &decision.Request{TenantID: "globex", Subject: decision.Principal{ID: "u1"}, Check: decision.CheckSeat, License: "editor"})
	if err != nil || d.Reason != decision.SeatAssigned || !d.Cached || d.Revision != 2 {
		t.Errorf("globex after acme changed: reason %v cached %v revision %d err %v, want seat_assigned from cache at revision 2", d.Reason, d.Cached, d.Revision, err)
	}
	// A new policy revision retires every entry.
	p, err := policy.Compile(context.Background(), rego.FS, 2)
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(p)
	f("2026-06-01T00:00:00Z", "u1", "editor", decision.NoAssignment, false)
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestDecideWithoutStateOrPolicy(t *testing.T) {
	e, err := decision.NewEngine(decision.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := &decision.Request{TenantID: "acme", Subject: decision.Principal{ID: "u1"}, License: "editor"}
	if _, err := e.Decide(decision.APIEvaluate, req); err != decision.ErrNoState {
		t.Errorf("Decide without state: err = %v, want ErrNoState", err)
	}
	e.SetSnapshot(decision.NewSnapshot(&decision.Document{}, 1))
	if _, err := e.Decide(decision.APIEvaluate, req); err != decision.ErrNoPolicy {
		t.Errorf("Decide without policy: err = %v, want ErrNoPolicy", err)
	}
}

// TestCacheHitAllocs pins the cache-hit path at zero allocations.
func TestCacheHitAllocs(t *testing.T) {
	s := loadSemantics(t)
	e := newEngine(t, decision.Config{}, mustDocument(t, s.State))
	req := &decision.Request{TenantID: "acme", Subject: decision.Principal{ID: "u2"}, Check: decision.CheckEntitlement, AssetID: "doc1", Type: "read_only"}
	if _, err := e.Decide(decision.APIEvaluate, req); err != nil {
		t.Fatal(err)
	}
	e.WaitCache()
	allocs := testing.AllocsPerRun(1000, func() {
		d, err := e.Decide(decision.APIEvaluate, req)
		if err != nil || !d.Cached {
			t.Fatalf("Decide = cached %v, err %v; want a cache hit", d.Cached, err)
		}
	})
	if allocs != 0 {
		t.Errorf("cache hit allocates %v times per decision, want 0", allocs)
	}
}

// Times of every year from 0001 to 9999 order correctly (Unix nanoseconds
// wrap outside 1678–2262), and an "at" of the Unix epoch is that moment,
// not "now".
func TestTimesAcrossTheYears(t *testing.T) {
	doc := mustDocument(t, []byte(`{"licenses": [
	  {"id": "never", "tenant_id": "t", "name": "never", "expires_at": "9999-12-31T23:59:59Z"},
	  {"id": "later", "tenant_id": "t", "name": "later", "valid_from": "2262-04-12T00:00:00Z"},
	  {"id": "old", "tenant_id": "t", "name": "old", "valid_from": "0001-01-01T00:00:00Z", "expires_at": "1600-01-01T00:00:00Z"}],
	 "assignments": [
	  {"id": "a1", "tenant_id": "t", "license_id": "never", "assignee_id": "u"},
	  {"id": "a2", "tenant_id": "t", "license_id": "later", "assignee_id": "u"},
	  {"id": "a3", "tenant_id": "t", "license_id": "old", "assignee_id": "u", "expires_at": "2026-09-30T00:00:00Z"},
	  {"id": "a4", "tenant_id": "t", "license_id": "never", "assignee_id": "bob", "expires_at": "2026-09-30T00:00:00Z"}]}`))
	e := newEngine(t, decision.Config{CacheEntries: -1}, doc)
	for _, c := range []struct{ who, license, at, want string }{
		{"u", "never", "", "seat_assigned"},
		{"u", "never", "9999-12-31T23:59:58Z", "seat_assigned"},
		{"u", "never", "9999-12-31T23:59:59Z", "license_expired"},
		{"u", "later", "", "license_not_yet_valid"},
		{"u", "later", "2262-04-11T23:59:59.999999Z", "license_not_yet_valid"},
		{"u", "later", "2300-01-01T00:00:00Z", "seat_assigned"},
		{"u", "old", "1500-06-01T00:00:00Z", "seat_assigned"},
		{"u", "old", "", "license_expired"},
		{"bob", "never", "2300-01-01T00:00:00Z", "assignment_expired"},
		{"bob", "never", "1970-01-01T00:00:00Z", "seat_assigned"},
		{"bob", "never", "", "assignment_expired"}, // now: after 2026-09-30
	} {
		req := decision.Request{TenantID: "t", Subject: decision.Principal{ID: c.who}, Check: decision.CheckSeat, License: c.license}
		if c.at != "" {
			req.At = mustInstant(t, c.at)
		}
		d, err := e.Decide(decision.APIEvaluate, &req)
		if err != nil || d.Reason.String() != c.want {
			t.Errorf("Decide(%s %s at %q) = %v, %v; want %s", c.who, c.license, c.at, d.Reason, err, c.want)
		}
	}
}

func TestParseInstant(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z", ""},
		{"2026-12-01t10:00:00z", "2026-12-01T10:00:00Z", ""},
		{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", ""},
		{"9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z", ""},
		{"1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", ""},
		{"2026-12-01T10:00:00.123456789+02:00", "2026-12-01T08:00:00.123456Z", ""},
		{"2016-12-31T23:59:60Z", "", "without a leap second"},
		{"0001-01-01T00:00:00+01:00", "", "in the years 0001 to 9999"},
		{"10000-01-01T00:00:00Z", "", "must be an RFC 3339 time"},
		{"yesterday", "", "must be an RFC 3339 time"},
	} {
		got, err := decision.ParseInstant(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseInstant(%q) = %v, %v; want an error saying %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || string(got.AppendJSON(nil)) != `"`+c.want+`"` {
			t.Errorf("ParseInstant(%q) = %s, %v; want %s", c.in, got.AppendJSON(nil), err, c.want)
		}
	}
	if long := strings.Repeat("x", 100_000); len(decision.Quote(long)) > 100 {
		t.Errorf("Quote of 100 KB is %d bytes long, want it cut", len(decision.Quote(long)))
	}
}

// The cache holds at most CacheMaxBytes of entries whatever the ids: a
// flood of unique, long subject ids leaves the heap flat.
func TestCacheBoundedInBytes(t *testing.T) {
	doc := mustDocument(t, []byte(`{"licenses": [{"id": "l", "tenant_id": "t", "name": "l"}]}`))
	e := newEngine(t, decision.Config{CacheEntries: 1000, CacheMaxBytes: 1 << 20}, doc)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	pad := strings.Repeat("x", 240)
	for i := range 100_000 {
		req := decision.Request{TenantID: "t", Subject: decision.Principal{ID: pad + strconv.Itoa(i)}, Check: decision.CheckSeat, License: "l"}
		if _, err := e.Decide(decision.APIEvaluate, &req); err != nil {
			t.Fatal(err)
		}
	}
	// 100,000 entries of ~500 bytes would be ~50 MB.
	if grew := int64(heap()) - int64(before); grew > 8<<20 {
		t.Errorf("heap grew %d MiB over 100,000 unique 250-byte ids with a 1 MiB cache, want under 8 MiB", grew>>20)
	}
}
