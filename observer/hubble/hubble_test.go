package hubble

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sextant/sextant/flow"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func u32(v uint32) *uint32 { return &v }

var (
	client = netip.MustParseAddrPort("10.0.0.1:40000")
	server = netip.MustParseAddrPort("10.0.0.2:8080")
	proc   = flow.Process{PID: 42, Comm: "server", Exe: "/usr/bin/server", CgroupID: 7,
		Cgroup: "/sys/fs/cgroup/docker/abc", ContainerID: "abc"}
	procLabels = []string{"sextant.io/cgroup=/sys/fs/cgroup/docker/abc", "sextant.io/comm=server",
		"sextant.io/container=abc", "sextant.io/exe=/usr/bin/server", "sextant.io/pid=42"}
	accessLog = &flowpb.CiliumEventType{Type: 129}
)

func tcp(src, dst netip.AddrPort) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
		SourcePort: uint32(src.Port()), DestinationPort: uint32(dst.Port())}}}
}

func ip(src, dst netip.AddrPort) *flowpb.IP {
	return &flowpb.IP{Source: src.Addr().String(), Destination: dst.Addr().String(), IpVersion: flowpb.IPVersion_IPv4}
}

func TestEvents(t *testing.T) {
	tests := []struct {
		name string
		in   *flow.Flow
		want []*flowpb.Flow
	}{{
		name: "HTTP/1.1 observed at the server",
		in: &flow.Flow{
			Time: t0, Latency: 1500 * time.Microsecond, TTFB: time.Millisecond, Node: "node-1",
			Observer: flow.SideServer, Protocol: "HTTP/1.1", Method: "GET", Authority: "example.com",
			Path: "/x?y=1", Status: 200, Source: client, Destination: server, Process: proc,
			RequestHeaders:  []flow.Header{{Name: "user-agent", Value: "curl"}, {Name: "accept", Value: "*/*"}},
			ResponseHeaders: []flow.Header{{Name: "content-type", Value: "text/plain"}},
		},
		want: []*flowpb.Flow{{
			Time: timestamppb.New(t0), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			NodeName: "node-1", EventType: accessLog, IsReply: wrapperspb.Bool(false),
			TrafficDirection: flowpb.TrafficDirection_INGRESS, CgroupId: 7,
			IP: ip(client, server), L4: tcp(client, server),
			Destination: &flowpb.Endpoint{Labels: procLabels},
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "GET", Url: "http://example.com/x?y=1", Protocol: "HTTP/1.1",
				Headers: []*flowpb.HTTPHeader{{Key: "accept", Value: "*/*"}, {Key: "user-agent", Value: "curl"}},
			}}},
			Summary: "HTTP/1.1 GET http://example.com/x?y=1",
		}, {
			Time: timestamppb.New(t0.Add(1500 * time.Microsecond)), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			NodeName: "node-1", EventType: accessLog, IsReply: wrapperspb.Bool(true), Reply: true,
			TrafficDirection: flowpb.TrafficDirection_INGRESS, CgroupId: 7,
			IP: ip(server, client), L4: tcp(server, client),
			Source: &flowpb.Endpoint{Labels: procLabels},
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 1500000, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: 200, Method: "GET", Url: "http://example.com/x?y=1", Protocol: "HTTP/1.1",
				Headers: []*flowpb.HTTPHeader{{Key: "content-type", Value: "text/plain"}},
			}}},
			Summary: "HTTP/1.1 200 1ms (GET http://example.com/x?y=1)",
		}},
	}, {
		name: "HTTP/2 observed at the client, with traceparent",
		in: &flow.Flow{
			Time: t0, Latency: 25 * time.Millisecond, TTFB: 20 * time.Millisecond, Node: "n",
			Observer: flow.SideClient, Protocol: "HTTP/2", Method: "POST", Scheme: "http", Authority: "svc:8080",
			Path: "/api", Status: 503, Source: client, Destination: server,
			Process:     flow.Process{PID: 9, Comm: "curl"},
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		},
		want: []*flowpb.Flow{{
			Time: timestamppb.New(t0), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			NodeName: "n", EventType: accessLog, IsReply: wrapperspb.Bool(false),
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IP:               ip(client, server), L4: tcp(client, server),
			Source:       &flowpb.Endpoint{Labels: []string{"sextant.io/comm=curl", "sextant.io/pid=9"}},
			TraceContext: &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}},
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "POST", Url: "http://svc:8080/api", Protocol: "HTTP/2"}}},
			Summary: "HTTP/2 POST http://svc:8080/api",
		}, {
			Time: timestamppb.New(t0.Add(25 * time.Millisecond)), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			NodeName: "n", EventType: accessLog, IsReply: wrapperspb.Bool(true), Reply: true,
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			IP:               ip(server, client), L4: tcp(server, client),
			Destination:  &flowpb.Endpoint{Labels: []string{"sextant.io/comm=curl", "sextant.io/pid=9"}},
			TraceContext: &flowpb.TraceContext{Parent: &flowpb.TraceParent{TraceId: "4bf92f3577b34da6a3ce929d0e0e4736"}},
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 25000000, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: 503, Method: "POST", Url: "http://svc:8080/api", Protocol: "HTTP/2"}}},
			Summary: "HTTP/2 503 25ms (POST http://svc:8080/api)",
		}},
	}, {
		name: "gRPC status and message travel as trailers",
		in: &flow.Flow{
			Time: t0, Latency: 3 * time.Millisecond, TTFB: 2 * time.Millisecond,
			Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Scheme: "http", Authority: "127.0.0.1:50051",
			Path: "/helloworld.Greeter/SayHello", Status: 200, Source: client, Destination: server,
			GRPC:           &flow.GRPC{Service: "helloworld.Greeter", Method: "SayHello", Status: u32(5), StatusSource: "trailers", Message: "not found"},
			RequestHeaders: []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}},
			ResponseHeaders: []flow.Header{{Name: "content-type", Value: "application/grpc"},
				{Name: "grpc-status", Value: "5"}, {Name: "grpc-message", Value: "not%20found"}},
		},
		want: []*flowpb.Flow{{
			Time: timestamppb.New(t0), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			EventType: accessLog, IsReply: wrapperspb.Bool(false), TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IP: ip(client, server), L4: tcp(client, server),
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "POST", Url: "http://127.0.0.1:50051/helloworld.Greeter/SayHello", Protocol: "HTTP/2",
				Headers: []*flowpb.HTTPHeader{{Key: "content-type", Value: "application/grpc"}, {Key: "te", Value: "trailers"}},
			}}},
			Summary: "HTTP/2 POST http://127.0.0.1:50051/helloworld.Greeter/SayHello",
		}, {
			Time: timestamppb.New(t0.Add(3 * time.Millisecond)), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			EventType: accessLog, IsReply: wrapperspb.Bool(true), Reply: true, TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IP: ip(server, client), L4: tcp(server, client),
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: 3000000, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Code: 200, Method: "POST", Url: "http://127.0.0.1:50051/helloworld.Greeter/SayHello", Protocol: "HTTP/2",
				Headers: []*flowpb.HTTPHeader{{Key: "content-type", Value: "application/grpc"},
					{Key: "grpc-message", Value: "not%20found"}, {Key: "grpc-status", Value: "5"}},
			}}},
			Summary: "HTTP/2 200 3ms (POST http://127.0.0.1:50051/helloworld.Greeter/SayHello)",
		}},
	}, {
		name: "unknown fields stay empty; no response seen gives the request alone",
		in: &flow.Flow{
			Time: t0, Latency: 5 * time.Second, Protocol: "HTTP/2", Path: "/only-path",
			Observer: flow.SideUnknown, Outcome: flow.OutcomeReset, ResetCode: 8,
			GRPC:    &flow.GRPC{Status: u32(4), StatusSource: "deadline"},
			Unknown: []string{"authority", "method", "request_headers", "scheme"},
		},
		want: []*flowpb.Flow{{
			Time: timestamppb.New(t0), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			EventType: accessLog, IsReply: wrapperspb.Bool(false),
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Url: "/only-path", Protocol: "HTTP/2"}}},
			Summary: "HTTP/2 /only-path",
		}},
	}, {
		name: "response seen with undecodable status and unknown latency",
		in: &flow.Flow{
			Time: t0, TTFB: 4 * time.Millisecond, Protocol: "HTTP/1.1", Method: "GET",
			Observer: flow.SideClient, Outcome: flow.OutcomeClosed,
			Unknown: []string{"latency", "path", "status"},
		},
		want: []*flowpb.Flow{{
			Time: timestamppb.New(t0), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			EventType: accessLog, IsReply: wrapperspb.Bool(false), TrafficDirection: flowpb.TrafficDirection_EGRESS,
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "GET", Protocol: "HTTP/1.1"}}},
			Summary: "HTTP/1.1 GET",
		}, {
			Time: timestamppb.New(t0.Add(4 * time.Millisecond)), Verdict: flowpb.Verdict_FORWARDED, Type: flowpb.FlowType_L7,
			EventType: accessLog, IsReply: wrapperspb.Bool(true), Reply: true, TrafficDirection: flowpb.TrafficDirection_EGRESS,
			L7: &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
				Method: "GET", Protocol: "HTTP/1.1"}}},
			Summary: "HTTP/1.1 0 0ms (GET)",
		}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Events(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events, want %d:\n%s", len(got), len(tt.want), dump(got))
			}
			for i := range got {
				if _, err := uuid.Parse(got[i].Uuid); err != nil {
					t.Errorf("event %d: uuid %q: %v", i, got[i].Uuid, err)
				}
				got[i].Uuid = ""
				if !proto.Equal(got[i], tt.want[i]) {
					t.Errorf("event %d:\ngot:\n%s\nwant:\n%s", i, dump(got[i:i+1]), dump(tt.want[i:i+1]))
				}
			}
		})
	}
}

