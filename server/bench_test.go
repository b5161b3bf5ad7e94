package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/usher-authz/usher/bench/gen"
	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/rego"
	"github.com/usher-authz/usher/server"
)

var (
	scaleOnce sync.Once
	scaleSnap *decision.Snapshot
)

// scaleServer serves the 1,000,000-record generated state on loopback.
func scaleServer(b *testing.B) (*server.Server, string) {
	b.Helper()
	scaleOnce.Do(func() { scaleSnap = decision.NewSnapshot(gen.Generate(gen.Default()), 1) })
	e, err := decision.NewEngine(decision.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	p, err := policy.Compile(context.Background(), rego.FS, 1)
	if err != nil {
		b.Fatal(err)
	}
	e.SetPolicy(p)
	e.SetSnapshot(scaleSnap)
	srv, err := server.New(server.Config{Engine: e})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, ln.Addr().String()
}

func bodies(n int) [][]byte {
	c := gen.Default()
	out := make([][]byte, n)
	for i := range out {
		t, p := (i*7919)%c.Tenants, (i*31)%c.PersonsPerTenant
		if i%2 == 0 {
			out[i] = fmt.Appendf(nil, `{"tenant_id": %q, "subject": {"id": %q, "type": "person"}, "seat": {"license": %q}}`,
				gen.TenantID(t), gen.PersonID(t, p), gen.LicenseName(i%c.LicensesPerTenant))
		} else {
			out[i] = fmt.Appendf(nil, `{"tenant_id": %q, "subject": {"id": %q}, "entitlement": {"asset_id": %q, "type": "read_only"}}`,
				gen.TenantID(t), gen.PersonID(t, p), gen.AssetID(t, i%c.AssetsPerTenant))
		}
	}
	return out
}

// BenchmarkHandleEvaluate measures the server's own work for one evaluate
// (parse, decide from the cache, encode) without the network.
func BenchmarkHandleEvaluate(b *testing.B) { benchHandle(b, "/v1/evaluate", bodies(1024)) }

// BenchmarkHandleBatch is the server's own work for a batch of 100 cached
// checks; ns/op is per batch.
func BenchmarkHandleBatch(b *testing.B) {
	reqs := bodies(1000)
	batches := make([][]byte, 10)
	for i := range batches {
		batches[i] = append([]byte(`{"checks": [`), bytes.Join(reqs[i*100:(i+1)*100], []byte(","))...)
		batches[i] = append(batches[i], "]}"...)
	}
	benchHandle(b, "/v1/evaluate/batch", batches)
}

// benchHandle has the server handle each body once to fill the cache, then
// times handling them in turn.
func benchHandle(b *testing.B, path string, reqs [][]byte) {
	srv, _ := scaleServer(b)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI(path)
	for _, body := range reqs {
		ctx.Request.SetBody(body)
		srv.Handle(&ctx)
	}
	time.Sleep(50 * time.Millisecond) // let ristretto apply the sets
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ctx.Request.SetBody(reqs[i%len(reqs)])
		ctx.Response.Reset()
		srv.Handle(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		i++
	}
}

// BenchmarkHTTPEvaluate is a full HTTP round trip over loopback with a
// keep-alive fasthttp client: sequential (latency) and parallel (throughput).
func BenchmarkHTTPEvaluate(b *testing.B) {
	_, addr := scaleServer(b)
	reqs := bodies(1024)
	client := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
	do := func(body []byte, req *fasthttp.Request, resp *fasthttp.Response) {
		req.SetRequestURI("http://" + addr + "/v1/evaluate")
		req.Header.SetMethod("POST")
		req.SetBody(body)
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("evaluate: %v %d %s", err, resp.StatusCode(), resp.Body())
		}
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	for _, body := range reqs {
		do(body, req, resp)
	}
	time.Sleep(50 * time.Millisecond)
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			do(reqs[i&1023], req, resp)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			i := 0
			for pb.Next() {
				do(reqs[i&1023], req, resp)
				i++
			}
		})
	})
}
