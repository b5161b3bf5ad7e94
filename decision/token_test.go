package decision_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/usher-authz/usher/decision"
)

func redisToken(t *testing.T, ns, epoch, id string) decision.Token {
	t.Helper()
	tok, ok := decision.RedisToken(ns, epoch, id)
	if !ok {
		t.Fatalf("RedisToken(%q, %q, %q) refused", ns, epoch, id)
	}
	return tok
}

func TestTokenText(t *testing.T) {
	for _, tok := range []decision.Token{
		{Local: true, Space: 0xdeadbeef, Seq: 7},
		{Space: 1, Epoch: 0xffffffff, Ms: 1764643200000, Seq: 12},
		{Space: 0xabc, Ms: 0, Seq: 0},
	} {
		got, err := decision.ParseToken(tok.String())
		if err != nil || got != tok {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", tok, got, err, tok)
		}
	}
	if s := redisToken(t, "usher", "", "5-1").String(); !strings.HasSuffix(s, ".00000000.5-1") {
		t.Errorf("a namespace without an epoch: %q, want epoch 00000000", s)
	}
	for _, bad := range []string{"", "1", "l.1.2", "l.0000000g.1", "l.00000001.-1", "l.00000001.01", "00000001.00000002.5",
		"00000001.00000002.5-", "00000001.00000002.05-1", "00000001.00000002.5-1.x", "0000000A.00000002.5-1",
		"00000001.00000002." + strings.Repeat("9", 60) + "-1"} {
		if tok, err := decision.ParseToken(bad); !errors.Is(err, decision.ErrMalformedToken) {
			t.Errorf("ParseToken(%q) = %+v, %v; want ErrMalformedToken", bad, tok, err)
		}
	}
	if _, ok := decision.RedisToken("usher", "e", "not-an-id"); ok {
		t.Error("RedisToken took a stream id that is not one")
	}
}

// Await answers at once for a state at or past the token, wakes when the
// state reaches it, and otherwise says why not.
func TestAwait(t *testing.T) {
	doc := mustDocument(t, loadSemantics(t).State)
	e := newEngine(t, decision.Config{ConsistencyWait: 50 * time.Millisecond}, doc)
	at := func(epoch, id string) *decision.Snapshot {
		s := decision.NewSnapshot(doc, 2)
		s.Stamp(redisToken(t, "ns", epoch, id))
		return s
	}
	e.SetSnapshot(at("e1", "100-0"))
	for _, tc := range []struct {
		name string
		min  decision.Token
		want string
		err  error
	}{
		{"older", redisToken(t, "ns", "e1", "99-5"), decision.WaitImmediate, nil},
		{"same", redisToken(t, "ns", "e1", "100-0"), decision.WaitImmediate, nil},
		{"ahead", redisToken(t, "ns", "e1", "100-1"), decision.WaitTimeout, decision.ErrStateBehind},
		{"another namespace", redisToken(t, "other", "e1", "1-0"), "", decision.ErrTokenOtherSource},
		{"a local token", decision.Token{Local: true, Space: 1, Seq: 1}, "", decision.ErrTokenOtherSource},
		{"an unknown epoch", redisToken(t, "ns", "e9", "1-0"), decision.WaitTimeout, decision.ErrTokenUnknownEpoch},
	} {
		got, err := e.Await(tc.min)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%s: Await(%s) = %q, %v; want %q, %v", tc.name, tc.min, got, err, tc.want, tc.err)
		}
	}

	// A waiter wakes when the state reaches its token.
	e2 := newEngine(t, decision.Config{ConsistencyWait: time.Minute}, doc)
	e2.SetSnapshot(at("e1", "100-0"))
	done := make(chan error, 1)
	go func() { _, err := e2.Await(redisToken(t, "ns", "e1", "100-3")); done <- err }()
	e2.SetSnapshot(at("e1", "100-2")) // not yet
	e2.SetSnapshot(at("e1", "100-3"))
	if err := <-done; err != nil {
		t.Fatalf("Await after the state reached the token: %v", err)
	}

	// After a reload into a new epoch, tokens of the old one are held.
	e2.SetSnapshot(at("e2", "1-0"))
	if got, err := e2.Await(redisToken(t, "ns", "e1", "900-0")); got != decision.WaitImmediate || err != nil {
		t.Errorf("a token of the epoch before a reload: %q, %v; want immediate", got, err)
	}

	// Decide waits for MinRevision, and refuses what Await refuses.
	req := decision.Request{TenantID: "acme", Subject: decision.Principal{ID: "u1"}, Check: decision.CheckSeat, License: "editor",
		MinRevision: redisToken(t, "ns", "e1", "100-1")}
	if _, err := e.Decide(decision.APIEvaluate, &req); !errors.Is(err, decision.ErrStateBehind) {
		t.Errorf("Decide with a token ahead of the state: %v, want ErrStateBehind", err)
	}
	req.MinRevision = redisToken(t, "ns", "e1", "100-0")
	if d, err := e.Decide(decision.APIEvaluate, &req); err != nil || d.Token != e.Snapshot().TokenText() {
		t.Errorf("Decide with a reached token = %+v, %v", d, err)
	}
}

// A snapshot without a token gets the engine's local one, numbered by its
// revision.
func TestLocalToken(t *testing.T) {
	doc := mustDocument(t, loadSemantics(t).State)
	e := newEngine(t, decision.Config{ConsistencyWait: -1}, doc)
	tok := e.Snapshot().Token()
	if !tok.Local || tok.Seq != 1 {
		t.Fatalf("local token %+v, want local revision 1", tok)
	}
	if got, err := e.Await(decision.Token{Local: true, Space: tok.Space, Seq: 2}); got != decision.WaitTimeout || !errors.Is(err, decision.ErrStateBehind) {
		t.Errorf("a local token ahead, no wait: %q, %v", got, err)
	}
	e.SetSnapshot(decision.NewSnapshot(doc, 2))
	if got, err := e.Await(decision.Token{Local: true, Space: tok.Space, Seq: 2}); got != decision.WaitImmediate || err != nil {
		t.Errorf("a local token reached: %q, %v", got, err)
	}
}
