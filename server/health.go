package server

// Liveness, readiness (and why) and /v1/status.

import (
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/jsonw"
)

func readinessError(e *decision.Engine) error {
	if e.Snapshot() == nil {
		return decision.ErrNoState
	}
	return decision.ErrNoPolicy
}

func (s *Server) ready(ctx *fasthttp.RequestCtx) {
	ok, status, why := s.readiness()
	code := fasthttp.StatusOK
	if !ok {
		code = fasthttp.StatusServiceUnavailable
	}
	b := append([]byte(`{"status":`), jsonw.String(nil, status)...)
	if !ok {
		b = append(b, `,"reason":`...)
		b = jsonw.String(b, why)
	}
	writeJSON(ctx, code, append(b, '}'))
}

// readiness says whether the sidecar is ready, its status word, and why,
// in words an operator can act on.
func (s *Server) readiness() (bool, string, string) {
	e := s.cfg.Engine
	var info Info
	if s.cfg.Info != nil {
		info = s.cfg.Info()
	}
	syncNote := ""
	if info.SyncError != "" {
		syncNote = "; sync " + info.SyncState
		if !info.SyncSince.IsZero() {
			syncNote += " since " + info.SyncSince.UTC().Format(time.RFC3339)
		}
		syncNote += ": " + info.SyncError
	}
	switch {
	case s.draining.Load():
		return false, "draining", "shutting down"
	case e.Snapshot() == nil:
		return false, "not_ready", "no state snapshot loaded yet" + syncNote
	case e.Policy() == nil:
		return false, "not_ready", "no policy compiled yet"
	}
	age := time.Since(e.FreshAt()).Round(time.Millisecond)
	if age, old := s.tooOld(); old {
		return false, "not_ready", fmt.Sprintf("the state was last confirmed current %s ago, over the %s max-staleness%s",
			age.Round(time.Millisecond), s.cfg.MaxStaleness, syncNote)
	}
	why := fmt.Sprintf("serving the %s state, last confirmed current %s ago", info.Source, age)
	if s.cfg.MaxStaleness > 0 {
		why += fmt.Sprintf(" (max-staleness %s)", s.cfg.MaxStaleness)
	}
	return true, "ready", why + syncNote
}

func (s *Server) status(ctx *fasthttp.RequestCtx) {
	var info Info
	if s.cfg.Info != nil {
		info = s.cfg.Info()
	}
	e := s.cfg.Engine
	ready, _, why := s.readiness()
	b := []byte(`{"ready":`)
	b = jsonw.Bool(b, ready)
	b = append(b, `,"readiness":`...)
	b = jsonw.String(b, why)
	b = append(b, `,"state":`...)
	if snap := e.Snapshot(); snap != nil {
		b = append(b, `{"revision":`...)
		b = jsonw.String(b, snap.TokenText())
		b = append(b, `,"source":`...)
		b = jsonw.String(b, info.Source)
		b = append(b, `,"built_at":`...)
		b = decision.InstantOf(snap.Built).AppendJSON(b)
		b = append(b, `,"age_seconds":`...)
		b = strconv.AppendFloat(b, time.Since(e.FreshAt()).Seconds(), 'f', 3, 64)
		b = append(b, `,"tenants":`...)
		b = strconv.AppendInt(b, int64(len(snap.TenantIDs())), 10)
		b = append(b, `,"records":{`...)
		for k := decision.KindLicense; k <= decision.KindGroup; k++ {
			if k > 0 {
				b = append(b, ',')
			}
			b = jsonw.String(b, k.String()+"s")
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(snap.Count(k)), 10)
		}
		b = append(b, "}}"...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"sync":{"state":`...)
	b = jsonw.String(b, info.SyncState)
	b = append(b, `,"lag_seconds":`...)
	b = strconv.AppendFloat(b, info.SyncLag.Seconds(), 'g', 6, 64)
	b = append(b, `,"last_error":`...)
	b = jsonw.NullString(b, info.SyncError)
	if !info.SyncSince.IsZero() {
		b = append(b, `,"error_since":`...)
		b = decision.InstantOf(info.SyncSince).AppendJSON(b)
	}
	if info.SyncPosition != "" {
		b = append(b, `,"position":`...)
		b = jsonw.String(b, info.SyncPosition)
		b = append(b, `,"epoch":`...)
		b = jsonw.NullString(b, info.SyncEpoch)
	}
	b = append(b, `},"policy":`...)
	if p := e.Policy(); p != nil {
		b = append(b, `{"revision":`...)
		b = strconv.AppendUint(b, p.Revision(), 10)
		b = append(b, `,"digest":`...)
		b = jsonw.String(b, info.PolicyDigest)
		b = append(b, `,"last_error":`...)
		b = jsonw.NullString(b, info.PolicyError)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, '}')
	writeJSON(ctx, fasthttp.StatusOK, b)
}
