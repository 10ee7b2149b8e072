package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func ipEvent(src, dst string) *flowpb.Flow {
	v := flowpb.IPVersion_IPv4
	if len(src) > 0 && src[0] == ':' || len(src) > 4 && src[4] == ':' {
		v = flowpb.IPVersion_IPv6
	}
	return &flowpb.Flow{IP: &flowpb.IP{Source: src, Destination: dst, IpVersion: v}}
}

func TestIP(t *testing.T) {
	ev := ipEvent("10.0.0.1", "2001:db8::7")
	tests := []struct {
		ff   *flowpb.FlowFilter
		want bool
	}{
		{&flowpb.FlowFilter{SourceIp: []string{"10.0.0.1"}}, true},
		{&flowpb.FlowFilter{SourceIp: []string{"10.0.0.2"}}, false},
		{&flowpb.FlowFilter{SourceIp: []string{"10.0.0.0/24"}}, true},
		{&flowpb.FlowFilter{SourceIp: []string{"10.0.1.0/24", "10.0.0.1"}}, true},
		{&flowpb.FlowFilter{SourceIp: []string{"2001:db8::7"}}, false},
		{&flowpb.FlowFilter{DestinationIp: []string{"2001:db8::/32"}}, true},
		{&flowpb.FlowFilter{DestinationIp: []string{"2001:0db8:0::7"}}, true}, // same address, other spelling
		{&flowpb.FlowFilter{DestinationIp: []string{"10.0.0.0/8"}}, false},
		{&flowpb.FlowFilter{SourceIp: []string{"10.0.0.1"}, DestinationIp: []string{"10.0.0.1"}}, false},
		{&flowpb.FlowFilter{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv4}}, true},
		{&flowpb.FlowFilter{IpVersion: []flowpb.IPVersion{flowpb.IPVersion_IPv6}}, false},
	}
	for _, tt := range tests {
		if got := match(t, tt.ff, ev); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.ff, got, tt.want)
		}
	}
	// Events without IP information (e.g. unix sockets) never match an IP.
	if match(t, &flowpb.FlowFilter{SourceIp: []string{"0.0.0.0/0"}}, &flowpb.Flow{}) {
		t.Error("event without IP matched 0.0.0.0/0")
	}
}
