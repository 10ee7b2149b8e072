package filters

import (
	"fmt"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var protocolKind = kind{
	fields: []protoreflect.Name{"protocol"},
	build: func(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
		v := ff.GetProtocol()
		if v == nil {
			return nil, nil
		}
		f, err := protocolFilter(v)
		if err != nil {
			return nil, fmt.Errorf("protocol: %w", err)
		}
		return []FilterFunc{f}, nil
	},
}

// protocolMatchers: Hubble's L4 and L7 protocol names, plus sextant's
// HTTP versions and gRPC (content-type application/grpc*), which Hubble's
// own names cannot tell apart.
var protocolMatchers = map[string]FilterFunc{
	"tcp":    func(f *flowpb.Flow) bool { return f.GetL4().GetTCP() != nil },
	"udp":    func(f *flowpb.Flow) bool { return f.GetL4().GetUDP() != nil },
	"sctp":   func(f *flowpb.Flow) bool { return f.GetL4().GetSCTP() != nil },
	"icmp":   func(f *flowpb.Flow) bool { return f.GetL4().GetICMPv4() != nil || f.GetL4().GetICMPv6() != nil },
	"icmpv4": func(f *flowpb.Flow) bool { return f.GetL4().GetICMPv4() != nil },
	"icmpv6": func(f *flowpb.Flow) bool { return f.GetL4().GetICMPv6() != nil },
	"vrrp":   func(f *flowpb.Flow) bool { return f.GetL4().GetVRRP() != nil },
	"igmp":   func(f *flowpb.Flow) bool { return f.GetL4().GetIGMP() != nil },
	"dns":    func(f *flowpb.Flow) bool { return f.GetL7().GetDns() != nil },
	"http":   func(f *flowpb.Flow) bool { return f.GetL7().GetHttp() != nil },

	"http/1.0": httpVersion("HTTP/1.0"),
	"http/1.1": httpVersion("HTTP/1.1"),
	"http/2":   httpVersion("HTTP/2"),
	"grpc":     isGRPC,
}

func httpVersion(v string) FilterFunc {
	return func(f *flowpb.Flow) bool { return f.GetL7().GetHttp().GetProtocol() == v }
}

func isGRPC(f *flowpb.Flow) bool {
	for _, h := range f.GetL7().GetHttp().GetHeaders() {
		if strings.EqualFold(h.GetKey(), "content-type") && strings.HasPrefix(h.GetValue(), "application/grpc") {
			return true
		}
	}
	return false
}

func protocolFilter(names []string) (FilterFunc, error) {
	ms := make([]FilterFunc, 0, len(names))
	for _, n := range names {
		m, ok := protocolMatchers[strings.ToLower(n)]
		if !ok {
			return nil, fmt.Errorf("unknown protocol %q", n)
		}
		ms = append(ms, m)
	}
	return func(f *flowpb.Flow) bool {
		for _, m := range ms {
			if m(f) {
				return true
			}
		}
		return false
	}, nil
}
