package otel

import (
	"net/netip"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"

	"github.com/sextant/sextant/flow"
)

func TestParentOf(t *testing.T) {
	for _, tc := range []struct {
		tp, tracestate string
		valid          bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "", true}, // not sampled: still the parent
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=x", true},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", false}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "", false}, // zero span id
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", false}, // forbidden version
		{"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "", false},  // short
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "", false}, // upper case
		{"garbage", "", false},
		{"", "", false},
	} {
		f := &flow.Flow{TraceParent: tc.tp}
		if tc.tracestate != "" {
			f.RequestHeaders = []flow.Header{{Name: "tracestate", Value: tc.tracestate}}
		}
		sc := parentOf(f)
		if sc.IsValid() != tc.valid {
			t.Errorf("traceparent %q: valid %v, want %v", tc.tp, sc.IsValid(), tc.valid)
		}
		if tc.valid && !sc.IsRemote() {
			t.Errorf("traceparent %q: parent not remote", tc.tp)
		}
		if tc.tracestate != "" && sc.TraceState().String() != tc.tracestate {
			t.Errorf("tracestate %q: got %q", tc.tracestate, sc.TraceState().String())
		}
	}
}

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    flow.Flow
		want string
	}{
		{"server 200", flow.Flow{Observer: flow.SideServer, Status: 200}, ""},
		{"server 404", flow.Flow{Observer: flow.SideServer, Status: 404}, ""},
		{"server 500", flow.Flow{Observer: flow.SideServer, Status: 500}, "500"},
		{"client 404", flow.Flow{Observer: flow.SideClient, Status: 404}, "404"},
		{"client 399", flow.Flow{Observer: flow.SideClient, Status: 399}, ""},
		{"grpc server OK", flow.Flow{Observer: flow.SideServer, Status: 200, GRPC: &flow.GRPC{Status: status(0)}}, ""},
		{"grpc server NOT_FOUND", flow.Flow{Observer: flow.SideServer, Status: 200, GRPC: &flow.GRPC{Status: status(5)}}, ""},
		{"grpc server INTERNAL", flow.Flow{Observer: flow.SideServer, Status: 200, GRPC: &flow.GRPC{Status: status(13)}}, "INTERNAL"},
		{"grpc client NOT_FOUND", flow.Flow{Observer: flow.SideClient, Status: 200, GRPC: &flow.GRPC{Status: status(5)}}, "NOT_FOUND"},
		{"grpc code out of range", flow.Flow{Observer: flow.SideClient, GRPC: &flow.GRPC{Status: status(99)}}, "99"},
		{"grpc no status, http 503", flow.Flow{Observer: flow.SideServer, Status: 503, GRPC: &flow.GRPC{}}, "503"},
		{"reset, no status", flow.Flow{Observer: flow.SideServer, Outcome: flow.OutcomeReset}, "reset"},
		{"refused", flow.Flow{Observer: flow.SideClient, Outcome: flow.OutcomeRefused}, "refused"},
		{"closed", flow.Flow{Observer: flow.SideClient, Outcome: flow.OutcomeClosed}, "closed"},
		{"evicted: unknown, not an error", flow.Flow{Observer: flow.SideServer, Outcome: flow.OutcomeEvicted}, ""},
		{"reset after a 200", flow.Flow{Observer: flow.SideServer, Status: 200, Outcome: flow.OutcomeReset}, ""},
	} {
		if got := errorType(&tc.f); got != tc.want {
			t.Errorf("%s: error.type %q, want %q", tc.name, got, tc.want)
		}
		if code := spanStatus(&tc.f).Code; (code == codes.Error) != (tc.want != "") {
			t.Errorf("%s: status %v", tc.name, code)
		}
	}
}

func TestSpanName(t *testing.T) {
	for _, tc := range []struct {
		f     flow.Flow
		route string
		want  string
	}{
		{flow.Flow{Method: "GET"}, "/users/{id}", "GET /users/{id}"},
		{flow.Flow{Method: "GET"}, "", "GET"},
		{flow.Flow{Method: "get"}, "/x", "HTTP /x"}, // methods are case-sensitive
		{flow.Flow{}, "", "HTTP"},
		{flow.Flow{Method: "POST", GRPC: &flow.GRPC{Service: "a.B", Method: "C"}}, "", "a.B/C"},
		{flow.Flow{Method: "POST", GRPC: &flow.GRPC{Service: "a.B"}}, "", "POST"}, // incomplete: HTTP name
	} {
		if got := spanName(&tc.f, tc.route); got != tc.want {
			t.Errorf("%+v route %q: name %q, want %q", tc.f, tc.route, got, tc.want)
		}
	}
}

