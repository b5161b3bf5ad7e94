package server

// POST /v1/explain: a decision and why.

import (
	"encoding/json"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/decision"
)

type explainRecord struct {
	Kind        string         `json:"kind"`
	ID          string         `json:"id"`
	Holder      *explainHolder `json:"holder,omitempty"`
	GroupPath   []string       `json:"group_path,omitempty"`
	Status      string         `json:"status"`
	Reservation string         `json:"reservation,omitempty"`
	Type        string         `json:"type,omitempty"`
	ValidFrom   *string        `json:"valid_from"`
	ExpiresAt   *string        `json:"expires_at"`
	Verdict     string         `json:"verdict"`
}

type explainHolder struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

type explainAnswer struct {
	Allowed bool            `json:"allowed"`
	Reason  string          `json:"reason"`
	Rule    string          `json:"rule"`
	Grant   *decision.Grant `json:"grant,omitempty"`
	Records []explainRecord `json:"records"`
	Window  struct {
		From  *string `json:"from"`
		Until *string `json:"until"`
	} `json:"window"`
	PolicyRevision uint64 `json:"policy_revision"`
	Revision       string `json:"revision"`
}

func instantPtr(i decision.Instant) *string {
	if !i.Set() {
		return nil
	}
	s := string(i.AppendJSON(nil))
	s = s[1 : len(s)-1] // unquoted
	return &s
}

// AppendExplanation appends the JSON of an explanation.
func AppendExplanation(b []byte, x *decision.Explanation) []byte {
	a := explainAnswer{Allowed: x.Allowed, Reason: x.Reason.String(), Rule: x.Rule, Records: []explainRecord{},
		PolicyRevision: x.PolicyRevision, Revision: x.Revision}
	if x.Allowed {
		g := x.Grant
		a.Grant = &g
	}
	a.Window.From, a.Window.Until = instantPtr(x.From), instantPtr(x.Until)
	for _, c := range x.Records {
		r := explainRecord{Kind: c.Kind, ID: c.ID, GroupPath: c.GroupPath, Status: c.Status, Reservation: c.Reservation, Type: c.Type,
			ValidFrom: instantPtr(c.From), ExpiresAt: instantPtr(c.Until), Verdict: c.Verdict}
		if c.Holder.ID != "" {
			r.Holder = &explainHolder{ID: c.Holder.ID, Type: c.Holder.Type.String()}
		}
		a.Records = append(a.Records, r)
	}
	js, _ := json.Marshal(a)
	return append(b, js...)
}

func (s *Server) explain(ctx *fasthttp.RequestCtx) {
	if s.stale(ctx) {
		return
	}
	id, ok := s.identify(ctx)
	if !ok {
		return
	}
	if s.cfg.EvaluateAuth && !id.Admin {
		writeError(ctx, fasthttp.StatusForbidden, "forbidden", "explain shows other principals' records: the token needs the admin claim (--admin-claim) set to true")
		return
	}
	var req decision.Request
	if !readCheck(ctx, id, &req) || !s.await(ctx, req.MinRevision) {
		return
	}
	e := s.cfg.Engine
	x, err := e.Explain(e.Snapshot(), &req)
	if err != nil {
		s.engineError(ctx, err)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, AppendExplanation(nil, &x))
}
