// Package statusapi is the agent's status service for the CLI (`sextant
// policy list`, `sextant policy trace`, `sextant proxy status`): a gRPC
// service of sextant's own, served next to the Observer service on the
// same sockets and listeners, so with the same access rules (socket mode
// 0600 or 0660 for --socket-group, TCP only with mTLS; docs/security.md).
// Answers are JSON documents of the stages' own status types in a
// BytesValue: the CLI renders them, scripts can read them
// (`--output json`).
package statusapi

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/policy"
	"github.com/sextant/sextant/proxy"
)

const serviceName = "sextant.agent.v1.Status"

// Method names, for clients and interceptors.
const (
	MethodPolicy      = "/" + serviceName + "/Policy"
	MethodPolicyTrace = "/" + serviceName + "/PolicyTrace"
	MethodProxy       = "/" + serviceName + "/Proxy"
)

// TraceRequest asks what the policy in force decides for a connection.
type TraceRequest struct {
	From  policy.TraceLabels `json:"from"`
	To    policy.TraceLabels `json:"to"`
	DPort uint16             `json:"dport"`
	Proto uint8              `json:"proto"` // 6 TCP, 17 UDP
}

// TraceAnswer is a trace as `cilium policy trace` prints it.
type TraceAnswer struct {
	Text    string `json:"text"`
	Allowed bool   `json:"allowed"`
}

// Sources are the running stages the service reports; a nil one answers
// Unavailable with why.
type Sources struct {
	Policy *policy.Engine
	Proxy  *proxy.Proxy
}

// Server serves Sources.
type Server struct{ src func() Sources }

// NewServer serves what src returns at each call (stages start after the
// listeners are bound).
func NewServer(src func() Sources) *Server { return &Server{src: src} }

// ErrPolicyOff and ErrProxyOff explain an Unavailable answer.
const (
	ErrPolicyOff = "the policy stage is not running on this agent (it runs with --policy-dir, or when /etc/sextant/policies exists)"
	ErrProxyOff  = "the proxy stage is not running on this agent (it runs with --proxy-config)"
)

type statusServer interface {
	policy(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	policyTrace(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	proxy(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

func unary(name string, call func(statusServer, context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := new(wrapperspb.BytesValue)
			if err := dec(req); err != nil {
				return nil, err
			}
			return call(srv.(statusServer), ctx, req)
		},
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*statusServer)(nil),
	Methods: []grpc.MethodDesc{
		unary("Policy", statusServer.policy),
		unary("PolicyTrace", statusServer.policyTrace),
		unary("Proxy", statusServer.proxy),
	},
	Metadata: "agent/statusapi/statusapi.go",
}

// Register adds the service to g.
func (s *Server) Register(g *grpc.Server) { g.RegisterService(&serviceDesc, s) }

func answer(v any) (*wrapperspb.BytesValue, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode: %v", err)
	}
	return wrapperspb.Bytes(b), nil
}

func (s *Server) policy(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	eng := s.src().Policy
	if eng == nil {
		return nil, status.Error(codes.Unavailable, ErrPolicyOff)
	}
	return answer(eng.Status())
}

func (s *Server) policyTrace(_ context.Context, raw *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	eng := s.src().Policy
	if eng == nil {
		return nil, status.Error(codes.Unavailable, ErrPolicyOff)
	}
	var req TraceRequest
	if err := json.Unmarshal(raw.GetValue(), &req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "trace request: %v", err)
	}
	tr, err := eng.Trace(req.From, req.To, req.DPort, req.Proto)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return answer(TraceAnswer{Text: tr.String(), Allowed: tr.Allowed})
}

func (s *Server) proxy(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	p := s.src().Proxy
	if p == nil {
		return nil, status.Error(codes.Unavailable, ErrProxyOff)
	}
	return answer(p.Status())
}

// Client asks an agent's status service.
type Client struct{ cc grpc.ClientConnInterface }

// NewClient uses cc (the agent's socket or mTLS address).
func NewClient(cc grpc.ClientConnInterface) *Client { return &Client{cc: cc} }

func (c *Client) call(ctx context.Context, method string, req any, into any) error {
	in := new(wrapperspb.BytesValue)
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			return err
		}
		in.Value = b
	}
	out := new(wrapperspb.BytesValue)
	if err := c.cc.Invoke(ctx, method, in, out); err != nil {
		return err
	}
	if err := json.Unmarshal(out.GetValue(), into); err != nil {
		return fmt.Errorf("%s: decode answer: %w", method, err)
	}
	return nil
}

// Policy is the policy stage's status (`sextant policy list`).
func (c *Client) Policy(ctx context.Context) (policy.Status, error) {
	var st policy.Status
	err := c.call(ctx, MethodPolicy, nil, &st)
	return st, err
}

// PolicyTrace explains a decision of the revision in force.
func (c *Client) PolicyTrace(ctx context.Context, req TraceRequest) (TraceAnswer, error) {
	var a TraceAnswer
	err := c.call(ctx, MethodPolicyTrace, req, &a)
	return a, err
}

// Proxy is the proxy stage's status (`sextant proxy status`).
func (c *Client) Proxy(ctx context.Context) (proxy.Status, error) {
	var st proxy.Status
	err := c.call(ctx, MethodProxy, nil, &st)
	return st, err
}