func dump(evs []*flowpb.Flow) string {
	var b strings.Builder
	for _, ev := range evs {
		b.WriteString(prototext.MarshalOptions{Multiline: true}.Format(ev))
		b.WriteString("---\n")
	}
	return b.String()
}

func TestEventsUUIDsDiffer(t *testing.T) {
	evs := Events(&flow.Flow{Time: t0, Protocol: "HTTP/2", Path: "/", Status: 200})
	if evs[0].Uuid == evs[1].Uuid {
		t.Fatalf("request and response share uuid %s", evs[0].Uuid)
	}
}

// Decoders drop secrets before a flow exists; the conversion must not
// export one even if a decoder regressed.
func TestEventsNeverExportSecrets(t *testing.T) {
	secret := "s3cr3t-value"
	f := &flow.Flow{
		Time: t0, Latency: time.Millisecond, Protocol: "HTTP/1.1", Method: "GET", Path: "/", Status: 200,
		RequestHeaders: []flow.Header{{Name: "Authorization", Value: secret}, {Name: "cookie", Value: secret},
			{Name: "x-ok", Value: "fine"}},
		ResponseHeaders: []flow.Header{{Name: "set-cookie", Value: secret}, {Name: "Proxy-Authorization", Value: secret}},
	}
	evs := Events(f)
	if len(evs) != 2 {
		t.Fatalf("got %d events", len(evs))
	}
	for _, ev := range evs {
		if text := prototext.Format(ev); strings.Contains(text, secret) {
			t.Errorf("secret exported:\n%s", text)
		}
	}
	if h := evs[0].GetL7().GetHttp().GetHeaders(); len(h) != 1 || h[0].Key != "x-ok" {
		t.Errorf("request headers = %v, want only x-ok", h)
	}
}

