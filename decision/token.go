package decision

import (
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Token is a revision token: the state position an answer was computed
// at. Tokens of one Redis namespace compare across every sidecar that
// follows it (the change-stream id within the namespace's epoch); a
// sidecar serving a file or the demo numbers its own snapshots, and its
// tokens compare only with its own.
//
// Text forms: "<namespace>.<epoch>.<ms>-<seq>" for Redis (namespace and
// epoch as 8 hex digits of a hash; epoch 00000000 when the namespace has
// none), "l.<process>.<n>" for local state. Clients treat them as opaque.
type Token struct {
	Local bool
	Space uint32 // Redis: the namespace's hash; local: the engine's id
	Epoch uint32 // Redis: the epoch's hash, 0 without one
	Ms    uint64 // Redis: the change-stream id
	Seq   uint64 // Redis: the stream id's sequence; local: the snapshot revision
}

// IsZero reports whether t is no token.
func (t Token) IsZero() bool { return t == Token{} }

// RedisToken is the token of the position id ("ms-seq") in a namespace
// epoch; ok is false for an id that is not a stream id.
func RedisToken(namespace, epoch, id string) (Token, bool) {
	ms, seq, ok := streamID(id)
	if !ok {
		return Token{}, false
	}
	t := Token{Space: hash32(namespace), Ms: ms, Seq: seq}
	if epoch != "" {
		t.Epoch = max(1, hash32(epoch))
	}
	return t, true
}

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

func streamID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil && strconv.FormatUint(ms, 10) == a && strconv.FormatUint(seq, 10) == b
}

// AppendText appends the token's text form.
func (t Token) AppendText(b []byte) []byte {
	if t.Local {
		b = append(b, "l."...)
		b = appendHex8(b, t.Space)
		b = append(b, '.')
		return strconv.AppendUint(b, t.Seq, 10)
	}
	b = appendHex8(b, t.Space)
	b = append(b, '.')
	b = appendHex8(b, t.Epoch)
	b = append(b, '.')
	b = strconv.AppendUint(b, t.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, t.Seq, 10)
}

func (t Token) String() string { return string(t.AppendText(nil)) }

func appendHex8(b []byte, v uint32) []byte {
	const digits = "0123456789abcdef"
	for i := 28; i >= 0; i -= 4 {
		b = append(b, digits[v>>uint(i)&0xf])
	}
	return b
}

// ErrMalformedToken is a min_revision that is not a revision token.
var ErrMalformedToken = errors.New(`not a revision token (use the "revision" of an answer or a write as it was given)`)

// ParseToken reads a token's text form exactly as AppendText writes it.
func ParseToken(s string) (Token, error) {
	if len(s) > 64 {
		return Token{}, ErrMalformedToken
	}
	parts := strings.Split(s, ".")
	var t Token
	ok := false
	switch {
	case len(parts) == 3 && parts[0] == "l":
		var err error
		t.Local = true
		t.Space, ok = hex8(parts[1])
		t.Seq, err = strconv.ParseUint(parts[2], 10, 64)
		ok = ok && err == nil
	case len(parts) == 3:
		var ok1, ok2 bool
		t.Space, ok1 = hex8(parts[0])
		t.Epoch, ok2 = hex8(parts[1])
		t.Ms, t.Seq, ok = streamID(parts[2])
		ok = ok && ok1 && ok2
	}
	if !ok || t.String() != s {
		return Token{}, ErrMalformedToken
	}
	return t, nil
}

func hex8(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 32)
	return uint32(v), err == nil
}

// reaches reports whether a state at t holds everything at min, for
// tokens of one space and epoch.
func (t Token) reaches(min Token) bool {
	if t.Local {
		return t.Seq >= min.Seq
	}
	return t.Ms > min.Ms || t.Ms == min.Ms && t.Seq >= min.Seq
}

// Errors of a min_revision the engine cannot wait for.
var (
	// ErrStateBehind: the state did not reach the token within the wait.
	ErrStateBehind = errors.New("state_behind")
	// ErrTokenOtherSource: a token of another namespace or state source.
	ErrTokenOtherSource = errors.New("a revision token of another state source or Redis namespace than this sidecar's")
	// ErrTokenUnknownEpoch: a token of this namespace in an epoch the
	// sidecar has neither served nor reached within the wait.
	ErrTokenUnknownEpoch = errors.New("a revision token of an epoch of this namespace that this sidecar has not seen (the namespace was reloaded or lost, or the token was made elsewhere)")
)

// Consistency-wait results, the label values of usher_consistency_waits_total.
const (
	WaitImmediate = "immediate"
	WaitWaited    = "waited"
	WaitTimeout   = "timeout"
)

// WaitResults lists every result.
var WaitResults = []string{WaitImmediate, WaitWaited, WaitTimeout}

// consistency is the engine's part of read-your-writes: wakes waiters
// when a snapshot is published, and remembers the epochs it served.
type consistency struct {
	changed atomicChan
	mu      sync.Mutex
	past    []uint32 // epochs served before the current one, newest last
}

// atomicChan is a channel closed and replaced at each publication: a
// waiter takes the current one, then checks the state, then waits on it.
type atomicChan struct{ p atomic.Pointer[chan struct{}] }

func (a *atomicChan) load() chan struct{} { return *a.p.Load() }

func (a *atomicChan) broadcast() {
	ch := make(chan struct{})
	if old := a.p.Swap(&ch); old != nil {
		close(*old)
	}
}

// covers reports whether the current state cur holds min.
func (c *consistency) covers(cur, min Token) (ok bool, err error) {
	if cur.Local != min.Local || cur.Space != min.Space {
		return false, ErrTokenOtherSource
	}
	if cur.Local || cur.Epoch == min.Epoch {
		return cur.reaches(min), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.past {
		if e == min.Epoch {
			// The namespace was reloaded since: the state now holds all
			// that survived of that epoch.
			return true, nil
		}
	}
	return false, nil
}

// served records a newly published snapshot's token.
func (c *consistency) served(prev, cur Token) {
	if prev.IsZero() || prev.Local || prev.Space != cur.Space || prev.Epoch == cur.Epoch {
		return
	}
	c.mu.Lock()
	c.past = append(c.past, prev.Epoch)
	if len(c.past) > 16 {
		c.past = c.past[1:]
	}
	c.mu.Unlock()
}

// Await blocks until the served state holds min, at most the engine's
// consistency wait, and returns how it went. A zero min returns at once.
func (e *Engine) Await(min Token) (string, error) {
	if min.IsZero() {
		return "", nil
	}
	var timer *time.Timer
	result := WaitImmediate
	for {
		ch := e.cons.changed.load()
		snap := e.snap.Load()
		if snap != nil {
			ok, err := e.cons.covers(snap.token, min)
			if err != nil {
				return "", err
			}
			if ok {
				if timer != nil {
					timer.Stop()
				}
				e.metrics.consistencyWait(result)
				return result, nil
			}
		}
		if timer == nil {
			timer = time.NewTimer(e.wait)
			result = WaitWaited
		}
		select {
		case <-ch:
		case <-timer.C:
			e.metrics.consistencyWait(WaitTimeout)
			if snap != nil && !min.Local && snap.token.Space == min.Space && snap.token.Epoch != min.Epoch {
				return WaitTimeout, ErrTokenUnknownEpoch
			}
			return WaitTimeout, ErrStateBehind
		}
	}
}
