package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
)

func TestPod(t *testing.T) {
	ev := &flowpb.Flow{Source: &flowpb.Endpoint{Namespace: "shop", PodName: "web-7d9f"}, Destination: &flowpb.Endpoint{Namespace: "default", PodName: "db-0"}}
	tests := []struct {
		ff   *flowpb.FlowFilter
		want bool
	}{
		{&flowpb.FlowFilter{SourcePod: []string{"shop/web-"}}, true},
		{&flowpb.FlowFilter{SourcePod: []string{"shop/"}}, true},
		{&flowpb.FlowFilter{SourcePod: []string{"/web"}}, true},
		{&flowpb.FlowFilter{SourcePod: []string{"web"}}, false}, // namespace "default"
		{&flowpb.FlowFilter{SourcePod: []string{"other/web"}}, false},
		{&flowpb.FlowFilter{DestinationPod: []string{"db"}}, true},
	}
	for _, tt := range tests {
		if got := match(t, tt.ff, ev); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.ff, got, tt.want)
		}
	}
}

// sextant knows no pods: pod filters match none of its events.
func TestPodOnConvertedEvents(t *testing.T) {
	req, resp := exchange(t, "GET", "/", 200, flow.SideServer)
	m := mustBuild(t, []*flowpb.FlowFilter{{SourcePod: []string{"/"}}, {DestinationPod: []string{"/"}}}, nil)
	if m(req) || m(resp) {
		t.Error("pod filter matched an event without pod")
	}
}

func TestWorkload(t *testing.T) {
	ev := &flowpb.Flow{Source: &flowpb.Endpoint{Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}}}}
	tests := []struct {
		ff   *flowpb.FlowFilter
		want bool
	}{
		{&flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Name: "web"}}}, true},
		{&flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Kind: "Deployment"}}}, true},
		{&flowpb.FlowFilter{SourceWorkload: []*flowpb.Workload{{Name: "web", Kind: "StatefulSet"}}}, false},
		{&flowpb.FlowFilter{DestinationWorkload: []*flowpb.Workload{{Name: "web"}}}, false},
	}
	for _, tt := range tests {
		if got := match(t, tt.ff, ev); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.ff, got, tt.want)
		}
	}
}
