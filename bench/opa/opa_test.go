package opa_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	oparego "github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/bench/opa"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/internal/semtest"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
)

func prepare(tb testing.TB, s *decision.Snapshot) oparego.PreparedEvalQuery {
	tb.Helper()
	store := inmem.NewFromObjectWithOpts(opa.Data(s, opa.DefaultImplies()), inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	pq, err := oparego.New(oparego.Query(opa.Query), oparego.Module("peer.rego", opa.Policy), oparego.Store(store)).
		PrepareForEval(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return pq
}

func peerDecide(tb testing.TB, pq oparego.PreparedEvalQuery, in ast.Value) (bool, string) {
	tb.Helper()
	rs, err := pq.Eval(context.Background(), oparego.EvalParsedInput(in))
	if err != nil {
		tb.Fatal(err)
	}
	if len(rs) != 1 {
		tb.Fatalf("peer decision undefined for %v", in)
	}
	m := rs[0].Expressions[0].Value.(map[string]any)
	return m["allowed"].(bool), m["reason"].(string)
}

func engine(tb testing.TB, s *decision.Snapshot) *decision.Engine {
	tb.Helper()
	e, err := decision.NewEngine(decision.Config{CacheEntries: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		tb.Fatal(err)
	}
	e.SetPolicy(p)
	e.SetSnapshot(s)
	return e
}

func requests(c gen.Config, n int, seed uint64) []decision.Request {
	r := rand.New(rand.NewPCG(seed, 11))
	types := gen.EntitlementTypes()
	reqs := make([]decision.Request, n)
	for i := range reqs {
		t := r.IntN(c.Tenants)
		req := decision.Request{TenantID: gen.TenantID(t), Subject: decision.Principal{ID: gen.PersonID(t, r.IntN(c.PersonsPerTenant))},
			At: decision.InstantOf(c.Now.Add(time.Duration(r.IntN(400)-200) * 24 * time.Hour))}
		if r.IntN(10) == 0 {
			req.Subject = decision.Principal{Type: decision.GroupPrincipal, ID: gen.GroupID(t, r.IntN(c.GroupsPerTenant))}
		}
		if i%2 == 0 {
			req.Check, req.License = decision.CheckSeat, gen.LicenseName(r.IntN(c.LicensesPerTenant+1))
		} else {
			req.Check, req.AssetID, req.Type = decision.CheckEntitlement, gen.AssetID(t, r.IntN(c.AssetsPerTenant)), types[r.IntN(len(types))]
		}
		reqs[i] = req
	}
	return reqs
}

// TestPeerAgrees checks that Usher and the all-Rego peer give the same
// answer on generated state and requests, and on the semantics cases.
func TestPeerAgrees(t *testing.T) {
	c := gen.Default()
	c.Tenants = 30
	snap := decision.NewSnapshot(gen.Generate(c), 1)
	e, pq := engine(t, snap), prepare(t, snap)
	reasons := map[string]int{}
	for _, req := range requests(c, 4000, 1) {
		d, err := e.Decide(decision.APICLI, &req)
		if err != nil {
			t.Fatal(err)
		}
		allowed, reason := peerDecide(t, pq, ast.MustInterfaceToValue(opa.Input(&req)))
		reasons[reason]++
		if allowed != d.Allowed || reason != d.Reason.String() {
			t.Errorf("Decide(%+v) = %v %s, peer says %v %s", req, d.Allowed, d.Reason, allowed, reason)
		}
	}
	t.Logf("reasons reached: %v", reasons)
	if len(reasons) < 12 {
		t.Errorf("the generated requests reach only %d reasons: %v", len(reasons), reasons)
	}

	raw := semtest.Raw(t)
	var sem struct {
		State json.RawMessage `json:"state"`
		At    string          `json:"at"`
		Cases []struct {
			Name     string `json:"name"`
			TenantID string `json:"tenant_id"`
			AppID    string `json:"app_id"`
			Subject  struct{ ID, Type string }
			Seat     *struct{ License string }
			Ent      *struct {
				AssetID string `json:"asset_id"`
				Type    string
			} `json:"entitlement"`
			At   string `json:"at"`
			Want string `json:"want"`
			// Peer false: a case the peer does not implement (seat
			// limits; generated states never reach theirs).
			Peer *bool `json:"peer"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &sem); err != nil {
		t.Fatal(err)
	}
	doc, err := decision.ParseDocument(bytesReader(sem.State))
	if err != nil {
		t.Fatal(err)
	}
	pq = prepare(t, decision.NewSnapshot(doc, 1))
	for _, cs := range sem.Cases {
		if cs.Peer != nil && !*cs.Peer {
			continue
		}
		at := cs.At
		if at == "" {
			at = sem.At
		}
		ts, _ := decision.ParseInstant(at)
		pt, _ := decision.ParsePrincipalType(cs.Subject.Type)
		req := decision.Request{TenantID: cs.TenantID, AppID: cs.AppID, Subject: decision.Principal{Type: pt, ID: cs.Subject.ID}, At: ts}
		if cs.Seat != nil {
			req.Check, req.License = decision.CheckSeat, cs.Seat.License
		} else {
			req.Check, req.AssetID, req.Type = decision.CheckEntitlement, cs.Ent.AssetID, cs.Ent.Type
		}
		if _, reason := peerDecide(t, pq, ast.MustInterfaceToValue(opa.Input(&req))); reason != cs.Want {
			t.Errorf("%s: peer says %s, want %s", cs.Name, reason, cs.Want)
		}
	}
}

var (
	scaleOnce sync.Once
	scaleSnap *decision.Snapshot
)

// BenchmarkPeer measures OPA's prepared evaluation of the all-Rego
// semantics with the 1,000,000-record state in OPA's store, against
// Usher's engine with its cache off, on the same requests.
func BenchmarkPeer(b *testing.B) {
	scaleOnce.Do(func() { scaleSnap = decision.NewSnapshot(gen.Generate(gen.Default()), 1) })
	reqs := requests(gen.Default(), 1<<14, 5)
	b.Run("opa-prepared", func(b *testing.B) {
		pq := prepare(b, scaleSnap)
		inputs := make([]ast.Value, len(reqs))
		for i := range reqs {
			inputs[i] = ast.MustInterfaceToValue(opa.Input(&reqs[i]))
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			peerDecide(b, pq, inputs[i&(1<<14-1)])
			i++
		}
	})
	b.Run("usher-nocache", func(b *testing.B) {
		e := engine(b, scaleSnap)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.Decide(decision.APICLI, &reqs[i&(1<<14-1)])
			i++
		}
	})
}

func bytesReader(b []byte) *strings.Reader { return strings.NewReader(string(b)) }
