// Package grpcfront is Envoy's gRPC external authorization service
// (envoy.service.auth.v3.Authorization/Check) over the authz core: it only
// converts Envoy's CheckRequest into an extauthz.Request and the answer into
// a CheckResponse, so go-control-plane stays out of the engine.
package grpcfront

import (
	"context"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/usher-authz/usher/decision"
	"github.com/usher-authz/usher/extauthz"
)

// DefaultAddr is the default gRPC listen address.
const DefaultAddr = "127.0.0.1:8701"

// Service implements the Authorization service.
type Service struct {
	authv3.UnimplementedAuthorizationServer
	a *extauthz.Authorizer
}

// NewService wraps an authorizer.
func NewService(a *extauthz.Authorizer) *Service { return &Service{a: a} }

// Check answers one Envoy check. Denials are answers, not errors: the
// gRPC call itself succeeds and carries the status for Envoy.
func (s *Service) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	res := s.a.Check(ctx, decision.APIExtAuthzGRPC, Request(req))
	resp := Response(res)
	if m := s.a.Metrics(); m != nil {
		code := 200
		if d := resp.GetDeniedResponse(); d != nil {
			code = int(d.GetStatus().GetCode())
		}
		m.Request(decision.ReqExtAuthzGRPC, code)
		if res.Status == extauthz.Unauthenticated {
			m.AuthFailure(decision.FrontGRPC, res.AuthFailure)
		}
	}
	return resp, nil
}

// Request extracts what the authorizer needs from an Envoy CheckRequest.
func Request(req *authv3.CheckRequest) extauthz.Request {
	h := req.GetAttributes().GetRequest().GetHttp()
	hs := h.GetHeaders()
	return extauthz.Request{Method: h.GetMethod(), Path: h.GetPath(), Authorization: hs["authorization"], MinRevision: hs[extauthz.MinRevisionHeader], ClientID: hs[extauthz.ClientIDHeader],
		Header: func(name string) string { return hs[name] }} // Envoy sends header names lower-case
}

// headers converts a reply's headers, each overwriting any the client
// sent (it cannot smuggle its own); the messages are allocated together.
func headers(rep []extauthz.Header) []*corev3.HeaderValueOption {
	opts := make([]corev3.HeaderValueOption, len(rep))
	vals := make([]corev3.HeaderValue, len(rep))
	hs := make([]*corev3.HeaderValueOption, len(rep))
	for i, h := range rep {
		vals[i].Key, vals[i].Value = h.Key, h.Value
		opts[i].Header, opts[i].AppendAction = &vals[i], corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		hs[i] = &opts[i]
	}
	return hs
}

// Response converts an authorizer result into Envoy's CheckResponse, as
// the result's Reply encodes it.
func Response(r extauthz.Result) *authv3.CheckResponse {
	rep := r.Reply()
	hs := headers(rep.Headers)
	if r.Status == extauthz.Allowed {
		return &authv3.CheckResponse{
			Status:          &status.Status{Code: int32(codes.OK)},
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: hs}},
			DynamicMetadata: metadata(r),
		}
	}
	code := map[extauthz.Status]codes.Code{extauthz.Denied: codes.PermissionDenied, extauthz.Unauthenticated: codes.Unauthenticated,
		extauthz.Invalid: codes.InvalidArgument}[r.Status]
	if code == codes.OK {
		code = codes.Unavailable
	}
	return &authv3.CheckResponse{
		DynamicMetadata: metadata(r),
		Status:          &status.Status{Code: int32(code), Message: r.Reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(rep.Status)}, Headers: hs, Body: string(rep.Body),
		}},
	}
}

// metadata is the answer as Envoy dynamic metadata (under the filter's
// namespace, envoy.filters.http.ext_authz), for access logs: reason,
// decision_id, tenant_id and subject, each when known.
func metadata(r extauthz.Result) *structpb.Struct {
	var m struct { // one allocation for the struct and its values
		s    structpb.Struct
		vals [4]structpb.Value
		strs [4]structpb.Value_StringValue
	}
	p := &m
	p.s.Fields = make(map[string]*structpb.Value, 4)
	for i, f := range [...]struct{ k, v string }{{"reason", r.Reason}, {"decision_id", r.DecisionID}, {"tenant_id", r.Tenant}, {"subject", r.Subject}} {
		if f.v != "" {
			p.strs[i].StringValue = f.v
			p.vals[i].Kind = &p.strs[i]
			p.s.Fields[f.k] = &p.vals[i]
		}
	}
	return &p.s
}

// DefaultStreamWorkers is how many calls reused goroutines answer at once:
// a call beyond them runs on a new goroutine, whose stack grows again
// during the check (measured: 12% of the CPU at concurrency 16 with
// GOMAXPROCS workers, 2 here). Idle workers cost a few KiB each.
const DefaultStreamWorkers = 64

// NewServer returns a gRPC server with the Authorization service and the
// standard health service, which reports SERVING while ready() holds
// (rechecked every interval until ctx ends); workers reused goroutines
// answer calls (DefaultStreamWorkers).
func NewServer(ctx context.Context, a *extauthz.Authorizer, ready func() bool, interval time.Duration, workers int) *grpc.Server {
	srv := grpc.NewServer(grpc.NumStreamWorkers(uint32(max(1, workers))))
	authv3.RegisterAuthorizationServer(srv, NewService(a))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv) // grpcurl and the like work without the protos
	set := func() {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ready() {
			st = healthpb.HealthCheckResponse_SERVING
		}
		hs.SetServingStatus("", st)
		hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
	}
	set()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				hs.Shutdown() // NOT_SERVING while draining
				return
			case <-t.C:
				set()
			}
		}
	}()
	return srv
}
