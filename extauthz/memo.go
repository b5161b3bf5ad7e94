package extauthz

import (
	"hash/maphash"
	"strings"
	"sync"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/policy"
)

// The route policy is Rego evaluated per request, most of a Check's cost.
// Its answer is a function of its input and of the answers its usher.seat
// and usher.entitled calls get (when it calls no other nondeterministic
// built-in), so a memo keyed by the input remembers the calls one
// evaluation made and its outcome. A later request with the same input
// makes the same calls again (decision-cache hits, logged and counted as
// always) and, when each answers as recorded, takes the recorded outcome
// with the new decision ids: the evaluation would have taken the same path.
// Any other answer evaluates the policy afresh.

// memoShards and memoShardCap bound the memo (per policy revision): a
// full shard starts over, as the token cache does.
const (
	memoShards   = 16
	memoShardCap = 4096
)

type routeMemo struct {
	pol    *policy.Compiled
	seed   maphash.Seed
	shards [memoShards]memoShard
}

type memoShard struct {
	mu sync.RWMutex
	m  map[string]*memoEntry
}

type memoEntry struct {
	calls []memoCall
	out   policy.RouteOutcome
	// idFrom is the call whose decision id the outcome carries (-1: none);
	// headerIDs, the calls whose ids header values are.
	idFrom    int
	headerIDs map[string]int
}

type memoCall struct {
	entitlement         bool
	subject             decision.Principal
	license, asset, typ string
	d                   decision.Decision
}

func (c *memoCall) ask(ch policy.Checker) (decision.Decision, error) {
	if c.entitlement {
		return ch.Entitled(c.subject, c.asset, c.typ)
	}
	return ch.Seat(c.subject, c.license)
}

// same reports whether a decision answers as the recorded one did, as far
// as a policy can see: allowed, reason and grant.
func (c *memoCall) same(d decision.Decision) bool {
	return d.Allowed == c.d.Allowed && d.Reason == c.d.Reason && d.Grant.ID == c.d.Grant.ID && d.Grant.ViaGroup == c.d.Grant.ViaGroup
}

func newRouteMemo(pol *policy.Compiled) *routeMemo {
	m := &routeMemo{pol: pol, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].m = map[string]*memoEntry{}
	}
	return m
}

// memoKey is the route policy's input, in one string: what the request
// carries that the input holds (the route match follows from method and
// path, the route table being the authorizer's, but for values read from
// headers: the resolved license, type and asset).
func memoKey(buf []byte, method, path, tenant, app, subject, license, typ, asset string) []byte {
	for _, s := range [...]string{method, path, tenant, app, subject, license, typ, asset} {
		buf = append(buf, s...)
		buf = append(buf, 0)
	}
	return buf
}

func (m *routeMemo) shard(key []byte) *memoShard {
	return &m.shards[maphash.Bytes(m.seed, key)%memoShards]
}

// replay answers from the memo: ok when an entry for key exists and every
// recorded call answers as recorded.
func (m *routeMemo) replay(key []byte, ch policy.Checker) (policy.RouteOutcome, bool, error) {
	sh := m.shard(key)
	sh.mu.RLock()
	e := sh.m[string(key)]
	sh.mu.RUnlock()
	if e == nil {
		return policy.RouteOutcome{}, false, nil
	}
	var ids [4]string
	for i := range e.calls {
		d, err := e.calls[i].ask(ch)
		if err != nil {
			return policy.RouteOutcome{}, false, err
		}
		if !e.calls[i].same(d) {
			return policy.RouteOutcome{}, false, nil
		}
		if i < len(ids) {
			ids[i] = d.ID.String()
		}
	}
	out := e.out
	if e.idFrom >= 0 {
		out.DecisionID = ids[e.idFrom]
	}
	if len(e.headerIDs) > 0 {
		hs := make(map[string]string, len(out.Headers))
		for k, v := range out.Headers {
			hs[k] = v
		}
		for k, i := range e.headerIDs {
			hs[k] = ids[i]
		}
		out.Headers = hs
	}
	return out, true, nil
}

// record stores an evaluation's calls and outcome under key, unless the
// outcome uses a decision id in a way replay cannot redo.
func (m *routeMemo) record(key []byte, calls []memoCall, out policy.RouteOutcome) {
	if len(calls) > 4 {
		return
	}
	e := &memoEntry{calls: calls, out: out, idFrom: -1}
	carries := func(s string) (int, bool) { // the call whose id s is; false: s embeds an id otherwise
		for i := range calls {
			id := calls[i].d.ID.String()
			if s == id {
				return i, true
			}
			if strings.Contains(s, id) {
				return -1, false
			}
		}
		return -1, true
	}
	var ok bool
	if e.idFrom, ok = carries(out.DecisionID); !ok {
		return
	}
	for k, v := range out.Headers {
		i, ok := carries(v)
		if !ok {
			return
		}
		if i >= 0 {
			if e.headerIDs == nil {
				e.headerIDs = map[string]int{}
			}
			e.headerIDs[k] = i
		}
	}
	sh := m.shard(key)
	sh.mu.Lock()
	if len(sh.m) >= memoShardCap {
		sh.m = map[string]*memoEntry{}
	}
	sh.m[string(key)] = e
	sh.mu.Unlock()
}

// recorder is the checker of an evaluation the memo will remember.
type recorder struct {
	ch    policy.Checker
	calls []memoCall
}

func (r *recorder) Seat(s decision.Principal, license string) (decision.Decision, error) {
	d, err := r.ch.Seat(s, license)
	r.calls = append(r.calls, memoCall{subject: s, license: license, d: d})
	return d, err
}

func (r *recorder) Entitled(s decision.Principal, asset, typ string) (decision.Decision, error) {
	d, err := r.ch.Entitled(s, asset, typ)
	r.calls = append(r.calls, memoCall{entitlement: true, subject: s, asset: asset, typ: typ, d: d})
	return d, err
}
