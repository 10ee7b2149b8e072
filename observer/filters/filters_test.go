package filters

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sextant/sextant/flow"
	"github.com/sextant/sextant/observer/hubble"
)

// exchange returns the request and response events of one exchange, as
// the agent produces them.
func exchange(t testing.TB, method, path string, code uint32, side flow.Side) (req, resp *flowpb.Flow) {
	t.Helper()
	evs := hubble.Events(&flow.Flow{
		Time: time.Unix(1700000000, 0), Latency: time.Millisecond, Node: "node-1", Observer: side,
		Protocol: "HTTP/2", Method: method, Scheme: "http", Authority: "api:8080", Path: path, Status: code,
		Source: netip.MustParseAddrPort("10.0.0.1:40000"), Destination: netip.MustParseAddrPort("10.0.0.2:8080"),
		Process:        flow.Process{PID: 7, Comm: "api"},
		RequestHeaders: []flow.Header{{Name: "content-type", Value: "application/grpc"}},
	})
	if len(evs) != 2 {
		t.Fatalf("want 2 events, got %d", len(evs))
	}
	return evs[0], evs[1]
}

// match builds one whitelist filter and applies it.
func match(t *testing.T, ff *flowpb.FlowFilter, ev *flowpb.Flow) bool {
	t.Helper()
	return mustBuild(t, []*flowpb.FlowFilter{ff}, nil)(ev)
}

func mustBuild(t *testing.T, wl, bl []*flowpb.FlowFilter) FilterFunc {
	t.Helper()
	f, err := Build(wl, bl)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBuildComposition(t *testing.T) {
	getReq, getResp := exchange(t, "GET", "/users", 200, flow.SideServer)
	postReq, postResp := exchange(t, "POST", "/orders", 503, flow.SideServer)
	all := []*flowpb.Flow{getReq, getResp, postReq, postResp}

	tests := []struct {
		name   string
		wl, bl []*flowpb.FlowFilter
		want   []bool // per event of all
	}{
		{"no filters pass everything", nil, nil, []bool{true, true, true, true}},
		{"empty filter matches everything", []*flowpb.FlowFilter{{}}, nil, []bool{true, true, true, true}},
		{"fields within one filter AND",
			[]*flowpb.FlowFilter{{HttpMethod: []string{"post"}, HttpStatusCode: []string{"5+"}}}, nil,
			[]bool{false, false, false, true}},
		{"values within one field OR",
			[]*flowpb.FlowFilter{{HttpStatusCode: []string{"200", "503"}}}, nil,
			[]bool{false, true, false, true}},
		{"filters of the whitelist OR",
			[]*flowpb.FlowFilter{{HttpPath: []string{"^/users$"}, Reply: []bool{false}}, {HttpStatusCode: []string{"503"}}}, nil,
			[]bool{true, false, false, true}},
		{"blacklist excludes",
			nil, []*flowpb.FlowFilter{{HttpMethod: []string{"GET"}}},
			[]bool{false, false, true, true}},
		{"blacklist wins over whitelist",
			[]*flowpb.FlowFilter{{HttpPath: []string{"/"}}}, []*flowpb.FlowFilter{{HttpStatusCode: []string{"5+"}}},
			[]bool{true, true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			match := mustBuild(t, tt.wl, tt.bl)
			for i, ev := range all {
				if got := match(ev); got != tt.want[i] {
					t.Errorf("event %d (%s): got %v, want %v", i, ev.Summary, got, tt.want[i])
				}
			}
		})
	}
}

func TestBuildRejectsUnsupportedFields(t *testing.T) {
	tests := []struct {
		ff    *flowpb.FlowFilter
		field string
	}{
		{&flowpb.FlowFilter{SourceFqdn: []string{"example.com"}}, "source_fqdn"},
		{&flowpb.FlowFilter{DnsQuery: []string{"x"}}, "dns_query"},
		{&flowpb.FlowFilter{TcpFlags: []*flowpb.TCPFlags{{SYN: true}}}, "tcp_flags"},
		{&flowpb.FlowFilter{SourceService: []string{"x"}}, "source_service"},
		{&flowpb.FlowFilter{HttpMethod: []string{"GET"}, Encrypted: []bool{true}}, "encrypted"},
		{&flowpb.FlowFilter{Experimental: &flowpb.FlowFilter_Experimental{CelExpression: []string{"true"}}}, "experimental.cel_expression"},
	}
	for _, tt := range tests {
		_, err := Build([]*flowpb.FlowFilter{{}}, []*flowpb.FlowFilter{tt.ff})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.field) ||
			!strings.Contains(err.Error(), "blacklist[0]") {
			t.Errorf("filter %v: err = %v, want InvalidArgument naming blacklist[0] and %s", tt.ff, err, tt.field)
		}
	}
	// An experimental message with nothing set selects nothing and is fine.
	if _, err := Build([]*flowpb.FlowFilter{{Experimental: &flowpb.FlowFilter_Experimental{}}}, nil); err != nil {
		t.Errorf("empty experimental: %v", err)
	}
}

