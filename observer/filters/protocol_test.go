package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
)

func TestProtocol(t *testing.T) {
	grpcReq, _ := exchange(t, "POST", "/pkg.Svc/M", 200, flow.SideServer) // content-type application/grpc
	h1 := &flowpb.Flow{
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{}}},
		L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Protocol: "HTTP/1.1"}}},
	}
	tests := []struct {
		protos []string
		ev     *flowpb.Flow
		want   bool
	}{
		{[]string{"http"}, grpcReq, true},
		{[]string{"HTTP"}, h1, true},
		{[]string{"tcp"}, h1, true},
		{[]string{"udp"}, h1, false},
		{[]string{"dns"}, h1, false},
		{[]string{"grpc"}, grpcReq, true},
		{[]string{"grpc"}, h1, false},
		{[]string{"http/2"}, grpcReq, true},
		{[]string{"http/2"}, h1, false},
		{[]string{"http/1.1"}, h1, true},
		{[]string{"udp", "http/1.1"}, h1, true},
		{[]string{"http"}, &flowpb.Flow{}, false},
	}
	for _, tt := range tests {
		if got := match(t, &flowpb.FlowFilter{Protocol: tt.protos}, tt.ev); got != tt.want {
			t.Errorf("%v on %v: got %v, want %v", tt.protos, tt.ev, got, tt.want)
		}
	}
}
