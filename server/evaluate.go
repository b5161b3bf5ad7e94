package server

// The decision endpoints: /v1/evaluate and /v1/evaluate/batch.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonscan"
	"github.com/usher-authz/usher/internal/jsonw"
	"github.com/usher-authz/usher/jwtauth"
)

// tooOld reports the state's age and whether it is past MaxStaleness.
func (s *Server) tooOld() (time.Duration, bool) {
	if s.cfg.MaxStaleness <= 0 || s.cfg.Engine.Snapshot() == nil {
		return 0, false
	}
	age := time.Since(s.cfg.Engine.FreshAt())
	return age, age > s.cfg.MaxStaleness
}

// stale answers 503 when the state is older than MaxStaleness.
func (s *Server) stale(ctx *fasthttp.RequestCtx) bool {
	age, old := s.tooOld()
	if !old {
		return false
	}
	writeError(ctx, fasthttp.StatusServiceUnavailable, "state_stale",
		fmt.Sprintf("the state was last known current %s ago, over the %s max-staleness", age.Round(time.Millisecond), s.cfg.MaxStaleness))
	return true
}

// readCheck reads an evaluate body into req, as the caller id may ask it,
// or answers why not.
func readCheck(ctx *fasthttp.RequestCtx, id jwtauth.Identity, req *decision.Request) bool {
	if err := parseEvaluateInto(ctx.PostBody(), "", id.Tenant, req); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
		return false
	}
	if err := scope(id, req, ""); err != nil {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", err.Error())
		return false
	}
	return true
}

// await waits for the state to reach min, or answers why it did not.
func (s *Server) await(ctx *fasthttp.RequestCtx, min decision.Token) bool {
	if _, err := s.cfg.Engine.Await(min); err != nil {
		s.engineError(ctx, err)
		return false
	}
	return true
}

func (s *Server) evaluate(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	var req decision.Request
	if !readCheck(ctx, id, &req) {
		return
	}
	d, err := s.cfg.Engine.Decide(decision.APIEvaluate, &req)
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	var scratch [384]byte
	writeJSON(ctx, fasthttp.StatusOK, AppendDecision(scratch[:0], &d))
}

func (s *Server) engineError(ctx *fasthttp.RequestCtx, err error) {
	status, code, msg := s.classify(err, "")
	if code == "state_behind" {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	writeError(ctx, status, code, msg)
}

// classify maps an engine error to a status, a code and a message; field
// prefix names the request in a batch.
func (s *Server) classify(err error, prefix string) (int, string, string) {
	switch {
	case errors.Is(err, decision.ErrNoState):
		return fasthttp.StatusServiceUnavailable, "no_state", "no state snapshot loaded yet"
	case errors.Is(err, decision.ErrNoPolicy):
		return fasthttp.StatusServiceUnavailable, "no_policy", "no policy compiled yet"
	case errors.Is(err, decision.ErrStateBehind),
		errors.Is(err, decision.ErrTokenUnknownEpoch) && s.reloading():
		return fasthttp.StatusServiceUnavailable, "state_behind", fmt.Sprintf(
			"the state has not reached min_revision within the consistency wait (%s); this sidecar serves revision %s", s.cfg.Engine.ConsistencyWait(), s.cfg.Engine.Snapshot().TokenText())
	case errors.Is(err, decision.ErrTokenOtherSource), errors.Is(err, decision.ErrTokenUnknownEpoch):
		return fasthttp.StatusBadRequest, "invalid_request", prefix + "min_revision: " + err.Error()
	}
	s.cfg.Logger.Error("decision failed", "error", err)
	return fasthttp.StatusInternalServerError, "internal", "decision failed"
}

// reloading reports whether the state source is between states (loading,
// reconnecting), when a token of a new epoch may be on its way.
func (s *Server) reloading() bool {
	if s.cfg.Info == nil {
		return false
	}
	switch s.cfg.Info().SyncState {
	case "following", "static":
		return false
	}
	return true
}

func (s *Server) batch(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	checks, ok := batchChecks(ctx.PostBody())
	if !ok {
		var err error
		if checks, err = readBatch(ctx.PostBody()); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, "invalid_request", message(err))
			return
		}
	}
	if len(checks) > MaxBatchChecks {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid_request",
			fmt.Sprintf("checks: at most %d checks per batch, got %d", MaxBatchChecks, len(checks)))
		return
	}
	if !s.cfg.Engine.Ready() {
		s.engineError(ctx, readinessError(s.cfg.Engine))
		return
	}
	bp := batchBufs.Get().(*[]byte)
	out := append((*bp)[:0], `{"results":[`...)
	for i, raw := range checks {
		if i > 0 {
			out = append(out, ',')
		}
		var req decision.Request
		// Errors name the check; the prefix is built only for them.
		if parseEvaluateInto(raw, "", id.Tenant, &req) != nil {
			out = jsonw.Error(out, "invalid_request", message(parseEvaluateInto(raw, checkPrefix(i), id.Tenant, &req)))
			continue
		}
		if scope(id, &req, "") != nil {
			out = jsonw.Error(out, "forbidden", scope(id, &req, checkPrefix(i)).Error())
			continue
		}
		d, err := s.cfg.Engine.Decide(decision.APIBatch, &req)
		if err != nil {
			_, code, msg := s.classify(err, checkPrefix(i))
			out = jsonw.Error(out, code, msg)
			continue
		}
		out = AppendDecision(out, &d)
	}
	out = append(out, "]}"...)
	writeJSON(ctx, fasthttp.StatusOK, out)
	if cap(out) <= 1<<20 { // a rare huge batch does not stay pooled
		*bp = out
		batchBufs.Put(bp)
	}
}

func checkPrefix(i int) string { return "checks[" + strconv.Itoa(i) + "]." }

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// batchChecks finds the checks of a batch body in place: an object whose
// one key is "checks", holding an array. Anything else (and anything the
// scanner does not read) goes to encoding/json, which also words errors.
func batchChecks(body []byte) ([][]byte, bool) {
	p := jsonscan.Scanner{Buf: body}
	if !p.Byte('{') {
		return nil, false
	}
	var checks [][]byte
	seen := false
	var keys keySet
	ok := p.Object(func(key string) bool {
		if !keys.add(key) {
			return false
		}
		if key != "checks" {
			return p.Skip()
		}
		if !p.Byte('[') {
			return false
		}
		seen, checks = true, [][]byte{}
		if p.Byte(']') {
			return true
		}
		for {
			p.WS()
			start := p.I
			if !p.Skip() { // a full read: the body is valid JSON
				return false
			}
			checks = append(checks, body[start:p.I])
			if p.Byte(',') {
				continue
			}
			return p.Byte(']')
		}
	})
	if !ok || !seen || !p.Done() {
		return nil, false
	}
	return checks, true
}

// AppendDecision appends the JSON answer to an evaluate request.
func AppendDecision(b []byte, d *decision.Decision) []byte {
	b = append(b, `{"allowed":`...)
	b = jsonw.Bool(b, d.Allowed)
	b = append(b, `,"reason":"`...)
	b = append(b, d.Reason.String()...)
	b = append(b, `","decision_id":"`...)
	b = d.ID.AppendText(b)
	b = append(b, `","revision":`...)
	b = jsonw.String(b, d.Token)
	if d.Allowed {
		b = append(b, `,"grant":{"id":`...)
		b = jsonw.String(b, d.Grant.ID)
		b = append(b, `,"via_group":`...)
		b = jsonw.NullString(b, d.Grant.ViaGroup)
		if d.Grant.OverLimit {
			b = append(b, `,"over_limit":true`...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// message flattens joined errors into one line.
func message(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