func TestBuildInvalidValues(t *testing.T) {
	for _, ff := range []*flowpb.FlowFilter{
		{HttpStatusCode: []string{"6+"}},
		{HttpStatusCode: []string{"20"}},
		{HttpPath: []string{"("}},
		{HttpUrl: []string{"[a-"}},
		{SourceIp: []string{"10.0.0.300"}},
		{DestinationIp: []string{"10.0.0.0/33"}},
		{SourcePort: []string{"65536"}},
		{Protocol: []string{"quic"}},
		{SourceLabel: []string{"a in (b"}},
		{NodeName: []string{"a/b/c"}},
		{SourcePod: []string{""}},
		{HttpMethod: []string{"GET"}, EventType: []*flowpb.EventTypeFilter{{Type: 1}}},
	} {
		if _, err := Build([]*flowpb.FlowFilter{ff}, nil); status.Code(err) != codes.InvalidArgument {
			t.Errorf("filter %v: err = %v, want InvalidArgument", ff, err)
		}
	}
}

// Every field a kind claims must exist in FlowFilter, or the claim would
// silently fail to reject nothing and the kind would be dead.
func TestKindFieldsExist(t *testing.T) {
	fields := (&flowpb.FlowFilter{}).ProtoReflect().Descriptor().Fields()
	for _, k := range kinds {
		for _, name := range k.fields {
			if fields.ByName(name) == nil {
				t.Errorf("kind claims unknown FlowFilter field %q", name)
			}
		}
	}
	// And each supported field really filters: setting it with a value
	// that cannot match must reject the request event.
	req, _ := exchange(t, "GET", "/x", 200, flow.SideServer)
	for name := range supported {
		fd := fields.ByName(name)
		ff := &flowpb.FlowFilter{}
		if !setNoMatch(ff, fd) {
			t.Errorf("%s: supported but not covered by setNoMatch", name)
			continue
		}
		m, err := Build([]*flowpb.FlowFilter{ff}, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if m(req) {
			t.Errorf("%s = %v matched %s", name, ff, req.Summary)
		}
	}
}

// setNoMatch sets fd to a value no sextant request event matches.
func setNoMatch(ff *flowpb.FlowFilter, fd protoreflect.FieldDescriptor) bool {
	values := map[protoreflect.Name]func(){
		"source_ip":            func() { ff.SourceIp = []string{"192.0.2.1"} },
		"destination_ip":       func() { ff.DestinationIp = []string{"192.0.2.0/24"} },
		"ip_version":           func() { ff.IpVersion = []flowpb.IPVersion{flowpb.IPVersion_IPv6} },
		"source_port":          func() { ff.SourcePort = []string{"1"} },
		"destination_port":     func() { ff.DestinationPort = []string{"1"} },
		"protocol":             func() { ff.Protocol = []string{"udp"} },
		"source_label":         func() { ff.SourceLabel = []string{"sextant.io/comm=nope"} },
		"destination_label":    func() { ff.DestinationLabel = []string{"sextant.io/comm=nope"} },
		"node_labels":          func() { ff.NodeLabels = []string{"zone"} },
		"source_pod":           func() { ff.SourcePod = []string{"default/x"} },
		"destination_pod":      func() { ff.DestinationPod = []string{"x"} },
		"source_workload":      func() { ff.SourceWorkload = []*flowpb.Workload{{Name: "x"}} },
		"destination_workload": func() { ff.DestinationWorkload = []*flowpb.Workload{{Kind: "Deployment"}} },
		"verdict":              func() { ff.Verdict = []flowpb.Verdict{flowpb.Verdict_DROPPED} },
		"drop_reason_desc":     func() { ff.DropReasonDesc = []flowpb.DropReason{flowpb.DropReason_POLICY_DENIED} },
		"source_identity":      func() { ff.SourceIdentity = []uint32{256} },
		"destination_identity": func() { ff.DestinationIdentity = []uint32{256} },
		"traffic_direction":    func() { ff.TrafficDirection = []flowpb.TrafficDirection{flowpb.TrafficDirection_EGRESS} },
		"reply":                func() { ff.Reply = []bool{true} },
		"node_name":            func() { ff.NodeName = []string{"node-2"} },
		"event_type":           func() { ff.EventType = []*flowpb.EventTypeFilter{{Type: 1}} },
		"uuid":                 func() { ff.Uuid = []string{"nope"} },
		"trace_id":             func() { ff.TraceId = []string{"4bf92f3577b34da6a3ce929d0e0e4736"} },
		"http_status_code":     func() { ff.HttpStatusCode = []string{"200"} }, // requests carry no code
		"http_method":          func() { ff.HttpMethod = []string{"PUT"} },
		"http_path":            func() { ff.HttpPath = []string{"^/y"} },
		"http_url":             func() { ff.HttpUrl = []string{"https://"} },
		"http_header":          func() { ff.HttpHeader = []*flowpb.HTTPHeader{{Key: "content-type", Value: "text/plain"}} },
	}
	set, ok := values[fd.Name()]
	if ok {
		set()
	}
	return ok
}

func BenchmarkBuildMatch(b *testing.B) {
	req, resp := exchange(b, "GET", "/users/1", 200, flow.SideServer)
	match, err := Build([]*flowpb.FlowFilter{
		{HttpStatusCode: []string{"5+"}},
		{HttpPath: []string{"^/users/"}, SourceLabel: []string{"sextant.io/comm=api"}, Protocol: []string{"http"}},
	}, []*flowpb.FlowFilter{{HttpMethod: []string{"DELETE"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		match(req)
		match(resp)
	}
}
