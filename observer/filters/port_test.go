package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func TestPort(t *testing.T) {
	ev := &flowpb.Flow{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 8080}}}}
	tests := []struct {
		ff   *flowpb.FlowFilter
		want bool
	}{
		{&flowpb.FlowFilter{SourcePort: []string{"40000"}}, true},
		{&flowpb.FlowFilter{SourcePort: []string{"8080"}}, false},
		{&flowpb.FlowFilter{DestinationPort: []string{"80", "8080"}}, true},
		{&flowpb.FlowFilter{DestinationPort: []string{"80"}}, false},
		{&flowpb.FlowFilter{SourcePort: []string{"40000"}, DestinationPort: []string{"80"}}, false},
	}
	for _, tt := range tests {
		if got := match(t, tt.ff, ev); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.ff, got, tt.want)
		}
	}
	if match(t, &flowpb.FlowFilter{DestinationPort: []string{"0"}}, &flowpb.Flow{}) {
		t.Error("event without L4 matched port 0")
	}
}