func TestServerAddr(t *testing.T) {
	dst := netip.MustParseAddrPort("[::ffff:10.0.0.2]:8443")
	for _, tc := range []struct {
		authority string
		dst       netip.AddrPort
		host      string
		port      int
	}{
		{"api.example:9000", dst, "api.example", 9000},
		{"api.example", dst, "api.example", 8443},
		{"[2001:db8::1]:80", dst, "2001:db8::1", 80},
		{"[2001:db8::1]", dst, "2001:db8::1", 8443},
		{"", dst, "10.0.0.2", 8443}, // v4-mapped shown as v4
		{"host:notaport", dst, "host", 8443},
		{"", netip.AddrPort{}, "", 0},
	} {
		h, p := serverAddr(&flow.Flow{Authority: tc.authority, Destination: tc.dst})
		if h != tc.host || p != tc.port {
			t.Errorf("authority %q: %q %d, want %q %d", tc.authority, h, p, tc.host, tc.port)
		}
	}
}

func TestRedactQuery(t *testing.T) {
	for q, want := range map[string]string{
		"a=1&b=2":                        "a=1&b=2",
		"sig=x":                          "sig=REDACTED",
		"X-Goog-Signature=abc&page=2":    "X-Goog-Signature=REDACTED&page=2",
		"AWSAccessKeyId=k&Signature=s&x": "AWSAccessKeyId=REDACTED&Signature=REDACTED&x",
		"novalue":                        "novalue",
	} {
		if got := redactQuery(q); got != want {
			t.Errorf("redactQuery(%q) = %q, want %q", q, got, want)
		}
	}
}

// FuzzSpan: whatever the flow holds, building its span does not panic and
// the span is well formed.
func FuzzSpan(f *testing.F) {
	f.Add("GET", "example:80", "/a/1?sig=x", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", uint32(200), uint8(1), "HTTP/2", true)
	f.Add("", "[::1", "", "00-", uint32(0), uint8(0), "", false)
	f.Fuzz(func(t *testing.T, method, authority, path, tp string, st uint32, side uint8, proto string, grpc bool) {
		fl := &flow.Flow{Time: time.Unix(1, 0), Latency: time.Millisecond, Observer: flow.Side(side % 3), Method: method,
			Authority: authority, Path: path, TraceParent: tp, Status: st, Protocol: proto,
			Destination: netip.MustParseAddrPort("127.0.0.1:1")}
		if grpc {
			fl.GRPC = &flow.GRPC{Service: method, Method: path, Status: &st}
		}
		cfg, _ := Config{Endpoint: "x"}.withDefaults()
		s := newSpanBuilder(cfg, newResourceCache(2), [32]byte{}).span(fl, testRoute(fl.Path))
		if !s.SpanContext().IsValid() || s.Name() == "" || s.EndTime().Before(s.StartTime()) {
			t.Errorf("span %+v", s)
		}
		if s.Parent().IsValid() && s.Parent().TraceID() != s.SpanContext().TraceID() {
			t.Errorf("parent in another trace")
		}
	})
}

// An exchange's policy view becomes sextant.policy.* attributes.
func TestPolicyAttributes(t *testing.T) {
	web := flow.PolicyRef{Kind: "CiliumNetworkPolicy", Name: "web", Namespace: "shop"}
	client := flow.PolicyRef{Kind: "CiliumNetworkPolicy", Name: "client", Namespace: "shop"}
	f := &flow.Flow{Time: time.Now(), Observer: flow.SideServer, Protocol: "HTTP/2", Method: "GET", Path: "/admin", Status: 200,
		Source: netip.MustParseAddrPort("10.0.0.1:4000"), Destination: netip.MustParseAddrPort("10.0.0.2:80"),
		Policy: &flow.Policy{Verdict: flow.VerdictAudit, DropReason: flow.PolicyDenied, Hook: flow.HookL7Audit, Direction: flow.Ingress,
			Source: flow.PolicyEndpoint{Identity: 257}, Destination: flow.PolicyEndpoint{Identity: 256},
			IngressAllowedBy: []flow.PolicyRef{web}, EgressAllowedBy: []flow.PolicyRef{client}, IngressDeniedBy: []flow.PolicyRef{web}}}
	got := map[string]string{}
	for _, kv := range policyAttributes(nil, f.Policy) {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	want := map[string]string{
		"sextant.policy.verdict": "AUDIT", "sextant.policy.drop_reason": "POLICY_DENIED", "sextant.policy.hook": "l7",
		"sextant.policy.allowed_by": `["CiliumNetworkPolicy/shop/web","CiliumNetworkPolicy/shop/client"]`,
		"sextant.policy.denied_by":  `["CiliumNetworkPolicy/shop/web"]`,
		"sextant.source.identity":   "257", "sextant.destination.identity": "256",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("attributes %v", got)
	}
}
