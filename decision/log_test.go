package decision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/usher-authz/usher/decision"
)

func TestDecisionLog(t *testing.T) {
	s := loadSemantics(t)
	var out bytes.Buffer
	log, err := decision.NewLogger(decision.LogConfig{W: &out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go log.Run(ctx)
	e := newEngine(t, decision.Config{Log: log}, mustDocument(t, s.State))
	req := &decision.Request{TenantID: "acme", Subject: decision.Principal{ID: "u5"}, Check: decision.CheckSeat, License: "editor"}
	d1, _ := e.Decide(decision.APIEvaluate, req)
	e.WaitCache()
	d2, _ := e.Decide(decision.APIBatch, req)
	nr := e.NoRoute(decision.APIExtAuthzGRPC, "acme")
	ent := &decision.Request{TenantID: "acme", AppID: "app1", Subject: decision.Principal{ID: "u1"}, Check: decision.CheckEntitlement,
		AssetID: "doc1", Type: "read_only", At: mustInstant(t, "2026-06-01T00:00:00Z")}
	d4, _ := e.Decide(decision.APIEvaluate, ent)
	cancel()
	log.Wait()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("decision log has %d lines, want 4:\n%s", len(lines), out.String())
	}
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		got = append(got, m)
	}
	for i, want := range []map[string]any{
		{"decision_id": d1.ID.String(), "api": "evaluate", "tenant": "acme", "check": "seat", "allowed": false, "reason": "assignment_denied", "revision": e.Snapshot().TokenText(), "cached": false},
		{"decision_id": d2.ID.String(), "api": "batch", "cached": true},
		{"decision_id": nr.ID.String(), "api": "ext_authz_grpc", "check": "route", "reason": "no_route", "tenant": "acme"},
		{"decision_id": d4.ID.String(), "check": "entitlement", "asset_id": "doc1", "type": "read_only", "app_id": "app1", "at": "2026-06-01T00:00:00Z"},
	} {
		for k, v := range want {
			if got[i][k] != v {
				t.Errorf("line %d %s = %v, want %v", i, k, got[i][k], v)
			}
		}
		if i == 0 {
			// The question itself, so the id traces back to it.
			if sub, _ := got[0]["subject"].(map[string]any); sub["id"] != "u5" || sub["type"] != "person" || got[0]["license"] != "editor" {
				t.Errorf("line 0 does not say what was asked: %v", got[0])
			}
		}
		if i == 3 && (got[3]["allowed"] != d4.Allowed || d4.Allowed && got[3]["grant"] == nil) {
			t.Errorf("line 3 = %v, want allowed %v with its grant", got[3], d4.Allowed)
		}
		if _, ok := got[i]["latency_us"].(float64); !ok || got[i]["time"] == nil {
			t.Errorf("line %d lacks time or latency: %v", i, got[i])
		}
	}
}

func TestDecisionLogNeverBlocks(t *testing.T) {
	var out bytes.Buffer
	reg := prometheus.NewRegistry()
	log, err := decision.NewLogger(decision.LogConfig{W: &out, Buffer: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 { // nothing drains the buffer: Log must drop, not wait
		log.Log(decision.LogEntry{Tenant: "t"})
	}
	if n, err := testutil.GatherAndCount(reg, "usher_decision_log_dropped_total"); err != nil || n != 1 {
		t.Fatalf("dropped metric: %d series, %v", n, err)
	}
	mfs, _ := reg.Gather()
	if got := mfs[0].GetMetric()[0].GetCounter().GetValue(); got != 8 {
		t.Errorf("usher_decision_log_dropped_total = %v, want 8", got)
	}
	if _, err := decision.NewLogger(decision.LogConfig{W: &out, Sample: 1.5}); err == nil || !strings.Contains(err.Error(), "decision-log-sample") {
		t.Errorf("sample 1.5: %v, want an error naming decision-log-sample", err)
	}
}
