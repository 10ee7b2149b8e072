package filters

import (
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sextant/sextant/flow"
)

func TestLabels(t *testing.T) {
	ev := &flowpb.Flow{
		Source:      &flowpb.Endpoint{Labels: []string{"sextant.io/comm=curl", "sextant.io/pid=9", "k8s:app=web", "reserved:host"}},
		Destination: &flowpb.Endpoint{Labels: []string{"sextant.io/comm=server", "sextant.io/cgroup=/system.slice/x.service"}},
	}
	tests := []struct {
		ff   *flowpb.FlowFilter
		want bool
	}{
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm=curl"}}, true},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm==curl"}}, true},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm=server"}}, false},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm!=server"}}, true},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm!=curl"}}, false},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/exe!=/bin/x"}}, true}, // absent key
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/pid"}}, true},
		{&flowpb.FlowFilter{SourceLabel: []string{"!sextant.io/pid"}}, false},
		{&flowpb.FlowFilter{SourceLabel: []string{"!sextant.io/exe"}}, true},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm=curl,sextant.io/pid=9"}}, true},   // comma = AND
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm=curl,sextant.io/pid=10"}}, false}, // comma = AND
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm=x", "sextant.io/pid=9"}}, true},   // values OR
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm in (wget, curl)"}}, true},
		{&flowpb.FlowFilter{SourceLabel: []string{"sextant.io/comm notin (wget,curl)"}}, false},
		{&flowpb.FlowFilter{SourceLabel: []string{"app=web"}}, true},            // any source
		{&flowpb.FlowFilter{SourceLabel: []string{"any:app=web"}}, true},        // explicit any
		{&flowpb.FlowFilter{SourceLabel: []string{"k8s:app=web"}}, true},        // matching source
		{&flowpb.FlowFilter{SourceLabel: []string{"container:app=web"}}, false}, // other source
		{&flowpb.FlowFilter{SourceLabel: []string{"reserved:host"}}, true},
		{&flowpb.FlowFilter{DestinationLabel: []string{"sextant.io/cgroup=/system.slice/x.service"}}, true},
		{&flowpb.FlowFilter{DestinationLabel: []string{"sextant.io/comm=curl"}}, false},
		{&flowpb.FlowFilter{NodeLabels: []string{"zone"}}, false},
		{&flowpb.FlowFilter{NodeLabels: []string{"!zone"}}, true},
	}
	for _, tt := range tests {
		if got := match(t, tt.ff, ev); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.ff, got, tt.want)
		}
	}
}

// The process labels sit on the endpoint the observed process is: the
// destination of a request seen at the server, the source of its response.
func TestLabelsOnConvertedEvents(t *testing.T) {
	req, resp := exchange(t, "GET", "/", 200, flow.SideServer)
	m := mustBuild(t, []*flowpb.FlowFilter{{DestinationLabel: []string{"sextant.io/comm=api"}}}, nil)
	if !m(req) || m(resp) {
		t.Errorf("request %v response %v, want true false", m(req), m(resp))
	}
}

func TestLabelSelectorErrors(t *testing.T) {
	for _, s := range []string{"", "a,", "a in (b", "a in b)", "a foo (b)", "=b", "a=b c", "any:=x", ":a"} {
		if _, err := Build([]*flowpb.FlowFilter{{SourceLabel: []string{s}}}, nil); err == nil {
			t.Errorf("selector %q accepted", s)
		}
	}
}