func TestURL(t *testing.T) {
	tests := []struct {
		f    flow.Flow
		want string
	}{
		{flow.Flow{Protocol: "HTTP/2", Scheme: "https", Authority: "a", Path: "/p"}, "https://a/p"},
		{flow.Flow{Protocol: "HTTP/2", Authority: "a", Path: "/p"}, "/p"}, // :scheme unknown
		{flow.Flow{Protocol: "HTTP/2", Scheme: "http", Path: "/p"}, "/p"},
		{flow.Flow{Protocol: "HTTP/1.1", Authority: "a:1", Path: "/p"}, "http://a:1/p"},
		{flow.Flow{Protocol: "HTTP/1.0", Path: "/p"}, "/p"},
		{flow.Flow{Protocol: "HTTP/1.1", Authority: "a", Path: "*"}, "*"},
		{flow.Flow{Protocol: "HTTP/2", Scheme: "http", Authority: "a"}, ""}, // path unknown
	}
	for _, tt := range tests {
		if got := URL(&tt.f); got != tt.want {
			t.Errorf("URL(%+v) = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestTraceContext(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""}, // upper case
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""}, // zero parent id
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""}, // forbidden version
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", ""}, // short
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
	}
	for _, tt := range tests {
		got := traceContext(tt.in).GetParent().GetTraceId()
		if got != tt.want {
			t.Errorf("traceContext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEventsIPv6AndMappedIPv4(t *testing.T) {
	f := &flow.Flow{Time: t0, Protocol: "HTTP/2", Path: "/",
		Source: netip.MustParseAddrPort("[::ffff:127.0.0.1]:5000"), Destination: netip.MustParseAddrPort("[::ffff:127.0.0.1]:80")}
	if got := Events(f)[0].GetIP(); got.Source != "127.0.0.1" || got.IpVersion != flowpb.IPVersion_IPv4 {
		t.Errorf("mapped IPv4: %v", got)
	}
	f.Source, f.Destination = netip.MustParseAddrPort("[::1]:5000"), netip.MustParseAddrPort("[::1]:80")
	if got := Events(f)[0].GetIP(); got.Source != "::1" || got.IpVersion != flowpb.IPVersion_IPv6 {
		t.Errorf("IPv6: %v", got)
	}
}

func BenchmarkEvents(b *testing.B) {
	f := &flow.Flow{
		Time: t0, Latency: 3 * time.Millisecond, TTFB: 2 * time.Millisecond, Node: "node-1",
		Observer: flow.SideServer, Protocol: "HTTP/2", Method: "POST", Scheme: "http", Authority: "127.0.0.1:50051",
		Path: "/helloworld.Greeter/SayHello", Status: 200, Source: client, Destination: server, Process: proc,
		TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		RequestHeaders:  []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}, {Name: "user-agent", Value: "grpc-go/1.85.0"}},
		ResponseHeaders: []flow.Header{{Name: "content-type", Value: "application/grpc"}, {Name: "grpc-status", Value: "0"}},
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(Events(f)) != 2 {
			b.Fatal("want 2 events")
		}
	}
}
